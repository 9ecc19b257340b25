"""The record of the votes cast through the annotators' front: written by the front, read by the pull.

One JSON line per vote that an annotator created or changed through the front and Label Studio accepted::

    {"annotation": 17, "task": 4, "user": 3, "action": "created", "updated_at": "2026-12-01T16:20:01.123456Z",
     "recorded_at": "2026-12-01T16:20:01.130000+00:00"}

(``user`` is the annotator's Label Studio id, ``updated_at`` the annotation's as Label Studio answered.) The
front appends to it (``annotation/front.py``) and serves it to the admin's token at ``RECORD_ROUTE``. A vote
counts as cast blind when the record has its creation, by its author on its task, and the state it is in
(its ``updated_at``, which Label Studio moves with every change, through the front or not): one created, or
last changed, straight on Label Studio's own port, where its author could have looked at the others' votes
first, does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

RECORD_ROUTE = "/front/votes"  # on the front, for the admin's token only
ACTIONS = ("created", "updated")


def line(annotation: dict[str, Any], user_id: int, action: str) -> str:
    """The record's line for ``annotation`` (Label Studio's answer), created or updated by ``user_id``."""
    return json.dumps({"annotation": annotation["id"], "task": annotation.get("task"), "user": user_id,
                       "action": action, "updated_at": annotation.get("updated_at"),
                       "recorded_at": datetime.now(timezone.utc).isoformat()}) + "\n"


@dataclass
class Cast:
    task: int
    user: int
    states: set[datetime]  # its updated_at after each change through the front


def _cast(text: str) -> tuple[int, str, Cast]:
    entry = json.loads(text)
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    missing = {"annotation", "task", "user", "action", "updated_at"} - set(entry)
    if missing:
        raise ValueError(f"no {', '.join(sorted(missing))}")
    if entry["action"] not in ACTIONS:
        raise ValueError(f"action {entry['action']!r} (expected {' or '.join(ACTIONS)})")
    if not all(isinstance(entry[key], int) for key in ("annotation", "task", "user")):
        raise ValueError("annotation, task and user should be ids")
    return entry["annotation"], entry["action"], Cast(entry["task"], entry["user"],
                                                      {datetime.fromisoformat(entry["updated_at"])})


def read(lines: Iterable[str], where: str, warn: Any) -> tuple[dict[int, Cast], int]:
    """annotation id -> how the front saw each vote whose creation it recorded; and how many lines could not
    be read. Such a line (one cut short by a front killed mid-write, or edited) is skipped with a
    ``warn``ing that names ``where`` and the line: the vote it stood for then counts as not known to be
    blind, which claims nothing, while stopping the pull over it would hold every label back."""
    casts: dict[int, Cast] = {}
    skipped = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            annotation, action, cast = _cast(text)
        except (ValueError, TypeError) as e:
            warn(f"{where}: line {number} is not a vote of the front's record ({e}): skipped; its vote, if any, "
                 f"counts as not known to be blind")
            skipped += 1
            continue
        if action == "created":
            casts[annotation] = cast
        elif annotation in casts:
            casts[annotation].states |= cast.states
    return casts, skipped


def cast_blind(casts: dict[int, Cast], annotation: dict[str, Any], task_id: int) -> bool:
    """Whether the front recorded this exported annotation's creation by its author on its task, and the
    state it was exported in (a change through the front after the export is recorded beside it)."""
    cast = casts.get(annotation["id"])
    author = annotation.get("completed_by")
    author = author.get("id") if isinstance(author, dict) else author
    return (cast is not None and cast.task == task_id and cast.user == author
            and datetime.fromisoformat(annotation["updated_at"]) in cast.states)

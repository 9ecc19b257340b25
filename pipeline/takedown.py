"""The takedown list: sources to remove from everything the pipeline made of them.

``takedown.yaml`` lists entries, each naming one ``media_id``, one source ``url`` or one ``uploader``, and
the ``reason``. The download stage removes the media files of every match from the media store (keeping
a tombstone, so that the item is never fetched again), leaves them out of the media table and lists them
in the takedowns table; every later stage then rebuilds without them (faces, votes, labels, splits,
models, the dataset card), and the push stage deletes their tasks from Label Studio: the only deletion
the pipeline ever does there, and only on this instruction.

An entry must match something, or it is an error that stops the stage before anything is deleted: a
takedown that silently matches nothing leaves the face in the dataset. ``pending: true`` marks one that
may match nothing yet (media still to be downloaded). URLs match whatever their scheme, host case or
trailing slash; media ids and uploaders match exactly, and a near miss (``nasa`` for ``NASA``) is
refused with what it nearly matched.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from pipeline.common import StageError

KEYS = ("media_id", "url", "uploader")
TAKEDOWN_COLUMNS = ["media_id", "matched_by", "reason", "taken_down_at"]


@dataclass(frozen=True)
class Takedown:
    key: str  # media_id, url or uploader
    value: str
    reason: str
    line: int
    pending: bool = False

    def matches(self, record: dict[str, Any]) -> bool:
        value = str(record.get(self.key) or "").strip()
        if self.key == "url":
            return bool(value) and normal_url(value) == normal_url(self.value)
        return value == self.value

    @property
    def label(self) -> str:
        return f"line {self.line}: {self.key} {self.value}"


def load_takedowns(path: Path | str) -> list[Takedown]:
    """The entries of the takedown list; a malformed one is refused with its line and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StageError(f"{path}: not found (an empty list is `takedown: []`)") from None
    try:
        document = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise StageError(f"{path}: not valid YAML: {e}") from None
    entries = data.get("takedown") if isinstance(data, dict) else None
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise StageError(f"{path}: 'takedown' must be a list of entries")
    nodes = next((v.value for k, v in document.value if k.value == "takedown"), []) if document else []
    takedowns = []
    for entry, node in zip(entries, nodes):
        line = node.start_mark.line + 1
        if not isinstance(entry, dict):
            raise StageError(f"{path}, line {line}: an entry must name one of {', '.join(KEYS)} and a reason")
        named = [k for k in KEYS if entry.get(k)]
        unknown = set(entry) - {*KEYS, "reason", "pending"}
        if len(named) != 1 or unknown:
            raise StageError(f"{path}, line {line}: an entry names exactly one of {', '.join(KEYS)} "
                             f"(and a reason), not {sorted(entry)}")
        if not str(entry.get("reason") or "").strip():
            raise StageError(f"{path}, line {line}: say why ({named[0]} {entry[named[0]]}): add a reason")
        if not isinstance(entry.get("pending", False), bool):
            raise StageError(f"{path}, line {line}: 'pending' is true or false, not {entry['pending']!r}")
        takedowns.append(Takedown(named[0], str(entry[named[0]]).strip(), str(entry["reason"]).strip(), line,
                                  entry.get("pending", False)))
    return takedowns


def normal_url(url: str) -> str:
    """A URL as takedowns and the source list compare them: without what does not change the item it names
    (the scheme, http or https; the host's case; a trailing slash; the fragment)."""
    parts = urlsplit(url.strip())
    try:
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a port that is not a number: no URL of a downloaded item, compared as written
        return url.strip()
    return urlunsplit(("", host, parts.path.rstrip("/"), parts.query, ""))


def matching(takedowns: list[Takedown], records: Iterable[dict[str, Any]]) -> Takedown | None:
    """The first entry that matches any of ``records`` (an item's record and those of its other sources)."""
    records = list(records)
    return next((t for t in takedowns if any(t.matches(r) for r in records)), None)


def check_all_match(path: Path | str, takedowns: list[Takedown], known: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse entries that match none of the ``known`` records (media_id -> the records of every item,
    source and tombstone the store knows), unless they are pending; say what each nearly matched."""
    problems = []
    for t in takedowns:
        if t.pending or any(t.matches(r) for records in known.values() for r in records):
            continue
        media_of_value = Counter(value for records in known.values()
                                 for value in {str(r.get(t.key)).strip() for r in records if r.get(t.key)})
        if t.key == "uploader":  # names differ in case and spacing more often than in letters
            near = [name for name in media_of_value if name.casefold().split() == t.value.casefold().split()]
        else:
            near = difflib.get_close_matches(t.value, list(media_of_value), n=1, cutoff=0.8)
        exactly = "" if t.key == "url" else f" ({t.key}s match exactly)"
        hint = f"; did you mean {near[0]!r} ({media_of_value[near[0]]} media)?{exactly}" if near else ""
        problems.append(f"{path}, {t.label} matches no media{hint}")
    if problems:
        raise StageError("\n".join(problems) + "\n(nothing was taken down; mark an entry that may match nothing "
                         "yet with `pending: true`)")

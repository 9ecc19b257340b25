"""The takedown list: sources to remove from everything the pipeline made of them.

``takedown.yaml`` lists entries, each naming one ``media_id``, one source ``url`` or one ``uploader``, and
the ``reason``. The download stage removes the media files of every match from the media store (keeping
a tombstone, so that the item is never fetched again), leaves them out of the media table and lists them
in the takedowns table; every later stage then rebuilds without them (faces, votes, labels, splits,
models, the dataset card), and the push stage deletes their tasks from Label Studio: the only deletion
the pipeline ever does there, and only on this instruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    def matches(self, record: dict[str, Any]) -> bool:
        return str(record.get(self.key) or "").strip() == self.value

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
        unknown = set(entry) - {*KEYS, "reason"}
        if len(named) != 1 or unknown:
            raise StageError(f"{path}, line {line}: an entry names exactly one of {', '.join(KEYS)} "
                             f"(and a reason), not {sorted(entry)}")
        if not str(entry.get("reason") or "").strip():
            raise StageError(f"{path}, line {line}: say why ({named[0]} {entry[named[0]]}): add a reason")
        takedowns.append(Takedown(named[0], str(entry[named[0]]).strip(), str(entry["reason"]).strip(), line))
    return takedowns


def matching(takedowns: list[Takedown], record: dict[str, Any]) -> Takedown | None:
    return next((t for t in takedowns if t.matches(record)), None)


def media_of_face(face_id: str) -> str:
    """The media_id inside a face_id (``<media_id>-<milliseconds>-<index>``)."""
    return face_id.rsplit("-", 2)[0]

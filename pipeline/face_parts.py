"""Each media item's faces kept as a part of its own, so that a rerun of the faces stage redoes only what changed.

A part is a folder ``<parts>/<media_id>/`` holding the item's face crops (``<face_id>.jpg``) and ``part.json``:
its key, its row of the per-media table and its rows of the faces table (without crop paths, which say where
the stage puts the crops, not what they are). It is made under a temporary name beside the others and renamed
into place, so a part is whole or absent: a kill -9 leaves at most a ``.<media_id>.*.tmp`` folder, which the
next run removes before it starts.

``key`` holds the key alone. The key is a hash of the media file's sha256, its type, every ``faces`` param except those in ``KEY_IGNORES``,
and the version of the code that detects and crops (``code_version``). The local and the Ray engine make the
same parts; only the stage's driver writes them, so a Ray cluster needs no shared file system for them.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pipeline.common import UMASK, atomic_write, get_logger

log = get_logger("faces")

PART_FILE = "part.json"
KEY_FILE = "key"  # the part's key alone, so that telling which parts are current reads no rows
# faces params that leave every part as it is: the device (CPU and GPU find the same faces, up to float
# rounding), where the work runs, and the dropping of near duplicates, which is done when the faces table
# is assembled (a part keeps every crop)
KEY_IGNORES = frozenset({"device", "engine", "ray_address", "ray_workers", "drop_near_duplicates"})
# the libraries whose release changes what is found or cut: facenet-pytorch's weights, OpenCV's decoding
# and resampling
KEY_PACKAGES = ("facenet-pytorch", "opencv-python-headless")


@dataclass(frozen=True)
class MediaItem:
    media_id: str
    media_type: str  # video or photo
    path: str
    key: str  # of the part that holds its faces


@dataclass
class ItemFaces:
    """What processing one media item gives: its per-media summary, its faces' rows and their crops (JPEG)."""

    media_id: str
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    crops: dict[str, bytes] = field(default_factory=dict)  # file name -> JPEG bytes
    keep: bool = True  # false for a failure that a rerun may not repeat (anything but an unreadable file)


def code_version(sources: Iterable[str]) -> str:
    """A digest of Python sources that ignores comments, docstrings and layout, so that only a change of
    code makes every part anew (hours of work on a real build), not a reworded comment."""
    digest = hashlib.sha256()
    for source in sources:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        digest.update(ast.dump(tree).encode())
    for package in KEY_PACKAGES:
        digest.update(f"{package}=={version(package)}".encode())
    return digest.hexdigest()[:16]


def part_key(sha256: str, media_type: str, params: dict[str, Any], code: str) -> str:
    """The key of a media item's part: what its faces depend on."""
    detection = {k: v for k, v in params.items() if k not in KEY_IGNORES}
    text = json.dumps({"sha256": sha256, "media_type": media_type, "params": detection, "code": code},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PartStore:
    """The folder of parts, one per media item."""

    def __init__(self, root: Path):
        self.root = root

    def clean(self, media_ids: set[str]) -> list[str]:
        """Remove what a killed run left half-made, and the parts of media no longer in the media table
        (removed or taken down); the media ids whose parts went."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = []
        for entry in self.root.iterdir():
            if entry.name.startswith("."):
                _remove(entry)
            elif entry.name not in media_ids:
                _remove(entry)
                removed.append(entry.name)
        return sorted(removed)

    def key(self, media_id: str) -> str | None:
        """The key of ``media_id``'s part, or None when it has none."""
        try:
            return (self.root / media_id / KEY_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def read(self, media_id: str) -> dict[str, Any] | None:
        """A part's ``part.json`` (key, summary, rows), or None when there is none or it cannot be read."""
        path = self.root / media_id / PART_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # made anew, as if missing
            log.warning(f"{path}: unreadable ({e}); the media item is processed again")
            return None

    def crop(self, media_id: str, name: str) -> Path:
        return self.root / media_id / name

    def write(self, item: MediaItem, faces: ItemFaces) -> None:
        """Make ``item``'s part from ``faces``, replacing the one it had, whole or not at all."""
        self.root.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{item.media_id}.", suffix=".tmp"))
        os.chmod(building, 0o777 & ~UMASK)
        for name, jpeg in faces.crops.items():
            # the folder, renamed into place last, is what makes a part atomic; each file is only synced
            with open(building / name, "wb") as f:
                f.write(jpeg)
                os.fsync(f.fileno())
        with atomic_write(building / PART_FILE) as f:
            json.dump({"key": item.key, "summary": faces.summary, "rows": faces.rows}, f)
        with atomic_write(building / KEY_FILE) as f:
            f.write(item.key)
        final = self.root / item.media_id
        if final.exists():
            old = building.with_name(f".{item.media_id}.old.tmp")
            _remove(old)
            final.rename(old)
            building.rename(final)
            _remove(old)
        else:
            building.rename(final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (no second copy of the crop on disk), or a copy across devices."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)

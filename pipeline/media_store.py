"""The folder of downloaded media: one finished file and one JSON record per item.

Every item passes through ``finalize``: the download lands in ``.partial/``, is decoded to prove it is
a real image or video, hashed, renamed to ``<media_id>.<ext>`` and only then recorded in
``<media_id>.json``. The record is what says "we have it": a download killed at any point leaves no
record, so the rerun fetches it again, and a file without a record is never listed. File names come
from media ids, never from titles.

yt-dlp's download archive is answered from the records too (``YtdlpArchive``), so the two can never
disagree; ``yt-dlp-archive.txt`` is written beside them for use with the yt-dlp command line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
from PIL import Image, UnidentifiedImageError

from pipeline.common import atomic_write, get_logger, sha256_file

MEDIA_COLUMNS = [
    "media_id", "source", "media_type", "url", "title", "uploader", "licence", "duration", "fps",
    "frame_count", "width", "height", "sha256", "path", "downloaded_at", "source_entry",
]
PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".3gp", ".flv"}
ARCHIVE_NAME = "yt-dlp-archive.txt"
log = get_logger("media")
ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the picture by a quarter
PARTIAL_DIR = ".partial"


class CorruptMedia(Exception):
    """The file is not a decodable image or video."""


def safe_id(text: str) -> str:
    """Keep an id to letters, digits, '_' and '-', so that it is safe as a file name."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    return cleaned[:100] or "x"


@dataclass
class Probe:
    media_type: str
    width: int
    height: int
    duration: float | None = None
    fps: float | None = None
    frame_count: int | None = None


def probe(path: Path) -> Probe:
    """Decode enough of ``path`` to know what it is and its size; raise ``CorruptMedia`` if it is neither."""
    try:
        with Image.open(path) as im:
            # a multi-frame image (an MPO from a camera, an animated GIF) is a photo: its first frame
            try:
                im.load()
            except (OSError, ValueError) as e:
                raise CorruptMedia(f"a {im.format} image that does not decode: {e}") from None
            # the size as shown, after the EXIF orientation that OpenCV applies when it reads the photo
            turned = im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
            return Probe("photo", *((im.height, im.width) if turned else im.size))
    except Image.DecompressionBombError as e:
        raise CorruptMedia(f"an image too large to decode safely: {e}") from None
    except UnidentifiedImageError:
        pass  # not an image: perhaps a video
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise CorruptMedia("neither an image nor a video that OpenCV can open")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise CorruptMedia("a video with no decodable frame")
        fps = cap.get(cv2.CAP_PROP_FPS)
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not fps or fps <= 0 or frames <= 0:
            raise CorruptMedia(f"a video without a usable frame rate ({fps}) or frame count ({frames})")
        height, width = frame.shape[:2]
        return Probe("video", width, height, round(frames / fps, 3), round(fps, 3), frames)
    finally:
        cap.release()


class MediaStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.partial = self.root / PARTIAL_DIR
        self.archive = self.root / ARCHIVE_NAME
        self.partial.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] = {}
        # taken down: the file is gone, the record stays (without the file) so that it is never fetched again
        self._tombstones: dict[str, dict[str, Any]] = {}
        for leftover in self.root.glob(".*.tmp"):  # a write killed half-way (atomic_write's temporary file)
            leftover.unlink()
        for record_path in sorted(self.root.glob("*.json")):
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
                media_id = record["media_id"]
                stored = None if record.get("taken_down") else self.root / record["path_in_store"]
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning(f"{record_path}: not a media record of this pipeline; ignored")
                continue
            if stored is None:
                self._tombstones[media_id] = record
            elif stored.is_file():
                self._records[media_id] = record
            else:  # the file went missing: forget it so that it is fetched again
                record_path.unlink()
        self._by_key: dict[str, str] = {}
        for media_id, record in [*self._records.items(), *self._tombstones.items()]:
            for key in record.get("lookup_keys", []):
                self._by_key[key] = media_id
        self.write_archive_file()

    # -- lookups ---------------------------------------------------------------------------------
    def has(self, media_id: str) -> bool:
        """Whether there is nothing to fetch for ``media_id``: it is here, or it was taken down."""
        return media_id in self._records or media_id in self._tombstones

    def records(self) -> dict[str, dict[str, Any]]:
        """The media here (taken-down ones not included), by media_id."""
        return dict(self._records)

    def taken_down(self) -> dict[str, dict[str, Any]]:
        return dict(self._tombstones)

    def find(self, key: str) -> str | None:
        """The media_id recorded under ``key`` (a URL or a yt-dlp archive id), if any."""
        return self._by_key.get(key)

    def partial_path(self, name: str) -> Path:
        return self.partial / name

    # -- writing ---------------------------------------------------------------------------------
    def finalize(self, tmp: Path, media_id: str, row: dict[str, Any], lookup_keys: list[str],
                 info: Probe | None = None) -> dict[str, Any]:
        """Check, hash and move a finished download into the store, then record it.

        ``row`` carries what the source told (source, url, title, uploader, licence, source_entry);
        what the file itself tells (type, size, duration, fps, sha256) is measured here, unless the
        caller already probed it (``info``).
        """
        try:
            info = info or probe(tmp)
        except CorruptMedia:
            tmp.unlink(missing_ok=True)
            raise
        ext = tmp.suffix.lower()
        allowed = PHOTO_EXTENSIONS if info.media_type == "photo" else VIDEO_EXTENSIONS
        if ext not in allowed:
            ext = ".jpg" if info.media_type == "photo" else ".mp4"
        final = self.root / f"{media_id}{ext}"
        for stale in self.root.glob(f"{media_id}.*"):
            if stale.suffix != ".json":
                stale.unlink()
        os.replace(tmp, final)
        record = {
            **{k: None for k in MEDIA_COLUMNS},
            **row,
            "media_id": media_id,
            "media_type": info.media_type,
            "duration": info.duration,
            "fps": info.fps,
            "frame_count": info.frame_count,
            "width": info.width,
            "height": info.height,
            "sha256": sha256_file(final),
            "path_in_store": final.name,
            "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "lookup_keys": sorted(set(lookup_keys)),
        }
        with atomic_write(self.root / f"{media_id}.json") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        self._records[media_id] = record
        for key in record["lookup_keys"]:
            self._by_key[key] = media_id
        return record

    def take_down(self, media_id: str, matched_by: str, reason: str) -> None:
        """Delete the media file of ``media_id`` and keep its record as a tombstone: which takedown entry
        matched it and why, and the keys that would otherwise fetch it again."""
        record = self._records.pop(media_id)
        tombstone = {key: record.get(key) for key in ("media_id", "source", "url", "uploader", "lookup_keys")}
        tombstone.update(taken_down=True, matched_by=matched_by, reason=reason, path_in_store=None,
                         taken_down_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        with atomic_write(self.root / f"{media_id}.json") as f:
            json.dump(tombstone, f, indent=1, sort_keys=True)
        (self.root / record["path_in_store"]).unlink(missing_ok=True)
        self._tombstones[media_id] = tombstone

    def import_file(self, src: Path, media_id: str, row: dict[str, Any], lookup_keys: list[str]) -> dict[str, Any]:
        """Copy a local file into the store (through ``.partial/``, like a download)."""
        tmp = self.partial_path(f"{media_id}{src.suffix.lower()}")
        shutil.copyfile(src, tmp)
        return self.finalize(tmp, media_id, row, lookup_keys)

    def write_archive_file(self) -> None:
        """Write the recorded yt-dlp items as a yt-dlp archive file."""
        lines = sorted(
            key[len("ytdlp:"):]
            for record in self._records.values()
            for key in record.get("lookup_keys", [])
            if key.startswith("ytdlp:") and not key.startswith("ytdlp:generic ")
        )
        text = "".join(f"{line}\n" for line in lines)
        if not self.archive.exists() or self.archive.read_text(encoding="utf-8") != text:
            with atomic_write(self.archive) as f:
                f.write(text)

    def ytdlp_archive(self) -> YtdlpArchive:
        return YtdlpArchive(self)

    def clear_partial(self) -> None:
        """Remove what is left in ``.partial/`` once the stage is done with it."""
        shutil.rmtree(self.partial, ignore_errors=True)

    def table_row(self, media_id: str, media_dir_in_table: Path, current: dict[str, Any] | None = None) -> dict[str, Any]:
        """The media table's row: the record, with what the source list says of the item now."""
        record = self._records[media_id]
        row = {k: record.get(k) for k in MEDIA_COLUMNS}
        row.update({k: v for k, v in (current or {}).items() if k in MEDIA_COLUMNS and v is not None})
        row["path"] = str(media_dir_in_table / record["path_in_store"])
        return row


class YtdlpArchive:
    """yt-dlp's ``download_archive``, answered from the store's records.

    yt-dlp asks ``archive_id in archive`` before it fetches and calls ``add`` once it has finished;
    by then the store has recorded the item (``finalize`` runs as a yt-dlp post-processor).
    Generic-extractor ids are file names, not unique across hosts: those items are known by URL.
    """

    def __init__(self, store: MediaStore):
        self.store = store

    def __contains__(self, archive_id: object) -> bool:
        return (isinstance(archive_id, str) and not archive_id.startswith("generic ")
                and self.store.find(f"ytdlp:{archive_id}") is not None)

    def add(self, archive_id: str) -> None:
        self.store.write_archive_file()

"""The folder of downloaded media: one finished file and one JSON record per item.

Every item passes through ``finalize``: the download lands in ``.partial/``, is decoded to prove it is
a real image or video, hashed, renamed to ``<media_id>.<ext>`` and only then recorded in
``<media_id>.json``. The record is what says "we have it": a download killed at any point leaves no
record, so the rerun fetches it again, and a file without a record is never listed. File names come
from media ids, never from titles.

The same bytes are one item: a download whose sha256 the store already holds keeps no second file; its
record is an alias (``alias_of`` the first item), with its own URL, licence and lookup keys, so that it
too is never fetched again. ``source_listings.json`` remembers which items each source entry gave the
last time it could be listed, so that a source that cannot be listed today keeps what it gave.

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
# The one list of the suffixes that name a photo or a video, for every stage and tool that tells them by name
# (download, the store, inference); tests/test_media_suffixes.py checks that each decodes as what it names.
PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".3gp", ".flv"}
ARCHIVE_NAME = "yt-dlp-archive.txt"
LISTINGS_NAME = "source_listings.json"
PROVENANCE = ("source", "url", "title", "uploader", "licence", "source_entry")
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
        if path.suffix.lower() in PHOTO_EXTENSIONS:  # named, or served, as a photo: not worth trying as a video
            raise CorruptMedia(f"a photo ({path.suffix.lower()}) that no image decoder can read") from None
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
        decoded = decodable_frames(cap, path, frames, fps)
        if decoded < frames:
            log.warning(f"{path.name}: {decoded} of the {frames} frames its container announces decode; its "
                        f"duration is taken as {decoded / fps:.2f} s, not {frames / fps:.2f} s")
        return Probe("video", width, height, round(decoded / fps, 3), round(fps, 3), decoded)
    finally:
        cap.release()


def decodable_frames(cap: cv2.VideoCapture, path: Path, frames: int, fps: float) -> int:
    """How many frames of the video decode: all ``frames`` when the last one does (one seek), else those
    that decode from the start (a cut file: its container still announces the whole length)."""
    cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
    ok, _ = cap.read()
    # past a cut, OpenCV's seek lands on the last frame it could decode: its timestamp tells
    if ok and abs(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000 - (frames - 1) / fps) <= 1.5 / fps:
        return frames
    again = cv2.VideoCapture(str(path))
    try:
        decoded = 0
        while decoded < frames and again.grab():
            decoded += 1
        return decoded
    finally:
        again.release()


class MediaStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.partial = self.root / PARTIAL_DIR
        self.archive = self.root / ARCHIVE_NAME
        self.partial.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] = {}
        # taken down: the file is gone, the record stays (without the file) so that it is never fetched again
        self._tombstones: dict[str, dict[str, Any]] = {}
        # other sources of bytes the store holds: no file of their own, the record says whose they are
        self._aliases: dict[str, dict[str, Any]] = {}
        for leftover in self.root.glob(".*.tmp"):  # a write killed half-way (atomic_write's temporary file)
            leftover.unlink()
        for record_path in sorted(self.root.glob("*.json")):
            if record_path.name == LISTINGS_NAME:
                continue
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
                media_id = record["media_id"]
                has_file = not (record.get("taken_down") or record.get("alias_of"))
                stored = self.root / record["path_in_store"] if has_file else None
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning(f"{record_path}: not a media record of this pipeline; ignored")
                continue
            if record.get("alias_of"):
                self._aliases[media_id] = record
            elif stored is None:
                self._tombstones[media_id] = record
            elif stored.is_file():
                self._records[media_id] = record
            else:  # the file went missing: forget it so that it is fetched again
                record_path.unlink()
        for media_id, record in list(self._aliases.items()):
            if not (record["alias_of"] in self._records or record["alias_of"] in self._tombstones):
                del self._aliases[media_id]  # the file it shares went missing: fetched again, like that file
                (self.root / f"{media_id}.json").unlink()
        self._by_key: dict[str, str] = {}
        self._by_sha: dict[str, str] = {}
        for media_id, record in sorted([*self._records.items(), *self._tombstones.items()],
                                       key=lambda item: (item[1].get("downloaded_at") or "", item[0])):
            first = self._by_sha.setdefault(record.get("sha256") or media_id, media_id)
            if first != media_id and media_id in self._records:  # stored twice by an older version: one item
                record = self._records.pop(media_id)
                self._add_alias(media_id, first, record["sha256"], record, record.get("lookup_keys", []))
                (self.root / record["path_in_store"]).unlink()  # the same bytes stay in the first's file
        for media_id, record in [*self._records.items(), *self._tombstones.items(), *self._aliases.items()]:
            for key in record.get("lookup_keys", []):
                self._by_key[key] = media_id
        self.write_archive_file()

    # -- lookups ---------------------------------------------------------------------------------
    def has(self, media_id: str) -> bool:
        """Whether there is nothing to fetch for ``media_id``: it is here (perhaps as another source of the
        same bytes), or it was taken down."""
        return media_id in self._records or media_id in self._tombstones or media_id in self._aliases

    def resolve(self, media_id: str) -> str:
        """The item ``media_id`` is: itself, or the first source of the same bytes."""
        return self._aliases[media_id]["alias_of"] if media_id in self._aliases else media_id

    def record_of(self, media_id: str) -> dict[str, Any]:
        """What the store knows of ``media_id``: its record, its alias record or its tombstone."""
        return self._records.get(media_id) or self._aliases.get(media_id) or self._tombstones.get(media_id) or {}

    def aliases_of(self, media_id: str) -> list[dict[str, Any]]:
        return [record for record in self._aliases.values() if record["alias_of"] == media_id]

    def listing(self, source_key: str) -> list[str]:
        """The media ids the source entry ``source_key`` gave the last time it could be listed."""
        path = self.root / LISTINGS_NAME
        if not path.exists():
            return []
        try:
            return list(json.loads(path.read_text(encoding="utf-8")).get(source_key, []))
        except (ValueError, AttributeError):
            log.warning(f"{path}: unreadable; what each source gave before is not known")
            return []

    def save_listings(self, listings: dict[str, list[str]]) -> None:
        with atomic_write(self.root / LISTINGS_NAME) as f:
            json.dump(listings, f, indent=1, sort_keys=True)

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
        sha256 = sha256_file(tmp)
        if (first := self._by_sha.get(sha256)) not in (None, media_id):
            tmp.unlink()
            return self._add_alias(media_id, first, sha256, row, lookup_keys)
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
            "sha256": sha256,
            "path_in_store": final.name,
            "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "lookup_keys": sorted(set(lookup_keys)),
        }
        with atomic_write(self.root / f"{media_id}.json") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        self._records[media_id] = record
        self._by_sha[sha256] = media_id
        for key in record["lookup_keys"]:
            self._by_key[key] = media_id
        return record

    def _add_alias(self, media_id: str, first: str, sha256: str, row: dict[str, Any],
                   lookup_keys: list[str]) -> dict[str, Any]:
        record = {**{k: row.get(k) for k in PROVENANCE}, "media_id": media_id, "alias_of": first, "sha256": sha256,
                  "path_in_store": None, "lookup_keys": sorted(set(lookup_keys)),
                  "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with atomic_write(self.root / f"{media_id}.json") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        log.info(f"media: {media_id} is the same file as {first}: recorded as another source of it")
        self._aliases[media_id] = record
        for key in record["lookup_keys"]:
            self._by_key[key] = media_id
        return record

    def take_down(self, media_id: str, matched_by: str, reason: str) -> None:
        """Delete the media file of ``media_id`` and keep its record as a tombstone: which takedown entry
        matched it and why, and the keys that would otherwise fetch it again."""
        record = self._records.pop(media_id)
        # the hash stays, so that the same bytes from another URL count as taken down too
        tombstone = {key: record.get(key) for key in ("media_id", "source", "url", "uploader", "lookup_keys", "sha256")}
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
            for record in [*self._records.values(), *self._aliases.values()]
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

"""Video downloads through yt-dlp's Python API: YouTube videos, playlists and channels, Flickr videos,
and any direct video URL (yt-dlp's generic extractor).

A URL is first listed (a playlist or channel gives its entries, flat, without fetching them), then
each video not yet in the media store is downloaded on its own, so that one private or removed
video is one failure and the others go on. yt-dlp writes into ``.partial/`` and resumes a ``.part``
file left by a killed run; a post-processor hands the finished file to ``MediaStore.finalize``
before yt-dlp records it in its download archive.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.extractor import gen_extractor_classes
from yt_dlp.postprocessor import PostProcessor
from yt_dlp.utils import DownloadError, PostProcessingError, make_archive_id

from pipeline.common import get_logger, short_hash
from pipeline.media_store import CorruptMedia, MediaStore, probe, safe_id

log = get_logger("videos")

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# extractors whose entries are lists of videos, not videos (a channel's Videos, Shorts and Live tabs)
PLAYLIST_EXTRACTORS = {"YoutubeTab", "YoutubePlaylist"}
SOURCE_BY_EXTRACTOR = {"youtube": "youtube", "youtubetab": "youtube", "flickr": "flickr", "generic": "url"}


@dataclass
class Outcome:
    """What became of one item: ``new``, ``had`` or ``failed`` (with the reason)."""

    status: str
    url: str
    media_id: str | None = None
    reason: str | None = None
    row: dict[str, Any] | None = None  # what the source list says of the item now (provenance, entry)
    unlisted: bool = False  # failed: the source itself could not be listed or reached, not one of its items


@dataclass
class _Request:
    """What the caller knows about the URL being downloaded, beyond what yt-dlp extracts."""

    url: str
    media_id: str | None
    row: dict[str, Any]
    record: dict[str, Any] | None = None
    rejected: str | None = None


def clean_error(error: Exception | str) -> str:
    """yt-dlp's message without colour codes, its 'ERROR:' prefix, or a repeated cause."""
    text = ANSI.sub("", str(error)).strip()
    text = re.sub(r"^ERROR:\s*", "", text)
    return re.sub(r"\s*\(caused by .*\)$", "", text, flags=re.S)


def megabytes(size: int) -> str:
    """A size in MB as people write it: 1.63, 0.07, 4096."""
    return f"{size / 1e6:.2f}".rstrip("0").rstrip(".")


def over_size(announced: int | None, arrived: int, max_file_mb: float) -> str | None:
    """Why a download is refused under ``download.max_file_mb``, from the size the server announced, or
    else from what has arrived so far; None while it is within the cap."""
    limit = max_file_mb * 1e6
    if announced and announced > limit:
        return f"the server says {megabytes(announced)} MB, over download.max_file_mb = {max_file_mb} MB"
    if arrived > limit:
        return f"more than {max_file_mb} MB arrived, over download.max_file_mb = {max_file_mb} MB"
    return None


def media_id_for(info: dict[str, Any]) -> str:
    """``<source>-<the source's own id>``; a generic URL's id is a hash of the URL itself."""
    extractor = (info.get("extractor_key") or "generic").lower()
    if extractor == "generic":
        return f"url-{short_hash(info.get('original_url') or info['webpage_url'])}"
    return f"{SOURCE_BY_EXTRACTOR.get(extractor, extractor)}-{safe_id(str(info['id']))}"


def archive_id_for_url(url: str) -> str | None:
    """The archive id yt-dlp would give ``url``, when it can tell it from the URL alone (no network)."""
    for ie in gen_extractor_classes():
        if ie.ie_key() == "Generic" or not ie.suitable(url):
            continue
        temp_id = ie.get_temp_id(url)
        return make_archive_id(ie.ie_key(), temp_id) if temp_id else None
    return None


class _YtdlpLogger:
    """yt-dlp's chatter goes to debug; its errors are reported by the caller as failures."""

    def debug(self, msg: str) -> None:
        log.debug(ANSI.sub("", msg))

    info = debug
    error = debug

    def warning(self, msg: str) -> None:
        log.warning(ANSI.sub("", msg))


class _Finalize(PostProcessor):
    """Runs after yt-dlp has the whole file and before it writes its archive line."""

    def __init__(self, downloader: VideoDownloader):
        super().__init__()
        self.owner = downloader

    def run(self, info: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        request = self.owner.request
        media_id = request.media_id or media_id_for(info)
        from_info = {
            "source": SOURCE_BY_EXTRACTOR.get((info.get("extractor_key") or "").lower(), info.get("extractor_key")),
            "url": info.get("webpage_url") or request.url,
            "title": info.get("title"),
            "uploader": info.get("uploader") or info.get("channel"),
            "licence": info.get("license"),
        }
        row = {**from_info, **{k: v for k, v in request.row.items() if v is not None}}
        keys = [f"url:{request.url}", f"url:{row['url']}"]
        if info.get("extractor_key") and info.get("id"):
            keys.append(f"ytdlp:{make_archive_id(info['extractor_key'], info['id'])}")
        path = Path(info["filepath"])
        try:
            measured = probe(path)
            limit = self.owner.max_duration
            if limit and (measured.duration or 0) > limit:  # a direct URL: yt-dlp could not tell the length before
                path.unlink()
                request.rejected = f"{measured.duration:.0f} s long, over download.youtube.max_duration = {limit} s"
                raise PostProcessingError(request.rejected)
            request.record = self.owner.store.finalize(path, media_id, row, keys, measured)
        except CorruptMedia as e:
            path.unlink(missing_ok=True)
            raise PostProcessingError(f"corrupt video: {e}") from None
        return [], info


class VideoDownloader:
    def __init__(self, store: MediaStore, params: dict[str, Any]):
        self.store = store
        self.request: _Request | None = None
        yt = params["youtube"]
        height = int(yt["max_height"])
        staging = str(store.partial / "yt-dlp")
        options = {
            # Video only, as mp4 when offered: faces need no sound, and no ffmpeg merge is needed.
            "format": (f"bv*[height<=?{height}][ext=mp4]/b[height<=?{height}][ext=mp4]/"
                       f"bv*[height<=?{height}]/b[height<=?{height}]"),
            # H.264 first: yt-dlp ranks AV1 above it, and OpenCV's bundled FFmpeg cannot decode AV1
            "format_sort": ["vcodec:h264", "res", "fps"],
            "outtmpl": "%(extractor_key)s-%(id)s.%(ext)s",
            "paths": {"home": staging, "temp": staging},
            "restrictfilenames": True,
            "download_archive": store.ytdlp_archive(),
            "retries": params["retries"],
            "fragment_retries": params["retries"],
            "extractor_retries": params["retries"],
            "socket_timeout": params["timeout"],
            "ratelimit": params.get("rate_limit"),
            "sleep_interval_requests": params.get("sleep_interval") or None,
            "extract_flat": "in_playlist",
            "playlistend": params["max_items_per_source"],
            "match_filter": self._match_filter,
            "continuedl": True,
            "quiet": True,
            "noprogress": True,
            "logger": _YtdlpLogger(),
        }
        self.max_duration = yt.get("max_duration")
        self.max_file_mb = params.get("max_file_mb")
        # checked by a progress hook rather than yt-dlp's max_filesize, which checks only a Content-Length
        # and gives no reason: the hook sees the announced size with the first block, and every block after
        options["progress_hooks"] = [self._check_size]
        self.ydl = yt_dlp.YoutubeDL(options)
        self.ydl.add_post_processor(_Finalize(self), when="after_move")

    def __enter__(self) -> VideoDownloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ydl.close()

    def _match_filter(self, info: dict[str, Any], *, incomplete: bool) -> str | None:
        if incomplete:  # a playlist entry not yet extracted: judged when it is
            return None
        reason = None
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
            reason = "a live stream, not a finished video"
        elif self.max_duration and (info.get("duration") or 0) > self.max_duration:
            reason = f"{info['duration']:.0f} s long, over download.youtube.max_duration = {self.max_duration} s"
        if reason and self.request:
            self.request.rejected = reason
        return reason

    def _check_size(self, status: dict[str, Any]) -> None:
        if not self.max_file_mb or status.get("status") != "downloading":
            return
        reason = over_size(status.get("total_bytes"), status.get("downloaded_bytes") or 0, self.max_file_mb)
        if reason:
            if self.request:
                self.request.rejected = reason
            raise DownloadError(reason)

    def _known(self, url: str) -> str | None:
        media_id = self.store.find(f"url:{url}")
        if media_id is None and (archive_id := archive_id_for_url(url)):
            media_id = self.store.find(f"ytdlp:{archive_id}")
        return media_id

    def fetch(self, url: str, *, media_id: str | None = None, row: dict[str, Any] | None = None) -> Iterator[Outcome]:
        """Every video behind ``url`` (one, or a playlist's entries), downloaded unless already had."""
        row = row or {}
        if known := self._known(url):
            yield Outcome("had", url, known, row=row)
            return
        self.request = _Request(url, media_id, row)
        try:
            info = self.ydl.extract_info(url, download=False)
        except DownloadError as e:
            yield Outcome("failed", url, reason=clean_error(e), unlisted=True)
            return
        if info is None:
            yield Outcome("failed", url, reason="yt-dlp found nothing at this URL", unlisted=True)
            return
        if info.get("_type") not in ("playlist", "multi_video"):
            yield self._download(url, lambda: self.ydl.process_ie_result(info, download=True), media_id, row)
            return
        entries = list(info.get("entries") or [])
        # what the source list says of a playlist (licence, uploader) holds for its videos; its URL
        # and title do not
        entry_row = {k: v for k, v in row.items() if k not in ("url", "title")}
        if not entries:
            yield Outcome("failed", url, reason="an empty playlist or channel", unlisted=True)
        for entry in entries:
            entry_url = entry.get("url") or entry.get("webpage_url")
            if entry.get("_type") == "playlist" or entry.get("ie_key") in PLAYLIST_EXTRACTORS:
                yield from self.fetch(entry_url, row=entry_row)  # a channel's tab: a playlist of its own
                continue
            archive_id = make_archive_id(entry["ie_key"], entry["id"]) if entry.get("ie_key") and entry.get("id") else None
            known = self.store.find(f"ytdlp:{archive_id}") if archive_id else self._known(entry_url)
            if known:
                yield Outcome("had", entry_url, known, row=entry_row)
            else:
                yield self._download(
                    entry_url,
                    lambda: self.ydl.extract_info(entry_url, ie_key=entry.get("ie_key"), download=True),
                    None, entry_row,
                )

    def _download(self, url: str, run: Any, media_id: str | None, row: dict[str, Any]) -> Outcome:
        self.request = request = _Request(url, media_id, row)
        try:
            run()
        except DownloadError as e:
            return Outcome("failed", url, reason=request.rejected or clean_error(e))
        finally:
            self.request = None
        if request.record is not None:
            return Outcome("new", url, request.record["media_id"], row=row)
        return Outcome("failed", url, reason=request.rejected or "yt-dlp downloaded no file")

"""download stage: fetch every item of the source list into the media store, with its provenance.

Reads the source list (``sources.yaml``), the takedown list (``takedown.yaml``) and
``params.yaml:download``. Writes the media files and their records under ``data/media/``, the media
table (one row per item the source list reaches), the failures table (one row per item that could not
be had, with the reason), the takedowns table (the media taken down, see ``pipeline/takedown.py``) and a
small metrics JSON.

A rerun fetches nothing the store already has. One dead URL, private video or corrupt file is a row
in the failures table, not the end of the stage; the stage fails only when nothing at all could be
had. Secrets come from the environment: ``FLICKR_API_KEY``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline.common import (
    StageError, atomic_write, get_logger, load_params, progress, run_stage, sha256_file, short_hash, write_table,
)
from pipeline.flickr import FlickrClient, FlickrError, FlickrItem
from pipeline.media_store import MEDIA_COLUMNS, PHOTO_EXTENSIONS, VIDEO_EXTENSIONS, CorruptMedia, MediaStore
from pipeline.sources import FLICKR_ALBUM_URL, FLICKR_PHOTO_URL, Source, load_sources
from pipeline.takedown import TAKEDOWN_COLUMNS, load_takedowns, matching
from pipeline.videos import Outcome, VideoDownloader

log = get_logger("download")

FAILURE_COLUMNS = ["line", "kind", "source_entry", "url", "reason"]
USER_AGENT = "fer-pipeline/0.1 (facial-expression dataset research)"


def http_session(params: dict[str, Any]) -> requests.Session:
    retry = Retry(total=params["retries"], backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=("GET", "HEAD"))
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Downloader:
    """Turns each source entry into outcomes, fetching through HTTP, yt-dlp or the Flickr API."""

    def __init__(self, store: MediaStore, params: dict[str, Any], videos: VideoDownloader):
        self.store = store
        self.params = params
        self.videos = videos
        self.session = http_session(params)
        self._flickr: FlickrClient | None = None

    def outcomes(self, source: Source) -> Iterator[Outcome]:
        handler = getattr(self, f"_{source.kind}")
        try:
            yield from handler(source)
        except FlickrError as e:
            yield Outcome("failed", source.get("url", ""), reason=str(e))
        except requests.RequestException as e:
            yield Outcome("failed", source.get("url", ""), reason=f"request failed: {e}")

    # -- kinds ------------------------------------------------------------------------------------
    def _youtube(self, source: Source) -> Iterator[Outcome]:
        yield from self.videos.fetch(source["url"], row={"source_entry": source.label})

    def _url(self, source: Source) -> Iterator[Outcome]:
        url = source["url"]
        row = {"source": "url", "source_entry": source.label, "url": url, "title": source.get("title"),
               "uploader": source.get("uploader"), "licence": source.get("licence")}
        media_id = f"url-{short_hash(url)}"
        if self.store.has(media_id):
            yield Outcome("had", url, media_id, row=row)
        elif url_suffix(url) in PHOTO_EXTENSIONS or (url_suffix(url) not in VIDEO_EXTENSIONS and self._is_image(url)):
            yield self._photo(url, media_id, row)
        else:
            yield from self.videos.fetch(url, row=row)

    def _is_image(self, url: str) -> bool:
        """Whether the server says ``url`` is an image (for URLs whose name does not tell, as on CDNs)."""
        try:
            response = self.session.head(url, allow_redirects=True, timeout=self.params["timeout"])
        except requests.RequestException:
            return False  # let yt-dlp try, and report what went wrong
        return response.headers.get("Content-Type", "").startswith("image/")

    def _file(self, source: Source) -> Iterator[Outcome]:
        path = Path(source["path"]).expanduser()
        if not path.is_file():
            yield Outcome("failed", str(path), reason="no such file")
            return
        media_id = f"file-{sha256_file(path)[:16]}"
        row = {"source": "file", "source_entry": source.label, "url": path.resolve().as_uri(),
               "title": source.get("title") or path.stem, "uploader": source.get("uploader"),
               "licence": source.get("licence")}
        if self.store.has(media_id):
            yield Outcome("had", str(path), media_id, row=row)
            return
        try:
            self.store.import_file(path, media_id, row, [])
        except CorruptMedia as e:
            yield Outcome("failed", str(path), reason=f"corrupt file: {e}")
            return
        yield Outcome("new", str(path), media_id, row=row)

    def _flickr_search(self, source: Source) -> Iterator[Outcome]:
        items = self.flickr.search(
            text=source.get("text"), tags=source.get("tags"), tag_mode=source.get("tag_mode", "any"),
            user_id=source.get("user_id"), licenses=self._flickr_licenses(source),
            media=source.get("media", "all"), limit=source.get("max_results", self.params["max_items_per_source"]),
        )
        yield from self._flickr_items(source, items)

    def _flickr_album(self, source: Source) -> Iterator[Outcome]:
        if "url" in source.spec:
            user_id, album_id = FLICKR_ALBUM_URL.search(source["url"]).groups()
        else:
            user_id, album_id = source["user_id"], source["album_id"]
        items = self.flickr.album(album_id, user_id, self.params["max_items_per_source"])
        yield from self._flickr_items(source, items)

    def _flickr_photo(self, source: Source) -> Iterator[Outcome]:
        photo_id = FLICKR_PHOTO_URL.search(source["url"]).group(2) if "url" in source.spec else source["photo_id"]
        if self.store.has(f"flickr-{photo_id}"):  # asked for by id: no need to ask Flickr again
            yield Outcome("had", source.get("url", photo_id), f"flickr-{photo_id}", row={"source_entry": source.label})
            return
        yield from self._flickr_items(source, [self.flickr.photo(photo_id)])

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def flickr(self) -> FlickrClient:
        if self._flickr is None:
            key = os.environ.get("FLICKR_API_KEY")
            if not key:
                raise FlickrError("FLICKR_API_KEY is not set; get a key at flickr.com/services/api and export it")
            flickr = self.params["flickr"]
            self._flickr = FlickrClient(flickr["api_url"], flickr["web_url"], key, self.session,
                                        self.params["timeout"], flickr["sizes"], flickr["per_page"])
        return self._flickr

    def _flickr_licenses(self, source: Source) -> list[int]:
        return source.get("licenses") or self.params["flickr"]["licenses"]

    def _flickr_items(self, source: Source, items: Any) -> Iterator[Outcome]:
        allowed = set(self._flickr_licenses(source))
        for item in items:
            # the licence as Flickr gives it now, checked for items already downloaded too
            if item.license_id not in allowed:
                yield Outcome("failed", item.page_url, reason=(
                    f"licence '{self.flickr.licence_name(item.license_id)}' (id {item.license_id}) is not "
                    f"among the allowed ones (download.flickr.licenses or the entry's 'licenses')"))
                continue
            yield from self._flickr_item(source, item, f"flickr-{item.photo_id}")

    def _flickr_item(self, source: Source, item: FlickrItem, media_id: str) -> Iterator[Outcome]:
        row = {"source": "flickr", "source_entry": source.label, "url": item.page_url, "title": item.title,
               "uploader": item.owner_name, "licence": self.flickr.licence_name(item.license_id)}
        if self.store.has(media_id):
            yield Outcome("had", item.page_url, media_id, row=row)
        elif item.media == "video":
            yield from self.videos.fetch(item.page_url, media_id=media_id, row=row)
        elif item.image_url is None:
            yield Outcome("failed", item.page_url, reason="Flickr offers none of the sizes in download.flickr.sizes")
        else:
            yield self._photo(item.image_url, media_id, row)

    def _photo(self, url: str, media_id: str, row: dict[str, Any]) -> Outcome:
        suffix = url_suffix(url)
        tmp = self.store.partial_path(f"{media_id}{suffix if suffix in PHOTO_EXTENSIONS else '.jpg'}")
        try:
            with self.session.get(url, stream=True, timeout=self.params["timeout"]) as response:
                response.raise_for_status()
                kind = response.headers.get("Content-Type", "").split(";")[0].strip()
                if kind and not kind.startswith("image/") and kind != "application/octet-stream":
                    return Outcome("failed", url, reason=f"not an image: the server sent {kind}")
                with open(tmp, "wb") as f:
                    for chunk in response.iter_content(1 << 16):
                        f.write(chunk)
            self.store.finalize(tmp, media_id, row, [f"url:{url}"])
        except requests.RequestException as e:
            tmp.unlink(missing_ok=True)
            return Outcome("failed", url, reason=f"download failed: {e}")
        except CorruptMedia as e:
            return Outcome("failed", url, reason=f"corrupt file: {e}")
        return Outcome("new", url, media_id, row=row)


def url_suffix(url: str) -> str:
    return Path(urlparse(url).path).suffix.lower()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=Path("sources.yaml"), help="the source list")
    parser.add_argument("--media-dir", type=Path, default=Path("data/media"))
    parser.add_argument("--table", type=Path, default=Path("data/media.csv"))
    parser.add_argument("--failures", type=Path, default=Path("data/download_failures.csv"))
    parser.add_argument("--takedown", type=Path, default=Path("takedown.yaml"), help="the takedown list")
    parser.add_argument("--takedowns", type=Path, default=Path("data/takedowns.csv"),
                        help="the media taken down, for the push stage")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/download.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("download", args.params)
    sources = load_sources(args.sources)
    takedowns = load_takedowns(args.takedown)
    store = MediaStore(args.media_dir)

    media_ids: dict[str, dict[str, Any] | None] = {}  # source-list order, each item once, with its current row
    failures: list[dict[str, Any]] = []
    counts = {"new": 0, "had": 0, "failed": 0}
    with VideoDownloader(store, params) as videos:
        downloader = Downloader(store, params, videos)
        bar = progress(sources, "download", unit="source")
        for source in bar:
            for outcome in downloader.outcomes(source):
                counts[outcome.status] += 1
                if outcome.status == "failed":
                    where = source.label if outcome.url in source.label else f"{source.label}: {outcome.url}"
                    log.warning(f"{where}: {outcome.reason}")
                    failures.append({"line": source.line, "kind": source.kind, "source_entry": source.label,
                                     "url": outcome.url, "reason": outcome.reason})
                else:
                    media_ids.setdefault(outcome.media_id, outcome.row)
                bar.set_postfix(counts)
    store.clear_partial()
    for media_id, record in store.records().items():
        current = {**record, **{k: v for k, v in (media_ids.get(media_id) or {}).items() if v is not None}}
        if entry := matching(takedowns, current):
            store.take_down(media_id, entry.label, entry.reason)
            log.warning(f"download: {media_id} taken down ({args.takedown}, {entry.label}: {entry.reason})")
    gone = store.taken_down()
    media_ids = {m: row for m, row in media_ids.items() if m not in gone}
    write_table(pd.DataFrame(list(gone.values()), columns=TAKEDOWN_COLUMNS), args.takedowns)

    media = pd.DataFrame([store.table_row(m, args.media_dir, row) for m, row in media_ids.items()], columns=MEDIA_COLUMNS)
    media = media.astype({"frame_count": "Int64", "width": "Int64", "height": "Int64"})
    write_table(media, args.table)
    write_table(pd.DataFrame(failures, columns=FAILURE_COLUMNS), args.failures)
    videos_only = media[media.media_type == "video"]
    metrics = {"media": len(media), "videos": len(videos_only), "photos": int((media.media_type == "photo").sum()),
               "video_seconds": round(float(videos_only.duration.sum()), 1), "failures": len(failures)}
    with atomic_write(args.metrics) as f:
        json.dump({"download": metrics}, f, indent=2)

    summary = f"download: {len(media)} media ({counts['new']} new, {counts['had']} already had), {len(failures)} failed"
    if gone:
        summary += f", {len(gone)} taken down"
    if failures:
        summary += f"; reasons in {args.failures}"
    print(summary)
    if media.empty:
        raise StageError(f"nothing could be downloaded from {args.sources}: every entry failed "
                         f"({len(failures)} failures, listed in {args.failures})")
    return 0


if __name__ == "__main__":
    run_stage(main)

"""download stage: fetch every item of the source list into the media store, with its provenance.

Reads the source list (``--sources``, else ``download.sources``: ``sources.yaml``, the sample's), the
takedown list (``takedown.yaml``) and ``params.yaml:download``. Writes the media files and their records
under ``data/media/``, the media table (one row per item the source list reaches), the aliases table (the
other sources of an item's very bytes: their URLs and licences), the failures table (one row per item that
could not be had, with the reason), the takedowns table (the media taken down, see
``pipeline/takedown.py``) and a small metrics JSON.

A rerun fetches nothing the store already has. One dead URL, private video, corrupt or oversized file
is a row in the failures table, not the end of the stage; the stage fails only when nothing at all
could be had. An outage never shrinks what was had: when a source cannot be listed or reached (the
Flickr API down, no key, a playlist that does not list), the media it gave the last time stay in the
table, marked as not re-checked this run with the reason. Only the source list and the takedown list
remove media. Secrets come from the environment: ``FLICKR_API_KEY``.
"""

from __future__ import annotations

import argparse
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
    StageError, get_logger, load_params, progress, run_stage, sha256_file, short_hash, write_metrics, write_table,
)
from pipeline.flickr import FlickrClient, FlickrError, FlickrItem
from pipeline.media_store import (
    MEDIA_COLUMNS, PHOTO_EXTENSIONS, PROVENANCE, VIDEO_EXTENSIONS, CorruptMedia, MediaStore,
)
from pipeline.sources import FLICKR_ALBUM_URL, FLICKR_PHOTO_URL, PROVENANCE_FIELDS, Source, load_sources
from pipeline.takedown import TAKEDOWN_COLUMNS, check_all_match, load_takedowns, matching
from pipeline.videos import Outcome, VideoDownloader, megabytes, over_size

log = get_logger("download")

TABLE_COLUMNS = [*MEDIA_COLUMNS, "checked_this_run", "unchecked_reason"]
ALIAS_COLUMNS = ["media_id", *PROVENANCE]
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
            yield Outcome("failed", source.get("url", ""), reason=str(e), unlisted=True)
        except requests.RequestException as e:
            yield Outcome("failed", source.get("url", ""), reason=f"request failed: {e}", unlisted=True)

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
            yield Outcome("failed", str(path), reason="no such file", unlisted=True)
            return
        cap = self.params.get("max_file_mb")
        if cap and path.stat().st_size > cap * 1e6:
            yield Outcome("failed", str(path), reason=f"{megabytes(path.stat().st_size)} MB, over "
                                                      f"download.max_file_mb = {cap} MB")
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
                length = response.headers.get("Content-Length", "")
                cap, arrived = self.params.get("max_file_mb"), 0
                if cap and (too_big := over_size(int(length) if length.isdigit() else None, 0, cap)):
                    return Outcome("failed", url, reason=too_big)  # before a byte of it is read
                with open(tmp, "wb") as f:
                    for chunk in response.iter_content(1 << 16):
                        arrived += len(chunk)
                        if cap and (too_big := over_size(None, arrived, cap)):
                            f.close()
                            tmp.unlink()
                            return Outcome("failed", url, reason=too_big)
                        f.write(chunk)
            self.store.finalize(tmp, media_id, row, [f"url:{url}"])
        except requests.RequestException as e:
            tmp.unlink(missing_ok=True)
            return Outcome("failed", url, reason=f"download failed: {e}")
        except CorruptMedia as e:
            return Outcome("failed", url, reason=f"corrupt file: {e}")
        return Outcome("new", url, media_id, row=row)


class MediaTable:
    """The media table as the sources are gone through: each item once, in source-list order, with what
    the first source that reached it says of it; the other sources of its bytes as aliases; and what a
    source that could not be listed gave the last time it could."""

    def __init__(self, store: MediaStore):
        self.store = store
        self.rows: dict[str, dict[str, Any]] = {}  # media_id -> provenance now
        self.aliases: list[dict[str, Any]] = []
        self.checked: set[str] = set()  # reached this run
        self.unchecked: dict[str, str] = {}  # kept from a source that could not be listed: why
        self.listings: dict[str, list[str]] = {}  # source key -> the media it gave, for the next outage

    def add(self, source: Source, outcome: Outcome) -> str:
        """Record an item reached; return its media_id (the first source's, for the same bytes)."""
        media_id = self.store.resolve(outcome.media_id)
        self.checked.add(media_id)
        # what the store knows of the source reached (a known video's outcome says little), with what the
        # source list says of it now
        row = {**{k: self.store.record_of(outcome.media_id).get(k) for k in PROVENANCE},
               **{k: v for k, v in (outcome.row or {}).items() if v is not None}}
        first = self.rows.setdefault(media_id, row)
        if row.get("url") != first.get("url"):
            self.aliases.append({"media_id": media_id, **row})
        elif differ := sorted(k for k in PROVENANCE_FIELDS if row.get(k) not in (None, first.get(k))):
            # one item reached twice (a playlist's video also listed alone): one row, and a word on it
            log.warning(f"{source.label}: {media_id} is already {first['source_entry']}'s, whose "
                        + ", ".join(f"{k} {first.get(k)!r}" for k in differ) + " the table keeps, not "
                        + ", ".join(f"{row[k]!r}" for k in differ))
        return media_id

    def listed(self, source: Source, reached: list[str], unlisted: str | None) -> None:
        """Close a source: what it gave is remembered; if it could not be listed (``unlisted`` says why),
        what it gave the last time stays, marked as not re-checked."""
        if not unlisted:
            self.listings[source.key] = list(dict.fromkeys(reached))
            return
        before = [m for m in map(self.store.resolve, self.store.listing(source.key)) if m in self.store.records()]
        for media_id in before:
            if media_id not in self.rows:
                self.rows[media_id] = {"source_entry": source.label,
                                       **{k: source.get(k) for k in PROVENANCE_FIELDS if source.get(k)}}
                self.unchecked[media_id] = unlisted
        self.listings[source.key] = list(dict.fromkeys([*before, *reached]))

    def sources_of(self, media_id: str, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Every record a takedown may match for one item: its own as stored and with what the source list
        says of it now, and those of its other sources."""
        current = {**record, **{k: v for k, v in self.rows.get(media_id, {}).items() if v is not None}}
        return [record, current, *self.store.aliases_of(media_id),
                *[a for a in self.aliases if a["media_id"] == media_id]]


def url_suffix(url: str) -> str:
    return Path(urlparse(url).path).suffix.lower()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=None, help="the source list (default: download.sources)")
    parser.add_argument("--media-dir", type=Path, default=Path("data/media"))
    parser.add_argument("--table", type=Path, default=Path("data/media.csv"))
    parser.add_argument("--failures", type=Path, default=Path("data/download_failures.csv"))
    parser.add_argument("--takedown", type=Path, default=Path("takedown.yaml"), help="the takedown list")
    parser.add_argument("--takedowns", type=Path, default=Path("data/takedowns.csv"),
                        help="the media taken down, for the push stage")
    parser.add_argument("--aliases", type=Path, default=None,
                        help="the other sources of the same bytes (default: media_aliases.csv beside --table)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/download.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("download", args.params)
    args.sources = args.sources or Path(params["sources"])
    sources = load_sources(args.sources)
    takedowns = load_takedowns(args.takedown)
    store = MediaStore(args.media_dir)

    table = MediaTable(store)
    failures: list[dict[str, Any]] = []
    counts = {"new": 0, "had": 0, "failed": 0}
    with VideoDownloader(store, params) as videos:
        downloader = Downloader(store, params, videos)
        bar = progress(sources, "download", unit="source")
        for source in bar:
            reached, unlisted = [], None
            for outcome in downloader.outcomes(source):
                counts[outcome.status] += 1
                if outcome.status == "failed":
                    where = source.label if outcome.url in source.label else f"{source.label}: {outcome.url}"
                    log.warning(f"{where}: {outcome.reason}")
                    failures.append({"line": source.line, "kind": source.kind, "source_entry": source.label,
                                     "url": outcome.url, "reason": outcome.reason})
                    unlisted = unlisted or (outcome.reason if outcome.unlisted else None)
                else:
                    reached.append(table.add(source, outcome))
            table.listed(source, reached, unlisted)
            bar.set_postfix(counts)
    store.clear_partial()
    unchecked = {m: reason for m, reason in table.unchecked.items() if m not in table.checked}

    known = {m: table.sources_of(m, r) for m, r in [*store.records().items(), *store.taken_down().items()]}
    # every entry must match something before anything is deleted
    check_all_match(args.takedown, takedowns, known)
    for media_id, record in store.records().items():
        if entry := matching(takedowns, known[media_id]):
            store.take_down(media_id, entry.label, entry.reason)
            log.warning(f"download: {media_id} taken down ({args.takedown}, {entry.label}: {entry.reason})")
    gone = store.taken_down()
    rows = {m: row for m, row in table.rows.items() if m not in gone}
    aliases = [a for a in table.aliases if a["media_id"] not in gone]
    store.save_listings({key: [m for m in ids if m not in gone] for key, ids in table.listings.items()})
    write_table(pd.DataFrame(list(gone.values()), columns=TAKEDOWN_COLUMNS), args.takedowns)

    media = pd.DataFrame([{**store.table_row(m, args.media_dir, row), "checked_this_run": m not in unchecked,
                           "unchecked_reason": unchecked.get(m)} for m, row in rows.items()], columns=TABLE_COLUMNS)
    media = media.astype({"frame_count": "Int64", "width": "Int64", "height": "Int64"})
    write_table(media, args.table)
    write_table(pd.DataFrame(aliases, columns=ALIAS_COLUMNS), args.aliases or args.table.with_name("media_aliases.csv"))
    write_table(pd.DataFrame(failures, columns=FAILURE_COLUMNS), args.failures)
    videos_only = media[media.media_type == "video"]
    metrics = {"media": len(media), "videos": len(videos_only), "photos": int((media.media_type == "photo").sum()),
               "video_seconds": round(float(videos_only.duration.sum()), 1), "failures": len(failures),
               "not_rechecked": len(unchecked), "aliases": len(aliases)}
    write_metrics({"download": metrics}, args.metrics)

    kept = f", {len(unchecked)} kept from a source that could not be listed" if unchecked else ""
    summary = (f"download: {len(media)} media ({counts['new']} new, {counts['had']} already had{kept}), "
               f"{len(failures)} failed")
    if aliases:
        summary += f", {len(aliases)} other sources of the same bytes"
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

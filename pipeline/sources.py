"""The source list the researcher edits: which videos and photos the download stage fetches.

``sources.yaml`` holds one list, ``sources:``, one mapping per entry, each with a ``kind``:

- ``youtube``: ``url`` of a video, a playlist or a channel (anything yt-dlp can list);
- ``flickr_search``: ``text``, ``tags`` (list) and/or ``user_id``, optional ``tag_mode`` (any, all),
  ``licenses`` (Flickr licence ids; default ``download.flickr.licenses``), ``media`` (photos, videos,
  all) and ``max_results``;
- ``flickr_album``: ``url`` of the album, or ``album_id`` and ``user_id``;
- ``flickr_photo``: ``url`` of the photo page, or ``photo_id``;
- ``url``: a direct ``url`` of a photo or a video (or a page yt-dlp understands);
- ``file``: a local ``path``.

``url`` and ``file`` entries may carry ``title``, ``uploader`` and ``licence``, since nothing else
can tell them. A malformed list is refused with the file, the line and what was wrong; so is an entry
that repeats an earlier one (the same URL, path, album, photo or search) but says something else of it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from pipeline.common import StageError, get_logger
from pipeline.takedown import normal_url

log = get_logger("sources")

PROVENANCE_FIELDS = {"title", "uploader", "licence"}
FILTER_FIELDS = {"licenses", "media", "max_results"}  # what an entry keeps of what it points at

# kind -> (required field sets, any one of which must be present; optional fields)
KINDS: dict[str, tuple[list[set[str]], set[str]]] = {
    "youtube": ([{"url"}], set()),
    "flickr_search": (
        [{"text"}, {"tags"}, {"user_id"}],
        {"text", "tags", "tag_mode", "user_id", "licenses", "media", "max_results"},
    ),
    "flickr_album": ([{"url"}, {"album_id", "user_id"}], {"url", "album_id", "user_id"}),
    "flickr_photo": ([{"url"}, {"photo_id"}], {"url", "photo_id"}),
    "url": ([{"url"}], PROVENANCE_FIELDS),
    "file": ([{"path"}], PROVENANCE_FIELDS),
}

FLICKR_ALBUM_URL = re.compile(r"/photos/([^/]+)/(?:albums|sets)/(\d+)")
FLICKR_PHOTO_URL = re.compile(r"/photos/([^/]+)/(\d+)")


class SourceListError(StageError):
    """The source list cannot be used as written."""


@dataclass(frozen=True)
class Source:
    """One entry of the source list, checked."""

    kind: str
    line: int
    spec: dict[str, Any] = field(hash=False)

    def __getitem__(self, key: str) -> Any:
        return self.spec[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.spec.get(key, default)

    @property
    def target(self) -> str:
        """What the entry points at, as written."""
        return self.get("url") or self.get("path") or ", ".join(f"{k}={v}" for k, v in self.spec.items() if k != "kind")

    @property
    def label(self) -> str:
        """How failures and logs name this entry: its line and what it points at."""
        return f"line {self.line}: {self.kind} {self.target}"

    @property
    def key(self) -> str:
        """Which entry this is, whatever its line, its provenance or its filters: what it points at (a
        search by its query). Two entries with one key are one entry; the media store remembers by it what
        each entry gave the last time it could be listed."""
        if self.kind in ("youtube", "url"):
            return f"{self.kind} {normal_url(self['url'])}"
        if self.kind == "file":
            return f"file {os.path.abspath(os.path.expanduser(self['path']))}"
        if self.kind == "flickr_album":
            album = FLICKR_ALBUM_URL.search(self["url"]).group(2) if "url" in self.spec else self["album_id"]
            return f"flickr_album {album}"
        if self.kind == "flickr_photo":
            photo = FLICKR_PHOTO_URL.search(self["url"]).group(2) if "url" in self.spec else self["photo_id"]
            return f"flickr_photo {photo}"
        query = {k: self.get(k) for k in ("text", "tags", "tag_mode", "user_id")}
        return f"flickr_search {json.dumps(query, sort_keys=True)}"


def _node_value(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def _check_entry(node: yaml.Node, where: str) -> Source:
    line = node.start_mark.line + 1
    if not isinstance(node, yaml.MappingNode):
        raise SourceListError(f"{where}:{line}: an entry must be a mapping with a 'kind:', got {_node_value(node)!r}")
    spec = _node_value(node)
    kind = spec.get("kind")
    if kind not in KINDS:
        raise SourceListError(
            f"{where}:{line}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
        )
    alternatives, optional = KINDS[kind]
    allowed = {"kind"} | optional | set().union(*alternatives)
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SourceListError(
            f"{where}:{line}: {kind} entry has unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed - {'kind'}))}"
        )
    if not any(req <= spec.keys() for req in alternatives):
        need = " or ".join("+".join(sorted(req)) for req in alternatives)
        raise SourceListError(f"{where}:{line}: {kind} entry needs {need}")
    for key, value in spec.items():
        if key == "tags":
            if isinstance(value, str):
                value = spec["tags"] = [t.strip() for t in value.split(",") if t.strip()]
            if not (isinstance(value, list) and value and all(isinstance(t, str) for t in value)):
                raise SourceListError(f"{where}:{line}: 'tags' must be a list of words, got {value!r}")
        elif key == "licenses":
            if not (isinstance(value, list) and all(isinstance(v, int) for v in value)):
                raise SourceListError(f"{where}:{line}: 'licenses' must be a list of Flickr licence ids, got {value!r}")
        elif key == "max_results":
            if not (isinstance(value, int) and value > 0):
                raise SourceListError(f"{where}:{line}: 'max_results' must be a positive integer, got {value!r}")
        elif key in ("photo_id", "album_id"):
            if not re.fullmatch(r"\d+", str(value)):
                raise SourceListError(f"{where}:{line}: '{key}' must be a number, got {value!r}")
            spec[key] = str(value)
        elif not isinstance(value, str) or not value.strip():
            raise SourceListError(f"{where}:{line}: '{key}' must be a non-empty string, got {value!r}")
    if "url" in spec:
        parsed = urlparse(spec["url"])
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SourceListError(f"{where}:{line}: 'url' must be an http(s) URL, got {spec['url']!r}")
    if spec.get("tag_mode", "any") not in ("any", "all"):
        raise SourceListError(f"{where}:{line}: 'tag_mode' must be any or all, got {spec['tag_mode']!r}")
    if spec.get("media", "all") not in ("photos", "videos", "all"):
        raise SourceListError(f"{where}:{line}: 'media' must be photos, videos or all, got {spec['media']!r}")
    if kind == "flickr_album" and "url" in spec and not FLICKR_ALBUM_URL.search(spec["url"]):
        raise SourceListError(f"{where}:{line}: not a Flickr album URL (…/photos/USER/albums/ID): {spec['url']}")
    if kind == "flickr_photo" and "url" in spec and not FLICKR_PHOTO_URL.search(spec["url"]):
        raise SourceListError(f"{where}:{line}: not a Flickr photo URL (…/photos/USER/ID): {spec['url']}")
    return Source(kind=kind, line=line, spec=spec)


def load_sources(path: Path | str) -> list[Source]:
    """Read and check the source list; raise ``SourceListError`` naming the line at the first fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceListError(f"{path}: the source list does not exist") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SourceListError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if root is None:
        raise SourceListError(f"{path}: empty; expected a 'sources:' list")
    top = dict((k.value, v) for k, v in root.value) if isinstance(root, yaml.MappingNode) else {}
    entries = top.get("sources")
    if not isinstance(entries, yaml.SequenceNode):
        raise SourceListError(f"{path}:{root.start_mark.line + 1}: expected a top-level 'sources:' list")
    sources: dict[str, Source] = {}
    for node in entries.value:
        source = _check_entry(node, str(path))
        first = sources.setdefault(source.key, source)
        if first is source:
            continue
        # one item with two titles or licences would keep one of them without a word: say which to keep
        for field_name in sorted((first.spec.keys() | source.spec.keys()) & (PROVENANCE_FIELDS | FILTER_FIELDS)):
            if source.get(field_name) != first.get(field_name):
                raise SourceListError(
                    f"{path}:{source.line}: {source.kind} {source.target} is already line {first.line}'s, with another "
                    f"{field_name} ({source.get(field_name)!r}, not {first.get(field_name)!r}); keep one entry")
        log.warning(f"{path}:{source.line}: repeats line {first.line}; ignored")
    if not sources:
        raise SourceListError(f"{path}: the 'sources:' list is empty")
    return list(sources.values())

"""Shared fixtures: loopback servers over test media, and a scratch project to run stages in."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from annotation import server
from pipeline import download
from pipeline.mirror import RangeRequestHandler, serve

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample" / "media"
LABEL_STUDIO_VENV = REPO / ".label-studio" / "venv"


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio for the whole session, on 127.0.0.1; its document root is the folder in which
    tests put their projects, so that it can serve their face crops."""
    if not (LABEL_STUDIO_VENV / "bin" / "label-studio").exists():
        pytest.skip("Label Studio is not installed (make install puts it in .label-studio/venv)")
    root = tmp_path_factory.mktemp("ls-projects")
    home = tmp_path_factory.mktemp("ls-home")
    (home / "venv").symlink_to(LABEL_STUDIO_VENV)
    state = server.start(server.free_port(), home, files_root=root)
    yield {"root": root, "url": state["url"], "token": state["token"], "home": home}
    server.stop(home)


def recording_handler(requests: list[str], ranges: list[str]) -> type[RangeRequestHandler]:
    """A mirror handler that remembers every path and byte range asked for.

    Paths under ``/slow/`` answer only after 3 s, for timeouts.
    """

    class Handler(RangeRequestHandler):
        def send_head(self):  # noqa: ANN201
            requests.append(self.path.split("?")[0])
            if self.headers.get("Range"):
                ranges.append(self.headers["Range"])
            if self.path.startswith("/slow/"):
                time.sleep(3)
                self.path = self.path[len("/slow"):]
            return super().send_head()

    return Handler


class MediaServer:
    def __init__(self, root: Path, url: str, requests: list[str], ranges: list[str]):
        self.root = root
        self.url = url
        self.requests = requests
        self.ranges = ranges

    def fetched(self, name: str) -> int:
        """How many requests asked for ``name`` (a path under the root)."""
        return self.requests.count(f"/{name}")


@pytest.fixture(scope="session")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test media: the sample videos, three photos, a corrupt video and photo, an HTML page, two clips."""
    root = tmp_path_factory.mktemp("media")
    for name in ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4"):
        shutil.copy(SAMPLE / "videos" / name, root / name)
    for name in ("london_001_03.jpg", "london_002_08.jpg", "astronaut.jpg"):
        shutil.copy(SAMPLE / "photos" / name, root / name)
    # an mp4 header followed by noise: served as video/mp4, decodes to nothing
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 200)
    (root / "truncated.jpg").write_bytes((SAMPLE / "photos" / "astronaut.jpg").read_bytes()[:2000])
    (root / "page.html").write_text("<html><body>no image here</body></html>")
    # yt-dlp's generic extractor lists this page as a playlist of two videos, one of them gone
    (root / "two_clips.html").write_text(
        "<html><head><title>Two clips</title></head><body>"
        '<video src="single_face.mp4"></video><video src="removed.mp4"></video></body></html>'
    )
    return root


@pytest.fixture()
def media_server(media_root: Path) -> Iterator[MediaServer]:
    requests: list[str] = []
    ranges: list[str] = []
    with serve(media_root, handler=recording_handler(requests, ranges)) as url:
        yield MediaServer(media_root, url, requests, ranges)


class Project:
    """A scratch project folder: the repo's params.yaml, a source list, and the stage's outputs."""

    def __init__(self, root: Path):
        self.root = root
        self.params_file = root / "params.yaml"
        self.sources_file = root / "sources.yaml"
        self.media_dir = root / "data" / "media"
        self.table = root / "data" / "media.csv"
        self.failures_file = root / "data" / "download_failures.csv"
        self.metrics = root / "metrics" / "download.json"
        self.takedown_file = root / "takedown.yaml"
        self.takedowns = root / "data" / "takedowns.csv"
        self.takedown_file.write_text("takedown: []\n")
        shutil.copy(REPO / "params.yaml", self.params_file)
        self.set_params(timeout=5, retries=0)

    def set_params(self, **download_params: Any) -> None:
        params = yaml.safe_load(self.params_file.read_text())
        for key, value in download_params.items():
            section = params["download"]
            *parents, leaf = key.split("__")
            for parent in parents:
                section = section[parent]
            section[leaf] = value
        self.params_file.write_text(yaml.safe_dump(params, sort_keys=False))

    def write_sources(self, entries: list[dict[str, Any]]) -> None:
        self.sources_file.write_text(yaml.safe_dump({"sources": entries}, sort_keys=False))

    def argv(self) -> list[str]:
        return ["--sources", str(self.sources_file), "--media-dir", str(self.media_dir),
                "--table", str(self.table), "--failures", str(self.failures_file),
                "--metrics", str(self.metrics), "--params", str(self.params_file),
                "--takedown", str(self.takedown_file), "--takedowns", str(self.takedowns)]

    def download(self) -> int:
        return download.main(self.argv())

    def media(self) -> pd.DataFrame:
        return pd.read_csv(self.table)

    def failures(self) -> pd.DataFrame:
        return pd.read_csv(self.failures_file)


@pytest.fixture()
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)

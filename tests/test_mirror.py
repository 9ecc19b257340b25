"""The loopback mirror serves byte ranges as a video host does, so that yt-dlp can resume."""

import subprocess
import sys

import pytest
import requests

from pipeline.mirror import serve
from tests.conftest import REPO


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    (root / "clip.mp4").write_bytes(bytes(range(256)) * 4)
    with serve(root) as url:
        yield url


@pytest.mark.parametrize("header, status, body", [
    (None, 200, bytes(range(256)) * 4),
    ("bytes=10-19", 206, bytes(range(10, 20))),
    ("bytes=1020-", 206, bytes(range(252, 256))),
    ("bytes=-3", 206, bytes(range(253, 256))),
    ("bytes=5000-", 416, b""),
])
def test_ranges(served, header, status, body):
    response = requests.get(f"{served}/clip.mp4", headers={"Range": header} if header else {}, timeout=5)
    assert response.status_code == status
    assert response.content == body
    if status == 206:
        assert response.headers["Content-Range"].endswith("/1024")


def test_the_wrapper_runs_the_command_and_reports_a_taken_port(served):
    port = served.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "pipeline.mirror", "--port", port, "--", "true"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr
    done = subprocess.run([sys.executable, "-m", "pipeline.mirror", "--port", "0", "--",
                           sys.executable, "-c", "raise SystemExit(3)"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 3

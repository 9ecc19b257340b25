"""The faces stage keeps each media item's faces as a part, and a rerun processes only what changed."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from pipeline import face_parts
from pipeline import faces as faces_stage
from tests.conftest import SAMPLE
from tests.test_faces import LONDON, run_faces

SINGLE = {"media_id": "single", "media_type": "video", "path": str(SAMPLE / "videos" / "single_face.mp4")}
PHOTOS = [{"media_id": p.stem, "media_type": "photo", "path": str(p)} for p in LONDON[:3]]
MEDIA = [SINGLE, *PHOTOS]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One run over MEDIA, its folder copied for each test to go on from."""
    root = tmp_path_factory.mktemp("first")
    return root, run_faces(root, MEDIA)


@pytest.fixture
def project(first, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(first[0], root)
    return root


def processed(result) -> int:
    return result["metrics"]["media_processed"]


def test_a_rerun_reuses_every_part_and_gives_the_same_tables(first, project):
    before = (project / "faces.csv").read_text().replace(str(first[0]), str(project))  # the crops' new place
    again = run_faces(project, MEDIA)
    assert processed(first[1]) == 4 and processed(again) == 0 and again["metrics"]["media_reused"] == 4
    assert (project / "faces.csv").read_text() == before
    assert again["media"].reused.all() and not first[1]["media"].reused.any()
    on_disk = {str(p) for p in (project / "faces").rglob("*.jpg")}
    assert on_disk == set(again["faces"].crop_path) and len(on_disk) == len(again["faces"])


def test_an_added_item_is_the_only_one_processed(first, project, tmp_path):
    added = {"media_id": "added", "media_type": "photo", "path": str(LONDON[3])}
    again = run_faces(project, [*MEDIA, added])
    assert processed(again) == 1
    assert list(again["media"].index[~again["media"].reused]) == ["added"]
    fresh = run_faces(tmp_path / "fresh", [*MEDIA, added])["faces"]
    pd.testing.assert_frame_equal(again["faces"].drop(columns="crop_path"), fresh.drop(columns="crop_path"))


def test_a_removed_item_loses_its_part_and_its_crops(first, project):
    gone = PHOTOS[0]["media_id"]
    assert (project / "parts" / gone).is_dir()
    again = run_faces(project, [m for m in MEDIA if m["media_id"] != gone])
    assert processed(again) == 0
    assert not (project / "parts" / gone).exists() and not (project / "faces" / gone).exists()
    assert gone not in set(again["faces"].media_id) and gone not in again["media"].index


def test_other_bytes_under_the_same_path_are_processed_again(first, project):
    photo = project / "photo.jpg"
    shutil.copy(LONDON[0], photo)
    media = [*MEDIA, {"media_id": "swapped", "media_type": "photo", "path": str(photo)}]
    assert processed(run_faces(project, media)) == 1
    assert processed(run_faces(project, media)) == 0
    shutil.copy(LONDON[5], photo)  # another face, same path and media id
    again = run_faces(project, media)
    assert processed(again) == 1
    swapped = again["faces"][again["faces"].media_id == "swapped"]
    fresh = run_faces(project / "fresh", [{"media_id": "swapped", "media_type": "photo", "path": str(LONDON[5])}])
    assert list(swapped.x1) == list(fresh["faces"].x1)


def test_the_media_tables_sha256_keys_the_part(first, project):
    media = [{**m, "sha256": "a" * 64} for m in MEDIA]
    assert processed(run_faces(project, media)) == 4  # keyed by the table's hash now, not the file's
    media[1]["sha256"] = "b" * 64
    assert processed(run_faces(project, media)) == 1


def test_a_changed_detection_param_reprocesses_everything(first, project):
    again = run_faces(project, MEDIA, min_face_size=60)
    assert processed(again) == 4
    assert (again["faces"].x2 - again["faces"].x1).min() >= 50


def test_params_that_change_no_face_reprocess_nothing(first, project):
    kept = run_faces(project, MEDIA, drop_near_duplicates=True, device="cpu", engine="local", ray_workers=3)
    assert processed(kept) == 0
    assert 0 < len(kept["faces"]) < len(first[1]["faces"])
    assert (kept["faces"].near_duplicate_group == kept["faces"].face_id).all()
    assert {p.name for p in (project / "faces").rglob("*.jpg")} == {f"{f}.jpg" for f in kept["faces"].face_id}
    assert kept["media"].faces.sum() == len(kept["faces"])
    assert len(run_faces(project, MEDIA)["faces"]) == len(first[1]["faces"])  # all back, still reused


def test_a_new_detection_code_version_reprocesses_everything(first, project, monkeypatch):
    monkeypatch.setattr(faces_stage, "detection_code_version", lambda: "another version")
    assert processed(run_faces(project, MEDIA)) == 4


def test_the_code_version_ignores_comments_and_docstrings_but_not_code():
    code = 'def f(x):\n    """Doubles."""\n    return 2 * x  # twice\n'
    reworded = 'def f(x):\n    """Twice x."""\n\n    return 2 * x\n'
    assert face_parts.code_version([code]) == face_parts.code_version([reworded])
    assert face_parts.code_version([code]) != face_parts.code_version([code.replace("2 *", "3 *")])


def test_a_part_interrupted_while_written_is_never_taken_for_one(first, project, monkeypatch):
    shutil.rmtree(project / "parts" / "single")
    fsyncs = []

    def dies_on_the_third(fd):
        fsyncs.append(fd)
        if len(fsyncs) == 3:
            raise KeyboardInterrupt  # as a kill would stop it: between two crops
        os.fsync(fd)

    monkeypatch.setattr(face_parts.os, "fsync", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_faces(project, MEDIA)
    monkeypatch.undo()
    assert not (project / "parts" / "single").exists()
    assert [p.name for p in (project / "parts").iterdir() if p.name.startswith(".single.")]  # the half-made one
    again = run_faces(project, MEDIA)
    assert processed(again) == 1
    assert not [p for p in (project / "parts").iterdir() if p.name.startswith(".")]
    pd.testing.assert_frame_equal(again["faces"], first[1]["faces"].assign(
        crop_path=first[1]["faces"].crop_path.str.replace(str(first[0]), str(project))))

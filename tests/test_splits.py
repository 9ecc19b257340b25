"""VEMO-style splits: grouped by media, stratified by class, seeded."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from datasets import splits
from pipeline.common import StageError
from pipeline.emotions import EMOTIONS

PARAMS = {"ratios": {"train": 0.7, "val": 0.15, "test": 0.15}, "seed": 0, "external": None, "min_class_items": 100}


def crowd_of_videos(n_media: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A labels and a faces table: media of 1-40 faces each, a few emotions per media, skewed classes."""
    rng = np.random.default_rng(seed)
    class_p = np.array([0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17])
    faces, labels = [], []
    for m in range(n_media):
        media_id = f"youtube-{m:05d}"
        moods = rng.choice(7, size=rng.integers(1, 3), p=class_p)
        for k in range(int(rng.integers(1, 41))):
            face_id = f"{media_id}-{k * 200}-0"
            faces.append({"face_id": face_id, "media_id": media_id, "crop_path": f"data/faces/{media_id}/{face_id}.jpg"})
            labels.append({"face_id": face_id, "label": EMOTIONS[rng.choice(moods)]})
    return pd.DataFrame(labels), pd.DataFrame(faces)


def make_manifest(labels: pd.DataFrame, faces: pd.DataFrame, **params) -> pd.DataFrame:
    return splits.split_manifest(splits.labelled_faces(labels, faces, "labels.csv"), {**PARAMS, **params})


def test_no_media_on_two_sides_and_class_shares_follow_the_whole():
    labels, faces = crowd_of_videos(1500)
    manifest = make_manifest(labels, faces)
    assert len(manifest) == len(labels) and manifest.image_id.is_unique
    assert (manifest.groupby("group").split.nunique() == 1).all()
    sizes = manifest.split.value_counts(normalize=True)
    for split, ratio in PARAMS["ratios"].items():
        assert abs(sizes[split] - ratio) < 0.01, sizes
    gaps = splits.proportion_gap(manifest, min_items=PARAMS["min_class_items"])
    assert max(gaps.values()) <= 2.0, gaps


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    labels, faces = crowd_of_videos(300)
    first = make_manifest(labels, faces)
    again = make_manifest(labels.sample(frac=1, random_state=3), faces)  # row order does not matter either
    pd.testing.assert_frame_equal(first, again)
    other = make_manifest(labels, faces, seed=1)
    assert (first.split != other.split).any()


def test_a_split_with_a_zero_ratio_stays_empty_and_bad_ratios_are_refused():
    labels, faces = crowd_of_videos(50)
    manifest = make_manifest(labels, faces, ratios={"train": 0.8, "val": 0.0, "test": 0.2})
    assert "val" not in set(manifest.split)
    with pytest.raises(StageError, match="sum to 1"):
        make_manifest(labels, faces, ratios={"train": 0.8, "val": 0.3, "test": 0.2})


def test_unlabelled_faces_are_left_out_and_bad_labels_named():
    labels, faces = crowd_of_videos(5)
    labels.loc[0, "label"] = None
    assert len(make_manifest(labels, faces)) == len(labels) - 1
    labels.loc[3, "label"] = "smug"
    with pytest.raises(StageError, match=r"labels.csv, line 5: label 'smug'"):
        splits.labelled_faces(labels, faces, "labels.csv")
    with pytest.raises(StageError, match="not in the faces table"):
        splits.labelled_faces(pd.DataFrame({"face_id": ["nowhere-0-0"], "label": ["happy"]}), faces, "labels.csv")


def write_image(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((60, 50, 3), value, np.uint8))


def test_the_stage_merges_an_external_folder_and_writes_counts_chart_and_metrics(tmp_path):
    labels, faces = crowd_of_videos(40)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    faces.to_csv(tmp_path / "faces.csv", index=False)
    for i in range(30):  # AffectNet names its folders differently; an unknown folder is skipped
        write_image(tmp_path / "affectnet" / ("happiness" if i % 2 else "anger") / f"{i}.jpg", i)
    write_image(tmp_path / "affectnet" / "smirk" / "x.jpg", 1)
    params = {**PARAMS, "external": str(tmp_path / "affectnet")}
    (tmp_path / "params.yaml").write_text(json.dumps({"splits": params}))
    out = tmp_path / "out"
    splits.main(["--labels", str(tmp_path / "labels.csv"), "--faces", str(tmp_path / "faces.csv"),
                 "--manifest", str(out / "manifest.csv"), "--counts", str(out / "counts.csv"),
                 "--chart", str(out / "counts.png"), "--metrics", str(out / "metrics.json"),
                 "--params", str(tmp_path / "params.yaml")])
    manifest = pd.read_csv(out / "manifest.csv")
    external = manifest[manifest.source == "external"]
    assert len(external) == 30 and set(external.emotion) == {"happy", "angry"}
    assert set(external.split) == set(splits.SPLITS)  # single-image groups are spread like the rest
    counts = pd.read_csv(out / "counts.csv")
    assert len(counts) == 3 * len(EMOTIONS) and counts["count"].sum() == len(manifest)
    assert counts.set_index(["split", "emotion"])["count"].to_dict() == \
        manifest.groupby(["split", "emotion"]).size().reindex(counts.set_index(["split", "emotion"]).index,
                                                               fill_value=0).to_dict()
    assert cv2.imread(str(out / "counts.png")) is not None
    metrics = json.loads((out / "metrics.json").read_text())["splits"]
    assert sum(m["images"] for m in metrics.values()) == len(manifest)

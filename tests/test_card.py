"""The dataset card and contact sheet: every number comes from the tables, every class has its row."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from datasets import card
from pipeline.common import StageError
from pipeline.emotions import EMOTIONS


def write_project(root) -> None:
    media = pd.DataFrame({
        "media_id": ["youtube-a", "flickr-b", "flickr-c"], "source": ["youtube", "flickr", "flickr"],
        "media_type": ["video", "photo", "photo"], "uploader": ["Ann", "Bo", "Bo"],
        "licence": ["CC BY 4.0", "CC BY 2.0", "CC BY 2.0"], "duration": [12.5, None, None],
    })
    faces, labels, rows = [], [], []
    crops = root / "data" / "faces"
    crops.mkdir(parents=True)
    for i, (media_id, emotion, split) in enumerate([("youtube-a", "happy", "train")] * 6
                                                   + [("flickr-b", "sad", "val"), ("flickr-c", "happy", "test"),
                                                      ("flickr-c", None, None)]):
        face_id = f"{media_id}-{i}"
        path = crops / f"{face_id}.jpg"
        cv2.imwrite(str(path), np.full((40, 40, 3), 30 * i, np.uint8))
        faces.append({"face_id": face_id, "media_id": media_id, "crop_path": str(path)})
        labels.append({"face_id": face_id, "label": emotion})
        if emotion:
            rows.append({"image_id": face_id, "image": str(path), "label": EMOTIONS.index(emotion),
                         "emotion": emotion, "split": split, "group": media_id, "source": "vemo"})
    tables = {"media.csv": media, "faces.csv": pd.DataFrame(faces), "labels.csv": pd.DataFrame(labels),
              "annotators.csv": pd.DataFrame({"annotator": ["a1"], "votes": [9], "agreement_with_label": [0.9]}),
              "manifest.csv": pd.DataFrame(rows)}
    for name, table in tables.items():
        table.to_csv(root / name, index=False)
    (root / "annotation.json").write_text(json.dumps({"annotation": {
        "votes_simulated": True, "tasks_incomplete": 0, "fleiss_kappa": 0.41, "krippendorff_alpha": 0.42,
        "votes_counted": 90, "votes_not_counted": 1, "votes_blind": {"yes": 60, "unknown": 21, "simulated": 9}}}))
    (root / "fer2013").mkdir()
    (root / "fer2013" / "report.json").write_text(json.dumps({
        "rows_read": 71, "kept": {"train": 25, "val": 5, "test": 10}, "duplicate_groups": 2,
        "duplicate_groups_across_usages": 1, "duplicate_groups_conflicting_labels": 1, "constant_images": 1}))
    pd.DataFrame({"row_id": [1, 2, 3], "reason": ["constant", "near_duplicate", "near_duplicate"]}).to_csv(
        root / "fer2013" / "removed.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump({"card": {"faces_per_class": 4, "face_size": 32}}))


def run_card(root) -> int:
    out = root / "reports"
    return card.main(["--media", str(root / "media.csv"), "--faces", str(root / "faces.csv"),
                      "--labels", str(root / "labels.csv"), "--annotators", str(root / "annotators.csv"),
                      "--annotation-metrics", str(root / "annotation.json"), "--splits", str(root / "manifest.csv"),
                      "--fer2013", str(root / "fer2013"), "--card", str(out / "card.md"),
                      "--contact-sheet", str(out / "sheet.png"), "--params", str(root / "params.yaml")])


def test_the_card_counts_what_the_tables_hold(tmp_path):
    write_project(tmp_path)
    out = tmp_path / "reports"
    run_card(tmp_path)
    text = (out / "card.md").read_text()
    assert "| CC BY 2.0 | 2 | 1 |" in text and "| CC BY 4.0 | 1 | 1 |" in text  # licence, media, uploaders
    assert "3 (1 videos, 12.5 s of video; 2 photos)" in text
    assert "9 from 3 media" in text and "| faces labelled | 8 (1 without" in text
    assert "train 6 / val 1 / test 1" in text
    assert "| happy | 6 | 0 | 1 |" in text and "| sad | 0 | 1 | 0 |" in text
    assert "**simulated**" in text and "Fleiss' kappa 0.41" in text
    assert "60 of 90 votes were cast through the annotators' front, blind to the others' votes; 21 were" in text
    assert "| near_duplicate | 2 |" in text
    assert "No face is labelled angry, disgust, fear, neutral, surprise." in text
    assert "One media item (youtube-a) holds 6 of the 8" in text
    sheet = cv2.imread(str(out / "sheet.png"))
    assert sheet.shape[:2] == (32 * len(EMOTIONS), 32 * (2 + 4))
    assert sheet[32 * EMOTIONS.index("happy"):32 * EMOTIONS.index("happy") + 32, 64:].std() > 0  # faces drawn
    assert (sheet[:32, 64:] == 255).all()  # no angry face: blank tiles


def test_a_value_a_table_lacks_is_an_empty_cell_not_nan():
    table = pd.DataFrame({"annotator": ["a", "b"], "gold_accuracy": [np.nan, 0.5], "flag_reason": [None, "low"]})
    assert card.markdown_table(table).splitlines()[2:] == ["| a |  |  |", "| b | 0.5 | low |"]


def test_the_card_says_which_votes_were_cast_blind():
    assert card.blind_votes({"votes_blind": {"yes": 7, "unknown": 3, "simulated": 0}}) == (
        "7 of 10 votes were cast through the annotators' front, blind to the others' votes; 3 were cast straight "
        "to Label Studio, where the annotator could have seen the others' (whether they did is unknown).")
    assert card.blind_votes({"votes_blind": {"yes": 0, "unknown": 0, "simulated": 50}}) == (
        "0 of 50 votes were cast through the annotators' front, blind to the others' votes; 50 are the simulated "
        "crowd's, imported with the tasks: no person cast them.")
    assert card.blind_votes({"votes_blind": {"yes": 4, "unknown": 0, "simulated": 0}}) == (
        "4 of 4 votes were cast through the annotators' front, blind to the others' votes.")


def test_metrics_of_a_pull_that_did_not_record_blind_votes_are_named(tmp_path):
    write_project(tmp_path)
    metrics = json.loads((tmp_path / "annotation.json").read_text())
    del metrics["annotation"]["votes_blind"]
    (tmp_path / "annotation.json").write_text(json.dumps(metrics))
    with pytest.raises(StageError, match=rf"{tmp_path / 'annotation.json'}: no votes_blind .*dvc repro -f pull"):
        run_card(tmp_path)

"""The dataset card and contact sheet: every number comes from the tables, every class has its row."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import yaml

from datasets import card
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
        "votes_counted": 90, "votes_not_counted": 1}}))
    (root / "fer2013").mkdir()
    (root / "fer2013" / "report.json").write_text(json.dumps({
        "rows_read": 71, "kept": {"train": 25, "val": 5, "test": 10}, "duplicate_groups": 2,
        "duplicate_groups_across_usages": 1, "duplicate_groups_conflicting_labels": 1, "constant_images": 1}))
    pd.DataFrame({"row_id": [1, 2, 3], "reason": ["constant", "near_duplicate", "near_duplicate"]}).to_csv(
        root / "fer2013" / "removed.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump({"card": {"faces_per_class": 4, "face_size": 32}}))


def test_the_card_counts_what_the_tables_hold(tmp_path):
    write_project(tmp_path)
    out = tmp_path / "reports"
    card.main(["--media", str(tmp_path / "media.csv"), "--faces", str(tmp_path / "faces.csv"),
               "--labels", str(tmp_path / "labels.csv"), "--annotators", str(tmp_path / "annotators.csv"),
               "--annotation-metrics", str(tmp_path / "annotation.json"), "--splits", str(tmp_path / "manifest.csv"),
               "--fer2013", str(tmp_path / "fer2013"), "--card", str(out / "card.md"),
               "--contact-sheet", str(out / "sheet.png"), "--params", str(tmp_path / "params.yaml")])
    text = (out / "card.md").read_text()
    assert "| CC BY 2.0 | 2 | 1 |" in text and "| CC BY 4.0 | 1 | 1 |" in text  # licence, media, uploaders
    assert "3 (1 videos, 12.5 s of video; 2 photos)" in text
    assert "9 from 3 media" in text and "| faces labelled | 8 (1 without" in text
    assert "train 6 / val 1 / test 1" in text
    assert "| happy | 6 | 0 | 1 |" in text and "| sad | 0 | 1 | 0 |" in text
    assert "**simulated**" in text and "Fleiss' kappa 0.41" in text
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

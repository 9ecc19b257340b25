"""Build ``sample/fer2013_sample.csv``: a small FER2013-format file from the repository's own licence-clean sample media.

    python -m datasets.sample_fer2013 [--out sample/fer2013_sample.csv]

FER2013 has no open licence and cannot ship with the demo, so the fer2013 stage runs on this stand-in:
the faces of ``sample/media`` (their licences are in ``sample/ATTRIBUTION.md``), found by the project's
own MTCNN detector (``pipeline.detection``, with ``params.yaml:faces``) in every photo and in video
frames every ``--every`` seconds (``pipeline.sampling``), cropped square and tight as FER2013's are,
grey, 48x48, and labelled from ``sample/reference_labels.csv`` (faces whose label is not one of
FER2013's seven emotions are left out). Usage is drawn with a fixed seed, about 70/15/15 Training /
PublicTest / PrivateTest, and rows are ordered by Usage as in FER2013.

A few rows are dirty on purpose, so that the cleaning has something to show: a blank (constant)
image, a byte-identical copy of a PrivateTest image placed in Training, and a byte-identical copy of
a Training image with a different label. The file is deterministic: the same media give the same
bytes on every run.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from annotation.reference_labels import label_at, read_reference_labels
from datasets.fer2013_read import SIDE, USAGES
from pipeline.common import atomic_write, get_logger, load_params, run_stage
from pipeline.crops import crop_face
from pipeline.detection import FaceDetector
from pipeline.emotions import EMOTIONS
from pipeline.sampling import read_photo, read_samples

log = get_logger("sample_fer2013")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample"
USAGE_SHARES = [0.70, 0.15, 0.15]
SEED = 2013
MARGIN = 0.05  # FER2013's crops are tight: little more than the detector's box


def face_crop(detector: FaceDetector, image: np.ndarray) -> np.ndarray | None:
    """The largest face of ``image``, square and tight, grey, 48x48; None when there is no face."""
    faces = detector.detect([image])[0]
    if not faces:
        return None
    face = max(faces, key=lambda f: f.size)
    whole = replace(face, box=np.round(face.box))  # whole pixels: the crop does not depend on float noise
    return crop_face(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), whole, MARGIN, SIDE, square=True)


def collect(every: float) -> list[dict]:
    """One row per labelled face of the sample media: media, time, label, 48x48 grey image."""
    torch.set_num_threads(1)  # one thread: the same floating-point sums, hence the same boxes, every run
    detector = FaceDetector(load_params("faces", REPO / "params.yaml"), torch.device("cpu"))
    labels = read_reference_labels(SAMPLE / "reference_labels.csv")
    rows = []
    for video in sorted((SAMPLE / "media" / "videos").glob("*.mp4")):
        media = f"videos/{video.name}"
        for sample in read_samples(video, 1.0 / every):
            label = label_at(labels, media, sample.timestamp)
            face = face_crop(detector, sample.image) if label in EMOTIONS else None
            if face is not None:
                rows.append({"media": media, "time": sample.timestamp, "label": label, "image": face})
    for photo in sorted((SAMPLE / "media" / "photos").glob("*.jpg")):
        media = f"photos/{photo.name}"
        label = label_at(labels, media, None)
        face = face_crop(detector, read_photo(photo).image) if label in EMOTIONS else None
        if face is not None:
            rows.append({"media": media, "time": None, "label": label, "image": face})
    return rows


def with_usage_and_dirt(rows: list[dict]) -> pd.DataFrame:
    """Rows with a seeded Usage and the three dirty rows, ordered by Usage as FER2013 is."""
    rng = np.random.default_rng(SEED)
    usage = rng.choice(USAGES, size=len(rows), p=USAGE_SHARES)
    table = pd.DataFrame(rows).assign(Usage=usage)
    table["dirt"] = ""
    train = table[table.Usage == "Training"]
    test = table[table.Usage == "PrivateTest"]
    copy_of_test = test.iloc[0].copy()
    copy_of_test["Usage"], copy_of_test["dirt"] = "Training", "copy of a PrivateTest image"
    conflicting = train.iloc[0].copy()
    conflicting["label"] = "surprise" if conflicting["label"] != "surprise" else "angry"
    conflicting["dirt"] = "copy of a Training image with another label"
    blank = {"media": "", "time": None, "label": "neutral", "image": np.full((SIDE, SIDE), 128, np.uint8),
             "Usage": "Training", "dirt": "constant image"}
    dirty = pd.DataFrame([copy_of_test.to_dict(), conflicting.to_dict(), blank])
    # the dirty rows go among the Training rows, not at the end, so that they are not trivially spotted
    table = pd.concat([train.iloc[:len(train) // 2], dirty, train.iloc[len(train) // 2:],
                       table[table.Usage == "PublicTest"], test], ignore_index=True)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SAMPLE / "fer2013_sample.csv")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between sampled video frames")
    args = parser.parse_args(argv)
    table = with_usage_and_dirt(collect(args.every))
    out = pd.DataFrame({
        "emotion": [EMOTIONS.index(label) for label in table.label],
        "pixels": [" ".join(map(str, image.ravel().tolist())) for image in table.image],
        "Usage": table.Usage,
    })
    with atomic_write(args.out, newline="") as f:
        out.to_csv(f, index=False)
    counts = table.groupby("Usage").size().reindex(USAGES, fill_value=0)
    print(f"sample_fer2013: {len(out)} rows ({', '.join(f'{u} {n}' for u, n in counts.items())}), "
          f"{(table.dirt != '').sum()} dirty on purpose, from {table.media[table.media != ''].nunique()} media; "
          f"{args.out.stat().st_size / 1e3:.0f} kB in {args.out}")
    return 0


if __name__ == "__main__":
    run_stage(main)

"""Emotions of the faces in photos and videos, from a trained model.

    python -m models.infer --model data/train/fer2013/model.pt photo.jpg clip.mp4 [--out faces.csv]

Faces are found with the faces stage's own code and params (``params.yaml:faces``: MTCNN, videos sampled
at ``faces.fps``), cropped the same way, and classified in batches of ``--batch-size``, preprocessed as the
model file says (``models.predict``: its input size, channels, mean and std). Prints one line
per face (the file, the time in a video, the box, the emotion and its probability); ``--out`` writes a
CSV with the probability of every class. A file that cannot be read is named and skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from datasets.batched import Preprocessing, resize
from models import predict, zoo
from pipeline.common import StageError, get_logger, load_params, pick_device, run_stage, write_table
from pipeline.crops import crop_face
from pipeline.detection import FaceDetector, detect_video
from pipeline.emotions import EMOTIONS
from pipeline.media_store import VIDEO_EXTENSIONS
from pipeline.sampling import Sample, UnreadableMedia, prefetch, read_photo, read_samples

log = get_logger("infer")


def faces_in(path: Path, detector: FaceDetector, params: dict[str, Any]) -> Iterator[tuple[Sample, Any]]:
    """Every sample of ``path`` (a photo is one) with each face found in it."""
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        detected = detect_video(detector, prefetch(read_samples(path, params["fps"])), params)
    else:
        photo = read_photo(path)
        detected = [(photo, detector.detect([photo.image])[0])]
    for sample, faces in detected:
        for face in faces:
            yield sample, face


def classify(model: torch.nn.Module, crops: list[np.ndarray], preprocessing: Preprocessing, device: torch.device,
             precision: str) -> np.ndarray:
    """Softmax outputs for BGR face crops, one batch, through the inference loop evaluation uses."""
    grey = [torch.from_numpy(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY)) for c in crops]
    batch = torch.cat([resize(g[None], preprocessing.input_size) for g in grey])
    return predict.probabilities(model, [(batch, None)], device, preprocessing, precision,
                                 desc="classify").cpu().numpy()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="photos and videos")
    parser.add_argument("--model", type=Path, default=Path("data/train/fer2013/model.pt"))
    parser.add_argument("--out", type=Path, help="a CSV with one row per face and every class's probability")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=zoo.PRECISIONS)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="for the faces section")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("faces", args.params)
    device = pick_device(args.device)
    model, info = predict.load_trained(args.model, device)
    detector = FaceDetector(params, pick_device(params["device"]))
    rows: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], np.ndarray]] = []

    def flush() -> None:
        probs = classify(model, [crop for _, crop in pending], info["preprocessing"], device, args.precision)
        for (row, _), p in zip(pending, probs):
            row.update(emotion=info["classes"][int(p.argmax())], probability=round(float(p.max()), 4),
                       **{f"p_{name}": round(float(q), 4) for name, q in zip(info["classes"], p)})
            rows.append(row)
            print(f"{row['file']}\t{row['timestamp']:.2f}s\t"
                  f"{row['x1']:.0f},{row['y1']:.0f},{row['x2']:.0f},{row['y2']:.0f}\t"
                  f"{row['emotion']}\t{row['probability']:.2f}")
        pending.clear()

    unreadable = 0
    for path in args.inputs:
        try:
            for sample, face in faces_in(path, detector, params):
                crop = crop_face(sample.image, face, params["margin"], info["preprocessing"].input_size,
                                 params["square"])
                box = dict(zip(["x1", "y1", "x2", "y2"], np.round(face.box, 1).tolist()))
                pending.append(({"file": str(path), "timestamp": sample.timestamp, **box}, crop))
                if len(pending) == args.batch_size:
                    flush()
        except (UnreadableMedia, FileNotFoundError) as e:
            log.error(f"infer: {path}: skipped: {e}")
            unreadable += 1
    if pending:
        flush()
    if args.out:
        columns = ["file", "timestamp", "x1", "y1", "x2", "y2", "emotion", "probability",
                   *[f"p_{name}" for name in EMOTIONS]]
        write_table(pd.DataFrame(rows, columns=columns), args.out)
    print(f"infer: {len(rows)} face(s) in {len(args.inputs) - unreadable} file(s)", file=sys.stderr)
    if unreadable == len(args.inputs):
        raise StageError("no input could be read")
    return 0


if __name__ == "__main__":
    run_stage(main)

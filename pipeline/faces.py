"""faces stage: every video sampled at ``faces.fps`` and every photo, cut into face crops.

Reads the media table (``data/media.csv``) and the media files, and ``params.yaml:faces``. Writes one
square JPEG crop per face under ``data/faces/<media_id>/``, the faces table (one row per crop), a
per-media table (samples, faces, status, speed), and a metrics JSON.

A face's id is ``<media_id>-<milliseconds>-<index>``: the media, the frame's own timestamp and the
face's place in the frame from left to right, so a rerun gives the same ids. A video that cannot be
decoded is recorded in the per-media table and skipped; a video without a face gives no rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.common import StageError, atomic_write, get_logger, load_params, progress, read_table, run_stage, write_table
from pipeline.detection import Face, FaceDetector, cpu_threads, detect_video, pick_device, resize, square_window
from pipeline.sampling import Sample, UnreadableMedia, prefetch, read_photo, read_samples

log = get_logger("faces")

LANDMARKS = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
FACE_COLUMNS = [
    "face_id", "media_id", "sample_index", "frame_index", "timestamp", "x1", "y1", "x2", "y2", "probability",
    *[f"{name}_{axis}" for name in LANDMARKS for axis in "xy"],
    "detection", "crop_path", "sharpness", "brightness", "dhash", "near_duplicate_group",
]
MEDIA_COLUMNS = ["media_id", "media_type", "status", "reason", "samples", "frames_with_faces", "faces",
                 "seconds", "speed"]


def crop_face(image: np.ndarray, face: Face, margin: float, size: int, square: bool) -> np.ndarray:
    """The face with ``margin`` (a fraction of its size) on every side, resized to ``size`` x ``size``."""
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    if square:
        w = h = max(w, h)
    crop = square_window(image, (x1 + x2) / 2, (y1 + y2) / 2, w * (0.5 + margin), h * (0.5 + margin))
    return resize(crop, size, size)


def dhash(grey: np.ndarray) -> int:
    """64-bit difference hash: whether each of 8x8 cells is brighter than its right neighbour."""
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


class NearDuplicates:
    """Groups consecutive crops of one media that look almost the same (dHash within ``max_bits``).

    A face joins a group that the previous sample continued if it is that close to the group's first
    crop (the one kept when near duplicates are dropped); otherwise it starts a group named after itself.
    Comparing with the first crop, not the latest, keeps a slow change of expression from drifting into
    one group.
    """

    def __init__(self, max_bits: int):
        self.max_bits = max_bits
        self.previous: list[tuple[int, str]] = []  # (hash of the group's first crop, group) of the last sample

    def group(self, faces: list[tuple[int, str]]) -> list[str]:
        groups, current = [], []
        for hash_, face_id in faces:
            best = min(self.previous, key=lambda p: (p[0] ^ hash_).bit_count(), default=None)
            if best is not None and (best[0] ^ hash_).bit_count() <= self.max_bits:
                groups.append(best[1])
                current.append(best)
            else:
                groups.append(face_id)
                current.append((hash_, face_id))
        self.previous = current
        return groups


class FaceCropper:
    def __init__(self, params: dict[str, Any], crops_dir: Path):
        self.params = params
        self.crops_dir = crops_dir
        device = pick_device(params["device"])
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        self.detector = FaceDetector(params, device)
        log.info(f"faces: MTCNN on {device}")

    def faces_of(self, media_id: str, media_type: str, path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Rows for every face of one media item, and its summary."""
        p = self.params
        started = time.perf_counter()
        if media_type == "photo":
            detected = [(s, self.detector.detect([s.image])[0]) for s in [read_photo(path)]]
        else:
            detected = detect_video(self.detector, prefetch(read_samples(path, p["fps"])), p)
        near = NearDuplicates(p["near_duplicate_bits"])
        rows, n_samples, with_faces, last_time = [], 0, 0, 0.0
        for sample, faces in detected:
            n_samples += 1
            with_faces += bool(faces)
            last_time = sample.timestamp
            rows += self._rows(media_id, sample, faces, near)
        seconds = time.perf_counter() - started
        if p["drop_near_duplicates"]:
            dropped = [r for r in rows if r["near_duplicate_group"] != r["face_id"]]
            for row in dropped:
                Path(row["crop_path"]).unlink()
            rows = [r for r in rows if r["near_duplicate_group"] == r["face_id"]]
        video_seconds = last_time + 1.0 / p["fps"] if media_type == "video" else None
        summary = {"media_id": media_id, "media_type": media_type, "status": "ok", "reason": None,
                   "samples": n_samples, "frames_with_faces": with_faces, "faces": len(rows),
                   "seconds": round(seconds, 3),
                   "speed": round(video_seconds / seconds, 2) if video_seconds else None}
        return rows, summary

    def _rows(self, media_id: str, sample: Sample, faces: list[Face], near: NearDuplicates) -> list[dict[str, Any]]:
        p = self.params
        rows, hashes = [], []
        for index, face in enumerate(faces):
            face_id = f"{media_id}-{round(sample.timestamp * 1000):08d}-{index}"
            crop = crop_face(sample.image, face, p["margin"], p["crop_size"], p["square"])
            grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
            crop_path = self.crops_dir / media_id / f"{face_id}.jpg"
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, p["jpeg_quality"]])
            with atomic_write(crop_path, "wb") as f:
                f.write(jpeg.tobytes())
            hash_ = dhash(grey)
            hashes.append((hash_, face_id))
            rows.append({
                "face_id": face_id, "media_id": media_id, "sample_index": sample.index,
                "frame_index": sample.frame_index, "timestamp": sample.timestamp,
                **dict(zip(["x1", "y1", "x2", "y2"], np.round(face.box, 1).tolist())),
                "probability": round(face.probability, 5),
                **{f"{name}_{axis}": round(float(face.landmarks[i][j]), 1)
                   for i, name in enumerate(LANDMARKS) for j, axis in enumerate("xy")},
                "detection": face.how, "crop_path": str(crop_path),
                "sharpness": round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 1),
                "brightness": round(float(grey.mean()), 1), "dhash": f"{hash_:016x}",
            })
        for row, group in zip(rows, near.group(hashes)):
            row["near_duplicate_group"] = group
        return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media-table", type=Path, default=Path("data/media.csv"))
    parser.add_argument("--crops", type=Path, default=Path("data/faces"))
    parser.add_argument("--table", type=Path, default=Path("data/faces.csv"))
    parser.add_argument("--per-media", type=Path, default=Path("data/faces_per_media.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/faces.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("faces", args.params)
    media = read_table(args.media_table)
    for column in ("media_id", "media_type", "path"):
        if column not in media.columns:
            raise StageError(f"{args.media_table}: has no {column} column (it has {', '.join(media.columns)}); "
                             f"rerun the download stage to make it anew")
    # every crop is made anew, as under dvc repro: a run killed half-way leaves no stray crop or temp file
    shutil.rmtree(args.crops, ignore_errors=True)
    cropper = FaceCropper(params, args.crops)
    rows, summaries = [], []
    for item in progress(list(media.itertuples()), "faces", unit="media"):
        try:
            face_rows, summary = cropper.faces_of(item.media_id, item.media_type, Path(item.path))
            if summary["samples"] == 0:
                raise UnreadableMedia(f"{item.path}: no frame could be decoded")
        except Exception as e:  # one bad file is recorded, not the end of the stage
            reason = str(e) if isinstance(e, UnreadableMedia) else f"{item.path}: {type(e).__name__}: {e}"
            log.warning(f"faces: {item.media_id}: skipped: {reason}")
            summaries.append({"media_id": item.media_id, "media_type": item.media_type, "status": "failed",
                              "reason": reason, "samples": 0, "frames_with_faces": 0, "faces": 0})
            shutil.rmtree(cropper.crops_dir / item.media_id, ignore_errors=True)
            continue
        rows += face_rows
        summaries.append(summary)
        line = f"faces: {item.media_id}: {summary['faces']} faces"
        if item.media_type == "video":  # one line per video; photos are many, and in the per-media table
            log.info(f"{line} in {summary['frames_with_faces']} of {summary['samples']} samples, "
                     f"{summary['speed']}x real time")
        else:
            log.debug(line)

    faces = pd.DataFrame(rows, columns=FACE_COLUMNS)
    per_media = pd.DataFrame(summaries, columns=MEDIA_COLUMNS)
    write_table(faces, args.table)
    write_table(per_media, args.per_media)
    failed = per_media[per_media.status == "failed"]
    metrics = {"media": len(per_media), "media_failed": len(failed), "samples": int(per_media.samples.sum()),
               "faces": len(faces), "near_duplicate_groups": int(faces.near_duplicate_group.nunique())}
    with atomic_write(args.metrics) as f:
        json.dump({"faces": metrics}, f, indent=2)
    print(f"faces: {len(faces)} faces from {len(per_media) - len(failed)} media "
          f"({int(per_media.samples.sum())} samples), {len(failed)} media unreadable")
    if len(per_media) and len(failed) == len(per_media):
        raise StageError(f"no media could be read; reasons in {args.per_media}")
    return 0


if __name__ == "__main__":
    run_stage(main)

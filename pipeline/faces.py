"""faces stage: every video sampled at ``faces.fps`` and every photo, cut into face crops.

Reads the media table (``data/media.csv``) and the media files, and ``params.yaml:faces``. Writes one
square JPEG crop per face under ``data/faces/<media_id>/``, the faces table (one row per crop), a
per-media table (samples, faces, status, speed, whether the item's faces were reused), and a metrics JSON.

A face's id is ``<media_id>-<milliseconds>-<index>``: the media, the frame's own timestamp and the
face's place in the frame from left to right, so a rerun gives the same ids. A video that cannot be
decoded is recorded in the per-media table and skipped; a video without a face gives no rows.

Incremental: each media item's faces are kept as a part (``pipeline.face_parts``) in ``--parts``
(``data/faces_parts``), keyed by the file's sha256, the params that change detection or cropping and the
version of that code. A run processes only the items whose part is missing or keyed otherwise, with
``faces.engine``: ``local`` (this process) or ``ray`` (a Ray cluster, ``pipeline.ray_engine``), then
assembles the tables and the crops folder from the parts of the media table's items; the parts of items
no longer in it go.
"""

from __future__ import annotations

import argparse
import inspect
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from pipeline.common import (StageError, format_face_id, get_logger, load_params, progress, read_table, run_stage,
                             sha256_file, write_metrics, write_table)
from pipeline.crops import NearDuplicates, crop_face, dhash
from pipeline.face_parts import ItemFaces, MediaItem, PartStore, code_version, link_or_copy, part_key
from pipeline.sampling import Sample, UnreadableMedia, prefetch, read_photo, read_samples

if TYPE_CHECKING:
    from pipeline.detection import Face

log = get_logger("faces")

LANDMARKS = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
FACE_COLUMNS = [
    "face_id", "media_id", "sample_index", "frame_index", "timestamp", "x1", "y1", "x2", "y2", "probability",
    *[f"{name}_{axis}" for name in LANDMARKS for axis in "xy"],
    "detection", "crop_path", "sharpness", "brightness", "dhash", "near_duplicate_group",
]
MEDIA_COLUMNS = ["media_id", "media_type", "status", "reason", "samples", "frames_with_faces", "faces",
                 "seconds", "speed", "reused"]
PACKAGE = Path(__file__).resolve().parent


class FaceCropper:
    """Finds and cuts the faces of one media item at a time, in memory; the caller keeps them as a part."""

    def __init__(self, params: dict[str, Any], threads: int | None = None):
        # here, not at the top: torch and facenet-pytorch (torchvision) take seconds to import, and a
        # rerun that reuses every part needs neither
        import torch

        from pipeline.common import pick_device
        from pipeline.detection import FaceDetector, cpu_threads

        self.params = params
        device = pick_device(params["device"])
        if device.type == "cpu":
            torch.set_num_threads(threads or cpu_threads())
        self.detector = FaceDetector(params, device)
        log.info(f"faces: MTCNN on {device}")

    def faces_of(self, media_id: str, media_type: str, path: Path) -> ItemFaces:
        """Every face of one media item: rows, crops and its summary."""
        from pipeline.detection import detect_video

        p = self.params
        started = time.perf_counter()
        if media_type == "photo":
            detected = [(s, self.detector.detect([s.image])[0]) for s in [read_photo(path)]]
        else:
            detected = detect_video(self.detector, prefetch(read_samples(path, p["fps"])), p)
        near = NearDuplicates(p["near_duplicate_bits"])
        faces = ItemFaces(media_id, {})
        n_samples, with_faces, last_time = 0, 0, 0.0
        for sample, found in detected:
            n_samples += 1
            with_faces += bool(found)
            last_time = sample.timestamp
            self._add(faces, sample, found, near)
        seconds = time.perf_counter() - started
        video_seconds = last_time + 1.0 / p["fps"] if media_type == "video" else None
        faces.summary = {"media_id": media_id, "media_type": media_type, "status": "ok", "reason": None,
                         "samples": n_samples, "frames_with_faces": with_faces, "faces": len(faces.rows),
                         "seconds": round(seconds, 3),
                         "speed": round(video_seconds / seconds, 2) if video_seconds else None}
        return faces

    def _add(self, faces: ItemFaces, sample: Sample, found: list[Face], near: NearDuplicates) -> None:
        p = self.params
        rows, hashes = [], []
        for index, face in enumerate(found):
            face_id = format_face_id(faces.media_id, sample.timestamp, index)
            crop = crop_face(sample.image, face, p["margin"], p["crop_size"], p["square"])
            grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, p["jpeg_quality"]])
            faces.crops[f"{face_id}.jpg"] = jpeg.tobytes()
            hash_ = int(dhash(grey[np.newaxis])[0])
            hashes.append((hash_, face_id))
            rows.append({
                "face_id": face_id, "media_id": faces.media_id, "sample_index": sample.index,
                "frame_index": sample.frame_index, "timestamp": sample.timestamp,
                **dict(zip(["x1", "y1", "x2", "y2"], np.round(face.box, 1).tolist())),
                "probability": round(face.probability, 5),
                **{f"{name}_{axis}": round(float(face.landmarks[i][j]), 1)
                   for i, name in enumerate(LANDMARKS) for j, axis in enumerate("xy")},
                "detection": face.how,
                "sharpness": round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 1),
                "brightness": round(float(grey.mean()), 1), "dhash": f"{hash_:016x}",
            })
        for row, group in zip(rows, near.group(hashes)):
            row["near_duplicate_group"] = group
        faces.rows += rows


def process(cropper: FaceCropper, item: MediaItem, path: Path | None = None) -> ItemFaces:
    """``item``'s faces, read from ``path`` (default: its own); one bad file is a recorded failure, not the end
    of the stage. An unreadable file's failure is kept like any part; any other is retried by the next run."""
    try:
        faces = cropper.faces_of(item.media_id, item.media_type, path or Path(item.path))
        if faces.summary["samples"] == 0:
            raise UnreadableMedia(f"{item.path}: no frame could be decoded")
        return faces
    except Exception as e:
        unreadable = isinstance(e, UnreadableMedia)
        reason = str(e) if unreadable else f"{item.path}: {type(e).__name__}: {e}"
        if path is not None:  # say which media it was, not where a worker put its copy
            reason = reason.replace(str(path), item.path)
        summary = {"media_id": item.media_id, "media_type": item.media_type, "status": "failed",
                   "reason": reason, "samples": 0, "frames_with_faces": 0, "faces": 0}
        return ItemFaces(item.media_id, summary, keep=unreadable)


def run_local(items: list[MediaItem], params: dict[str, Any]) -> Iterator[ItemFaces]:
    """Each item's faces, one item after another in this process."""
    if not items:
        return
    cropper = FaceCropper(params)
    for item in items:
        yield process(cropper, item)


def detection_code_version() -> str:
    """The version of the code whose change changes the faces found or their crops."""
    sources = [(PACKAGE / name).read_text(encoding="utf-8") for name in ("detection.py", "sampling.py", "crops.py")]
    return code_version([*sources, inspect.getsource(FaceCropper), inspect.getsource(process)])


def media_items(media: pd.DataFrame, media_table: Path, params: dict[str, Any]) -> list[MediaItem]:
    """The media table's items with their parts' keys; the sha256 is the table's (the download stage hashed
    the file it stored), else the file's own."""
    for column in ("media_id", "media_type", "path"):
        if column not in media.columns:
            raise StageError(f"{media_table}: has no {column} column (it has {', '.join(media.columns)}); "
                             f"rerun the download stage to make it anew")
    code = detection_code_version()
    items = []
    for row in media.itertuples():
        sha256 = getattr(row, "sha256", None)
        if not isinstance(sha256, str):
            try:
                sha256 = sha256_file(row.path)
            except OSError:  # the item fails when it is processed, with the reason; keyed so it is retried
                sha256 = "unreadable"
        items.append(MediaItem(str(row.media_id), row.media_type, str(row.path),
                               part_key(sha256, row.media_type, params, code)))
    return items


def run_engine(todo: list[MediaItem], params: dict[str, Any]) -> Iterator[ItemFaces]:
    """The items' faces from the engine ``faces.engine`` names (``pipeline.params`` allows local and ray)."""
    if params.get("engine", "local") == "ray":
        from pipeline.ray_engine import run_ray  # here: Ray takes seconds to import, and only this engine needs it

        return run_ray(todo, params)
    return run_local(todo, params)


def assemble(items: list[MediaItem], store: PartStore, crops_dir: Path, reused: set[str],
             failures: dict[str, dict[str, Any]], drop_near_duplicates: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The faces and per-media tables, and the crops folder, from the items' parts in the media table's order."""
    rows, summaries = [], []
    for item in items:
        part = store.read(item.media_id)
        if part is None:  # failed this run, and not kept
            summaries.append({**failures[item.media_id], "reused": False})
            continue
        kept = [r for r in part["rows"] if not drop_near_duplicates or r["near_duplicate_group"] == r["face_id"]]
        if kept:
            (crops_dir / item.media_id).mkdir(parents=True, exist_ok=True)
        for row in kept:
            crop = crops_dir / item.media_id / f"{row['face_id']}.jpg"
            link_or_copy(store.crop(item.media_id, crop.name), crop)
            rows.append({**row, "crop_path": str(crop)})
        summary = part["summary"]
        if summary["status"] == "ok":
            summary["faces"] = len(kept)
        summaries.append({**summary, "reused": item.media_id in reused})
    return pd.DataFrame(rows, columns=FACE_COLUMNS), pd.DataFrame(summaries, columns=MEDIA_COLUMNS)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media-table", type=Path, default=Path("data/media.csv"))
    parser.add_argument("--crops", type=Path, default=Path("data/faces"))
    parser.add_argument("--table", type=Path, default=Path("data/faces.csv"))
    parser.add_argument("--per-media", type=Path, default=Path("data/faces_per_media.csv"))
    parser.add_argument("--parts", type=Path, default=Path("data/faces_parts"),
                        help="each media item's faces, kept between runs")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/faces.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("faces", args.params)
    media = read_table(args.media_table)
    items = media_items(media, args.media_table, params)
    store = PartStore(args.parts)
    gone = store.clean({item.media_id for item in items})
    if gone:
        log.info(f"faces: removed the parts of {len(gone)} media no longer in {args.media_table}: {', '.join(gone)}")
    reused = {item.media_id for item in items if store.key(item.media_id) == item.key}
    todo = [item for item in items if item.media_id not in reused]
    print(f"faces: {len(items)} media: {len(todo)} to process, {len(reused)} reused from {args.parts}")

    by_id = {item.media_id: item for item in todo}
    failures = {}
    for faces in progress(run_engine(todo, params), "faces", total=len(todo), unit="media"):
        summary = faces.summary
        if faces.keep:
            store.write(by_id[faces.media_id], faces)
        if summary["status"] == "failed":
            log.warning(f"faces: {faces.media_id}: skipped: {summary['reason']}")
            failures[faces.media_id] = summary
        elif summary["media_type"] == "video":  # one line per video; photos are many, and in the per-media table
            log.info(f"faces: {faces.media_id}: {summary['faces']} faces in {summary['frames_with_faces']} of "
                     f"{summary['samples']} samples, {summary['speed']}x real time")
        else:
            log.debug(f"faces: {faces.media_id}: {summary['faces']} faces")

    # the crops folder is made anew from the parts, as under dvc repro (which removes it first)
    shutil.rmtree(args.crops, ignore_errors=True)
    faces, per_media = assemble(items, store, args.crops, reused, failures, params["drop_near_duplicates"])
    write_table(faces, args.table)
    write_table(per_media, args.per_media)
    failed = per_media[per_media.status == "failed"]
    metrics = {"media": len(per_media), "media_failed": len(failed), "media_processed": len(todo),
               "media_reused": len(reused), "samples": int(per_media.samples.sum()),
               "faces": len(faces), "near_duplicate_groups": int(faces.near_duplicate_group.nunique())}
    write_metrics({"faces": metrics}, args.metrics)
    print(f"faces: {len(faces)} faces from {len(per_media) - len(failed)} media "
          f"({int(per_media.samples.sum())} samples), {len(failed)} media unreadable; "
          f"{len(todo)} media processed, {len(reused)} reused")
    if len(per_media) and len(failed) == len(per_media):
        raise StageError(f"no media could be read; reasons in {args.per_media}")
    return 0


if __name__ == "__main__":
    run_stage(main)

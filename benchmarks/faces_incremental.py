"""What the faces stage's parts and engines cost, each figure beside its baseline measured in the same run.

(a) Incremental: the stage (``python -m pipeline.faces``, a process of its own, as ``dvc repro`` runs it) over
the sample's media but one video, then that video added and the stage rerun. Baselines: the stage over that
video alone (start-up included), the stage with every part reused (its start-up and assembly), and the
stage over everything from scratch (what every rerun cost before parts). Target: the rerun at most 1.5x the
video alone.

(b) Engines: the sample's media through the local engine and through Ray with 1 and 2 workers (a Ray started
for each, on this machine), in this process, from fresh. Per item: the seconds the worker spent on it
(``faces_per_media.csv``'s ``seconds``); start-up: until the first item came back, less that item's own
time; scheduler overhead per item: what the wall time holds beyond start-up and the items' work shared
evenly between the workers, per item (uneven shares, transfers and Ray's scheduling, together).

    uv run python benchmarks/faces_incremental.py [--repeats 3] [--skip-engines]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import faces as faces_stage  # noqa: E402
from pipeline.common import load_params  # noqa: E402

SAMPLE = REPO / "sample" / "media"
ADDED = "single_face"  # the video added to the others


def sample_media() -> list[dict]:
    videos = [{"media_id": p.stem, "media_type": "video", "path": str(p)} for p in sorted((SAMPLE / "videos").glob("*.mp4"))]
    photos = [{"media_id": p.stem, "media_type": "photo", "path": str(p)} for p in sorted((SAMPLE / "photos").glob("*.jpg"))]
    return videos + photos


def stage(root: Path, media: list[dict], params: dict) -> float:
    """Seconds of one run of the stage in its own process over ``media``, in ``root`` (its parts kept there)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump({"faces": params}))
    pd.DataFrame(media).to_csv(root / "media.csv", index=False)
    command = [sys.executable, "-m", "pipeline.faces", "--media-table", "media.csv", "--crops", "faces",
               "--table", "faces.csv", "--per-media", "per_media.csv", "--parts", "parts", "--metrics", "faces.json"]
    started = time.perf_counter()
    subprocess.run(command, cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True)
    return time.perf_counter() - started


def incremental(work: Path, params: dict, repeats: int) -> None:
    media = sample_media()
    base = [m for m in media if m["media_id"] != ADDED]
    full = stage(work / "full", media, params)
    stage(work / "base", base, params)
    reruns, alone, noop = [], [], []
    for i in range(repeats):
        run = work / f"rerun{i}"
        shutil.copytree(work / "base", run)
        reruns.append(stage(run, media, params))
        noop.append(stage(run, media, params))
        alone.append(stage(work / f"alone{i}", [m for m in media if m["media_id"] == ADDED], params))
    rerun, one, startup = statistics.median(reruns), statistics.median(alone), statistics.median(noop)
    print(f"(a) incremental: {len(base)} media processed, then {ADDED}.mp4 added; median of {repeats} runs, seconds")
    print(f"    rerun with it added           {rerun:7.2f}   ({len(base)} parts reused, 1 processed)")
    print(f"    baseline: {ADDED} alone      {one:7.2f}   (the stage over that one video, from scratch)")
    print(f"    baseline: every part reused   {startup:7.2f}   (the stage's start-up and assembly, no MTCNN)")
    print(f"    baseline: all {len(media)} from scratch   {full:7.2f}   (what each rerun cost before parts; one run)")
    verdict = "met" if rerun <= 1.5 * one else "MISSED"
    print(f"    rerun / alone = {rerun / one:.2f} (target <= 1.5: {verdict}); rerun / from scratch = {rerun / full:.2f}")


def engines(params: dict) -> None:
    from pipeline.face_parts import MediaItem

    media = sample_media()
    items = [MediaItem(m["media_id"], m["media_type"], m["path"], "") for m in media]
    configs = [("local", 1, {"engine": "local"}), ("ray", 1, {"engine": "ray", "ray_workers": 1}),
               ("ray", 2, {"engine": "ray", "ray_workers": 2})]
    print(f"\n(b) engines: the sample's {len(items)} media from fresh, on {os.cpu_count()} cores (the machine shared)")
    header = (f"    {'engine':8} {'workers':>7} {'cores':>5} {'wall s':>7} {'start-up s':>10} {'per item s':>10} "
              f"{'overhead/item s':>15} {'items/s':>7}")
    print(header)
    for engine, workers, change in configs:
        p = {**params, **change, "device": "cpu"}
        started = time.perf_counter()
        first, seconds = None, []
        for faces in faces_stage.run_engine(items, p):
            if first is None:
                first = time.perf_counter() - started - faces.summary.get("seconds", 0.0)
            seconds.append(faces.summary.get("seconds", 0.0))
        wall = time.perf_counter() - started
        # local: torch threads on every core but one, which decodes (pipeline.detection.cpu_threads); ray: the one
        # CPU Ray reserves for each worker (its decoding thread runs beside)
        cores = (os.cpu_count() or 1) if engine == "local" else workers
        overhead = (wall - first - sum(seconds) / workers) / len(items)
        print(f"    {engine:8} {workers:7d} {cores:5d} {wall:7.2f} {first:10.2f} {statistics.mean(seconds):10.3f} "
              f"{overhead:15.3f} {len(items) / wall:7.2f}")
    print("    per item: worker seconds, mean over the items (3 videos of 4-20 s, 23 photos); overhead per item:\n"
          "    (wall - start-up - work / workers) / items. On a cluster: wall ~ start-up + items x (per item /\n"
          "    workers + overhead per item)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-engines", action="store_true")
    args = parser.parse_args()
    params = load_params("faces", REPO / "params.yaml")
    with tempfile.TemporaryDirectory(prefix="faces-bench-") as work:
        incremental(Path(work), params, args.repeats)
    if not args.skip_engines:
        engines(params)


if __name__ == "__main__":
    main()

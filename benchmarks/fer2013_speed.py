"""How fast the fer2013 stage reads, checks and cleans the full FER2013, against a naive baseline measured in the same run.

Baseline: the obvious code: the csv module row by row, ``int()`` on every pixel, a NumPy array per row,
and an md5 digest per image into a dict for the byte-identical groups (no near duplicates, no face
check). Pipeline: the fer2013 stage's ``main`` as ``dvc repro`` runs it, without FER+ votes (so with
its image-based face check), every output written. The stage's time is the median of ``--repeats``
runs; the baseline runs once. The stage's counts are printed beside the facts of
``../shared/data/README.md``, and the image-based face check is scored against FER+'s unanimous
not-a-face rows (NF = 10 of 10 votes).

    python benchmarks/fer2013_speed.py [--repeats 3] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import lzma
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasets import fer2013 as stage  # noqa: E402
from datasets.fer2013_clean import ImageFaceCheck  # noqa: E402
from pipeline.common import load_params  # noqa: E402

DATA = REPO.parent / "shared" / "data"
FER2013_CSV = DATA / "fer2013" / "fer2013.csv.xz"
FERPLUS_CSV = DATA / "ferplus" / "fer2013new.csv"
EXPECTED = {"duplicate_groups": 1516, "duplicate_groups_across_usages": 557,
            "duplicate_groups_conflicting_labels": 57, "constant_images": 12}


def baseline(path: Path) -> tuple[float, int]:
    """Seconds for a naive parse and md5 duplicate pass, and the number of identical-image groups it finds."""
    started = time.perf_counter()
    images, groups = [], {}
    with lzma.open(path, "rt") as f:
        for row, record in enumerate(csv.DictReader(f)):
            image = np.array([int(p) for p in record["pixels"].split()], dtype=np.uint8).reshape(48, 48)
            images.append(image)
            groups.setdefault(hashlib.md5(image.tobytes()).hexdigest(), []).append(row)
    return time.perf_counter() - started, sum(len(rows) > 1 for rows in groups.values())


def run_stage_once(params: dict, out: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    stage.main(["--source", str(FER2013_CSV), "--out-dir", str(out / "fer2013"), "--metrics",
                str(out / "metrics.json")], params=params)
    seconds = time.perf_counter() - started
    return seconds, json.loads((out / "fer2013" / "report.json").read_text())


def face_check_score(params: dict, images: np.ndarray) -> str:
    if not FERPLUS_CSV.exists():
        return f"face check: {FERPLUS_CSV} is absent, cannot score it"
    not_a_face = pd.read_csv(FERPLUS_CSV, usecols=["NF"]).NF.to_numpy() == 10
    started = time.perf_counter()
    flagged, _ = ImageFaceCheck(params["not_a_face"]).not_a_face(images)
    seconds = time.perf_counter() - started
    hits = int((flagged & not_a_face).sum())
    precision = hits / max(int(flagged.sum()), 1)
    return (f"image face check against FER+'s {int(not_a_face.sum())} NF=10 rows: flagged {int(flagged.sum())}, "
            f"{hits} of them NF=10: precision {precision:.3f}, recall {hits / not_a_face.sum():.3f}, {seconds:.1f} s "
            f"(README: MTCNN ranking, precision 0.034 in 199 s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    args = parser.parse_args()
    if not FER2013_CSV.exists():
        print(f"skipped: {FER2013_CSV} is absent (the benchmark needs the real FER2013)")
        return 0
    params = load_params("fer2013", args.params)

    base_seconds, base_groups = baseline(FER2013_CSV)
    print(f"baseline (csv module, int() per pixel, md5 per image; no near duplicates, no face check): "
          f"{base_seconds:.1f} s, {base_groups} identical-image groups")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            seconds, metrics = run_stage_once(params, Path(tmp))
            times.append(seconds)
        images = np.load(Path(tmp) / "fer2013" / "images.npy")
    median = statistics.median(times)
    print(f"fer2013 stage (read .xz, parse, every check incl. near duplicates and the image face check, write "
          f"outputs): median {median:.1f} s of {args.repeats} runs ({', '.join(f'{t:.1f}' for t in times)}); "
          f"{base_seconds / median:.1f}x the baseline; budget 120 s")
    for key, expected in EXPECTED.items():
        mark = "ok" if metrics[key] == expected else "DIFFERS"
        print(f"  {key}: {metrics[key]} (expected {expected}) {mark}")
    print(f"  near_duplicate_groups: {metrics['near_duplicate_groups']}; removed: {metrics['removed']}; "
          f"kept: {metrics['kept']}")
    print(face_check_score(params, images))
    return 0


if __name__ == "__main__":
    sys.exit(main())

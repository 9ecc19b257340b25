"""How fast the faces stage finds faces in video, against a naive baseline measured in the same run.

Baseline: read every frame with OpenCV, and run facenet-pytorch's MTCNN, as shipped, on each sampled
frame one at a time at full resolution. Pipeline: the faces stage's own path (frames grabbed but only
sampled ones converted, decoding in a thread, detect-and-track). Both use the ``faces`` params of
``params.yaml``; crops are not written by either. Speed is seconds of video per wall-clock second,
the median of ``--repeats`` runs after one warm-up run; recall is the share of the baseline's faces
that the pipeline also finds (same sample, IoU >= 0.5).

    uv run python benchmarks/faces_speed.py [--repeats 5] [videos ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.common import load_params  # noqa: E402
from pipeline.detection import FaceDetector, cpu_threads, detect_video  # noqa: E402
from pipeline.sampling import SampleClock, prefetch, read_samples  # noqa: E402

SAMPLE_VIDEOS = sorted((Path(__file__).resolve().parents[1] / "sample" / "media" / "videos").glob("*.mp4"))


def baseline(path: Path, params: dict, mtcnn: MTCNN) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    clock, found = SampleClock(params["fps"]), {}
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        sample = clock.take(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
        if sample is None:
            continue
        boxes, probs = mtcnn.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        keep = [b for b, p in zip(boxes, probs) if p >= params["min_probability"]] if boxes is not None else []
        found[sample] = np.array(keep).reshape(-1, 4)
    cap.release()
    return found


def pipeline(path: Path, params: dict, detector: FaceDetector) -> dict[int, np.ndarray]:
    default_threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())  # as the faces stage does on the CPU
    try:
        detected = detect_video(detector, prefetch(read_samples(path, params["fps"])), params)
        return {s.index: np.array([f.box for f in faces]).reshape(-1, 4) for s, faces in detected}
    finally:
        torch.set_num_threads(default_threads)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matched(reference: dict[int, np.ndarray], found: dict[int, np.ndarray]) -> int:
    return sum(any(iou(r, f) >= 0.5 for f in found.get(k, [])) for k, boxes in reference.items() for r in boxes)


def timed(run, repeats: int) -> tuple[float, dict]:
    result = run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", type=Path, default=SAMPLE_VIDEOS)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    params = load_params("faces")
    device = torch.device("cpu")
    naive = MTCNN(min_face_size=params["min_face_size"], thresholds=params["thresholds"], keep_all=True, device=device)
    detector = FaceDetector(params, device)
    print(f"faces benchmark on {device}, {torch.get_num_threads()} threads; median of {args.repeats} runs; "
          f"min_face_size={params['min_face_size']}, full_detect_every={params['full_detect_every']}")
    header = f"{'video':28} {'size':>9} {'secs':>6} {'baseline':>9} {'pipeline':>9} {'speedup':>8} {'faces':>6} {'recall':>7}"
    print(header + "\n" + "-" * len(header))
    totals = {"video": 0.0, "base": 0.0, "ours": 0.0, "ref": 0, "hit": 0}
    for path in args.videos:
        cap = cv2.VideoCapture(str(path))
        size = f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
        seconds = cap.get(cv2.CAP_PROP_FRAME_COUNT) / cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        base_time, reference = timed(lambda: baseline(path, params, naive), args.repeats)
        ours_time, found = timed(lambda: pipeline(path, params, detector), args.repeats)
        ref, hit = sum(len(b) for b in reference.values()), matched(reference, found)
        recall = f"{hit / ref:.1%}" if ref else "-"
        print(f"{path.name:28} {size:>9} {seconds:6.1f} {seconds / base_time:8.1f}x {seconds / ours_time:8.1f}x "
              f"{base_time / ours_time:7.2f}x {ref:6d} {recall:>7}")
        for key, value in (("video", seconds), ("base", base_time), ("ours", ours_time), ("ref", ref), ("hit", hit)):
            totals[key] += value
    print("-" * len(header))
    print(f"{'all':28} {'':>9} {totals['video']:6.1f} {totals['video'] / totals['base']:8.1f}x "
          f"{totals['video'] / totals['ours']:8.1f}x {totals['base'] / totals['ours']:7.2f}x {totals['ref']:6d} "
          f"{totals['hit'] / max(totals['ref'], 1):7.1%}")
    print("baseline and pipeline columns: seconds of video per wall-clock second (x real time)")


if __name__ == "__main__":
    main()

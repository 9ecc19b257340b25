"""ResMaskingNet's fast recipe on the real FER2013 as one command on a lent GPU machine, and the packing of
what that command needs.

A lent machine reaches no internet and runs a command for at most 10 minutes; it has Python 3.12 with its
own torch, torchvision, numpy, pandas, pyyaml, scikit-learn, opencv, pillow, matplotlib and tqdm, but not
dvc, dvclive, facenet-pytorch or pydantic, so nothing on this command's import path imports those (training's
dvclive logging lives in ``models.train.main``, the params schema's check in ``pipeline.common.load_params``;
this calls neither); nothing else is needed there, so nothing is installed. At most 64 MiB travel with the working tree, so the fer2013 stage's folder
travels packed in an ignored folder: the rows the run uses of ``images.npy`` and the tables, xz-compressed
(51 MiB for the real FER2013 cleaned with FER+'s votes, beside a working tree of about 6 MiB).
FER2013 has no open licence: the bundle never goes into git (``.gitignore`` ignores ``/.gpu/``).

Here, after the fer2013 stage has run on the real FER2013 (``fer2013.source`` set to it)::

    python -m models.gpu_run pack --data data/fer2013 --bundle .gpu

There (the device tool's ``run`` with ``carry: [".gpu"]``, ``timeout_s: 600``)::

    python3 -m models.gpu_run run --bundle .gpu --out "$OUT" --train-minutes 4.5

``run`` unpacks the bundle, trains by ``params.yaml:train`` under ``recipe: fast`` within
``--train-minutes`` (validations on PublicTest included; it selects the epoch), evaluates as the
evaluate stage does (PublicTest; the cleaned PrivateTest and the untouched one, each once without and
once with every test-time augmentation protocol of ``params.yaml:evaluate``, named; the random protocol
with the authors' 48 draws) and writes under
``--out``: ``metrics.json`` (training, evaluation, protocols, the time of each phase, the machine),
``epochs.jsonl`` (one line per epoch), ``confusion.csv`` (the cleaned PrivateTest, one row per image) with
the untouched PrivateTest's 7 x 7 counts in ``metrics.json``, ``per_class.csv``, ``gradcam.png`` and
``predictions_private_test.csv``: six files, within the eight that come back.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from models import evaluate, predict, train
from pipeline.common import StageError, atomic_write, get_logger, pick_device, run_stage, write_metrics
from pipeline.emotions import EMOTIONS

log = get_logger("gpu_run")

TABLES = ("manifest.csv", "private_test.csv")
TRAVEL_LIMIT = 64 * 2**20  # what travels with the working tree, in all
EVALUATE_BATCH = 512       # images per inference batch on the GPU (the evaluate stage's 64 suits a CPU)
AUTHORS_TTA_DRAWS = 48     # the authors' random test-time augmentation drew the training augmentation 48 times
KEPT = ("confusion.csv", "per_class.csv", "gradcam.png")


# xz at its strongest, after a delta filter over one image row (48 bytes): a pixel minus the one above it
# compresses about 9% better than the pixels themselves (measured on FER2013)
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 48}, {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def pack(data: Path, bundle: Path) -> int:
    """The fer2013 stage's folder, as the run needs it, into ``bundle/fer2013``; returns the bundle's bytes.

    Rows that neither the cleaned splits nor the untouched PrivateTest use are zeroed (they compress to
    nothing), so that the row ids, which the predictions name, stay those of the stage.
    """
    target = bundle / "fer2013"
    target.mkdir(parents=True, exist_ok=True)
    used = []
    for name in TABLES:
        if not (data / name).is_file():
            raise StageError(f"{data / name}: not found; run the fer2013 stage first (dvc repro fer2013)")
        used.append(pd.read_csv(data / name).row_id.to_numpy())
        with atomic_write(target / f"{name}.xz", "wb") as f:
            f.write(lzma.compress((data / name).read_bytes(), preset=9))
    images = np.load(data / "images.npy")
    kept = np.zeros_like(images)
    rows = np.union1d(*used)
    kept[rows] = images[rows]
    with atomic_write(target / "images.npy.xz", "wb") as f:
        f.write(lzma.compress(npy_bytes(kept), format=lzma.FORMAT_XZ, filters=FILTERS))
    return sum(path.stat().st_size for path in target.iterdir())


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def unpack(bundle: Path, work: Path) -> Path:
    """The bundle back into a fer2013-stage folder under ``work``."""
    source = bundle / "fer2013"
    if not (source / "images.npy.xz").is_file():
        raise StageError(f"{source / 'images.npy.xz'}: not found; pack it first (python -m models.gpu_run pack) and "
                         f"carry {bundle}")
    folder = work / "fer2013"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("images.npy", *TABLES):
        (folder / name).write_bytes(lzma.decompress((source / f"{name}.xz").read_bytes()))
    return folder


def machine() -> dict[str, Any]:
    about = {"python": platform.python_version(), "torch": torch.__version__, "cpu_cores": os.cpu_count()}
    if torch.cuda.is_available():
        about["gpu"] = torch.cuda.get_device_name()
    return about


def confusion_counts(predictions: Path) -> list[list[int]]:
    """7 x 7 counts (rows: actual, columns: predicted) from an evaluate stage's predictions table."""
    table = pd.read_csv(predictions)
    counts = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=int)
    np.add.at(counts, (table.label.to_numpy(), table.predicted.to_numpy()), 1)
    return counts.tolist()


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load(args.params.read_text())
    params["train"] = {**params["train"], "recipe": "fast", "resume": False}  # one shot: no checkpoint to write
    params["train"]["fast"] = {**params["train"]["fast"], "budget_minutes": args.train_minutes}
    params["evaluate"] = {**params["evaluate"], "batch_size": EVALUATE_BATCH, "tta_draws": args.tta_draws}
    with tempfile.TemporaryDirectory(prefix="gpu_run.") as scratch:
        work = Path(scratch)
        data = unpack(args.bundle, work)
        # read without pipeline.common.load_params, whose schema check needs pydantic, which that machine lacks;
        # train.stage_params checks the train section's keys itself
        p = train.stage_params(params["train"], "fer2013")
        device = pick_device(p["device"])
        unpacked = time.monotonic()
        log.info(f"gpu_run: {machine()}; data unpacked in {unpacked - started:.1f} s")

        epochs = args.out / "epochs.jsonl"
        epochs.unlink(missing_ok=True)
        rows: list[dict[str, float]] = []

        def on_epoch(row: dict[str, float]) -> None:
            rows.append(row)
            with epochs.open("a") as f:  # line by line, so that a run stopped at its limit still tells its epochs
                f.write(json.dumps({"epoch": len(rows), **row}) + "\n")

        state = train.fit(p, "fer2013", data, work / "train", on_epoch, device)
        trained = time.monotonic()
        model_path = work / "train" / "model.pt"
        preprocessing = predict.read_trained(model_path)["preprocessing"]
        scores = evaluate.run(params["evaluate"], evaluate.get_args_parser().parse_args([
            "--dataset", "fer2013", "--data", str(data), "--model", str(model_path),
            "--predictions", str(work / "predictions"), "--plots", str(work / "plots"),
            "--metrics", str(work / "evaluate.json")]))
        evaluated = time.monotonic()
        for name in KEPT:
            if (work / "plots" / name).exists():
                shutil.copyfile(work / "plots" / name, args.out / name)
        shutil.copyfile(work / "predictions" / "predictions_private_test.csv", args.out / "predictions_private_test.csv")
        metrics = {
            "command": " ".join(["python3", "-m", "models.gpu_run", *sys.argv[1:]]),
            "recipe": {k: p[k] for k in sorted(p) if k not in ("fer2013", "vemo")},
            "train": {"epochs": state["epoch"], "steps": state["step"], "best_epoch": state["best_epoch"],
                      "best_val_accuracy": round(state["best_val_accuracy"], 4), "preprocessing": preprocessing.to_dict(),
                      "images_per_second_validations_included": round(state["step"] * p["batch_size"] / state["seconds"], 1)},
            "evaluate": scores,
            "private_test_confusion": {"rows_actual_columns_predicted": list(EMOTIONS),
                                       "counts": confusion_counts(work / "predictions" / "predictions_private_test.csv")},
            "seconds": {"unpack": round(unpacked - started, 1), "train": round(trained - unpacked, 1),
                        "evaluate": round(evaluated - trained, 1), "total": round(evaluated - started, 1)},
            "machine": machine(),
        }
        write_metrics(metrics, args.out / "metrics.json")
    print(f"gpu_run: {state['epoch']} epochs ({state['step']} steps) in {metrics['seconds']['train']:.0f} s; "
          f"PublicTest {scores['val']['accuracy']}, PrivateTest {scores['private_test']['accuracy']} (untouched), "
          + ", ".join(f"{key} {value['accuracy']}" for key, value in scores.items()
                      if key.startswith("private_test_tta")) + f"; {metrics['seconds']['total']:.0f} s in all")
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="here: the fer2013 stage's folder into a bundle that travels")
    packing.add_argument("--data", type=Path, default=Path("data/fer2013"))
    packing.add_argument("--bundle", type=Path, default=Path(".gpu"))
    running = commands.add_parser("run", help="there: train the fast recipe, evaluate, write under --out")
    running.add_argument("--bundle", type=Path, default=Path(".gpu"))
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--train-minutes", type=float, required=True,
                         help="training's budget, validations included (it replaces train.fast.budget_minutes)")
    running.add_argument("--tta-draws", type=int, default=AUTHORS_TTA_DRAWS,
                         help="draws of the random test-time augmentation protocol (default: the authors' 48)")
    running.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command == "pack":
        size = pack(args.data, args.bundle)
        print(f"gpu_run: {args.bundle}: {size / 2**20:.1f} MiB; with the working tree it must stay under "
              f"{TRAVEL_LIMIT / 2**20:.0f} MiB (git ls-files plus this)")
        return 0
    return run(args)


if __name__ == "__main__":
    run_stage(main)

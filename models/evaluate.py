"""evaluate stage: a trained model's accuracy, per-class accuracy, macro F1 and confusion matrix.

Reads the train stage's ``model.pt``, the dataset it was trained on and ``params.yaml:evaluate``. Scores the
validation and test splits and, for FER2013, the untouched PrivateTest (every PrivateTest row with its
original label, before any cleaning: the number papers report, 74.14% for ResMaskingNet). With
``evaluate.tta`` the test splits are scored a second time with test-time augmentation, reported
separately (``test_tta``, ``private_test_tta``). Writes:

- a metrics JSON for ``dvc metrics show``: accuracy and macro F1 per split;
- plots data: the test split's confusion matrix (one row per image: actual, predicted; the paper's
  Figure 7) and the accuracy of each class on each split;
- the predicted probabilities of every image of every split, which the ensemble stage averages;
- Grad-CAM heatmaps of ``evaluate.gradcam`` test images, evenly spread over the split, as one PNG
  (the paper's Figure 6).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
import torch
from torch.utils.data import DataLoader, Dataset

from annotation.labels import EMOTIONS
from datasets.torch_data import load_split, transforms
from models import zoo
from models.gradcam import figure, gradcam
from models.predict import load_trained, probabilities
from pipeline.common import StageError, atomic_write, get_logger, load_params, run_stage, write_table

log = get_logger("evaluate")


def scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro F1 (over the classes present in ``labels`` or predicted) and each class's accuracy
    (the share of its images predicted as it; None for a class with no image)."""
    predicted = probs.argmax(axis=1)
    per_class = {}
    for index, emotion in enumerate(EMOTIONS):
        mine = labels == index
        per_class[emotion] = round(float((predicted[mine] == index).mean()), 4) if mine.any() else None
    return {
        "images": len(labels),
        "accuracy": round(float((predicted == labels).mean()), 4) if len(labels) else None,
        "macro_f1": round(float(f1_score(labels, predicted, average="macro", zero_division=0)), 4)
        if len(labels) else None,
        "per_class_accuracy": per_class,
    }


def prediction_table(ids: list[str], labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame(probs.round(6), columns=[f"p_{e}" for e in EMOTIONS])
    table.insert(0, "image_id", ids)
    table.insert(1, "label", labels)
    table.insert(2, "predicted", probs.argmax(axis=1))
    return table


def confusion_rows(labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """One row per image, actual and predicted class names: the shape of dvc's confusion template."""
    names = np.asarray(EMOTIONS)
    return pd.DataFrame({"actual": names[labels], "predicted": names[probs.argmax(axis=1)]})


def per_class_rows(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"split": split, "emotion": emotion, "accuracy": accuracy}
                         for split, result in results.items()
                         for emotion, accuracy in result["per_class_accuracy"].items()])


def heatmaps(model: torch.nn.Module, data: Dataset, device: torch.device, count: int, path: Path) -> None:
    picked = np.linspace(0, len(data) - 1, num=min(count, len(data))).round().astype(int)
    images, labels = zip(*(data[int(i)] for i in picked))
    batch = torch.stack(images).to(device).contiguous(memory_format=torch.channels_last)
    cams, probs = gradcam(model, batch)
    figure(batch[:, 0].cpu().numpy(), cams, np.asarray(labels), probs, path)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=["fer2013", "vemo"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="the train stage's model.pt")
    parser.add_argument("--predictions", type=Path, required=True, help="folder for predictions_<split>.csv")
    parser.add_argument("--plots", type=Path, required=True, help="folder for confusion.csv and per_class.csv")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("evaluate", args.params)
    device = zoo.pick_device(params["device"])
    model, info = load_trained(args.model, device)
    if info["classes"] != EMOTIONS:
        raise StageError(f"{args.model}: trained on classes {info['classes']}, expected {EMOTIONS}")
    splits = ["val", "test"] + (["private_test"] if args.dataset == "fer2013" else [])
    results: dict[str, dict[str, Any]] = {}
    for split in splits:
        data = load_split(args.dataset, args.data, split, transforms(info["input_size"], train=False))
        if len(data) == 0:
            log.warning(f"evaluate: {args.dataset}: the {split} split is empty; not scored")
            continue
        loader = DataLoader(data, batch_size=params["batch_size"], num_workers=0)
        labels = np.asarray(data.labels)
        probs = probabilities(model, loader, device, params["precision"], desc=f"evaluate {args.dataset} {split}")
        results[split] = scores(labels, probs)
        write_table(prediction_table(data.ids, labels, probs), args.predictions / f"predictions_{split}.csv")
        if split == "test":
            write_table(confusion_rows(labels, probs), args.plots / "confusion.csv")
            if params["gradcam"]:
                heatmaps(model, data, device, params["gradcam"], args.plots / "gradcam.png")
        if params["tta"] and split != "val":
            tta = probabilities(model, loader, device, params["precision"], tta=True,
                                desc=f"evaluate {args.dataset} {split} with TTA")
            results[f"{split}_tta"] = scores(labels, tta)
    if "test" not in results:
        raise StageError(f"{args.data}: the {args.dataset} test split is empty; nothing to evaluate")
    write_table(per_class_rows(results), args.plots / "per_class.csv")
    metrics = {"model": info["model"], "epoch": info["epoch"],
               **{split: {k: r[k] for k in ("images", "accuracy", "macro_f1")} for split, r in results.items()}}
    with atomic_write(args.metrics) as f:
        json.dump({f"evaluate_{args.dataset}": metrics}, f, indent=2)
    print(f"evaluate: {args.dataset}: {info['model']}: "
          + ", ".join(f"{split} accuracy {r['accuracy']:.4f} (macro F1 {r['macro_f1']:.4f}, {r['images']} images)"
                      for split, r in results.items()))
    return 0


if __name__ == "__main__":
    run_stage(main)

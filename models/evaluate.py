"""evaluate stage: a trained model's accuracy, per-class accuracy, macro F1 and confusion matrix.

Reads the train stage's ``model.pt``, the dataset it was trained on and ``params.yaml:evaluate``. Scores the
validation and test splits and, for FER2013, the untouched PrivateTest (every PrivateTest row with its
original label, before any cleaning: the number papers report, 74.14% for ResMaskingNet). For FER2013 the
validation split is PublicTest, on which training selected the epoch; the test splits are scored here once.
Given ``--fer2013`` (a model trained on another dataset), FER2013's test split and PrivateTest are scored
too, as ``fer2013_test`` and ``fer2013_private_test``, so that every model has probabilities on the images
that the ensemble averages. With ``evaluate.tta`` the test splits are scored again with each test-time
augmentation protocol named there (``models.predict``), reported apart under the protocol's name
(``test_tta_fixed``, ``private_test_tta_random``, ...) and described under ``protocols``. Writes:

- a metrics JSON for ``dvc metrics show``: accuracy and macro F1 per split and protocol;
- plots data: the test split's confusion matrix (one row per image: actual, predicted; the paper's
  Figure 7) and the accuracy of each class on each split;
- the predicted probabilities of every image of every split and protocol, ``predictions_<split>.csv``,
  which the ensemble stage averages;
- Grad-CAM heatmaps of ``evaluate.gradcam`` test images, evenly spread over the split, as one PNG
  (the paper's Figure 6).

The images sit on the device as uint8 (``datasets.batched``), resized to the input size that ``model.pt``
records, and go through ``models.predict.probabilities`` with the preprocessing it records: the inference
loop that training's validation uses too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score

from datasets.batched import Augment, DeviceImages, Preprocessing, to_float, to_model_input
from datasets.torch_data import load_split
from models import predict
from models.gradcam import figure, gradcam
from pipeline.common import StageError, get_logger, load_params, pick_device, run_stage, write_metrics, write_table
from pipeline.emotions import EMOTIONS

TTA_PROTOCOLS = ("fixed", "random")

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


def heatmaps(model: torch.nn.Module, data: DeviceImages, preprocessing: Preprocessing, count: int,
             path: Path) -> None:
    picked = torch.from_numpy(np.linspace(0, len(data) - 1, num=min(count, len(data))).round().astype(int))
    faces = data.images[picked.to(data.device)]
    cams, probs = gradcam(model, to_model_input(faces, preprocessing))
    figure(to_float(faces)[:, 0].cpu().numpy(), cams, data.labels[picked.to(data.device)].cpu().numpy(), probs, path)


def tta_protocols(params: dict[str, Any], info: dict[str, Any]) -> list[predict.TTA]:
    """The protocols ``evaluate.tta`` names; ``random`` draws the augmentation the model was trained with."""
    unknown = sorted(set(params["tta"]) - set(TTA_PROTOCOLS))
    if unknown:
        raise StageError(f"params.yaml: evaluate.tta names unknown protocol(s) {', '.join(unknown)}; "
                         f"known: {', '.join(TTA_PROTOCOLS)}")
    protocols = []
    for name in params["tta"]:
        if name == "fixed":
            protocols.append(predict.TTA("fixed"))
        else:
            if params["tta_draws"] < 1:
                raise StageError(f"params.yaml: evaluate.tta_draws must be at least 1, not {params['tta_draws']}")
            protocols.append(predict.TTA("random", draws=params["tta_draws"],
                                         augment=Augment.from_params(info.get("augment") or {}), seed=params["seed"]))
    return protocols


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=["fer2013", "vemo"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="the train stage's model.pt")
    parser.add_argument("--fer2013", type=Path, help="the fer2013 stage's folder, to score a model of another "
                        "dataset on FER2013's test split and PrivateTest too")
    parser.add_argument("--predictions", type=Path, required=True, help="folder for predictions_<split>.csv")
    parser.add_argument("--plots", type=Path, required=True, help="folder for confusion.csv and per_class.csv")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    run(load_params("evaluate", args.params), args)
    return 0


def run(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Score the model by ``params`` (the evaluate section) and write what the module docstring lists;
    returns the metrics. The GPU command (``models.gpu_run``) calls this with the arguments ``main`` parses."""
    device = pick_device(params["device"])
    model, info = predict.load_trained(args.model, device)
    if info["classes"] != EMOTIONS:
        raise StageError(f"{args.model}: trained on classes {info['classes']}, expected {EMOTIONS}")
    protocols = tta_protocols(params, info)
    preprocessing = info["preprocessing"]
    # (name in the metrics, dataset, its folder or manifest, split)
    scored = [(split, args.dataset, args.data, split) for split in ["val", "test"]]
    if args.dataset == "fer2013":
        scored.append(("private_test", "fer2013", args.data, "private_test"))
    elif args.fer2013 is not None:
        scored += [(f"fer2013_{split}", "fer2013", args.fer2013, split) for split in ("test", "private_test")]
    results: dict[str, dict[str, Any]] = {}
    for name, dataset, data_path, split in scored:
        data = DeviceImages.from_dataset(load_split(dataset, data_path, split), preprocessing.input_size, device)
        if len(data) == 0:
            log.warning(f"evaluate: {dataset}: the {split} split is empty; not scored")
            continue
        labels = data.labels.cpu().numpy()
        for tta in [None] + ([] if split == "val" else protocols):
            key = name if tta is None else f"{name}_tta_{tta.protocol}"
            probs = predict.probabilities(model, data.batches(params["batch_size"]), device, preprocessing,
                                          params["precision"], tta=tta, desc=f"evaluate {args.dataset} {key}")
            probs = probs.cpu().numpy()
            results[key] = scores(labels, probs)
            write_table(prediction_table(data.ids, labels, probs), args.predictions / f"predictions_{key}.csv")
            if key == "test":
                write_table(confusion_rows(labels, probs), args.plots / "confusion.csv")
                if params["gradcam"]:
                    heatmaps(model, data, preprocessing, params["gradcam"], args.plots / "gradcam.png")
    if "test" not in results:
        raise StageError(f"{args.data}: the {args.dataset} test split is empty; nothing to evaluate")
    write_table(per_class_rows(results), args.plots / "per_class.csv")
    metrics = {"model": info["model"], "epoch": info["epoch"],
               **{split: {k: r[k] for k in ("images", "accuracy", "macro_f1")} for split, r in results.items()},
               "protocols": {f"tta_{tta.protocol}": tta.describe() for tta in protocols}}
    write_metrics({f"evaluate_{args.dataset}": metrics}, args.metrics)
    print(f"evaluate: {args.dataset}: {info['model']}: "
          + ", ".join(f"{split} accuracy {r['accuracy']:.4f} (macro F1 {r['macro_f1']:.4f}, {r['images']} images)"
                      for split, r in results.items()))
    return metrics


if __name__ == "__main__":
    run_stage(main)

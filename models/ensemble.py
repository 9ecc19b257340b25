"""ensemble stage: the unweighted average of several trained models' softmax outputs, as in the paper.

Pham et al. reach 76.82% on FER2013 by averaging the softmax outputs of ResMaskingNet and six other CNNs,
with equal weights. Reads the ``model.pt`` of each member (``params.yaml:ensemble.members``) and the fer2013 stage's
folder; scores each member and their average on the same images: FER2013's cleaned test split and its
untouched PrivateTest.
Writes a metrics JSON (each member's accuracy and the ensemble's) and the ensemble's predictions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from datasets.torch_data import load_split, transforms
from models import zoo
from models.evaluate import prediction_table, scores
from models.predict import load_trained, probabilities
from pipeline.common import StageError, atomic_write, load_params, run_stage, write_table


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the fer2013 stage's folder")
    parser.add_argument("--predictions", type=Path, required=True, help="folder for predictions_<split>.csv")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("ensemble", args.params)
    if len(params["members"]) < 2:
        raise StageError(f"params.yaml: ensemble.members names {len(params['members'])} model(s); an ensemble "
                         "needs at least two")
    device = zoo.pick_device(params["device"])
    dataset, splits = "fer2013", ["test", "private_test"]
    # a member is named by its folder (data/train/<name>/model.pt), which dvc metrics show can print
    members = [(Path(path).parent.name, *load_trained(path, device)) for path in params["members"]]
    metrics: dict[str, dict] = {name: {} for name, _, _ in members}
    ensemble: dict[str, float] = {}
    for split in splits:
        outputs, labels, ids = [], None, None
        for name, model, info in members:
            data = load_split(dataset, args.data, split, transforms(info["input_size"], train=False))
            loader = DataLoader(data, batch_size=params["batch_size"], num_workers=0)
            probs = probabilities(model, loader, device, params["precision"], desc=f"ensemble {name} {split}")
            labels, ids = np.asarray(data.labels), data.ids
            outputs.append(probs)
            metrics[name][split] = scores(labels, probs)["accuracy"]
        average = np.mean(outputs, axis=0)
        result = scores(labels, average)
        ensemble[split], ensemble[f"{split}_macro_f1"] = result["accuracy"], result["macro_f1"]
        write_table(prediction_table(ids, labels, average), args.predictions / f"predictions_{split}.csv")
    with atomic_write(args.metrics) as f:
        json.dump({"ensemble": {**ensemble, "members": metrics}}, f, indent=2)
    print(f"ensemble: {len(members)} models on FER2013: " + "; ".join(
        f"{split} accuracy {ensemble[split]:.4f} (" + ", ".join(f"{name} {metrics[name][split]:.4f}" for name, _, _ in members)
        + ")" for split in splits))
    return 0


if __name__ == "__main__":
    run_stage(main)

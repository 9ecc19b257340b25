"""ensemble stage: the unweighted average of several trained models' softmax outputs, as in the paper.

Pham et al. reach 76.82% on FER2013 by averaging the softmax outputs of ResMaskingNet and six other CNNs,
with equal weights. The evaluate stage has already saved every member's probabilities on FER2013's cleaned
test split and its untouched PrivateTest; this stage averages those files (``params.yaml:ensemble.members``:
a name for each member and the path of its predictions, ``{split}`` standing for ``test`` or
``private_test``) and runs no model. The members must list the same images with the same labels.
Writes a metrics JSON (each member's accuracy and the ensemble's) and the ensemble's predictions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.evaluate import prediction_table, scores
from pipeline.common import StageError, load_params, read_table, run_stage, write_metrics, write_table
from pipeline.emotions import EMOTIONS

SPLITS = ("test", "private_test")
COLUMNS = [f"p_{e}" for e in EMOTIONS]


def member_predictions(name: str, pattern: str, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(image ids, labels, probabilities) of one member on one split, from its evaluate stage's table."""
    if "{split}" not in pattern:
        raise StageError(f"params.yaml: ensemble.members.{name} is {pattern!r}; it needs '{{split}}' where "
                         f"the split's name goes (e.g. data/evaluate/{name}/predictions_{{split}}.csv)")
    path = Path(pattern.format(split=split))
    table = read_table(path)
    missing = [c for c in ["image_id", "label", *COLUMNS] if c not in table]
    if missing:
        raise StageError(f"{path}: not an evaluate stage's predictions: no column(s) {', '.join(missing)}")
    return table.image_id.astype(str).tolist(), table.label.to_numpy(), table[COLUMNS].to_numpy()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=Path, required=True, help="folder for predictions_<split>.csv")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("ensemble", args.params)
    members = params["members"]
    if not isinstance(members, dict) or len(members) < 2:
        raise StageError(f"params.yaml: ensemble.members must map at least two names to prediction files, "
                         f"got {members!r}")
    metrics: dict[str, dict] = {name: {} for name in members}
    ensemble: dict[str, float] = {}
    for split in SPLITS:
        outputs, reference = [], None
        for name, pattern in members.items():
            ids, labels, probs = member_predictions(name, pattern, split)
            if reference is None:
                reference = (name, ids, labels)
            elif ids != reference[1] or not np.array_equal(labels, reference[2]):
                raise StageError(f"ensemble: {name}'s {split} predictions ({pattern.format(split=split)}) are not "
                                 f"of the same images and labels as {reference[0]}'s")
            outputs.append(probs)
            metrics[name][split] = scores(labels, probs)["accuracy"]
        _, ids, labels = reference
        average = np.mean(outputs, axis=0)
        result = scores(labels, average)
        ensemble[split], ensemble[f"{split}_macro_f1"] = result["accuracy"], result["macro_f1"]
        write_table(prediction_table(ids, labels, average), args.predictions / f"predictions_{split}.csv")
    write_metrics({"ensemble": {**ensemble, "members": metrics}}, args.metrics)
    print(f"ensemble: {len(members)} models on FER2013: " + "; ".join(
        f"{split} accuracy {ensemble[split]:.4f} (" + ", ".join(f"{name} {metrics[name][split]:.4f}" for name in members)
        + ")" for split in SPLITS))
    return 0


if __name__ == "__main__":
    run_stage(main)

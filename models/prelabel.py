"""predict stage: a trained model's pre-label of every face, which push attaches to its Label Studio task.

Reads the faces table (``face_id``, ``crop_path``) and its crops, the model file that ``params.yaml:predict.model``
names (a train stage's ``model.pt``, by default FER2013's; any copy of one, outside the graph too) and
``params.yaml:predict``. The crops go through ``models.predict``: resized once to the input size the model file
records (``datasets.batched.DeviceImages``), preprocessed as it records, in batches with a progress bar. Writes:

- the predictions table, one row per face: ``face_id``, ``label`` (the most probable emotion), ``score`` (its
  probability: how sure the model is; Label Studio's uncertainty sampling serves the lowest score first),
  ``model`` (the model's version: its architecture, the dataset it was trained on and the start of the model
  file's sha256, so that a retrained model is a new version) and the probability of each emotion, ``p_<emotion>``;
- a metrics JSON: the faces predicted, the mean score and how many faces each emotion was predicted for.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datasets.batched import DeviceImages
from datasets.torch_data import ManifestImages
from models import predict
from pipeline.common import (StageError, load_params, pick_device, read_table, run_stage, sha256_file, write_metrics,
                             write_table)
from pipeline.emotions import EMOTIONS

PREDICTION_COLUMNS = ["face_id", "label", "score", "model", *(f"p_{e}" for e in EMOTIONS)]


def model_version(path: Path, info: dict[str, Any]) -> str:
    """``resmasking-fer2013-1a2b3c4d``: what Label Studio records as the predictions' model version."""
    return f"{info['model']}-{info.get('dataset', 'model')}-{sha256_file(path)[:8]}"


def face_crops(faces: pd.DataFrame, path: Path) -> ManifestImages:
    """The faces' crops as a Dataset, each read as grey; every crop checked to be there first."""
    missing = sorted({"face_id", "crop_path"} - set(faces.columns))
    if missing:
        raise StageError(f"{path}: no column(s) {', '.join(missing)}; not the faces stage's table?")
    absent = [(line, face.face_id, face.crop_path) for line, face in enumerate(faces.itertuples(), start=2)
              if not isinstance(face.crop_path, str) or not Path(face.crop_path).is_file()]
    if absent:
        line, face_id, crop = absent[0]
        raise StageError(f"{path}: {len(absent)} face(s) without their crop, the first on line {line}: {face_id}'s "
                         f"{crop} is not there; rerun the faces stage (dvc repro faces)")
    # no label: the faces are what is being labelled
    return ManifestImages(pd.DataFrame({"image_id": faces.face_id, "image": faces.crop_path, "label": -1}))


def prediction_table(face_ids: list[str], probs: np.ndarray, version: str) -> pd.DataFrame:
    table = pd.DataFrame(probs.round(6), columns=[f"p_{e}" for e in EMOTIONS])
    table.insert(0, "face_id", face_ids)
    table.insert(1, "label", np.asarray(EMOTIONS, dtype=object)[probs.argmax(axis=1)] if len(probs) else [])
    table.insert(2, "score", probs.max(axis=1).round(6) if len(probs) else [])
    table.insert(3, "model", version)
    return table[PREDICTION_COLUMNS]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, default=Path("data/faces.csv"))
    parser.add_argument("--out", type=Path, default=Path("data/predict/predictions.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/predict.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("predict", args.params)
    model_path = Path(params["model"])
    data = face_crops(read_table(args.faces), args.faces)
    device = pick_device(params["device"])
    model, info = predict.load_trained(model_path, device)
    if info["classes"] != EMOTIONS:
        raise StageError(f"{model_path}: trained on classes {info['classes']}, but the faces are labelled with "
                         f"{EMOTIONS}; predict.model must name a model of this project's train stage")
    version = model_version(model_path, info)
    preprocessing = info["preprocessing"]
    images = DeviceImages.from_dataset(data, preprocessing.input_size, device)
    probs = predict.probabilities(model, images.batches(params["batch_size"]), device, preprocessing,
                                  params["precision"], desc=f"predict {version}").cpu().numpy()
    table = prediction_table(images.ids, probs, version)
    write_table(table, args.out)
    counts = table.label.value_counts()
    write_metrics({"predict": {"model": version, "faces": len(table),
                               "mean_score": round(float(table.score.mean()), 4) if len(table) else None,
                               "predicted": {e: int(counts.get(e, 0)) for e in EMOTIONS}}}, args.metrics)
    print(f"predict: {len(table)} faces by {version} ({model_path})"
          + (f", mean score {table.score.mean():.3f}" if len(table) else ""))
    return 0


if __name__ == "__main__":
    run_stage(main)

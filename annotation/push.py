"""push stage: every face crop becomes a Label Studio task that ten annotators vote on.

Reads the faces table, the media table and ``params.yaml:annotation``. Creates the project, or finds it
again by its title, with the labelling config of ``annotation/labels.py``, ``annotation.votes``
annotations per task and overlap on every task. Imports each face not yet in the project as a task
carrying its ``face_id``; a rerun imports only the new ones and never deletes or changes a task or an
annotation, with one exception: the tasks of media on the takedown list (``--takedowns``, the download
stage's table) are deleted, on that instruction only. Writes the task manifest (face_id, task_id,
project_id, crowd). With ``annotation.adaptive.enabled`` each new task asks for ``annotation.adaptive.initial``
votes (its overlap) rather than ``annotation.votes``, and push leaves the project's ``maximum_annotations`` as it
is, since Label Studio resets every task's overlap when that changes; the pull asks for more where a face needs them.

With ``annotation.predictions`` (the predict stage's table: face_id, label, score, model) every task of a face
in it carries that prediction, a pre-annotation that the labelling page shows and that no vote counts: new tasks
are imported with theirs, tasks already there that lack this model version's get it added (a retrained model's
predictions join the old ones). The project's ``model_version`` is set to the table's, so that the page shows
its predictions and Label Studio's queue uses them. ``annotation.queue`` sets the project's sampling:
``sequential`` serves the tasks in their order, ``uncertainty`` (Label Studio's uncertainty sampling) the task
whose prediction of that version has the lowest score first, i.e. the face the model is least sure of; a face
with other annotators' votes still comes before it (Label Studio's breadth first, with more than one vote a face).

With ``crowd: simulated`` (the offline demo) the tasks are imported with votes already cast by ten
annotator accounts, drawn from a stated confusion model around the sample's reference labels: each
simulated annotator gives the reference label with its own probability (spread evenly over
``accuracy`` +- 0.15) and otherwise one of the other labels, uniformly. These votes are SIMULATED; the
manifest, the pull's metrics and the README say so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from annotation.accounts import ensure_annotators
from annotation.client import Client
from annotation.labels import label_config, labels_in_config
from annotation.reference_labels import label_at, read_reference_labels
from pipeline.common import (StageError, get_logger, load_params, media_of_face, progress, read_table, run_stage,
                             write_table)
from pipeline.emotions import LABELS

log = get_logger("push")

MANIFEST_COLUMNS = ["face_id", "task_id", "project_id", "crowd"]
SAMPLING = {"sequential": "Sequential sampling", "uncertainty": "Uncertainty sampling"}  # Label Studio's names


def choice(label: str) -> list[dict[str, Any]]:
    """An annotation's result: the one choice ``label``."""
    return [{"from_name": "emotion", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def read_predictions(path: Path) -> tuple[pd.DataFrame, str]:
    """A model's predictions (face_id, label, score[, model]), indexed by face_id and checked row by row, and
    their model version (the ``model`` column's one value; ``model`` without that column)."""
    table = read_table(path, dtype={"face_id": str, "label": str})
    missing = sorted({"face_id", "label", "score"} - set(table.columns))
    if missing:
        raise StageError(f"{path}: no column(s) {', '.join(missing)}; expected face_id,label,score[,model] (the "
                         f"predict stage's data/predict/predictions.csv)")
    scores = pd.to_numeric(table.score, errors="coerce")
    for bad, problem in [
        (table.face_id.duplicated(keep="first"), "a second prediction for face {face_id}"),
        (~table.label.isin(LABELS), "label {label!r} is not one of the labelling config's: " + ", ".join(LABELS)),
        (~np.isfinite(scores), "score {score!r} is not a number"),
    ]:
        if bad.any():
            row = table[bad].iloc[0]
            raise StageError(f"{path}, line {row.name + 2}: {problem.format(**row.to_dict())} ({bad.sum()} such "
                             f"row(s))")
    versions = list(table.model.astype(str).unique()) if "model" in table else []
    if len(versions) > 1:
        raise StageError(f"{path}: predictions of {len(versions)} models ({', '.join(versions[:3])}); the queue is "
                         f"ordered by one model's: keep the rows of one")
    return table.assign(score=scores).set_index("face_id"), versions[0] if versions else "model"


def prediction(row: pd.Series, model_version: str) -> dict[str, Any]:
    """A Label Studio prediction: the predicted label, scored by the model's probability of it."""
    return {"model_version": model_version, "score": float(row.score), "result": choice(row.label)}


def reference_labels(faces: pd.DataFrame, media: pd.DataFrame, reference: Path) -> pd.Series:
    """face_id -> the reference label of the sample media it comes from (by the media URL's path and time)."""
    ranges = read_reference_labels(reference)
    urls = media.set_index("media_id").url
    labels = {face.face_id: label_at(ranges, urls.get(face.media_id, ""), face.timestamp)
              for face in faces.itertuples()}
    return pd.Series({face_id: label for face_id, label in labels.items() if label is not None}, dtype=object)


def simulated_votes(face_ids: list[str], truth: pd.Series, annotators: list[int], accuracy: float,
                    seed: int) -> dict[str, list[dict[str, Any]]]:
    """face_id -> annotations, one per annotator, from the confusion model of the module docstring."""
    rng = np.random.default_rng(seed)
    accuracies = np.linspace(accuracy - 0.15, accuracy + 0.15, len(annotators)).clip(0, 1)
    votes = {}
    for face_id in face_ids:
        true = truth.get(face_id, "unsure")
        others = [label for label in LABELS if label != true]
        votes[face_id] = [
            {"completed_by": user, "result": choice(true if rng.random() < p else others[rng.integers(len(others))])}
            for user, p in zip(annotators, accuracies)
        ]
    return votes


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, default=Path("data/faces.csv"))
    parser.add_argument("--media", type=Path, default=Path("data/media.csv"))
    parser.add_argument("--out", type=Path, default=Path("data/annotation/tasks.csv"))
    parser.add_argument("--takedowns", type=Path, default=None,
                        help="the download stage's takedowns table: their tasks are deleted from the project")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("annotation", args.params)
    faces = read_table(args.faces)
    predictions, model_version = (read_predictions(Path(params["predictions"])) if params["predictions"]
                                  else (None, None))
    crowd = params["crowd"]
    if crowd != "simulated" and params["simulation"]["reference"]:
        log.warning(f"push: annotation.simulation.reference names {params['simulation']['reference']}, which no "
                    f"simulated crowd reads with annotation.crowd: {crowd}; set it to none, so that push does not "
                    f"depend on it (dvc.yaml)")
    client = Client()

    config = label_config()
    project = client.find_project(params["project"])
    if project is None:
        project = client.create_project(params["project"], config, params["votes"])
        log.info(f"push: created project {project.id} {params['project']!r} on {client.url}")
    elif labels_in_config(project.label_config) != LABELS:
        if project.total_annotations_number:
            raise StageError(
                f"project {project.id} {params['project']!r} on {client.url} has a labelling config with other "
                f"labels ({', '.join(labels_in_config(project.label_config))}) and {project.total_annotations_number} "
                f"annotations made with it; the pipeline will not change it under them. Restore the config in "
                f"Label Studio, or push to a new project (annotation.project)")
        client.update_project(project.id, label_config=config)
    adaptive = params["adaptive"]
    # Label Studio resets every task's overlap when maximum_annotations changes: with adaptive votes it stays
    if project.maximum_annotations != params["votes"] and not adaptive["enabled"]:
        client.update_project(project.id, maximum_annotations=params["votes"])

    if params["image_url_root"]:
        image_prefix = params["image_url_root"].rstrip("/") + "/"
    else:  # the local server reads crops from the project folder, its document root
        client.add_local_storage(project.id, Path(args.faces).parent.resolve() / "faces", "face crops")
        image_prefix = "/data/local-files/?d="

    existing = client.task_face_ids(project.id)
    if args.takedowns is not None:
        gone = set(read_table(args.takedowns, dtype={"media_id": str}).media_id)
        doomed = {face_id: task_id for face_id, task_id in existing.items() if media_of_face(face_id) in gone}
        if doomed:
            client.delete_tasks(project.id, sorted(doomed.values()))
            log.warning(f"push: deleted {len(doomed)} task(s) of taken-down media, with their annotations, from "
                        f"project {project.id} ({args.takedowns})")
            existing = {face_id: task_id for face_id, task_id in existing.items() if face_id not in doomed}
    new = faces[~faces.face_id.isin(existing)]
    tasks = [{"data": {"image": image_prefix + f.crop_path, "face_id": f.face_id, "media_id": f.media_id}}
             for f in new.itertuples()]
    if crowd == "simulated" and tasks:
        sim = params["simulation"]
        annotators = list(ensure_annotators(client, sim["annotators"]).values())
        truth = reference_labels(new, read_table(args.media), Path(sim["reference"]))
        votes = simulated_votes(list(new.face_id), truth, annotators, sim["accuracy"], sim["seed"])
        for task in tasks:
            task["annotations"] = votes[task["data"]["face_id"]]
    if predictions is not None:
        for task in tasks:
            if (face_id := task["data"]["face_id"]) in predictions.index:
                task["predictions"] = [prediction(predictions.loc[face_id], model_version)]

    bar = progress(None, "push", total=len(tasks), unit="task")
    new_ids: list[int] = []
    for chunk_ids in client.import_tasks(project.id, tasks):
        new_ids += chunk_ids
        bar.update(len(chunk_ids))
    bar.close()
    if adaptive["enabled"]:  # the import gives every task the project's overlap; a new face asks for `initial`
        for task_id in new_ids:
            client.set_overlap(task_id, adaptive["initial"], is_labeled=False)

    in_project = {**existing, **dict(zip(new.face_id, new_ids))}
    predicted: set[int] = set()
    if predictions is not None:
        predicted = client.predicted_tasks(project.id, model_version) & set(in_project.values())
        added = [{"task": task_id, **prediction(predictions.loc[face_id], model_version)}
                 for face_id, task_id in existing.items() if task_id not in predicted and face_id in predictions.index]
        client.import_predictions(project.id, added)
        predicted |= {p["task"] for p in added}
    settings = {"sampling": SAMPLING[params["queue"]]}
    if predicted:  # Label Studio takes only a model version that some prediction has
        settings["model_version"] = model_version
    elif predictions is not None:
        log.warning(f"push: no face of {args.faces} is in {params['predictions']}: no task carries a prediction"
                    + (", and the uncertainty queue serves the tasks at random" if params["queue"] == "uncertainty"
                       else ""))
    if any(getattr(project, key) != value for key, value in settings.items()):
        client.update_project(project.id, **settings)
    manifest = pd.DataFrame({"face_id": faces.face_id, "task_id": faces.face_id.map(in_project).astype("Int64"),
                             "project_id": project.id, "crowd": crowd}, columns=MANIFEST_COLUMNS)
    write_table(manifest, args.out)
    print(f"push: {len(faces)} faces in project {project.id} {params['project']!r} at {client.url} "
          f"({len(tasks)} new, {len(faces) - len(tasks)} already there)"
          + (", with SIMULATED votes" if crowd == "simulated" and tasks else "")
          + (f"; {len(predicted)} with predictions of {model_version}, queue {params['queue']}"
             if predictions is not None else ""))
    return 0


if __name__ == "__main__":
    run_stage(main)

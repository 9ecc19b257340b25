"""The predict stage (models/prelabel.py) and the pre-labels push attaches: the model's probabilities on the
crops, clear errors for a wrong model file or faces table, and Label Studio's uncertainty queue serving the
face the model is least sure of first, on a real server."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from dvc.exceptions import CyclicGraphError
from dvc.repo import Repo

from annotation import push
from annotation.client import Client
from datasets.batched import resize
from models import predict, prelabel
from models.zoo import create_model, default_preprocessing
from pipeline.common import StageError, sha256_file
from pipeline.emotions import EMOTIONS
from tests.conftest import REPO, SAMPLE
from tests.test_label_studio import PHOTOS, project, run_push, set_params, write_faces  # noqa: F401 (a fixture)

PROBABILITIES = [f"p_{e}" for e in EMOTIONS]


@pytest.fixture()
def stage(tmp_path):
    """A faces table over three sample photos (as crops, absolute paths), a small model.pt and params."""
    crops = []
    for photo in PHOTOS[:3]:
        crops.append(tmp_path / "faces" / photo)
        crops[-1].parent.mkdir(exist_ok=True)
        shutil.copy(SAMPLE / "photos" / photo, crops[-1])
    media_ids = [f"url-{Path(p).stem}" for p in PHOTOS[:3]]
    faces = pd.DataFrame({"face_id": [f"{m}-00000000-0" for m in media_ids], "media_id": media_ids,
                          "crop_path": [str(c) for c in crops]})
    faces.to_csv(tmp_path / "faces.csv", index=False)
    torch.manual_seed(0)
    predict.save_trained(tmp_path / "model.pt", create_model("resnet18"), "resnet18", {},
                         default_preprocessing("resnet18", 64), dataset="fer2013", epoch=1)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["predict"] = {**params["predict"], "model": str(tmp_path / "model.pt"), "device": "cpu", "precision": "fp32",
                         "batch_size": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def run_predict(folder: Path) -> int:
    return prelabel.main(["--faces", str(folder / "faces.csv"), "--out", str(folder / "predictions.csv"),
                          "--metrics", str(folder / "predict.json"), "--params", str(folder / "params.yaml")])


def test_the_stage_writes_the_models_probabilities_on_the_crops(stage, capsys):
    assert run_predict(stage) == 0
    table = pd.read_csv(stage / "predictions.csv")
    faces = pd.read_csv(stage / "faces.csv")
    assert list(table.columns) == ["face_id", "label", "score", "model", *PROBABILITIES]
    assert list(table.face_id) == list(faces.face_id)
    # the same crops through the shared loop by hand: grey, resized to the model file's input size
    model, info = predict.load_trained(stage / "model.pt", torch.device("cpu"))
    size = info["preprocessing"].input_size
    batch = torch.cat([resize(torch.from_numpy(cv2.imread(crop, cv2.IMREAD_GRAYSCALE))[None], size)
                       for crop in faces.crop_path])
    expected = predict.probabilities(model, [(batch, None)], torch.device("cpu"), info["preprocessing"], "fp32").numpy()
    assert np.allclose(table[PROBABILITIES].to_numpy(), expected, atol=1e-5)
    assert list(table.label) == [EMOTIONS[i] for i in expected.argmax(axis=1)]
    assert np.allclose(table.score, expected.max(axis=1), atol=1e-5)
    version = f"resnet18-fer2013-{sha256_file(stage / 'model.pt')[:8]}"
    assert (table.model == version).all()
    metrics = json.loads((stage / "predict.json").read_text())["predict"]
    assert metrics["faces"] == 3 and metrics["model"] == version
    assert metrics["mean_score"] == pytest.approx(expected.max(axis=1).mean(), abs=1e-4)
    assert sum(metrics["predicted"].values()) == 3
    assert f"predict: 3 faces by {version}" in capsys.readouterr().out


def test_a_model_file_without_its_keys_is_refused_naming_the_file(stage):
    torch.save({"state_dict": create_model("resnet18").state_dict()}, stage / "model.pt")
    with pytest.raises(StageError, match=re.escape(f"{stage / 'model.pt'}: no key(s) 'model', 'model_kwargs'")):
        run_predict(stage)
    assert not (stage / "predictions.csv").exists()


def test_a_model_of_other_classes_is_refused_naming_the_file(stage):
    saved = torch.load(stage / "model.pt", weights_only=False)
    classes = [*EMOTIONS, "contempt"]  # FER+'s eighth
    torch.save({**saved, "classes": classes, "state_dict": create_model("resnet18", num_classes=8).state_dict()},
               stage / "model.pt")
    with pytest.raises(StageError, match=re.escape(f"{stage / 'model.pt'}: trained on classes {classes}, but the "
                                                   f"faces are labelled with {EMOTIONS}")):
        run_predict(stage)


def test_a_faces_table_without_its_crops_is_refused_naming_the_table_and_the_line(stage):
    faces = pd.read_csv(stage / "faces.csv")
    Path(faces.crop_path[1]).unlink()
    with pytest.raises(StageError, match=re.escape(f"{stage / 'faces.csv'}: 1 face(s) without their crop, the first "
                                                   f"on line 3: {faces.face_id[1]}'s {faces.crop_path[1]} is not "
                                                   f"there; rerun the faces stage")):
        run_predict(stage)
    faces.drop(columns="crop_path").to_csv(stage / "faces.csv", index=False)
    with pytest.raises(StageError, match=re.escape(f"{stage / 'faces.csv'}: no column(s) crop_path")):
        run_predict(stage)


def test_the_vemo_model_would_close_a_cycle_that_dvc_refuses(tmp_path):
    """train@vemo learns from the pull, which the push feeds: DVC names the stages of the cycle before it runs
    anything (README: pre-labels)."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["predict"]["model"] = "data/train/vemo/model.pt"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    Repo.init(str(tmp_path), no_scm=True)
    with pytest.raises(CyclicGraphError) as refused:
        Repo(str(tmp_path)).index.graph  # noqa: B018 (building the graph is the check)
    assert all(name in str(refused.value) for name in ("predict", "push", "pull", "splits", "train@vemo"))


@pytest.mark.parametrize(("row", "message"), [
    ({"face_id": "a", "label": "happy", "score": 0.5}, ", line 3: a second prediction for face a (1 such row(s))"),
    ({"face_id": "b", "label": "joy", "score": 0.5}, ", line 3: label 'joy' is not one of the labelling config's"),
    ({"face_id": "b", "label": "happy", "score": "high"}, ", line 3: score 'high' is not a number"),
    ({"face_id": "b", "label": "happy", "score": 0.5, "model": "other"}, ": predictions of 2 models (m, other)"),
])
def test_push_refuses_a_bad_predictions_table_naming_the_file_and_line(tmp_path, row, message):
    path = tmp_path / "predictions.csv"
    pd.DataFrame([{"face_id": "a", "label": "sad", "score": 0.9, "model": "m"}, {"model": "m", **row}]).to_csv(
        path, index=False)
    with pytest.raises(StageError, match=re.escape(f"{path}{message}")):
        push.read_predictions(path)


def labelled_in_queue_order(client: Client, project_id: int, count: int) -> list[str]:
    """The face_ids of the next ``count`` tasks Label Studio's label stream serves this account, each voted on
    before the next is asked for."""
    served = []
    for _ in range(count):
        task = client.get_json(f"/api/projects/{project_id}/next", "get the next task")
        served.append(task["data"]["face_id"])
        response = client.http.post(f"/api/tasks/{task['id']}/annotations/", json={"result": push.choice("happy")})
        assert response.status_code == 201, response.text
    return served


def test_push_attaches_the_predictions_and_the_uncertainty_queue_serves_the_least_sure_face_first(project):
    faces = write_faces(project, PHOTOS)
    # pushed before any model: no predictions, the tasks' order
    set_params(project, crowd="none", predictions="none", queue="sequential")
    assert run_push(project) == 0
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    project_id = int(manifest.project_id[0])
    scores = [0.9, 0.6, 0.3, 0.8, 0.5]  # the first task is not the least sure: a sequential queue serves it first
    pd.DataFrame({"face_id": faces.face_id, "label": ["happy", "sad", "neutral", "fear", "angry"], "score": scores,
                  "model": "model-a"}).to_csv(project / "a.csv", index=False)
    set_params(project, predictions=str(project / "a.csv"), queue="uncertainty")
    assert run_push(project) == 0
    assert run_push(project) == 0  # a rerun adds no second prediction
    client = Client()
    predicted = {}
    for face_id, task_id in zip(manifest.face_id, manifest.task_id):
        [prediction] = client.sdk.predictions.list(task=int(task_id))
        predicted[face_id] = (prediction.result[0]["value"]["choices"][0], prediction.score, prediction.model_version)
    assert predicted == {face: (label, score, "model-a") for face, label, score in
                         zip(faces.face_id, ["happy", "sad", "neutral", "fear", "angry"], scores)}
    settings = client.project(project_id)
    assert (settings.sampling, settings.model_version) == ("Uncertainty sampling", "model-a")
    by_score = list(faces.face_id[np.argsort(scores)])
    assert labelled_in_queue_order(client, project_id, 2) == by_score[:2]
    # a retrained model's predictions join the old ones, and its scores order the rest of the queue
    pd.DataFrame({"face_id": faces.face_id, "label": "happy", "score": [0.4, 0.5, 0.1, 0.2, 0.3],
                  "model": "model-b"}).to_csv(project / "b.csv", index=False)
    set_params(project, predictions=str(project / "b.csv"))
    assert run_push(project) == 0
    assert all(len(client.sdk.predictions.list(task=int(t))) == 2 for t in manifest.task_id)
    assert client.project(project_id).model_version == "model-b"
    rest = [faces.face_id[3], faces.face_id[0], faces.face_id[1]]  # by model-b's scores, 0.2, 0.4 and 0.5
    assert labelled_in_queue_order(client, project_id, 3) == rest

"""The train, evaluate and ensemble stages on a tiny made-up FER2013 folder: a kill and a resume give the
weights of an uninterrupted run; the metrics are what a hand computation gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from annotation.labels import EMOTIONS
from models import evaluate, infer, train
from models.evaluate import scores
from models.gradcam import gradcam
from models.predict import save_trained
from models.zoo import create_model
from tests.conftest import REPO

TINY = {"model": "resnet18", "pretrained": None, "input_size": 32, "batch_size": 8, "optimizer": "radam",
        "lr": 0.001, "weight_decay": 0.001, "momentum": 0.9, "plateau_patience": 2, "early_stop": 8, "epochs": 3,
        "augment": {"hflip": True, "rotation": 30}, "seed": 0, "device": "cpu", "precision": "fp32", "workers": 0,
        "resume": True, "fer2013": {}, "vemo": {}}
EVALUATE = {"device": "cpu", "precision": "fp32", "batch_size": 16, "tta": True, "gradcam": 4}


def tiny_fer2013(folder, per_class: int = 12) -> None:
    """A fer2013-stage folder whose classes are learnable: class k has a bright band at row 6k."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(EMOTIONS)), per_class)
    images = rng.integers(0, 60, size=(len(labels), 48, 48)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 6 * k:6 * k + 6] = 220
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    split = np.array(["train", "train", "train", "val", "test", "train"])[np.arange(len(labels)) % 6]
    table = pd.DataFrame({"row_id": np.arange(len(labels)), "label": labels, "emotion": np.asarray(EMOTIONS)[labels],
                          "split": split})
    table.to_csv(folder / "manifest.csv", index=False)
    table[table.split == "test"][["row_id", "label", "emotion"]].to_csv(folder / "private_test.csv", index=False)


def write_params(path, **sections) -> None:
    path.write_text(yaml.safe_dump(sections))


def train_args(tmp_path, out):
    return ["--dataset", "fer2013", "--data", str(tmp_path / "fer2013"), "--out", str(tmp_path / out),
            "--live", str(tmp_path / f"live-{out}"), "--params", str(tmp_path / "params.yaml")]


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    tiny_fer2013(tmp_path / "fer2013")
    write_params(tmp_path / "params.yaml", train=TINY)
    # both runs in fresh processes: a process's thread count changes the last bits of the arithmetic
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    whole_run = subprocess.run([sys.executable, "-m", "models.train", *train_args(tmp_path, "whole")], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=300)
    assert whole_run.returncode == 0, whole_run.stderr

    command = [sys.executable, "-m", "models.train", *train_args(tmp_path, "killed")]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = torch.load(checkpoint, weights_only=False)["state"]["epoch"]
    assert interrupted_at < TINY["epochs"], "the run finished before it could be killed"

    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {interrupted_at}" in resumed.stderr

    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    again = torch.load(checkpoint, weights_only=False)
    assert again["state"] == whole["state"]
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, again["model"][name]), name
    for group, other in zip(whole["optimizer"]["state"].values(), again["optimizer"]["state"].values()):
        for key in group:
            assert torch.equal(torch.as_tensor(group[key]), torch.as_tensor(other[key])), key
    assert whole["scheduler"] == again["scheduler"]
    # dvclive kept every epoch once, across the kill
    steps = pd.read_csv(tmp_path / "live-killed" / "plots" / "metrics" / "val" / "accuracy.tsv", sep="\t")
    assert steps.step.tolist() == list(range(TINY["epochs"]))


def test_other_params_start_afresh_and_more_epochs_continue(tmp_path, caplog):
    tiny_fer2013(tmp_path / "fer2013")
    write_params(tmp_path / "params.yaml", train={**TINY, "epochs": 1})
    train.main(train_args(tmp_path, "run"))
    write_params(tmp_path / "params.yaml", train={**TINY, "epochs": 2})
    with caplog.at_level("INFO", logger="fer"):
        train.main(train_args(tmp_path, "run"))
    assert "resuming after epoch 1" in caplog.text
    write_params(tmp_path / "params.yaml", train={**TINY, "epochs": 2, "lr": 0.01})
    caplog.clear()
    with caplog.at_level("INFO", logger="fer"):
        train.main(train_args(tmp_path, "run"))
    assert "of other params or data; starting afresh" in caplog.text


def test_training_learns_and_evaluation_scores_it(tmp_path):
    tiny_fer2013(tmp_path / "fer2013", per_class=24)
    write_params(tmp_path / "params.yaml", train={**TINY, "epochs": 6, "augment": {"hflip": True, "rotation": 0}},
                 evaluate=EVALUATE)
    train.main(train_args(tmp_path, "model"))
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=False)
    assert saved["val_accuracy"] > 0.5  # chance is 1/7
    evaluate.main(["--dataset", "fer2013", "--data", str(tmp_path / "fer2013"),
                   "--model", str(tmp_path / "model" / "model.pt"), "--predictions", str(tmp_path / "predictions"),
                   "--plots", str(tmp_path / "plots"), "--metrics", str(tmp_path / "metrics.json"),
                   "--params", str(tmp_path / "params.yaml")])
    metrics = json.loads((tmp_path / "metrics.json").read_text())["evaluate_fer2013"]
    assert {"val", "test", "private_test", "test_tta", "private_test_tta"} <= set(metrics)
    predictions = pd.read_csv(tmp_path / "predictions" / "predictions_test.csv")
    probabilities = predictions[[f"p_{e}" for e in EMOTIONS]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert metrics["test"]["accuracy"] == pytest.approx((predictions.predicted == predictions.label).mean(), abs=1e-4)
    confusion = pd.read_csv(tmp_path / "plots" / "confusion.csv")
    assert len(confusion) == metrics["test"]["images"]
    assert (confusion.actual == confusion.predicted).mean() == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    assert cv2.imread(str(tmp_path / "plots" / "gradcam.png")) is not None


def test_gradcam_looks_where_the_class_is():
    # "happy" is the mean of the first feature channel; only the top-left corner of the faces is lit, so the
    # heatmap must be bright there and dark elsewhere
    class MeanOfFirstChannel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.avgpool = torch.nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            pooled = self.avgpool(x[:, :1] * 2.0).flatten(1)
            return torch.cat([torch.zeros(len(x), 3), pooled, torch.zeros(len(x), 3)], dim=1)

    images = torch.zeros(2, 3, 32, 32)
    images[:, :, :12, :12] = 1.0
    cams, probs = gradcam(MeanOfFirstChannel(), images)
    assert cams.shape == (2, 32, 32) and probs.argmax(axis=1).tolist() == [3, 3]
    assert cams[:, :10, :10].min() > 0.9 and cams[:, 16:, 16:].max() < 0.05


def test_inference_finds_one_face_in_a_photo_with_seven_probabilities(tmp_path, capsys):
    torch.manual_seed(0)
    save_trained(tmp_path / "model.pt", "resnet18", create_model("resnet18"), 64, dataset="made up", epoch=0)
    photo = REPO / "sample" / "media" / "photos" / "london_001_08.jpg"
    infer.main(["--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "faces.csv"), "--device", "cpu",
                str(photo), str(tmp_path / "missing.jpg")])
    faces = pd.read_csv(tmp_path / "faces.csv")
    assert len(faces) == 1 and faces.file[0] == str(photo)
    probabilities = faces[[f"p_{e}" for e in EMOTIONS]].to_numpy()
    assert probabilities.sum() == pytest.approx(1, abs=1e-3)
    assert faces.emotion[0] == EMOTIONS[probabilities[0].argmax()]
    out = capsys.readouterr()
    assert f"{photo}\t0.00s" in out.out and "1 face(s) in 1 file(s)" in out.err


def test_torchrun_trains_with_distributed_data_parallel(tmp_path):
    # two processes on the CPU (gloo), as torchrun would start one per GPU
    tiny_fer2013(tmp_path / "fer2013")
    write_params(tmp_path / "params.yaml", train={**TINY, "epochs": 1})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "models.train", *train_args(tmp_path, "ddp")]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # both processes log the epoch's numbers, summed over the two halves of the data: the same line twice
    epoch_lines = [line for line in done.stderr.splitlines() if "epoch 1: loss" in line]
    assert len(epoch_lines) == 2 and epoch_lines[0] == epoch_lines[1]
    saved = torch.load(tmp_path / "ddp" / "model.pt", weights_only=False)
    assert not any(key.startswith("module.") for key in saved["state_dict"])
    steps = pd.read_csv(tmp_path / "live-ddp" / "plots" / "metrics" / "val" / "accuracy.tsv", sep="\t")
    assert steps.step.tolist() == [0]

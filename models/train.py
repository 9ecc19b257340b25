"""train stage: ResMaskingNet (or a baseline) on one dataset, by the paper's recipe or a fast one that fits a time
budget, resumable after a kill.

Reads one dataset (``--dataset fer2013``: the fer2013 stage's folder; ``--dataset vemo``: the splits
stage's manifest) and ``params.yaml:train`` (with ``recipe: fast`` its ``fast`` sub-section overrides the
shared keys; a dataset's own sub-section overrides both). Writes to ``--out``:

- ``model.pt``: the weights of the epoch with the best validation accuracy (for FER2013, PublicTest), with
  what evaluation and inference need to use them (``models.predict.save_trained``: the model's name and
  keyword arguments, the class names, the preprocessing, which is the model's default from
  ``models.zoo.default_preprocessing`` at ``input_size``), the training augmentation and every epoch's
  numbers (``history``);
- ``checkpoint.pt``, while a run is unfinished: the state after the last finished epoch (model, optimizer,
  scheduler, EMA, counters, the fixed number of steps, a fingerprint), so that a rerun after a kill
  continues exactly where the run stopped. A finished run deletes it: it is 1.65 GB for ResMaskingNet with
  RAdam's moments, and DVC would otherwise copy it into its cache with every run. ``resume: false``
  writes none;

and per-epoch loss, accuracy and learning rate through dvclive into ``--live`` (``dvc plots show``).

Resume continues only an unfinished run of the same code, data and params: the fingerprint covers the
params (but ``epochs``, ``early_stop`` and ``resume``), the number of processes, the content of the code in
``CODE`` and of the images (``images.npy``, or every crop the manifest lists) and tables. Anything else
trains afresh.

Recipes (``train.recipe``):

- ``paper`` (Pham et al., ICPR 2020, and the authors' ``configs/fer2013_config.json``): grey images as
  three channels at 224 px, horizontal flip and bilinear rotation within +-30 degrees, batch 48, RAdam with
  learning rate 1e-4 and decoupled weight decay 1e-3; the learning rate divided by 10 after
  ``plateau_patience`` (2) epochs without a gain in validation accuracy; stop after ``early_stop`` (8)
  such epochs or ``epochs`` (50). ``sgd`` and ``adam`` are the alternative optimizers.
- ``fast``: for one GPU and ``budget_minutes``. After a few warm-up steps it times training steps and one
  validation pass (then puts the weights and optimizer back as they were) and fixes the number of steps so
  that steps and per-epoch validations fit the budget; the learning rate warms up linearly for a
  ``warmup`` share of the steps, then follows a cosine to zero; cross-entropy with ``label_smoothing``;
  ``mixup`` (Beta(alpha, alpha); 0: off) and an EMA of the weights (``ema``: its decay per step; null:
  off), which is what is validated and saved.

The data sit on the training device as uint8 and whole batches are augmented there
(``datasets.batched``); no DataLoader, no worker processes. Each epoch's shuffling is drawn from a generator
seeded by (seed, epoch), the same in every process; augmentation, dropout and mixup from one seeded by
(seed, epoch, rank), so each process draws its own and an epoch run after a resume is the epoch an
uninterrupted run would have run. The model runs in channels_last under bf16 autocast (``precision``).
Started by ``torchrun --nproc_per_node N`` it trains with DistributedDataParallel, ``batch_size`` images
per GPU; validation splits the images among the processes without repeating any, and only the first
process logs, prints and writes.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from datasets.batched import Augment, DeviceImages, Preprocessing, augment, to_model_input
from datasets.torch_data import load_split
from models import predict, zoo
from pipeline.common import (StageError, atomic_write, get_logger, load_params, pick_device, read_table, run_stage,
                             sha256_file)
from pipeline.emotions import EMOTIONS

log = get_logger("train")

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("fer2013", "vemo")
RECIPES = ("paper", "fast")
# the code that decides what an epoch computes: a change to any of it trains afresh
CODE = tuple(REPO / name for name in ("models/train.py", "models/zoo.py", "models/resmasking.py", "models/predict.py",
                                      "datasets/torch_data.py", "datasets/batched.py"))
SHARED_KEYS = {"recipe", "model", "pretrained", "input_size", "mask_depths", "batch_size", "optimizer", "lr",
               "weight_decay", "momentum", "plateau_patience", "early_stop", "epochs", "augment", "seed", "device",
               "precision", "resume"}
FAST_KEYS = {"budget_minutes", "warmup", "label_smoothing", "mixup", "ema"}
# params that do not change what an epoch computes: an unfinished run may resume under other values of these
RESUMABLE_PARAMS = {"epochs", "early_stop", "resume"}
# the fast recipe's timing: untimed steps first (cuDNN's autotuning, allocator growth), then timed ones, at
# least 2 and at most 8, and no more than TIMING_SHARE of the budget once there are 2
WARMUP_STEPS, TIMED_STEPS, TIMING_SHARE = 2, 8, 0.05


def stage_params(params: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The effective params: the shared ``train`` keys, with ``fast``'s over them under ``recipe: fast``, and the
    dataset's own sub-section over both; unknown keys and recipes are named."""
    shared = {k: v for k, v in params.items() if k not in (*DATASETS, "fast")}
    unknown = sorted(set(shared) - SHARED_KEYS)
    if unknown:
        raise StageError(f"params.yaml: train has unknown key(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(SHARED_KEYS | {'fast', *DATASETS}))}")
    own = params.get(dataset) or {}
    recipe = own.get("recipe", shared.get("recipe"))
    if recipe not in RECIPES:
        raise StageError(f"params.yaml: train.recipe must be paper or fast, not {recipe!r}")
    p = dict(shared)
    if recipe == "fast":
        fast = params.get("fast")
        if not isinstance(fast, dict):
            raise StageError("params.yaml: train.recipe is fast, but there is no train.fast section")
        unknown = sorted(set(fast) - SHARED_KEYS - FAST_KEYS)
        missing = sorted(FAST_KEYS - set(fast))
        if unknown or missing:
            raise StageError(f"params.yaml: train.fast: unknown key(s) {', '.join(unknown) or 'none'}, missing "
                             f"key(s) {', '.join(missing) or 'none'}")
        p.update(fast)
    unknown = sorted(set(own) - SHARED_KEYS - (FAST_KEYS if recipe == "fast" else set()))
    if unknown:
        raise StageError(f"params.yaml: train.{dataset} has unknown key(s) {', '.join(unknown)}")
    p.update(own)
    missing = sorted(SHARED_KEYS - set(p))
    if missing:
        raise StageError(f"params.yaml: train is missing key(s) {', '.join(missing)}")
    return p


def build_optimizer(name: str, model: nn.Module, p: dict[str, Any]) -> torch.optim.Optimizer:
    if name == "radam":
        # the authors' RAdam decouples weight decay from the gradient, as AdamW does
        return torch.optim.RAdam(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"],
                                 decoupled_weight_decay=True)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    raise StageError(f"params.yaml: train.optimizer must be radam, sgd or adam, not {name!r}")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's shuffling: the same in every process, so that their shards partition the data."""
    return seed * 100_003 + epoch


def stream_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a process's augmentation, dropout and mixup in an epoch: its own in every process."""
    return (epoch_seed(seed, epoch) * 1_000_003 + rank) % (2**63)


def warmup_cosine(total_steps: int, warmup: float) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear from 1/warmup_steps to 1, then a cosine to 0."""
    warmup_steps = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_share = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_share)))

    return factor


def data_hashes(dataset: str, data: Path) -> dict[str, str]:
    """The content of what training reads: for FER2013 ``images.npy`` and its tables, for VEMO the manifest
    and every image it lists (a re-crop that keeps the face ids changes these)."""
    if dataset == "fer2013":
        return {name: sha256_file(data / name) for name in ("images.npy", "manifest.csv")}
    hashes = {"manifest": sha256_file(data)}
    for image in sorted(set(read_table(data).image)):
        hashes[image] = sha256_file(Path(image))
    return hashes


def fingerprint(p: dict[str, Any], dataset: str, data: Path, world_size: int) -> str:
    """What a checkpoint must match to be resumed: the code, the data, the params and the number of processes."""
    recipe = {k: v for k, v in p.items() if k not in RESUMABLE_PARAMS}
    content = json.dumps({"params": recipe, "dataset": dataset, "data": data_hashes(dataset, data),
                          "code": {path.name: sha256_file(path) for path in CODE}, "world_size": world_size},
                         sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()


def save(obj: dict[str, Any], path: Path) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def setup_distributed() -> tuple[int, int, torch.device | None]:
    """Under torchrun: join the process group; returns (rank, world size, device of this process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device("cpu")


def reduce_sum(values: list[float], device: torch.device) -> list[float]:
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(totals)
    return totals.tolist()


class Trainer:
    """One process's share of a training run: the model, its optimizer and schedule, the data on the device."""

    def __init__(self, p: dict[str, Any], preprocessing: Preprocessing, train_set: DeviceImages,
                 val_set: DeviceImages, device: torch.device, rank: int, world_size: int):
        self.p, self.train_set, self.val_set, self.device = p, train_set, val_set, device
        self.preprocessing = preprocessing
        self.rank, self.world_size = rank, world_size
        self.fast = p["recipe"] == "fast"
        self.augment = Augment.from_params(p["augment"])
        self.steps_per_epoch = len(train_set) // (p["batch_size"] * world_size)
        if self.steps_per_epoch == 0:
            raise StageError(f"train: {len(train_set)} training images make no batch of {p['batch_size']} per "
                             f"process in {world_size} process(es); lower train.batch_size")
        torch.manual_seed(p["seed"])
        self.core = zoo.prepare(zoo.create_model(p["model"], num_classes=len(EMOTIONS), pretrained=p["pretrained"],
                                                 mask_depths=p["mask_depths"]), device)
        self.model: nn.Module = self.core
        if world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.core, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = build_optimizer(p["optimizer"], self.model, p)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=p["label_smoothing"] if self.fast else 0.0)
        # fp16 (GPUs without bf16) needs its gradients scaled; for bf16 and fp32 the scaler passes them through
        self.scaler = torch.amp.GradScaler(device.type,
                                           enabled=zoo.autocast_dtype(device, p["precision"]) == torch.float16)
        self.ema = None
        if self.fast and p["ema"]:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.core, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(p["ema"]), use_buffers=True)
        self.scheduler: Any = None
        self.total_steps = 0

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated and saved: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.core

    def set_schedule(self, total_steps: int) -> None:
        self.total_steps = total_steps
        if self.fast:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                               warmup_cosine(total_steps, self.p["warmup"]))
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=0.1, patience=self.p["plateau_patience"], min_lr=1e-6)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This process's training images in epoch ``epoch``: its share of one permutation common to all."""
        shuffle = torch.Generator(self.device).manual_seed(epoch_seed(self.p["seed"], epoch))
        order = torch.randperm(len(self.train_set), generator=shuffle, device=self.device)
        return order[self.rank::self.world_size][:self.steps_per_epoch * self.p["batch_size"]]

    def step(self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """One optimisation step on a batch of uint8 images; returns (loss sum, correct) as tensors."""
        inputs = augment(images, self.augment, generator)
        mixed = None
        if self.fast and self.p["mixup"]:
            share = float(torch.distributions.Beta(self.p["mixup"], self.p["mixup"]).sample())
            partner = torch.randperm(len(inputs), generator=generator, device=self.device)
            inputs = share * inputs + (1 - share) * inputs[partner]
            mixed = share, targets[partner]
        with zoo.autocast(self.device, self.p["precision"]):
            outputs = self.model(to_model_input(inputs, self.preprocessing))
        outputs = outputs.float()
        loss = self.criterion(outputs, targets)
        if mixed is not None:
            loss = mixed[0] * loss + (1 - mixed[0]) * self.criterion(outputs, mixed[1])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.core)
        return loss.detach() * len(targets), (outputs.argmax(1) == targets).sum()

    def train_epoch(self, epoch: int, steps: int) -> tuple[float, float]:
        """``steps`` steps of epoch ``epoch``; mean loss and accuracy over all processes."""
        self.model.train()
        seed = stream_seed(self.p["seed"], epoch, self.rank)
        torch.manual_seed(seed)  # dropout and mixup's share in this process
        generator = torch.Generator(self.device).manual_seed(seed)
        loss_sum, correct = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        batches = self.train_set.batches(self.p["batch_size"], self.epoch_order(epoch)[:steps * self.p["batch_size"]])
        for images, targets in batches:
            loss, right = self.step(images, targets, generator)
            loss_sum += loss
            correct += right
            if self.fast:
                self.scheduler.step()
        seen = steps * self.p["batch_size"]
        loss_total, correct_total, seen_total = reduce_sum([loss_sum.item(), correct.item(), seen], self.device)
        return loss_total / seen_total, correct_total / seen_total

    def validate(self) -> tuple[float, float, int]:
        """Loss, accuracy and the number of validation images, each image scored once in all the processes."""
        model = self.evaluated.eval()
        mine = torch.arange(self.rank, len(self.val_set), self.world_size, device=self.device)
        probs = predict.probabilities(model, self.val_set.batches(self.p["batch_size"], mine), self.device,
                                      self.preprocessing, self.p["precision"], desc="validate")
        labels = self.val_set.labels[mine]
        nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).sum()
        correct = (probs.argmax(1) == labels).sum()
        loss_total, correct_total, seen = reduce_sum([nll.item(), correct.item(), len(mine)], self.device)
        return loss_total / seen, correct_total / seen, int(seen)

    def planned_steps(self, budget_seconds: float, started: float) -> int:
        """The number of steps that, with a validation after each epoch, fit what is left of the budget.

        Times up to ``TIMED_STEPS`` steps after ``WARMUP_STEPS`` untimed ones, and one validation pass, on a
        generator of its own, then puts model, optimizer and EMA back as they were: the run that follows is
        the one the same number of steps would give anyway.
        """
        saved = copy.deepcopy({"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                               "ema": self.ema.state_dict() if self.ema is not None else None})
        generator = torch.Generator(self.device).manual_seed(self.p["seed"] + 7)
        order = torch.randperm(len(self.train_set), generator=generator, device=self.device)
        batch = self.p["batch_size"]
        self.model.train()
        timed: list[float] = []
        for index in range(WARMUP_STEPS + TIMED_STEPS):
            chosen = order[(index * batch) % len(order):][:batch]
            if len(chosen) < batch:
                chosen = order[:batch]
            synchronize(self.device)
            tic = time.perf_counter()
            self.step(self.train_set.images[chosen], self.train_set.labels[chosen], generator)
            synchronize(self.device)
            if index >= WARMUP_STEPS:
                timed.append(time.perf_counter() - tic)
            enough = len(timed) >= 2 and sum(timed) > TIMING_SHARE * budget_seconds
            # decided together: under DDP a process that stepped once more would wait for the others forever
            if reduce([float(enough)], self.device, "max")[0]:
                break
        tic = time.perf_counter()
        self.validate()
        synchronize(self.device)
        per_step, per_validation = reduce([sum(timed) / len(timed), time.perf_counter() - tic], self.device, "max")
        self.core.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        left = budget_seconds - (time.monotonic() - started)
        cap = self.p["epochs"] * self.steps_per_epoch
        steps = min(cap, int(left / per_step))
        while steps > 0 and steps * per_step + math.ceil(steps / self.steps_per_epoch) * per_validation > left:
            steps -= max(1, int((steps * per_step + math.ceil(steps / self.steps_per_epoch) * per_validation - left)
                                / per_step))
        steps = int(reduce([steps], self.device, "min")[0])  # the processes started at different times
        if steps <= 0:
            raise StageError(f"train: a budget of {self.p['budget_minutes']} minute(s) leaves no time to train: a step "
                             f"takes {per_step:.3f} s and a validation {per_validation:.1f} s here")
        log_rank0(self.rank, f"train: fast recipe: {per_step * 1000:.0f} ms a step of {batch} images "
                             f"({batch * self.world_size / per_step:.0f} images/s), {per_validation:.1f} s a validation; "
                             f"{steps} steps ({steps / self.steps_per_epoch:.1f} epochs) fit the budget")
        return steps

    def state_dicts(self) -> dict[str, Any]:
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dicts(self, checkpoint: dict[str, Any]) -> None:
        self.core.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reduce(values: list[float], device: torch.device, how: str) -> list[float]:
    """The largest (``max``) or smallest (``min``) of each value over the processes, so that they all plan the
    same number of steps."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if how == "max" else dist.ReduceOp.MIN)
    return tensor.tolist()


def log_rank0(rank: int, message: str) -> None:
    if rank == 0:
        log.info(message)


def fit(p: dict[str, Any], dataset: str, data: Path, out: Path, on_epoch: Callable[[dict[str, float]], None],
        device: torch.device, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Train by ``p`` (see ``stage_params``), writing ``model.pt`` (and, while unfinished, ``checkpoint.pt``)
    to ``out``; ``on_epoch`` gets each epoch's numbers in the first process, those of epochs restored from a
    checkpoint first. Returns the run's state (epochs, best validation accuracy, history, steps, seconds)."""
    started = time.monotonic()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    preprocessing = zoo.default_preprocessing(p["model"], p["input_size"])
    size = preprocessing.input_size
    if size % 32:
        raise StageError(f"params.yaml: train.input_size must be a multiple of 32 (ResMaskingNet's masks), not {size}")
    train_set = DeviceImages.from_dataset(load_split(dataset, data, "train"), size, device)
    val_set = DeviceImages.from_dataset(load_split(dataset, data, "val"), size, device)
    if len(train_set) == 0 or len(val_set) == 0:
        raise StageError(f"{data}: {dataset} has {len(train_set)} training and {len(val_set)} validation "
                         "images; both are needed")
    trainer = Trainer(p, preprocessing, train_set, val_set, device, rank, world_size)
    run_id = fingerprint(p, dataset, data, world_size)
    checkpoint_path, model_path = out / "checkpoint.pt", out / "model.pt"
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_val_accuracy": -1.0, "best_epoch": 0,
                             "epochs_without_gain": 0, "history": [], "total_steps": 0}
    best_weights = None
    checkpoint = None
    if p["resume"] and checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        saved = torch.load(model_path, map_location=device, weights_only=False) if model_path.exists() else {}
        if checkpoint["fingerprint"] == run_id and saved.get("fingerprint") == run_id:
            state = checkpoint["state"]
            best_weights = saved["state_dict"]
            log_rank0(rank, f"train: {dataset}: resuming after epoch {state['epoch']} from {checkpoint_path}")
        else:
            checkpoint = None
            log_rank0(rank, f"train: {dataset}: {checkpoint_path} is of other code, data or params; starting afresh")
    if p["recipe"] == "fast":
        total = state["total_steps"] or trainer.planned_steps(p["budget_minutes"] * 60, started)
    else:
        total = p["epochs"] * trainer.steps_per_epoch
    trainer.set_schedule(total)
    state["total_steps"] = total
    if checkpoint is not None:
        trainer.load_state_dicts(checkpoint)
    for row in state["history"] if rank == 0 else []:
        on_epoch(row)

    def about() -> dict[str, Any]:
        return {"dataset": dataset, "epoch": state["best_epoch"], "val_accuracy": state["best_val_accuracy"],
                "augment": p["augment"], "recipe": p["recipe"], "history": state["history"], "fingerprint": run_id}

    def write_model(model: nn.Module) -> None:
        predict.save_trained(model_path, model, p["model"], {"mask_depths": p["mask_depths"]}, preprocessing,
                             **about())

    log_rank0(rank, f"train: {dataset}: {p['model']} by the {p['recipe']} recipe on {device}, {len(train_set)} "
                    f"training and {len(val_set)} validation images at {size} px, precision {p['precision']}, "
                    f"{total} steps at most")

    def unfinished() -> bool:
        if p["recipe"] == "fast":
            return state["step"] < total
        return state["epoch"] < p["epochs"] and state["epochs_without_gain"] < p["early_stop"]

    while unfinished():
        epoch = state["epoch"] + 1
        steps = min(trainer.steps_per_epoch, total - state["step"])
        train_loss, train_acc = trainer.train_epoch(epoch, steps)
        val_loss, val_acc, val_seen = trainer.validate()
        if p["recipe"] == "paper":
            trainer.scheduler.step(val_acc)
        gained = val_acc > state["best_val_accuracy"]
        row = {"train/loss": train_loss, "train/accuracy": train_acc, "val/loss": val_loss, "val/accuracy": val_acc,
               "lr": trainer.optimizer.param_groups[0]["lr"], "seconds": time.monotonic() - started}
        state = {**state, "epoch": epoch, "step": state["step"] + steps,
                 "best_val_accuracy": max(val_acc, state["best_val_accuracy"]),
                 "best_epoch": epoch if gained else state["best_epoch"],
                 "epochs_without_gain": 0 if gained else state["epochs_without_gain"] + 1,
                 "history": [*state["history"], row]}
        if gained:
            best_weights = copy.deepcopy(trainer.evaluated.state_dict())
        if rank == 0:
            if p["resume"]:
                if gained:
                    write_model(trainer.evaluated)
                save({**trainer.state_dicts(), "state": state, "fingerprint": run_id}, checkpoint_path)
            on_epoch(row)
        log_rank0(rank, f"train: {dataset}: epoch {epoch}: loss {train_loss:.4f}, accuracy {train_acc:.4f}; "
                        f"validation loss {val_loss:.4f}, accuracy {val_acc:.4f} on {val_seen} images"
                        + (" (best)" if gained else ""))
    if rank == 0:
        final = trainer.evaluated
        final.load_state_dict(best_weights)
        write_model(final)
        checkpoint_path.unlink(missing_ok=True)  # finished: nothing to resume, and no 1.65 GB for DVC's cache
    return {**state, "seconds": time.monotonic() - started}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--data", type=Path, required=True,
                        help="the fer2013 stage's folder, or the splits stage's manifest")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.pt and checkpoint.pt")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder for per-epoch metrics")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    p = stage_params(load_params("train", args.params), args.dataset)
    rank, world_size, device = setup_distributed()
    device = device or pick_device(p["device"])
    live = None
    if rank == 0:
        from dvclive import Live

        # the logs are rewritten from the checkpoint's history, so that they hold each finished epoch once,
        # however the run was killed
        live = Live(str(args.live), resume=False, save_dvc_exp=False, dvcyaml=None)

    def on_epoch(row: dict[str, float]) -> None:
        for name, value in row.items():
            if name != "seconds":
                live.log_metric(name, round(value, 6))
        live.next_step()

    state = fit(p, args.dataset, args.data, args.out, on_epoch, device, rank, world_size)
    if live is not None:
        live.end()
        print(f"train: {args.dataset}: {p['model']} stopped after epoch {state['epoch']} "
              f"({state['seconds']:.0f} s); best validation accuracy {state['best_val_accuracy']:.4f}")
    if world_size > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_stage(main)

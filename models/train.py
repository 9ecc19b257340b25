"""train stage: ResMaskingNet (or a baseline) on one dataset, with the paper's recipe, resumable after a kill.

Reads one dataset (``--dataset fer2013``: the fer2013 stage's folder; ``--dataset vemo``: the splits
stage's manifest) and ``params.yaml:train`` (a dataset's own sub-section overrides the shared keys).
Writes to ``--out``:

- ``model.pt``: the weights of the epoch with the best validation accuracy, with what evaluation and
  inference need to use them (model name, input size, class names);
- ``checkpoint.pt``: the state after the last finished epoch (model, optimizer, scheduler, epoch,
  early-stopping counters, a fingerprint of the params and data), so that a rerun after a kill continues
  exactly where the run stopped;

and per-epoch loss, accuracy and learning rate through dvclive into ``--live`` (``dvc plots show``).

The recipe (Pham et al., ICPR 2020, and the authors' ``configs/fer2013_config.json``): grey images as three
channels at 224 px, horizontal flip and rotation within +-30 degrees, batch 48, learning rate 1e-4,
weight decay 1e-3, momentum 0.9; the learning rate divided by 10 after ``plateau_patience`` (2) epochs
without a gain in validation accuracy; stop after ``early_stop`` (8) such epochs or ``epochs`` (50).
The authors' trainer used RAdam (``optimizer: radam``); ``sgd`` and ``adam`` are the alternatives.

Every epoch draws its shuffling, augmentation and dropout from a generator seeded by (seed, epoch), so an
epoch run after a resume is the epoch an uninterrupted run would have run. On CUDA the model runs in
channels_last under bf16 autocast (``precision``). Started by ``torchrun --nproc_per_node N`` it trains
with DistributedDataParallel, ``batch_size`` images per GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from annotation.labels import EMOTIONS
from datasets.torch_data import load_split, transforms
from models import zoo
from models.predict import save_trained
from pipeline.common import StageError, atomic_write, get_logger, load_params, progress, run_stage, sha256_file

log = get_logger("train")


DATASETS = ("fer2013", "vemo")


def stage_params(params: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The shared ``train`` keys with the dataset's own sub-section laid over them."""
    shared = {k: v for k, v in params.items() if k not in DATASETS}
    return {**shared, **params.get(dataset, {})}


def build_optimizer(name: str, model: nn.Module, p: dict[str, Any]) -> torch.optim.Optimizer:
    if name == "radam":
        return torch.optim.RAdam(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    raise StageError(f"params.yaml: train.optimizer must be radam, sgd or adam, not {name!r}")


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def make_loader(data: Dataset, batch_size: int, workers: int, shuffle: bool, seed: int, epoch: int,
                distributed: bool) -> DataLoader:
    """A loader whose order and worker seeds depend only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    sampler = None
    if distributed:
        sampler = DistributedSampler(data, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, generator=generator, pin_memory=torch.cuda.is_available())


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device, precision: str, desc: str) -> tuple[float, float]:
    """Mean loss and accuracy over the epoch's batches (summed over processes when distributed)."""
    model.train()
    totals = torch.zeros(3, device=device)  # loss sum, correct, seen
    # fp16 (GPUs without bf16) needs its gradients scaled; for bf16 and fp32 the scaler passes them through
    scaler = torch.amp.GradScaler(device.type, enabled=zoo.autocast_dtype(device, precision) == torch.float16)
    for images, targets in progress(loader, desc, unit="batch"):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with zoo.autocast(device, precision):
            outputs = model(images)
            loss = criterion(outputs.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        totals += torch.stack([loss.detach() * len(targets), (outputs.argmax(1) == targets).sum(),
                               torch.tensor(len(targets), device=device)])
    return reduce_totals(totals)


@torch.inference_mode()
def validate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device,
             precision: str) -> tuple[float, float]:
    model.eval()
    totals = torch.zeros(3, device=device)
    for images, targets in loader:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with zoo.autocast(device, precision):
            outputs = model(images).float()
        totals += torch.stack([criterion(outputs, targets) * len(targets), (outputs.argmax(1) == targets).sum(),
                               torch.tensor(len(targets), device=device)])
    return reduce_totals(totals)


def log_epoch(live: Any, row: dict[str, float]) -> None:
    for name, value in row.items():
        live.log_metric(name, round(value, 6))
    live.next_step()


def reduce_totals(totals: torch.Tensor) -> tuple[float, float]:
    if dist.is_initialized():
        dist.all_reduce(totals)
    loss, correct, seen = totals.tolist()
    return loss / max(seen, 1), correct / max(seen, 1)


# params that do not change what an epoch computes: a run may resume under other values of these
RESUMABLE_PARAMS = {"epochs", "early_stop", "resume", "workers"}


def fingerprint(p: dict[str, Any], dataset: str, data: Path) -> str:
    """What a checkpoint must match to be resumed: the params and the data it was trained on."""
    table = data / "manifest.csv" if data.is_dir() else data
    recipe = {k: v for k, v in p.items() if k not in RESUMABLE_PARAMS}
    content = json.dumps({"params": recipe, "dataset": dataset, "data": sha256_file(table)}, sort_keys=True,
                         default=str)
    return hashlib.sha256(content.encode()).hexdigest()


def save(obj: dict[str, Any], path: Path) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def setup_distributed() -> tuple[bool, int, torch.device | None]:
    """Under torchrun: join the process group; returns (distributed, rank, device of this process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, 0, None
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return True, dist.get_rank(), torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return True, dist.get_rank(), torch.device("cpu")


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
    distributed, rank, device = setup_distributed()
    device = device or zoo.pick_device(p["device"])
    torch.manual_seed(p["seed"])
    config = zoo.model_config(p["model"])
    size = p["input_size"] or config["input_size"]
    augment = p["augment"]
    train_set = load_split(args.dataset, args.data, "train",
                           transforms(size, train=True, hflip=augment["hflip"], rotation=augment["rotation"]))
    val_set = load_split(args.dataset, args.data, "val", transforms(size, train=False))
    if len(train_set) == 0 or len(val_set) == 0:
        raise StageError(f"{args.data}: {args.dataset} has {len(train_set)} training and {len(val_set)} validation "
                         "images; both are needed")
    workers = p["workers"] if p["workers"] != "auto" else (min(8, os.cpu_count() or 1) if device.type == "cuda" else 0)

    model = zoo.prepare(zoo.create_model(p["model"], num_classes=len(EMOTIONS), pretrained=p["pretrained"]), device)
    core = model
    if distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = nn.CrossEntropyLoss()
    optimizer = build_optimizer(p["optimizer"], model, p)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1,
                                                           patience=p["plateau_patience"], min_lr=1e-6)
    state = {"epoch": 0, "best_val_accuracy": -1.0, "epochs_without_gain": 0, "history": []}
    run_id = fingerprint(p, args.dataset, args.data)
    checkpoint_path, model_path = args.out / "checkpoint.pt", args.out / "model.pt"
    if p["resume"] and checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if checkpoint["fingerprint"] == run_id and model_path.exists():
            core.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            state = checkpoint["state"]
            log.info(f"train: {args.dataset}: resuming after epoch {state['epoch']} from {checkpoint_path}")
        else:
            log.info(f"train: {args.dataset}: {checkpoint_path} is of other params or data; starting afresh")

    live = None
    if rank == 0:
        from dvclive import Live

        # the logs are rewritten from the checkpoint's history, so that they hold each finished epoch once,
        # however the run was killed
        live = Live(str(args.live), resume=False, save_dvc_exp=False, dvcyaml=None)
        for row in state["history"]:
            log_epoch(live, row)
    log.info(f"train: {args.dataset}: {p['model']} on {device}, {len(train_set)} training and {len(val_set)} "
             f"validation images at {size} px, precision {p['precision']}")
    started = time.monotonic()
    while state["epoch"] < p["epochs"] and state["epochs_without_gain"] < p["early_stop"]:
        epoch = state["epoch"] + 1
        torch.manual_seed(epoch_seed(p["seed"], epoch))  # dropout and augmentation in this process
        loader = make_loader(train_set, p["batch_size"], workers, True, p["seed"], epoch, distributed)
        train_loss, train_acc = train_one_epoch(model, loader, criterion, optimizer, device, p["precision"],
                                                f"train {args.dataset} epoch {epoch}")
        val_loss, val_acc = validate(model, make_loader(val_set, p["batch_size"], workers, False, p["seed"], epoch,
                                                        distributed), criterion, device, p["precision"])
        scheduler.step(val_acc)
        gained = val_acc > state["best_val_accuracy"]
        row = {"train/loss": train_loss, "train/accuracy": train_acc, "val/loss": val_loss, "val/accuracy": val_acc,
               "lr": optimizer.param_groups[0]["lr"]}
        state = {"epoch": epoch, "best_val_accuracy": max(val_acc, state["best_val_accuracy"]),
                 "epochs_without_gain": 0 if gained else state["epochs_without_gain"] + 1,
                 "history": [*state["history"], row]}
        if rank == 0:
            if gained:
                save_trained(model_path, p["model"], core, size, dataset=args.dataset, epoch=epoch, val_accuracy=val_acc)
            save({"model": core.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                  "state": state, "fingerprint": run_id}, checkpoint_path)
            log_epoch(live, row)
        log.info(f"train: {args.dataset}: epoch {epoch}: loss {train_loss:.4f}, accuracy {train_acc:.4f}; "
                 f"validation loss {val_loss:.4f}, accuracy {val_acc:.4f}" + (" (best)" if gained else ""))
    if live is not None:
        live.end()
    print(f"train: {args.dataset}: {p['model']} stopped after epoch {state['epoch']} "
          f"({time.monotonic() - started:.0f} s); best validation accuracy {state['best_val_accuracy']:.4f}")
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_stage(main)

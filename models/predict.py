"""Class probabilities from a trained model: what evaluation, the ensemble and inference share.

``save_trained`` and ``load_trained`` write and rebuild a trained model, ``model.pt`` (its name, input
size and class names travel with the weights); ``probabilities`` runs it over a DataLoader, batched, under the
precision asked for (``auto``: bf16 autocast where the CPU or GPU supports it, see ``models.zoo``), with
optional test-time augmentation: the softmax averaged over the image, its mirror image and small
rotations either way (the authors' evaluation also averaged softmax outputs over augmented copies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from annotation.labels import EMOTIONS
from models import zoo
from pipeline.common import StageError, atomic_write, progress

TTA_ROTATIONS = (-10.0, 10.0)


def save_trained(path: Path, name: str, model: nn.Module, input_size: int, **about: Any) -> None:
    """Write ``model.pt``: the weights with what ``load_trained`` needs to rebuild the model, and ``about``
    (dataset, epoch, validation accuracy)."""
    with atomic_write(path, "wb") as f:
        torch.save({"model": name, "state_dict": model.state_dict(), "input_size": input_size, "classes": EMOTIONS,
                    **about}, f)


def load_trained(path: Path | str, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The model in a train stage's ``model.pt``, in eval mode on ``device``, and its saved description."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: no trained model here; run the train stage first (dvc repro)")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = zoo.create_model(saved["model"], num_classes=len(saved["classes"]))
    model.load_state_dict(saved["state_dict"])
    info = {k: v for k, v in saved.items() if k != "state_dict"}
    return zoo.prepare(model, device).eval(), info


def tta_views(images: torch.Tensor) -> list[torch.Tensor]:
    views = [images, TF.horizontal_flip(images)]
    views += [TF.rotate(images, angle) for angle in TTA_ROTATIONS]
    return views


@torch.inference_mode()
def probabilities(model: nn.Module, loader: DataLoader, device: torch.device, precision: str = "auto",
                  tta: bool = False, desc: str | None = None) -> np.ndarray:
    """Softmax outputs (N x classes) for every image of ``loader``, in its order."""
    batches = []
    for images, _ in progress(loader, desc or "predict", unit="batch"):
        images = images.to(device, non_blocking=True)
        views = tta_views(images) if tta else [images]
        total = 0
        for view in views:
            with zoo.autocast(device, precision):
                logits = model(view.contiguous(memory_format=torch.channels_last))
            total = total + torch.softmax(logits.float(), dim=1)
        batches.append((total / len(views)).cpu().numpy())
    return np.concatenate(batches) if batches else np.zeros((0, 0), dtype=np.float32)

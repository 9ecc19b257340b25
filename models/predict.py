"""Class probabilities from a trained model: the one inference loop that training's validation, evaluation and
inference share.

``save_trained`` and ``load_trained`` write and rebuild a trained model, ``model.pt``: with the weights travel
what inference needs, so that it depends on no ``params.yaml`` or constant agreeing with training: the
architecture's name and keyword arguments (``model``, ``model_kwargs``), the class names (``classes``) and
the preprocessing (``preprocessing``: input size, channels, mean, std and its version, see
``datasets.batched.Preprocessing``). A file without them (written before they travelled) is refused, naming
the file and the key. ``probabilities`` runs a model over batches of uint8 grey images at the model's
input size (``datasets.batched.DeviceImages.batches``), preprocessed as the model file says, under the
precision asked for
(``auto``: bf16 autocast where the CPU or GPU supports it, see ``models.zoo``), optionally with test-time
augmentation by one of two protocols, which the metrics name so that a number is never compared with one
of the other protocol:

- ``fixed``: the softmax averaged over four fixed views: the image, its mirror image and rotations by
  -10 and +10 degrees;
- ``random``: the softmax averaged over ``draws`` random draws of the training augmentation, as the authors
  evaluated (their ``fer2013dataset.py`` with ``tta=True`` draws the training flip and rotation 48 times).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datasets.batched import Augment, Preprocessing, affine_theta, augment, to_float, to_model_input
from models import zoo
from pipeline.common import StageError, atomic_write, progress
from pipeline.emotions import EMOTIONS

FIXED_ROTATIONS = (-10.0, 10.0)
# what a model file must hold for load_trained; the rest (dataset, epoch, history, ...) describes the run
REQUIRED_KEYS = ("model", "model_kwargs", "classes", "preprocessing", "state_dict")


@dataclass(frozen=True)
class TTA:
    """A test-time augmentation protocol: ``fixed`` views, or ``draws`` draws of ``augment`` (``random``)."""

    protocol: str
    draws: int = 0
    augment: Augment | None = None
    seed: int = 0

    def describe(self) -> str:
        if self.protocol == "fixed":
            return "mean softmax over 4 fixed views: the image, its mirror, rotations by -10 and +10 degrees"
        return (f"mean softmax over {self.draws} random draws of the training augmentation ({self.augment}), "
                "the authors' protocol")


def save_trained(path: Path, model: nn.Module, name: str, model_kwargs: dict[str, Any], preprocessing: Preprocessing,
                 **about: Any) -> None:
    """Write ``model.pt``: the weights of ``model``, built by ``zoo.create_model(name, **model_kwargs)`` and
    trained on inputs made by ``preprocessing``, with the class names and ``about`` (dataset, epoch,
    validation accuracy, ...)."""
    with atomic_write(path, "wb") as f:
        torch.save({"model": name, "model_kwargs": dict(model_kwargs), "classes": list(EMOTIONS),
                    "preprocessing": preprocessing.to_dict(), "state_dict": model.state_dict(), **about}, f)


def read_trained(path: Path | str) -> dict[str, Any]:
    """A train stage's ``model.pt`` as saved, checked, its ``preprocessing`` a ``Preprocessing``."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: no trained model here; run the train stage first (dvc repro)")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(saved, dict):
        raise StageError(f"{path}: not a train stage's model file (it holds a {type(saved).__name__})")
    missing = [key for key in REQUIRED_KEYS if key not in saved]
    if missing:
        raise StageError(f"{path}: no key(s) {', '.join(repr(key) for key in missing)}: a model file from before "
                         "the architecture and preprocessing were saved with the weights, or not a train stage's "
                         "model.pt; train it again (dvc repro)")
    return {**saved, "preprocessing": Preprocessing.from_dict(saved["preprocessing"], str(path))}


def load_trained(path: Path | str, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The model in a train stage's ``model.pt``, in eval mode on ``device``, and its saved description (all but
    the weights; ``info["preprocessing"]`` is what ``probabilities`` needs)."""
    saved = read_trained(path)
    model = zoo.create_model(saved["model"], num_classes=len(saved["classes"]), **saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    info = {k: v for k, v in saved.items() if k != "state_dict"}
    return zoo.prepare(model, device).eval(), info


def fixed_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The image (N, 1, H, W), its mirror image and its rotations by ``FIXED_ROTATIONS`` (bilinear)."""
    views = [images, images.flip(-1)]
    for angle in FIXED_ROTATIONS:
        n = len(images)
        theta = affine_theta(torch.full((n,), angle, device=images.device), torch.ones(n, device=images.device),
                             torch.zeros(n, 2, device=images.device))
        grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
        views.append(nn.functional.grid_sample(images, grid, mode="bilinear", align_corners=False))
    return views


@torch.inference_mode()
def probabilities(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], device: torch.device,
                  preprocessing: Preprocessing, precision: str = "auto", tta: TTA | None = None,
                  desc: str | None = None) -> torch.Tensor:
    """Softmax outputs (N x classes, float32, on ``device``) for every image of ``batches``, in their order.

    ``batches`` yields (uint8 images N x size x size at ``preprocessing``'s input size, anything); the model
    must be in eval mode.
    """
    generator = None
    if tta is not None and tta.protocol == "random":
        generator = torch.Generator(device).manual_seed(tta.seed)
    outputs = []
    for images, _ in progress(batches, desc or "predict", unit="batch"):
        images = images.to(device, non_blocking=True)
        if tta is None:
            views = [to_float(images)]
        elif tta.protocol == "fixed":
            views = fixed_views(to_float(images))
        else:
            views = (augment(images, tta.augment, generator) for _ in range(tta.draws))
        total, count = 0, 0
        for view in views:
            with zoo.autocast(device, precision):
                logits = model(to_model_input(view, preprocessing))
            total, count = total + torch.softmax(logits.float(), dim=1), count + 1
        outputs.append(total / count)
    return torch.cat(outputs) if outputs else torch.zeros(0, len(EMOTIONS), device=device)

"""The models this project trains, by name, with their preprocessing, and the device and precision helpers.

Training, evaluation and inference all go through here, so that they build the same model from the
``model`` name in ``params.yaml``, preprocess faces the same way and run at the same precision:

- ``MODELS``: name -> factory(num_classes) for ``resmasking`` (the paper's ResMaskingNet, see
  ``models.resmasking``) and the torchvision baselines ``resnet18`` and ``resnet34`` with a
  ``num_classes``-way head.
- ``create_model(name, num_classes, pretrained)``: ``pretrained=None`` initialises at random (seed
  torch first); ``"imagenet"`` loads torchvision's ImageNet weights into the ResNet backbone (for
  ResMaskingNet its ResNet34; the masking blocks and the head stay random).
- ``default_preprocessing(name, input_size)``: the input a model expects by default
  (``datasets.batched.Preprocessing``), the one source training builds its inputs from; training writes
  it into ``model.pt`` and every loader reads it from there, not from here. Every model here takes the
  authors' preprocessing (their ``utils/datasets/fer2013dataset.py`` and ``rmn`` inference): the face in
  grey, resized to 224 x 224, replicated to three channels, scaled to [0, 1] by ``ToTensor``, and
  no mean/std normalisation (mean 0, std 1); the baselines take the same so that they compare on
  equal terms (the first BN layer absorbs the scale when fine-tuning from ImageNet).
- ``autocast_dtype``/``autocast`` and ``prepare``: at which precision and in which layout to run (the device
  comes from ``pipeline.common.pick_device``). On this project's 2-core CPU (AVX512-BF16, no AMX) bf16 autocast with
  channels_last runs ResMaskingNet's inference about 2.3 times as fast as fp32 at batch 32 and its
  training about 2.2 times; ``benchmarks/model_speed.py`` measures speed and top-1 agreement.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet34_Weights, WeightsEnum

from datasets.batched import Preprocessing
from models.resmasking import resmasking
from pipeline.common import StageError

__all__ = ["MODELS", "create_model", "default_preprocessing", "autocast_dtype", "autocast", "prepare"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resmasking": resmasking,
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
}

# The ImageNet weights of each model's ResNet backbone.
IMAGENET_WEIGHTS: dict[str, WeightsEnum] = {
    "resmasking": ResNet34_Weights.IMAGENET1K_V1,
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
}

# the grey face replicated to three channels, in [0, 1]
AUTHORS_PREPROCESSING = Preprocessing(input_size=224, channels=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
CONFIGS: dict[str, Preprocessing] = {name: AUTHORS_PREPROCESSING for name in MODELS}

PRECISIONS = ("fp32", "bf16", "auto")


def _known(name: str) -> None:
    if name not in MODELS:
        raise StageError(f"unknown model '{name}'; known models: {', '.join(sorted(MODELS))}")


def create_model(name: str, num_classes: int = 7, pretrained: str | None = None,
                 mask_depths: list[int] | None = None) -> nn.Module:
    """A model from ``MODELS`` with a ``num_classes``-way head; see the module docstring for ``pretrained``.
    ``mask_depths`` (ResMaskingNet only; None: the authors' 4, 3, 2, 1) sets its masking blocks' depths."""
    _known(name)
    if pretrained not in (None, "imagenet"):
        raise StageError(f"pretrained must be null or 'imagenet', got {pretrained!r}")
    if mask_depths is not None and name != "resmasking":
        raise StageError(f"mask_depths is ResMaskingNet's; model '{name}' has no masking blocks (set it to null)")
    if mask_depths is not None and (len(mask_depths) != 4 or any(not isinstance(d, int) or d < 1 for d in mask_depths)):
        raise StageError(f"mask_depths must be four depths of at least 1 (or null), got {mask_depths!r}")
    options = {"mask_depths": tuple(mask_depths)} if mask_depths is not None else {}
    model = MODELS[name](num_classes=num_classes, **options)
    if pretrained == "imagenet":
        load_imagenet_backbone(model, name)
    return model


def load_imagenet_backbone(model: nn.Module, name: str) -> None:
    """Load torchvision's ImageNet weights for ``name`` into ``model``, all but the 1000-way head."""
    weights = IMAGENET_WEIGHTS[name]
    try:
        state_dict = weights.get_state_dict(progress=False)
    except OSError as e:  # URLError, HTTPError, timeouts, refused connections
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise StageError(
            f"ImageNet weights for '{name}' are not in the torch hub cache and could not be downloaded "
            f"from {weights.url} ({e}). Download that file where there is internet and put it at {cached} "
            f"(torch.hub's cache: $TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints), "
            f"or train from random initialisation (pretrained: null)."
        ) from None
    backbone = {key: value for key, value in state_dict.items() if not key.startswith("fc.")}
    unexpected = model.load_state_dict(backbone, strict=False).unexpected_keys
    if unexpected:
        raise StageError(f"{weights.url}: keys that '{name}' does not have: {', '.join(unexpected[:5])}")


def default_preprocessing(name: str, input_size: int | None = None) -> Preprocessing:
    """The preprocessing ``name`` is trained with, at ``input_size`` pixels (None: the model's own)."""
    _known(name)
    config = CONFIGS[name]
    return config if input_size is None else dataclasses.replace(config, input_size=input_size)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32.

    ``auto`` picks bf16 on a CPU whose oneDNN has bf16 kernels (AVX512-BF16 or AMX) and on a GPU that
    supports it, fp16 on older GPUs (training then needs ``torch.amp.GradScaler``), fp32 elsewhere.
    """
    if precision not in PRECISIONS:
        raise StageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """A context in which forward passes run at ``precision`` (see ``autocast_dtype``)."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in channels_last, the layout oneDNN's and cuDNN's fast kernels use.

    Give it images in the same layout: ``images.contiguous(memory_format=torch.channels_last)``.
    """
    return model.to(device, memory_format=torch.channels_last)

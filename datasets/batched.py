"""The dataset as one uint8 tensor on the training device, and the augmentation of whole batches there.

The per-image path (``datasets.torch_data.transforms`` through a DataLoader) runs torchvision's transforms
one image at a time in Python, in worker processes; on a GPU that cannot keep up with the model (see
``benchmarks/train_speed.py``). Here, as in airbench (KellerJordan/cifar10-airbench), the images are
resized once to the model's input, kept on the device as uint8 (FER2013 at 96 px is 265 MB; at 224 px,
1.4 GB), and each batch is augmented there with a few tensor operations:

- ``crop_padding``: a random crop of the image padded by that many black pixels on each side (torchvision's
  ``RandomCrop(size, padding)``), by indexing, so the crop's pixels are exactly the padded image's;
- ``hflip``: a horizontal flip of half the images, exact;
- ``rotation``, ``scale``, ``shift``: a rotation within +-``rotation`` degrees, a zoom by a factor within
  1 +- ``scale`` and a shift within +- ``shift`` of the side, all in one ``affine_grid`` + ``grid_sample``
  (bilinear, black outside), the sampling grid of torchvision's ``rotate``/``affine``;
- ``erasing``: with that probability per image a black box of 2-33% of the image with an aspect ratio in
  0.3-3.3 (torchvision's ``RandomErasing`` defaults; a box that would not fit is clipped to the image,
  where torchvision draws again).

Every random number comes from the ``torch.Generator`` passed in, on the images' device, so a run is
reproducible from its seeds. ``tests/test_batched.py`` checks the batch path against the per-image one.

``Preprocessing`` is how a stored grey face becomes a model's input (size, channels, mean, std); training
takes a model's default from ``models.zoo`` and writes it into ``model.pt``, and every loader applies the
one stored there (``to_model_input`` here, ``datasets.torch_data.transforms`` on the per-image path).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from pipeline.common import StageError

RESIZE_CHUNK = 4096  # images resized at once when the dataset is put on the device
# What ``Preprocessing``'s fields mean; a model file records it, and one of another version is refused. Bump
# it when the steps change (another resize, colour input), so that no model is fed what it was not trained on.
PREPROCESSING_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """How a grey uint8 face becomes a model's input, version ``PREPROCESSING_VERSION``: resized to
    ``input_size`` x ``input_size`` (bilinear, antialiased), scaled to [0, 1], in ``channels`` channels (1, or
    the grey image replicated to 3), then ``(x - mean) / std`` per channel. Faces are grey whatever their
    source (``datasets.torch_data`` reads every image as grey)."""

    input_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    version: int = PREPROCESSING_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        problems = []
        if self.version != PREPROCESSING_VERSION:
            problems.append(f"version {self.version!r}, but this code applies version {PREPROCESSING_VERSION}")
        if not isinstance(self.input_size, int) or self.input_size < 1:
            problems.append(f"input_size must be a whole number of pixels, not {self.input_size!r}")
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3, not {self.channels!r}")
        elif len(self.mean) != self.channels or len(self.std) != self.channels:
            problems.append(f"mean {self.mean} and std {self.std} must have one value per channel ({self.channels})")
        if any(s <= 0 for s in self.std):
            problems.append(f"std must be positive, not {self.std}")
        if problems:
            raise StageError("preprocessing: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Any, where: str) -> Preprocessing:
        """From ``to_dict``'s output, as a model file stores it; ``where`` (the file) starts every error."""
        if not isinstance(values, dict):
            raise StageError(f"{where}: 'preprocessing' is {values!r}, not a mapping of "
                             f"{', '.join(PREPROCESSING_KEYS)}")
        missing = [key for key in PREPROCESSING_KEYS if key not in values]
        unknown = sorted(set(values) - set(PREPROCESSING_KEYS))
        if missing or unknown:
            raise StageError(f"{where}: 'preprocessing' lacks key(s) {', '.join(missing) or 'none'} and has unknown "
                             f"key(s) {', '.join(unknown) or 'none'}; expected {', '.join(PREPROCESSING_KEYS)}")
        try:
            return cls(**values)
        except StageError as e:
            raise StageError(f"{where}: {e}") from None


PREPROCESSING_KEYS = tuple(f.name for f in fields(Preprocessing))


@dataclass(frozen=True)
class Augment:
    """What the training augmentation does; each key is a param of ``params.yaml:train.augment``."""

    hflip: bool = True
    rotation: float = 30.0
    scale: float = 0.0
    shift: float = 0.0
    crop_padding: int = 0
    erasing: float = 0.0

    @classmethod
    def from_params(cls, values: dict[str, Any], where: str = "train.augment") -> Augment:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StageError(f"params.yaml: {where} has unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        augment = cls(**values)
        for name in ("rotation", "scale", "shift", "crop_padding", "erasing"):
            if getattr(augment, name) < 0:
                raise StageError(f"params.yaml: {where}.{name} must be >= 0, not {getattr(augment, name)}")
        if augment.erasing > 1 or augment.scale >= 1:
            raise StageError(f"params.yaml: {where}.erasing must be at most 1 and scale below 1, "
                             f"not {augment.erasing} and {augment.scale}")
        return augment


class DeviceImages:
    """Grey images of one split as a uint8 tensor (N, size, size) on ``device``, with labels and ids.

    ``images`` are resized once, by torchvision's ``resize`` (bilinear, antialiased), as the per-image
    path resizes each image.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, ids: list[str]):
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError(f"expected uint8 images (N, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels, self.ids = images, labels, ids

    @classmethod
    def from_dataset(cls, data: Any, size: int, device: torch.device) -> DeviceImages:
        """From a ``datasets.torch_data`` Dataset built without a transform (it yields uint8 H x W tensors)."""
        resized = []
        pending: list[torch.Tensor] = []

        def flush() -> None:
            # same-sized images (FER2013's 48 px) are resized in chunks on the device; others one by one
            if len({p.shape for p in pending}) == 1:
                resized.append(resize(torch.stack(pending).to(device), size))
            else:
                resized.extend(resize(p.to(device)[None], size) for p in pending)
            pending.clear()

        for index in range(len(data)):
            pending.append(data[index][0])
            if len(pending) == RESIZE_CHUNK:
                flush()
        if pending:
            flush()
        images = torch.cat(resized) if resized else torch.zeros(0, size, size, dtype=torch.uint8, device=device)
        labels = torch.tensor(np.asarray(data.labels, dtype=np.int64), device=device)
        return cls(images.contiguous(), labels, list(data.ids))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def batches(self, batch_size: int, indices: torch.Tensor | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) in the order of ``indices`` (default: all, in order)."""
        if indices is None:
            indices = torch.arange(len(self), device=self.device)
        stop = len(indices) - len(indices) % batch_size if drop_last else len(indices)
        for start in range(0, stop, batch_size):
            chosen = indices[start:start + batch_size]
            yield self.images[chosen], self.labels[chosen]


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W) -> uint8 (N, size, size), bilinear and antialiased, as the per-image path's ``Resize``."""
    return TF.resize(images.unsqueeze(1), [size, size], antialias=True)[:, 0]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1], scaled as torchvision's ``ToDtype(scale=True)``."""
    return images.unsqueeze(1).float().mul_(1.0 / 255)


def to_model_input(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (N, H, W) or float (N, 1, H, W) in [0, 1], already at the input size -> float (N, channels, H, W),
    normalised by ``preprocessing``'s mean and std, channels_last."""
    if images.shape[-2:] != (preprocessing.input_size, preprocessing.input_size):
        raise ValueError(f"images of {tuple(images.shape[-2:])} pixels for a model that takes "
                         f"{preprocessing.input_size} x {preprocessing.input_size}; resize them first")
    if images.dtype == torch.uint8:
        images = to_float(images)
    shape = (1, preprocessing.channels, 1, 1)
    mean = torch.tensor(preprocessing.mean, dtype=images.dtype, device=images.device).view(shape)
    std = torch.tensor(preprocessing.std, dtype=images.dtype, device=images.device).view(shape)
    x = (images.expand(-1, preprocessing.channels, -1, -1) - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) matrices for ``affine_grid`` that rotate square images by ``angle`` degrees counter-clockwise,
    zoom by ``scale`` and shift by ``shift`` (N x 2, fractions of the side), about the centre.

    ``affine_grid`` maps each output pixel to where it samples the input, so the matrix is the inverse
    transform: the inverse rotation divided by the zoom; torchvision's ``rotate`` builds the same one
    (``_get_inverse_affine_matrix``), which is what makes the two agree.
    """
    radians = torch.deg2rad(angle)
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    # normalised coordinates span 2 per side; y points down, so a counter-clockwise turn on screen is
    # [[cos, -sin], [sin, cos]] applied to the sampling positions
    tx, ty = -2 * shift[:, 0], -2 * shift[:, 1]
    return torch.stack([torch.stack([cos, -sin, cos * tx - sin * ty], 1),
                        torch.stack([sin, cos, sin * tx + cos * ty], 1)], 1)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of (N, C, H, W) cropped at a random offset from itself padded by ``padding`` black pixels."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    return crop_at(padded, top, left, h, w)


def crop_at(padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (h, w) window of each image at its own (top, left), by gathering rows and columns."""
    rows = (top[:, None] + torch.arange(h, device=padded.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=padded.device))[:, None, None, :]
    batch = torch.arange(len(padded), device=padded.device)[:, None, None, None]
    channels = torch.arange(padded.shape[1], device=padded.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


def random_erasing(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Black boxes of 2-33% of the area, aspect ratio 0.3-3.3 (log-uniform), on a ``probability`` share."""
    n, _, h, w = x.shape
    device = x.device
    area = uniform(n, 0.02, 0.33, generator, device) * h * w
    ratio = torch.exp(uniform(n, math.log(0.3), math.log(3.3), generator, device))
    box_h = torch.sqrt(area * ratio).round().clamp(1, h)
    box_w = torch.sqrt(area / ratio).round().clamp(1, w)
    top = (torch.rand(n, generator=generator, device=device) * (h - box_h + 1)).floor()
    left = (torch.rand(n, generator=generator, device=device) * (w - box_w + 1)).floor()
    erase = torch.rand(n, generator=generator, device=device) < probability
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    box = inside_rows[:, :, None] & inside_cols[:, None, :] & erase[:, None, None]
    return x.masked_fill(box[:, None], 0.0)


def augment(images: torch.Tensor, how: Augment, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, H, W) -> augmented float (N, 1, H, W) in [0, 1], every image with its own random draw."""
    x = to_float(images)
    n, device = len(x), x.device
    if how.crop_padding:
        x = random_crop(x, how.crop_padding, generator)
    if how.hflip:
        flip = torch.rand(n, generator=generator, device=device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if how.rotation or how.scale or how.shift:
        angle = uniform(n, -how.rotation, how.rotation, generator, device)
        scale = uniform(n, 1 - how.scale, 1 + how.scale, generator, device)
        shift = (torch.rand(n, 2, generator=generator, device=device) * 2 - 1) * how.shift
        grid = F.affine_grid(affine_theta(angle, scale, shift), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if how.erasing:
        x = random_erasing(x, how.erasing, generator)
    return x

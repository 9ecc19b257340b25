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
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from pipeline.common import StageError

RESIZE_CHUNK = 4096  # images resized at once when the dataset is put on the device


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
            batch = torch.stack(pending).to(device).unsqueeze(1) if len({p.shape for p in pending}) == 1 else None
            if batch is not None:
                resized.append(TF.resize(batch, [size, size], antialias=True)[:, 0])
            else:
                resized.extend(TF.resize(p.to(device)[None], [size, size], antialias=True) for p in pending)
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


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1], scaled as torchvision's ``ToDtype(scale=True)``."""
    return images.unsqueeze(1).float().mul_(1.0 / 255)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or float (N, 1, H, W) in [0, 1] -> float (N, 3, H, W) in [0, 1], channels_last: the
    authors' preprocessing (grey replicated to three channels, no mean/std normalisation)."""
    if images.dtype == torch.uint8:
        images = to_float(images)
    return images.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


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

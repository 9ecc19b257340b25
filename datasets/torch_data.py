"""The torch Datasets that training, evaluation and inference share, and their transforms.

Two kinds of image lists, one output: a ``(3, size, size)`` float tensor and the class index
(``pipeline.emotions.EMOTIONS``).

- ``Fer2013Images``: the fer2013 stage's ``images.npy`` (every row, index = row id) with one of its tables
  (``manifest.csv`` for the cleaned splits, ``private_test.csv`` for the untouched PrivateTest).
- ``ManifestImages``: the splits stage's manifest, one image file per row.

Preprocessing is what the model's ``datasets.batched.Preprocessing`` says (the Residual Masking Network's by
default: grey images replicated to three channels, resized to the model's input, scaled to [0, 1], no
mean/std normalisation); training adds a horizontal flip and a bilinear rotation within +-30 degrees.
Images are read as grey whatever their source, so FER2013 and our colour crops look the same to the
model. Built without a transform, a Dataset yields the grey uint8 image as it is stored: that is what
``datasets.batched.DeviceImages`` puts on the training device, where training, evaluation and inference
augment and preprocess whole batches. ``transforms`` is the per-image torchvision path that
``tests/test_batched.py`` checks the batched one against and ``benchmarks/train_speed.py`` times.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from datasets.batched import Preprocessing
from pipeline.common import StageError, read_table


def transforms(preprocessing: Preprocessing, train: bool, hflip: bool = True, rotation: float = 30.0) -> v2.Compose:
    """Grey ``uint8`` HxW array -> float tensor (channels, input_size, input_size) by ``preprocessing``;
    augmented when ``train``."""
    size = preprocessing.input_size
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize((size, size), antialias=True)]
    if train:
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if rotation:
            # bilinear, as the authors' imgaug Affine(rotate=...) (torchvision's default is nearest)
            steps.append(v2.RandomRotation(rotation, interpolation=v2.InterpolationMode.BILINEAR))
    if preprocessing.channels == 3:
        steps.append(v2.RGB())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(preprocessing.mean, preprocessing.std)]
    return v2.Compose(steps)


class Fer2013Images(Dataset):
    """Rows of a fer2013-stage table (``row_id``, ``label``; optionally ``split``) over its ``images.npy``."""

    def __init__(self, stage_dir: Path | str, table: str = "manifest.csv", split: str | None = None,
                 transform: v2.Compose | None = None):
        stage_dir = Path(stage_dir)
        rows = read_table(stage_dir / table)
        if split is not None:
            rows = rows[rows.split == split]
        self.row_ids = rows.row_id.to_numpy()
        self.ids = [str(i) for i in self.row_ids]
        self.labels = rows.label.to_numpy()
        self.images_path = stage_dir / "images.npy"
        self.images: np.ndarray | None = None  # opened lazily, so that each DataLoader worker maps its own
        self.transform = transform

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.images is None:
            self.images = np.load(self.images_path, mmap_mode="r")
        image = np.array(self.images[self.row_ids[index]])  # a copy: the map is read-only
        return (self.transform(image) if self.transform else torch.from_numpy(image)), int(self.labels[index])


class ManifestImages(Dataset):
    """Rows of a split manifest (``image``, ``label``, ``split``); relative paths are read from ``root``."""

    def __init__(self, manifest: Path | str | pd.DataFrame, split: str | None = None, root: Path | str = ".",
                 transform: v2.Compose | None = None):
        rows = manifest if isinstance(manifest, pd.DataFrame) else read_table(manifest)
        if split is not None:
            rows = rows[rows.split == split]
        self.paths = [Path(root) / p for p in rows.image]
        self.ids = list(rows.image_id if "image_id" in rows else rows.image)
        self.labels = rows.label.to_numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise StageError(f"{path}: missing or not an image (listed in the split manifest)")
        return (self.transform(image) if self.transform else torch.from_numpy(image)), int(self.labels[index])


def load_split(dataset: str, data: Path | str, split: str) -> Dataset:
    """One split of a dataset by name, as stored (grey uint8): ``fer2013`` reads the fer2013 stage's folder
    (``private_test`` is the untouched PrivateTest), ``vemo`` reads the splits stage's manifest (paths relative
    to the project root)."""
    if dataset == "fer2013":
        if split == "private_test":
            return Fer2013Images(data, table="private_test.csv")
        return Fer2013Images(data, split=split)
    if dataset == "vemo":
        return ManifestImages(data, split=split)
    raise StageError(f"unknown dataset {dataset!r}; expected fer2013 or vemo")

"""Cutting face crops out of frames, and telling near-identical crops apart; OpenCV and NumPy only.

Kept apart from ``pipeline.detection`` (torch, and torchvision through facenet-pytorch: seconds to
import) so that the faces stage, and whatever only crops, starts without them; the stage imports the
detector only when a media item has to be processed.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np


class Boxed(Protocol):
    """What cropping reads of a detected face (``pipeline.detection.Face``): its box, without importing torch."""

    box: np.ndarray  # x1, y1, x2, y2 in the frame's pixels


def square_window(image: np.ndarray, cx: float, cy: float, half_w: float, half_h: float) -> np.ndarray:
    """The part of ``image`` (colour or grey) centred on (cx, cy), padded with black where it leaves the frame."""
    h, w = image.shape[:2]
    x1, y1 = int(round(cx - half_w)), int(round(cy - half_h))
    x2, y2 = int(round(cx + half_w)), int(round(cy + half_h))
    inside = image[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)]
    if inside.size == 0:
        return np.zeros((max(y2 - y1, 1), max(x2 - x1, 1), *image.shape[2:]), dtype=image.dtype)
    return cv2.copyMakeBorder(inside, max(-y1, 0), max(y2 - h, 0), max(-x1, 0), max(x2 - w, 0),
                              cv2.BORDER_CONSTANT, value=(0, 0, 0))


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def crop_face(image: np.ndarray, face: Boxed, margin: float, size: int, square: bool) -> np.ndarray:
    """The face with ``margin`` (a fraction of its size) on every side, resized to ``size`` x ``size``; colour or grey."""
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    if square:
        w = h = max(w, h)
    crop = square_window(image, (x1 + x2) / 2, (y1 + y2) / 2, w * (0.5 + margin), h * (0.5 + margin))
    return resize(crop, size, size)


def dhash(images: np.ndarray) -> np.ndarray:
    """64-bit difference hash of each grey image of a stack ``(n, h, w)``, as uint64.

    Bit ``8 r + c`` (most significant first) says whether cell (r, c) of the image shrunk to 9x8 is brighter
    than its right neighbour: near-identical pictures (re-encoded, re-toned, slightly moved) differ in a few
    bits, different pictures in about half of them.
    """
    bits = np.empty((len(images), 8, 8), dtype=bool)
    for i, image in enumerate(images):
        small = cv2.resize(image, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
        bits[i] = small[:, 1:] > small[:, :-1]
    return np.packbits(bits.reshape(len(images), 64), axis=1).view(">u8").ravel().astype(np.uint64)


class NearDuplicates:
    """Groups consecutive crops of one media that look almost the same (dHash within ``max_bits``).

    A face joins a group that the previous sample continued if it is that close to the group's first
    crop (the one kept when near duplicates are dropped); otherwise it starts a group named after itself.
    Comparing with the first crop, not the latest, keeps a slow change of expression from drifting into
    one group.
    """

    def __init__(self, max_bits: int):
        self.max_bits = max_bits
        self.previous: list[tuple[int, str]] = []  # (hash of the group's first crop, group) of the last sample

    def group(self, faces: list[tuple[int, str]]) -> list[str]:
        groups, current = [], []
        for hash_, face_id in faces:
            best = min(self.previous, key=lambda p: (p[0] ^ hash_).bit_count(), default=None)
            if best is not None and (best[0] ^ hash_).bit_count() <= self.max_bits:
                groups.append(best[1])
                current.append(best)
            else:
                groups.append(face_id)
                current.append((hash_, face_id))
        self.previous = current
        return groups

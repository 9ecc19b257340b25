"""Cutting face crops out of frames, and telling near-identical crops apart; OpenCV and NumPy only.

Kept apart from ``pipeline.detection`` (torch, and torchvision through facenet-pytorch: seconds to
import) so that the faces stage, and whatever only crops, starts without them; the stage imports the
detector only when a media item has to be processed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from pipeline.detection import Face


def square_window(image: np.ndarray, cx: float, cy: float, half_w: float, half_h: float) -> np.ndarray:
    """The part of ``image`` centred on (cx, cy), padded with black where it leaves the frame."""
    h, w = image.shape[:2]
    x1, y1 = int(round(cx - half_w)), int(round(cy - half_h))
    x2, y2 = int(round(cx + half_w)), int(round(cy + half_h))
    inside = image[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)]
    if inside.size == 0:
        return np.zeros((max(y2 - y1, 1), max(x2 - x1, 1), 3), dtype=image.dtype)
    return cv2.copyMakeBorder(inside, max(-y1, 0), max(y2 - h, 0), max(-x1, 0), max(x2 - w, 0),
                              cv2.BORDER_CONSTANT, value=(0, 0, 0))


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def crop_face(image: np.ndarray, face: Face, margin: float, size: int, square: bool) -> np.ndarray:
    """The face with ``margin`` (a fraction of its size) on every side, resized to ``size`` x ``size``."""
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    if square:
        w = h = max(w, h)
    crop = square_window(image, (x1 + x2) / 2, (y1 + y2) / 2, w * (0.5 + margin), h * (0.5 + margin))
    return resize(crop, size, size)


def dhash(grey: np.ndarray) -> int:
    """64-bit difference hash: whether each of 8x8 cells is brighter than its right neighbour."""
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


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

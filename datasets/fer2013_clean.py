"""The fer2013 stage's checks, each a plain function over the whole image array: blank images, byte-identical
and perceptually near duplicates, an image-based not-a-face check, and FER+ majority labels.

All of them are vectorised with numpy over the 35,887 images (the loops that remain run over groups,
candidates or offsets, never over pairs of images), so the full FER2013 is checked in seconds.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from annotation.aggregate import aggregate
from pipeline.common import progress
from pipeline.crops import dhash
from pipeline.emotions import EMOTIONS

# Which copy of a duplicate group is kept: the test copy first, so that the test set stays the one
# papers report on and no training image is a copy of a test image.
USAGE_PRIORITY = {"PrivateTest": 2, "PublicTest": 1, "Training": 0}


def grey_std(images: np.ndarray) -> np.ndarray:
    """Each image's grey-level standard deviation."""
    flat = images.reshape(len(images), -1)
    return np.concatenate([flat[s:s + 4096].std(axis=1) for s in range(0, len(flat), 4096)] or [np.zeros(0)])


def identical_groups(images: np.ndarray) -> np.ndarray:
    """Group number of each image among byte-identical images (numbered 0.. in order of first row), or -1 alone."""
    if len(images) == 0:
        return np.zeros(0, dtype=np.int64)
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    shared = counts[inverse] > 1
    # renumber the shared groups by their first row, so that group numbers follow the file
    order = np.argsort(first[inverse[shared]], kind="stable")
    group_first = first[inverse[shared]][order]
    numbers = np.cumsum(np.r_[True, group_first[1:] != group_first[:-1]]) - 1
    groups = np.full(len(images), -1, dtype=np.int64)
    groups[np.flatnonzero(shared)[order]] = numbers
    return groups


def keepers(groups: np.ndarray, usages: np.ndarray) -> np.ndarray:
    """For each row, the row its group keeps (itself when alone): the highest Usage priority, then the lowest row."""
    rows = np.arange(len(groups))
    keep = rows.copy()
    grouped = np.flatnonzero(groups >= 0)
    if len(grouped) == 0:
        return keep
    priority = np.array([USAGE_PRIORITY[u] for u in usages[grouped]])
    order = np.lexsort((grouped, -priority, groups[grouped]))  # by group, best first
    sorted_rows, sorted_groups = grouped[order], groups[grouped][order]
    first = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
    keep[sorted_rows] = sorted_rows[first][np.cumsum(first) - 1]
    return keep


def near_pairs(hashes: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) of hashes within ``max_bits`` Hamming distance, without comparing all pairs.

    Multi-index hashing: cut the 64 bits into ``max_bits + 1`` bands; two hashes that differ in at most
    ``max_bits`` bits agree exactly on at least one band (pigeonhole). So only hashes that share a band
    value are compared: sort by the band, and compare each hash with its neighbours 1, 2, ... places on
    while they still share it.
    """
    n_bands = max_bits + 1
    edges = np.linspace(0, 64, n_bands + 1).round().astype(int)
    found_i, found_j = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        width = int(high - low)
        mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
        band = (hashes >> np.uint64(low)) & mask
        order = np.argsort(band, kind="stable")
        keys = band[order]
        active = np.flatnonzero(keys[1:] == keys[:-1]) if len(keys) > 1 else np.zeros(0, dtype=np.int64)
        offset = 1
        while len(active):
            found_i.append(order[active])
            found_j.append(order[active + offset])
            offset += 1
            active = active[active + offset < len(keys)]
            active = active[keys[active + offset] == keys[active]]
    if not found_i:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    close = np.bitwise_count(hashes[i] ^ hashes[j]) <= max_bits
    i, j = np.minimum(i[close], j[close]), np.maximum(i[close], j[close])
    pairs = np.unique(i.astype(np.int64) * len(hashes) + j)  # a pair agreeing on several bands, once
    return pairs // len(hashes), pairs % len(hashes)


def correlation(images: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Pearson correlation of the grey levels of images ``i[k]`` and ``j[k]``: blind to brightness and contrast."""
    out = np.empty(len(i))
    for start in range(0, len(i), chunk):
        a = images[i[start:start + chunk]].reshape(-1, images[0].size).astype(np.float32)
        b = images[j[start:start + chunk]].reshape(-1, images[0].size).astype(np.float32)
        a -= a.mean(axis=1, keepdims=True)
        b -= b.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        out[start:start + chunk] = np.divide((a * b).sum(axis=1), norm, out=np.zeros(len(a)), where=norm > 0)
    return out


def near_groups(images: np.ndarray, hashes: np.ndarray, candidates: np.ndarray, max_bits: int,
                min_correlation: float) -> np.ndarray:
    """Group number of each row among near duplicates, -1 for rows alone or not candidates.

    Two candidates are near duplicates when their dHashes differ in at most ``max_bits`` bits and their
    grey levels correlate at least ``min_correlation``; groups are the connected components. The hash
    finds the pairs fast but alone confuses different people in the same pose (FER2013's faces are
    aligned); the correlation confirms the pair is one picture (re-encoded, re-toned, slightly moved).
    """
    groups = np.full(len(hashes), -1, dtype=np.int64)
    i, j = near_pairs(hashes[candidates], max_bits)
    close = correlation(images, candidates[i], candidates[j]) >= min_correlation
    i, j = i[close], j[close]
    if len(i) == 0:
        return groups
    n = len(candidates)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    paired = np.zeros(n, dtype=bool)
    paired[i] = paired[j] = True
    groups[candidates[paired]] = component[paired]
    return groups


def mode_share(images: np.ndarray) -> np.ndarray:
    """The share of each image's pixels at its most common grey level (flat backgrounds: logos, text, drawings)."""
    shares = np.zeros(len(images))
    flat = images.reshape(len(images), -1)
    for start in range(0, len(flat), 4096):
        chunk = flat[start:start + 4096]
        offsets = np.arange(len(chunk))[:, None] * 256
        hist = np.bincount((chunk + offsets).ravel(), minlength=len(chunk) * 256).reshape(len(chunk), 256)
        shares[start:start + len(chunk)] = hist.max(axis=1) / flat.shape[1]
    return shares


class ImageFaceCheck:
    """Says which images are not faces, from the images alone (when no FER+ votes are at hand).

    FER2013's non-faces are mostly drawings, logos, text and icons on a flat background; its faces
    are tight crops that a face detector often misses (MTCNN finds many real faces unlikely), so a
    detector alone is a poor judge. The check therefore flags an image only when both say so: a large
    share of its pixels at one grey level (``min_mode_share``), and none of OpenCV's Haar cascades
    (``cascades``) finds a face in it, padded by a quarter of its side and upscaled to 96 px. The
    cascades run only on the few images the first test leaves, so the check takes about a second.
    ``benchmarks/fer2013_speed.py`` measures it against FER+'s unanimous not-a-face votes.
    """

    def __init__(self, params: dict[str, Any]):
        self.min_mode_share = float(params["min_mode_share"])
        self.cascades = []
        for name in params["cascades"]:
            cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
            if cascade.empty():
                raise ValueError(f"OpenCV has no cascade {name!r} in {cv2.data.haarcascades}")
            self.cascades.append(cascade)

    def has_face(self, image: np.ndarray) -> bool:
        side = image.shape[0]
        padded = cv2.copyMakeBorder(image, side // 4, side // 4, side // 4, side // 4, cv2.BORDER_REPLICATE)
        big = cv2.resize(padded, (96, 96), interpolation=cv2.INTER_LINEAR)
        return any(len(c.detectMultiScale(big, scaleFactor=1.15, minNeighbors=2, minSize=(40, 40))) for c in self.cascades)

    def not_a_face(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each image is judged not a face, and each image's mode share."""
        shares = mode_share(images)
        flagged = np.zeros(len(images), dtype=bool)
        candidates = np.flatnonzero(shares >= self.min_mode_share)
        for row in progress(candidates, "face check", unit="image"):
            flagged[row] = not self.has_face(images[row])
        return flagged, shares


def ferplus_labels(votes: pd.DataFrame, contempt: str) -> tuple[np.ndarray, np.ndarray]:
    """FER+ majority label of each row (index into EMOTIONS, or -1) and, for -1, why (a removal reason).

    The rule is ``annotation.aggregate``'s ``ferplus`` majority, the FER+ authors' own. FER+ has an
    eighth emotion, contempt, that FER2013 lacks: ``contempt: drop`` removes those rows, an emotion
    name merges them into that class.
    """
    if contempt != "drop" and contempt not in EMOTIONS:
        raise ValueError(f"contempt must be 'drop' or one of {', '.join(EMOTIONS)}, not {contempt!r}")
    decided = aggregate(votes, "ferplus")
    names = decided.label.to_numpy(dtype=object)
    if contempt != "drop":
        names = np.where(names == "contempt", contempt, names)
    label = np.array([EMOTIONS.index(n) if n in EMOTIONS else -1 for n in names], dtype=np.int64)
    reason = np.select(
        [label >= 0, names == "contempt", decided.outcome == "not a face", decided.outcome == "unsure",
         decided.outcome == "no votes"],
        ["", "contempt", "not_a_face", "ferplus_unknown", "ferplus_no_votes"], "ferplus_no_majority")
    return label, reason

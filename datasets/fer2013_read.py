"""Reading FER2013 and FER+ for the fer2013 stage: the CSV (plain, .gz or .xz), the Kaggle image folders, FER+ votes.

Every reader returns the images in the source's own order, so that an image's position is its
``row_id`` (FER+ joins FER2013 by row position), and refuses bad input with a ``StageError`` that
names the file, the line and what was wrong. CSV line numbers count the header as line 1, so row
``i`` (0-based) is on line ``i + 2``.

The CSV's pixels are parsed in one pass over all rows (one joined byte string, ``np.fromstring``),
not with a Python ``int()`` per pixel: the full FER2013 (35,887 x 2,304 pixels) parses in seconds.
"""

from __future__ import annotations

import gzip
import io
import lzma
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.common import StageError, progress
from pipeline.emotions import EMOTIONS, VOTE_COLUMNS

SIDE = 48
PIXELS = SIDE * SIDE
COLUMNS = ["emotion", "pixels", "Usage"]
USAGES = ["Training", "PublicTest", "PrivateTest"]
# The Kaggle image-folder layout: which Usage a split folder stands for when a file's name does not
# say (its names usually do: Training_123.jpg, PublicTest_456.jpg, PrivateTest_789.jpg).
FOLDER_USAGE = {"train": "Training", "val": "PublicTest", "validation": "PublicTest", "test": None}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm"}
FERPLUS_COLUMNS = ["Usage", "Image name", *VOTE_COLUMNS]


@dataclass
class Fer2013:
    images: np.ndarray  # uint8 [N, 48, 48], in source order: index == row_id
    labels: np.ndarray  # int [N], index into EMOTIONS
    usages: np.ndarray  # str [N], one of USAGES


def line_of(row: int) -> int:
    """The CSV line of 0-based data row ``row`` (the header is line 1)."""
    return row + 2


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip or xz (told by its first bytes, not its name)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StageError(f"{path}: not found") from None
    except OSError as e:
        raise StageError(f"{path}: cannot be read: {e}") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        if raw[:6] == b"\xfd7zXZ\x00":
            return lzma.decompress(raw)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise StageError(f"{path}: compressed data is damaged: {e}") from None
    return raw


def read_source(path: Path | str, test_usage: str = "PrivateTest") -> Fer2013:
    """FER2013 from ``fer2013.csv`` (plain, .gz or .xz) or from the Kaggle image folders."""
    path = Path(path)
    return read_folders(path, test_usage) if path.is_dir() else read_csv(path)


def read_csv(path: Path) -> Fer2013:
    raw = read_bytes(path)
    try:
        table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise StageError(f"{path}: line 1: empty file; expected a header {','.join(COLUMNS)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise StageError(f"{path}: not a readable CSV: {e}") from None
    table = table.fillna("")  # a short row's missing fields
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise StageError(f"{path}: line 1: missing column(s) {', '.join(missing)}; the header is "
                         f"{','.join(table.columns)}, expected {','.join(COLUMNS)}")
    if len(table) == 0:
        raise StageError(f"{path}: no rows after the header")
    labels = parse_labels(table.emotion, path)
    usages = table.Usage.str.strip().to_numpy()
    unknown = ~np.isin(usages, USAGES)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise StageError(f"{path}: line {line_of(row)}: unknown Usage {usages[row]!r}; expected one of "
                         f"{', '.join(USAGES)}")
    images = parse_pixels(table.pixels.tolist(), path)
    return Fer2013(images, labels, usages.astype(str))


def parse_labels(column: pd.Series, path: Path) -> np.ndarray:
    numbers = pd.to_numeric(column.str.strip(), errors="coerce").to_numpy()
    bad = ~np.isin(numbers, np.arange(len(EMOTIONS)))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise StageError(f"{path}: line {line_of(row)}: emotion {column.iloc[row]!r} is not a label 0-"
                         f"{len(EMOTIONS) - 1} ({', '.join(EMOTIONS)})")
    return numbers.astype(np.int64)


def parse_pixels(texts: list[str], path: Path) -> np.ndarray:
    """[N, 48, 48] uint8 from each row's space-separated grey levels, checked row by row."""
    joined = "\n".join(texts)
    try:
        data = joined.encode("ascii")
    except UnicodeEncodeError:
        data = b""  # a non-ASCII character: found and named below
    if not data or data.translate(None, b"0123456789 \n"):
        row, token = first_bad_token(texts)
        raise StageError(f"{path}: line {line_of(row)}: pixel {token[0] + 1} is {token[1]!r}, not a grey level 0-255")
    # the fast count (spaces + 1) holds when every row is single-spaced without padding
    irregular = b"  " in data or b" \n" in data or b"\n " in data or data[:1] == b" " or data[-1:] == b" "
    if irregular:
        counts = np.array([len(text.split()) for text in texts])
    else:  # str.count, not pandas' .str.count, which runs a regular expression
        counts = np.array([text.count(" ") + 1 if text else 0 for text in texts])
    wrong = counts != PIXELS
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise StageError(f"{path}: line {line_of(row)}: {counts[row]} pixels, expected {PIXELS} ({SIDE}x{SIDE})")
    values = np.fromstring(data, dtype=np.int32, sep=" ")  # text mode: every whitespace separates
    if len(values) != len(texts) * PIXELS:  # cannot happen after the checks above; never reshape garbage
        raise StageError(f"{path}: read {len(values)} pixels from {len(texts)} rows, expected {len(texts) * PIXELS}")
    over = values > 255
    if over.any():
        at = int(np.flatnonzero(over)[0])
        raise StageError(f"{path}: line {line_of(at // PIXELS)}: pixel {at % PIXELS + 1} is {values[at]}, "
                         f"not a grey level 0-255")
    return values.astype(np.uint8).reshape(len(texts), SIDE, SIDE)


def first_bad_token(texts: list[str]) -> tuple[int, tuple[int, str]]:
    """The first row with a token that is not a whole number, and that token's place and text."""
    for row, text in enumerate(texts):
        for place, token in enumerate(text.split()):
            if not re.fullmatch(r"[0-9]+", token, flags=re.ASCII):
                return row, (place, token)
        if not text.strip():
            return row, (0, text)
    return 0, (0, "")


def usage_of_file(name: str, folder_usage: str) -> str:
    """A file's Usage: its name's prefix when it has one (Training_1.jpg), else its split folder's."""
    prefix = name.split("_", 1)[0]
    return prefix if prefix in USAGES else folder_usage


def read_folders(root: Path, test_usage: str = "PrivateTest") -> Fer2013:
    """FER2013 from Kaggle's image folders: ``<split>/<class>/*.jpg`` with split train, val or test.

    Row order (hence row_id): split folders in the order train, val, test, classes in FER2013's order,
    files by name. A file's Usage comes from its name's prefix (Kaggle's files are named
    ``Training_*``, ``PublicTest_*``, ``PrivateTest_*``); a file without one takes its folder's: train is
    Training, val is PublicTest, and test is ``test_usage`` (PrivateTest unless told otherwise), since
    the folders alone do not tell PublicTest from PrivateTest.
    """
    if test_usage not in USAGES:
        raise StageError(f"folder_test_usage {test_usage!r} is not one of {', '.join(USAGES)}")
    splits = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    unknown = [d.name for d in splits if d.name.lower() not in FOLDER_USAGE]
    if unknown or not splits:
        raise StageError(f"{root}: expected split folders {', '.join(FOLDER_USAGE)} holding one folder per class "
                         f"({', '.join(EMOTIONS)}); found {', '.join(unknown) or 'none'}")
    splits.sort(key=lambda d: list(FOLDER_USAGE).index(d.name.lower()))
    files: list[tuple[Path, int, str]] = []
    for split in splits:
        folder_usage = FOLDER_USAGE[split.name.lower()] or test_usage
        for class_dir in sorted(d for d in split.iterdir() if d.is_dir() and not d.name.startswith(".")):
            if class_dir.name.lower() not in EMOTIONS:
                raise StageError(f"{class_dir}: not a class folder; expected one of {', '.join(EMOTIONS)}")
            label = EMOTIONS.index(class_dir.name.lower())
            for file in sorted(class_dir.iterdir()):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((file, label, usage_of_file(file.name, folder_usage)))
    files.sort(key=lambda f: (splits.index(f[0].parent.parent), f[1], f[0].name))
    if not files:
        raise StageError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under its class folders")
    images = np.empty((len(files), SIDE, SIDE), dtype=np.uint8)
    for row, (file, _, _) in enumerate(progress(files, "fer2013 images", unit="image")):
        image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise StageError(f"{file}: image {row} of the folder layout: OpenCV cannot read it as an image")
        if image.shape != (SIDE, SIDE):
            raise StageError(f"{file}: image {row} of the folder layout: {image.shape[1]}x{image.shape[0]} pixels, "
                             f"expected {SIDE}x{SIDE}")
        images[row] = image
    labels = np.array([f[1] for f in files], dtype=np.int64)
    usages = np.array([f[2] for f in files]).astype(str)
    return Fer2013(images, labels, usages)


def read_ferplus(path: Path | str, fer2013: Fer2013) -> pd.DataFrame:
    """FER+'s votes (``fer2013new.csv``), one row per FER2013 row in the same order, checked against FER2013.

    FER+ joins FER2013 by row position (its image names count only the named rows), so the row count
    and each row's Usage must agree.
    """
    path = Path(path)
    try:
        votes = pd.read_csv(io.BytesIO(read_bytes(path)), dtype={"Usage": str, "Image name": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise StageError(f"{path}: not a readable CSV: {e}") from None
    missing = [c for c in FERPLUS_COLUMNS if c not in votes.columns]
    if missing:
        raise StageError(f"{path}: line 1: missing column(s) {', '.join(missing)}; expected {','.join(FERPLUS_COLUMNS)}")
    if len(votes) != len(fer2013.labels):
        raise StageError(f"{path}: {len(votes)} rows, but FER2013 has {len(fer2013.labels)}; FER+ joins FER2013 "
                         f"by row position, so both must be complete")
    counts = votes[VOTE_COLUMNS].apply(pd.to_numeric, errors="coerce")
    bad = counts.isna().any(axis=1).to_numpy() | (counts < 0).any(axis=1).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise StageError(f"{path}: line {line_of(row)}: vote counts must be whole numbers >= 0, got "
                         f"{votes.loc[row, VOTE_COLUMNS].tolist()}")
    mismatch = votes.Usage.str.strip().to_numpy() != fer2013.usages
    if mismatch.any():
        row = int(np.flatnonzero(mismatch)[0])
        raise StageError(f"{path}: line {line_of(row)}: Usage {votes.Usage.iloc[row]!r} where FER2013's row {row} "
                         f"is {str(fer2013.usages[row])!r}; is this FER+ file for this FER2013?")
    out = counts.astype(np.int64)
    out.insert(0, "face_id", np.arange(len(out)))
    out["image_name"] = votes["Image name"].str.strip().to_numpy()
    return out

"""The sample's reference labels (``sample/reference_labels.csv``), read by eye from its media.

The simulated crowd votes around them (``annotation/push.py``) and the FER2013 stand-in is labelled with
them (``datasets/sample_fer2013.py``); they are no ground truth for any real dataset. One row per photo
(``path,,,label``) or per time range of a video (``path,start,end,label``: from ``start`` up to ``end``
seconds); ``path`` is the file's path under ``sample/media``; lines starting with ``#`` are comments.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from pipeline.common import StageError
from pipeline.emotions import LABELS

COLUMNS = ["path", "start", "end", "label"]


def read_reference_labels(path: Path | str) -> pd.DataFrame:
    """The table of ``path``, checked: its columns, each label one of ``LABELS``, each range's start before
    its end; a ``StageError`` names the file and the line of the first fault."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise StageError(f"{path}: the reference labels do not exist") from None
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    try:
        labels = pd.read_csv(io.StringIO("\n".join(line for _, line in numbered)), dtype={"path": str, "label": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise StageError(f"{path}: not a readable CSV: {e}") from None
    if missing := [column for column in COLUMNS if column not in labels]:
        raise StageError(f"{path}: line {numbered[0][0]}: missing column(s) {', '.join(missing)}; expected "
                         f"{','.join(COLUMNS)}")
    for row in labels.itertuples():
        where = f"{path}: line {numbered[row.Index + 1][0]}"
        if row.label not in LABELS:
            raise StageError(f"{where}: label {row.label!r} is not one of {', '.join(LABELS)}")
        if pd.isna(row.start) != pd.isna(row.end) or not (pd.isna(row.start) or row.start < row.end):
            raise StageError(f"{where}: a video's range needs a start before its end (seconds), a photo neither; "
                             f"got start {row.start}, end {row.end}")
    return labels[COLUMNS]


def label_at(labels: pd.DataFrame, media: str, timestamp: float | None) -> str | None:
    """The reference label of ``media`` (its path under sample/media, or a URL that ends in it) at
    ``timestamp`` seconds; None where no row covers it. A photo's row covers it at any time."""
    rows = labels[[media == path or media.endswith("/" + path) for path in labels.path]]
    if timestamp is not None:
        rows = rows[rows.start.isna() | ((rows.start <= timestamp) & (timestamp < rows.end))]
    return rows.label.iloc[0] if len(rows) else None

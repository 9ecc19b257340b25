"""How good each annotator is, from the votes alone and from gold faces.

Per annotator, over the long table of counted votes (``face_id, annotator, label, column``, as the pull
checks them):

- ``agreement_with_others``: the share of their votes that name the plurality label of the *other*
  annotators of the same face (faces where the others tie, or where nobody else voted, are left out), so an
  annotator is never compared with a consensus their own vote is part of;
- ``ds_accuracy``: Dawid-Skene's estimate of the share of their votes that are right (the mean posterior of
  the label they gave, from ``annotation.aggregate.dawid_skene`` run over everyone's votes);
- ``ds_balanced_accuracy``: the mean over true classes of Dawid-Skene's confusion-matrix diagonal, the
  estimated probability of naming a class when it is the true one. An annotator who always answers
  ``happy`` is right about every happy face, so their plain accuracy is the share of happy faces; their
  balanced accuracy is one class in however many they saw: the measure that finds them;
- ``gold_votes``, ``gold_accuracy``: their votes on gold faces (face ids whose label is known, mixed into
  the queue) and the share that name it;
- ``median_seconds``: the median time they took per vote, where the server gives it (Label Studio's
  ``lead_time``).

An annotator with at least ``min_votes`` votes is flagged when the balanced accuracy is below
``min_balanced_accuracy``, or, with at least ``min_gold_votes`` gold votes, the gold accuracy is below
``min_gold_accuracy``; ``flag_reason`` says which. ``counted_votes`` leaves the flagged annotators' votes
out, for aggregation without them.

Dawid-Skene's confusion matrices are returned as a long table (``annotator, true, given, share``): the
estimated probability that the annotator gives ``given`` when the face is ``true``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from annotation.aggregate import dawid_skene
from pipeline.emotions import LABEL_OF_COLUMN, VOTE_COLUMNS

COLUMNS = ["annotator", "votes", "agreement_with_others", "ds_accuracy", "ds_balanced_accuracy", "gold_votes",
           "gold_accuracy", "median_seconds", "flagged", "flag_reason"]


@dataclass(frozen=True)
class Thresholds:
    min_votes: int = 20                 # fewer votes than this: never flagged, too little to tell
    min_balanced_accuracy: float = 0.4  # a random voter among nine labels scores about 0.11
    min_gold_votes: int = 5
    min_gold_accuracy: float = 0.5


def _round(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


def leave_one_out_agreement(items: np.ndarray, labels: np.ndarray, n_items: int, n_classes: int) -> np.ndarray:
    """Per vote: 1.0 if it names the strict plurality of the other votes on its face, 0.0 if not, NaN where
    the others tie or there are none."""
    counts = np.zeros((n_items, n_classes))
    np.add.at(counts, (items, labels), 1)
    others = counts[items]
    others[np.arange(len(items)), labels] -= 1
    top = others.max(axis=1)
    unique = (others == top[:, None]).sum(axis=1) == 1
    defined = unique & (top > 0)
    agree = (others.argmax(axis=1) == labels).astype(float)
    return np.where(defined, agree, np.nan)


def annotator_quality(long: pd.DataFrame, gold: pd.DataFrame | None = None,
                      thresholds: Thresholds = Thresholds()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The annotators table (``COLUMNS``, one row per annotator) and the confusion long table.

    ``long`` needs ``face_id, annotator, column`` (a FER+ vote column per vote) and may carry ``lead_time``
    (seconds); ``gold`` is ``face_id, label`` (our label names)."""
    if long.empty:
        return pd.DataFrame(columns=COLUMNS), pd.DataFrame(columns=["annotator", "true", "given", "share"])
    unknown = sorted(set(long.column) - set(VOTE_COLUMNS))
    if unknown:
        raise ValueError(f"votes name columns that are not FER+ vote columns: {unknown}")
    face_codes, faces = pd.factorize(long.face_id)
    worker_codes, workers = pd.factorize(long.annotator, sort=True)
    column_index = {column: k for k, column in enumerate(VOTE_COLUMNS)}
    labels = long.column.map(column_index).to_numpy()
    n_faces, n_classes, n_workers = len(faces), len(VOTE_COLUMNS), len(workers)

    agreement = leave_one_out_agreement(face_codes, labels, n_faces, n_classes)
    posterior = dawid_skene(face_codes, worker_codes, labels, n_faces, n_classes)
    # the confusion estimate: each vote spreads its face's posterior over the true classes, in its given column
    mass = np.zeros((n_workers, n_classes, n_classes))
    np.add.at(mass, (worker_codes, slice(None), labels), posterior[face_codes])
    per_true = mass.sum(axis=2)  # how many of the annotator's faces were (in expectation) of each true class
    confusion = np.divide(mass, per_true[:, :, None], out=np.zeros_like(mass), where=per_true[:, :, None] > 0)
    right = posterior[face_codes, labels]

    gold_label = None
    if gold is not None and len(gold):
        gold_column = gold.set_index("face_id").label.map({label: c for c, label in LABEL_OF_COLUMN.items()})
        gold_label = long.face_id.map(gold_column)
    seconds = pd.to_numeric(long["lead_time"], errors="coerce") if "lead_time" in long else None

    rows = []
    for w, annotator in enumerate(workers):
        mine = worker_codes == w
        seen = per_true[w] >= 1  # true classes the annotator met at least once, in expectation
        balanced = float(np.diagonal(confusion[w])[seen].mean()) if seen.any() else np.nan
        gold_votes, gold_accuracy = 0, np.nan
        if gold_label is not None:
            on_gold = mine & gold_label.notna().to_numpy()
            gold_votes = int(on_gold.sum())
            if gold_votes:
                gold_accuracy = float((long.column.to_numpy()[on_gold] == gold_label.to_numpy()[on_gold]).mean())
        reasons = []
        if mine.sum() >= thresholds.min_votes and balanced < thresholds.min_balanced_accuracy:
            reasons.append(f"balanced accuracy {balanced:.2f} < {thresholds.min_balanced_accuracy}")
        if gold_votes >= thresholds.min_gold_votes and gold_accuracy < thresholds.min_gold_accuracy:
            reasons.append(f"gold accuracy {gold_accuracy:.2f} < {thresholds.min_gold_accuracy}")
        rows.append({
            "annotator": annotator,
            "votes": int(mine.sum()),
            "agreement_with_others": _round(np.nanmean(agreement[mine]) if np.isfinite(agreement[mine]).any()
                                            else np.nan),
            "ds_accuracy": _round(right[mine].mean()),
            "ds_balanced_accuracy": _round(balanced),
            "gold_votes": gold_votes,
            "gold_accuracy": _round(gold_accuracy),
            "median_seconds": _round(seconds[mine].median()) if seconds is not None else None,
            "flagged": bool(reasons),
            "flag_reason": "; ".join(reasons) or None,
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    w, t, g = np.meshgrid(np.arange(n_workers), np.arange(n_classes), np.arange(n_classes), indexing="ij")
    kept = (per_true[w, t] >= 1).ravel()
    matrices = pd.DataFrame({"annotator": np.asarray(workers)[w.ravel()][kept],
                             "true": np.asarray(VOTE_COLUMNS)[t.ravel()][kept],
                             "given": np.asarray(VOTE_COLUMNS)[g.ravel()][kept],
                             "share": confusion.ravel()[kept].round(4)})
    return table, matrices


def counted_votes(long: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """The votes without those of flagged annotators."""
    flagged = set(quality.loc[quality.flagged, "annotator"])
    return long[~long.annotator.isin(flagged)].reset_index(drop=True)

"""Turning votes into labels, and measuring how much annotators agree.

Every rule works on a votes table: one row per face, one column per FER+ vote column (``pipeline.emotions.VOTE_COLUMNS``),
so our own votes and FER+'s ``fer2013new.csv`` go through the same code. Dawid-Skene also needs who cast
each vote, the long table (``face_id, annotator, label``).

Rules (``annotation.aggregation``):

- ``ferplus`` — the FER+ majority rule, as the FER+ authors' ``_process_data(mode='majority')`` applies it
  (Barsoum et al., "Training Deep Networks for Facial Expression Recognition with Crowd-Sourced Label
  Distribution", ICMI 2016; github.com/microsoft/FERPlus, ``src/ferplus.py``): labels with one vote or
  fewer are dropped as outliers; the label with the most remaining votes wins if it has more than half of
  them; otherwise, or if the winner is ``unknown`` or ``NF``, the face gets no label.
- ``plurality`` — the label with the most votes wins. A winning ``unknown`` or ``NF`` gives no label.
- ``dawid_skene`` — the expectation-maximisation estimate of each annotator's confusion matrix and each
  face's true label (Dawid & Skene, "Maximum Likelihood Estimation of Observer Error-Rates Using the EM
  Algorithm", Applied Statistics 28(1), 1979). It starts from each face's vote shares (the soft plurality
  vote), with a prior on every annotator's confusion matrix (0.1 pseudo-votes a cell, 4 more on the right
  answer: no vote is impossible, and a class no face belongs to cannot take faces over), and
  stops when no posterior moves by more than 1e-6, or after 100 rounds. The label of highest posterior wins;
  a winning ``unknown`` or ``NF`` gives no label.

Ties (``annotation.ties``), for ``plurality`` and ``dawid_skene`` alike: ``none`` leaves a face whose top
labels tie (equal counts; posteriors within 1e-9) unlabelled, ``no majority``; ``random`` draws among the
tied labels with a fixed seed. FER+'s rule has its own: a tie is never more than half, so no label. A face
without votes is never labelled (``no votes``), whatever the rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.emotions import EMOTION_COLUMNS, LABEL_OF_COLUMN, VOTE_COLUMNS

NO_LABEL = -1
UNKNOWN, NOT_A_FACE = VOTE_COLUMNS.index("unknown"), VOTE_COLUMNS.index("NF")


def ferplus_majority(counts: np.ndarray) -> np.ndarray:
    """Column index of the FER+ majority label of each row, or ``NO_LABEL``."""
    kept = np.where(counts > 1, counts, 0).astype(float)  # "outlier removal": one vote or fewer
    best = kept.argmax(axis=1)
    top = kept.max(axis=1)
    winner = np.where(top > 0.5 * kept.sum(axis=1), best, UNKNOWN)
    return np.where(winner < len(EMOTION_COLUMNS), winner, NO_LABEL)


TIE_TOLERANCE = 1e-9  # Dawid-Skene posteriors this close to the top one count as tied with it
# Dawid-Skene's prior on each row of an annotator's confusion matrix, in pseudo-votes: PRIOR_OFF on every
# cell, PRIOR_DIAGONAL more on the right answer (annotators are more often right than not). Without it (0.01
# a cell), columns no face belongs to, among FER+'s ten, took over faces of a common class: 85-94% right on
# crowds that plurality gets 99% right (tests/test_aggregate.py has one); five pseudo-votes a row wash out
# wherever an annotator has voted on a few dozen faces of a class.
PRIOR_OFF, PRIOR_DIAGONAL = 0.1, 4.0


def best(scores: np.ndarray, ties: str = "none", seed: int = 0) -> np.ndarray:
    """Column index of the top score of each row, by the tie policy, or ``NO_LABEL`` for a row of zeros or a
    tie under ``none``; a top ``unknown`` or ``NF`` is ``NO_LABEL`` too."""
    if ties not in ("none", "random"):
        raise ValueError(f"ties must be 'none' or 'random', not {ties!r}")
    top = scores.max(axis=1, keepdims=True)
    tied = (scores >= top - TIE_TOLERANCE) & (top > 0)
    if ties == "random":
        noise = np.random.default_rng(seed).random(scores.shape)
        winner = np.where(tied.any(axis=1), np.where(tied, noise, -1).argmax(axis=1), NO_LABEL)
    else:
        winner = np.where(tied.sum(axis=1) == 1, tied.argmax(axis=1), NO_LABEL)
    return np.where((winner >= 0) & (winner < len(EMOTION_COLUMNS)), winner, NO_LABEL)


def plurality(counts: np.ndarray, ties: str = "none", seed: int = 0) -> np.ndarray:
    """Column index of the most-voted label of each row, or ``NO_LABEL`` (see the module's tie policy)."""
    return best(counts.astype(float), ties, seed)


def dawid_skene(items: np.ndarray, workers: np.ndarray, labels: np.ndarray, n_items: int, n_classes: int,
                iterations: int = 100, tolerance: float = 1e-6) -> np.ndarray:
    """Posterior class probabilities (n_items x n_classes) from votes given as three aligned integer arrays."""
    n_workers = int(workers.max()) + 1 if len(workers) else 0
    counts = np.zeros((n_items, n_classes))
    np.add.at(counts, (items, labels), 1)
    posterior = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # start from the vote shares
    for _ in range(iterations):
        prior = posterior.mean(axis=0) + 1e-9
        # confusion[w, true, given], from the prior's pseudo-votes and the posterior-weighted votes
        confusion = np.full((n_workers, n_classes, n_classes), PRIOR_OFF) + PRIOR_DIAGONAL * np.eye(n_classes)
        np.add.at(confusion, (workers, slice(None), labels), posterior[items])
        confusion /= confusion.sum(axis=2, keepdims=True)
        log_post = np.tile(np.log(prior), (n_items, 1))
        np.add.at(log_post, items, np.log(confusion[workers, :, labels]))
        log_post -= log_post.max(axis=1, keepdims=True)
        updated = np.exp(log_post)
        updated /= updated.sum(axis=1, keepdims=True)
        done = np.abs(updated - posterior).max() < tolerance
        posterior = updated
        if done:
            break
    return posterior


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa over rows with at least two votes (rows may have different numbers of votes)."""
    counts = counts[counts.sum(axis=1) >= 2].astype(float)
    if len(counts) == 0:
        return float("nan")
    n = counts.sum(axis=1)
    observed = ((counts * (counts - 1)).sum(axis=1) / (n * (n - 1))).mean()
    shares = counts.sum(axis=0) / n.sum()
    expected = (shares ** 2).sum()
    return float((observed - expected) / (1 - expected)) if expected < 1 else float("nan")


def krippendorff_alpha(counts: np.ndarray) -> float:
    """Krippendorff's alpha for nominal labels, from the per-row vote counts (rows with one vote add nothing)."""
    counts = counts[counts.sum(axis=1) >= 2].astype(float)
    if len(counts) == 0:
        return float("nan")
    m = counts.sum(axis=1, keepdims=True)
    # coincidences within units: o_ck = sum_u n_uc (n_uk - [c == k]) / (m_u - 1)
    coincidence = np.einsum("uc,uk->ck", counts / (m - 1), counts) - np.diag((counts / (m - 1)).sum(axis=0))
    totals = coincidence.sum(axis=1)
    n = totals.sum()
    disagreement_observed = coincidence.sum() - np.trace(coincidence)
    disagreement_expected = (n * n - (totals ** 2).sum()) / (n - 1)
    if disagreement_expected == 0:
        return float("nan")
    return float(1 - disagreement_observed / disagreement_expected)


def aggregate(votes: pd.DataFrame, method: str, long: pd.DataFrame | None = None, ties: str = "none",
              seed: int = 0) -> pd.DataFrame:
    """The labels table: one row per face of ``votes`` with its label (or none) and how it was decided."""
    counts = votes[VOTE_COLUMNS].to_numpy()
    if method == "ferplus":
        winners = ferplus_majority(counts)
    elif method == "plurality":
        winners = plurality(counts, ties, seed)
    elif method == "dawid_skene":
        if long is None:
            raise ValueError("dawid_skene needs the long table of votes (face_id, annotator, label)")
        # the long table may hold votes on faces that are not to be labelled yet (too few votes)
        long = long[long.face_id.isin(votes.face_id)]
        row_of = pd.Series(np.arange(len(votes)), index=votes.face_id)
        columns = pd.Series(np.arange(len(VOTE_COLUMNS)), index=VOTE_COLUMNS)
        workers = long.annotator.astype("category").cat.codes.to_numpy()
        posterior = dawid_skene(row_of[long.face_id].to_numpy(), workers, columns[long.column].to_numpy(),
                                len(votes), len(VOTE_COLUMNS))
        winners = best(np.where(counts.sum(axis=1, keepdims=True) > 0, posterior, 0), ties, seed)
    else:
        raise ValueError(f"unknown aggregation {method!r}; expected ferplus, plurality or dawid_skene")
    n_votes = counts.sum(axis=1)
    winner_votes = np.where(winners >= 0, counts[np.arange(len(counts)), np.maximum(winners, 0)], 0)
    most = counts.argmax(axis=1)
    reason = np.select(
        [winners >= 0, n_votes == 0, most == NOT_A_FACE, most == UNKNOWN],
        ["decided", "no votes", "not a face", "unsure"], "no majority")
    return pd.DataFrame({
        "face_id": votes.face_id.to_numpy(),
        "label": [LABEL_OF_COLUMN[VOTE_COLUMNS[w]] if w >= 0 else None for w in winners],
        "method": method,
        "outcome": reason,
        "votes": n_votes,
        "agreement": np.round(np.divide(winner_votes, n_votes, out=np.zeros(len(counts)), where=n_votes > 0), 3),
    })

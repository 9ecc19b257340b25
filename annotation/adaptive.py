"""Adaptive votes: which faces still need votes, and why the others stopped.

A face first asks for ``initial`` votes; after each pull the stopping rules, given by name, look at each face's
votes so far in the order they were cast, and a face that one of them settles asks for no more; the others ask
for more, up to ``votes`` (``annotation.votes``). No face stops before ``Rules.min_votes`` votes (1 unless
given; the pull gives none, since it labels a face a rule settled whatever its number of votes, and
``annotation.min_votes`` is then the floor only for faces no rule settled). Rules:

- ``decided`` — the face's label under the aggregation rule (``annotation/aggregate.py``) can no longer change,
  whatever the remaining votes up to ``votes`` are: exact for ``ferplus`` (FER+'s outlier removal and
  more-than-half majority, a winning ``unknown`` or ``NF`` is no label) and ``plurality`` under either tie
  policy (under ``random`` a face stops only when no completion can tie, since a drawn label is not settled).
  It checks the worst case in closed form rather than enumerating completions (see ``decided``).
- ``unanimous`` — the first ``k`` votes are one label (``unsure`` and ``not_a_face`` included).
- ``confident`` — a model of how a face's votes go on, fitted on every face's votes so far, puts the chance
  that the remaining votes change the face's label below ``threshold``. The model is a latent-class
  (Dawid-Skene) model with one confusion matrix shared by all annotators: a face belongs to one of
  ``classes`` latent kinds of face, each with its own distribution over the vote columns (more kinds than
  labels, since a face that half the crowd calls sad and half neutral is a kind of its own), fitted by EM
  (Dempster, Laird & Rubin 1977; Dawid & Skene 1979). Given a face's votes so far, the kind's posterior
  predicts the remaining votes as a multinomial mixture; every completion is enumerated and labelled by the
  aggregation rule, which gives the chance of a change exactly under the model.

``max_votes`` is the reason of a face that has all its votes; a face that needs more has the empty reason.
The reason is what the labels table carries (``stopped_by``). ``decided``, ``unanimous`` and ``max_votes`` only
depend on the face's own votes, so a face they stop stays stopped when late votes arrive; ``confident`` depends
on the fitted model, so the caller keeps a face it stopped stopped.

Votes come as a sequences array: one row per face, one column per vote in the order cast, each entry the index
of the vote's FER+ column (``pipeline.emotions.VOTE_COLUMNS``), ``-1`` after the last vote cast.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd

from annotation.aggregate import NO_LABEL, ferplus_majority, plurality
from pipeline.emotions import EMOTION_COLUMNS, VOTE_COLUMNS

RULES = ("decided", "unanimous", "confident")
NEEDS_MORE = ""
TIED = -2  # a random draw among tied labels: not a settled outcome
N_COLUMNS, N_EMOTIONS = len(VOTE_COLUMNS), len(EMOTION_COLUMNS)


@dataclass(frozen=True)
class Rules:
    """The stopping rules and their params; a face stops as soon as one of ``rules`` settles it."""
    rules: tuple[str, ...] = ("decided",)
    votes: int = 10
    initial: int = 3
    min_votes: int = 1
    aggregation: str = "ferplus"
    ties: str = "none"
    k: int = 4               # unanimous: how many first votes must agree
    threshold: float = 0.01  # confident: the largest chance of a change that still stops a face
    classes: int = 30        # confident: latent kinds of face in the model
    seed: int = 0            # confident: the EM's starting point

    def __post_init__(self) -> None:
        unknown = [r for r in self.rules if r not in RULES]
        if unknown or not self.rules:
            raise ValueError(f"adaptive rules {list(self.rules)}: expected one or more of {', '.join(RULES)}")
        if self.aggregation not in ("ferplus", "plurality"):
            raise ValueError(f"adaptive votes need a rule that counts votes (ferplus or plurality), not "
                             f"{self.aggregation!r}: dawid_skene's label depends on every face's votes")
        if self.ties not in ("none", "random"):
            raise ValueError(f"ties must be 'none' or 'random', not {self.ties!r}")
        if not 1 <= self.initial <= self.votes or not 1 <= self.min_votes <= self.votes:
            raise ValueError(f"initial = {self.initial} and min_votes = {self.min_votes} must be between 1 and "
                             f"votes = {self.votes}")
        if "unanimous" in self.rules and not 2 <= self.k <= self.votes:
            raise ValueError(f"unanimous needs 2 <= k <= votes = {self.votes}, not k = {self.k}")
        if "confident" in self.rules and not (0 < self.threshold < 1 and self.classes >= 1):
            raise ValueError(f"confident needs 0 < threshold < 1 and classes >= 1, not threshold = {self.threshold}, "
                             f"classes = {self.classes}")


def outcome(counts: np.ndarray, aggregation: str, ties: str) -> np.ndarray:
    """The label column of each row of counts under the aggregation rule, ``NO_LABEL``, or ``TIED`` where
    ``random`` ties would draw between different outcomes."""
    if aggregation == "ferplus":
        return ferplus_majority(counts)
    if ties == "none":
        return plurality(counts, "none")
    top = counts.max(axis=1, keepdims=True)
    tied = (counts == top) & (top > 0)
    emotions = tied[:, :N_EMOTIONS].sum(axis=1)
    return np.select([emotions == 0, (emotions == 1) & ~tied[:, N_EMOTIONS:].any(axis=1)],
                     [NO_LABEL, tied[:, :N_EMOTIONS].argmax(axis=1)], TIED)


def decided(counts: np.ndarray, remaining: np.ndarray | int, aggregation: str = "ferplus",
            ties: str = "none") -> np.ndarray:
    """Whether each face's outcome is the same for every way its ``remaining`` votes could fall.

    The worst case, in closed form. A face with label e keeps it unless the other columns can catch up: under
    plurality, e must lead the runner-up by more than the remaining votes. Under FER+'s rule, e must keep more
    votes than all other kept columns together (columns with one vote are dropped), and the most those can
    gain from r votes is r plus one per column now at a single vote (its dropped vote comes back), except
    that a lone vote on an empty column gains nothing. A face without a label keeps none unless some emotion,
    given all remaining votes, would win. Remaining votes may fall on any of FER+'s ten columns; contempt,
    which our labelling config lacks, starts at zero and so never changes the answer."""
    counts = np.asarray(counts, dtype=np.int64)
    remaining = np.broadcast_to(np.asarray(remaining, dtype=np.int64), len(counts))
    current = outcome(counts, aggregation, ties)
    rows = np.arange(len(counts))
    label = np.maximum(current, 0)
    with_all = counts[:, :N_EMOTIONS] + remaining[:, None]  # each emotion given every remaining vote
    if aggregation == "ferplus":
        kept = np.where(counts > 1, counts, 0)
        total = kept.sum(axis=1)
        others = total - kept[rows, label]
        singles = (counts == 1).sum(axis=1)
        gain = remaining + np.minimum(remaining, singles) - ((singles == 0) & (others == 0) & (remaining == 1))
        keeps_label = kept[rows, label] > others + gain
        rest = total[:, None] - kept[:, :N_EMOTIONS]
        none_can_win = ~((with_all >= 2) & (with_all > rest)).any(axis=1)
    else:
        runner_up = np.where(np.arange(N_COLUMNS) == label[:, None], -1, counts).max(axis=1)
        keeps_label = counts[rows, label] > runner_up + remaining
        # the most votes among the other columns, for each emotion
        masked = np.where(np.eye(N_COLUMNS, dtype=bool)[None, :N_EMOTIONS], -1, counts[:, None, :])
        best_other = masked.max(axis=2)
        # under none an emotion must lead outright to win; under random a tie is already a draw it may win
        can_win = with_all >= best_other if ties == "random" else with_all > best_other
        none_can_win = ~can_win.any(axis=1)
    return (remaining <= 0) | np.select([current >= 0, current == NO_LABEL], [keeps_label, none_can_win], False)


def counts_of(sequences: np.ndarray) -> np.ndarray:
    """Vote counts per face (faces x vote columns) of a sequences array."""
    counts = np.zeros((len(sequences), N_COLUMNS), dtype=np.int64)
    faces, _ = np.nonzero(sequences >= 0)
    np.add.at(counts, (faces, sequences[sequences >= 0]), 1)
    return counts


def unanimous(sequences: np.ndarray, k: int) -> np.ndarray:
    """Whether each face's first k votes are all cast and all one label."""
    first = sequences[:, :k]
    return (first.shape[1] == k) & (first[:, :1] >= 0).ravel() & (first == first[:, :1]).all(axis=1)


def compositions(total: int, parts: int = N_COLUMNS) -> np.ndarray:
    """Every way ``total`` votes can fall on ``parts`` columns (stars and bars), one row each."""
    bars = np.array(list(combinations(range(total + parts - 1), parts - 1)), dtype=np.int64)
    bars = bars.reshape(comb(total + parts - 1, parts - 1), parts - 1)
    edges = np.hstack([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), total + parts - 1)])
    return np.diff(edges, axis=1) - 1


class VoteModel:
    """The confident rule's latent-class model of a face's votes (see the module docstring)."""

    def __init__(self, classes: int = 30, seed: int = 0, iterations: int = 200, tolerance: float = 1e-6):
        self.classes, self.seed, self.iterations, self.tolerance = classes, seed, iterations, tolerance

    def fit(self, counts: np.ndarray) -> VoteModel:
        # faces with the same votes have the same posterior: EM over the distinct rows, weighted by how many
        unique, faces = np.unique(np.asarray(counts, dtype=np.int64), axis=0, return_counts=True)
        unique, faces = unique.astype(float), faces[:, None]
        posterior = np.random.default_rng(self.seed).dirichlet(np.ones(self.classes), len(unique))
        for _ in range(self.iterations):
            self.prior = (faces * posterior).sum(axis=0) / faces.sum() + 1e-9
            # classes x vote columns, smoothed so that no vote is impossible
            self.log_votes = np.log(self.normalise((faces * posterior).T @ unique + 1e-2))
            updated = self.posterior(unique)
            done = np.abs(updated - posterior).max() < self.tolerance
            posterior = updated
            if done:
                break
        return self

    @staticmethod
    def normalise(x: np.ndarray) -> np.ndarray:
        return x / x.sum(axis=1, keepdims=True)

    def posterior(self, counts: np.ndarray) -> np.ndarray:
        """Each face's chance of being each latent kind, given its votes so far."""
        log_post = np.log(self.prior) + np.asarray(counts, dtype=float) @ self.log_votes.T
        return self.normalise(np.exp(log_post - log_post.max(axis=1, keepdims=True)))

    def change(self, counts: np.ndarray, remaining: int, aggregation: str = "ferplus", ties: str = "none",
               chunk_rows: int = 1_000_000) -> np.ndarray:
        """The chance, under the model, that each face's outcome after ``remaining`` more votes differs from
        its outcome now (a random draw counts as a change)."""
        counts = np.asarray(counts, dtype=np.int64)
        if remaining <= 0 or len(counts) == 0:
            return np.zeros(len(counts))
        unique, inverse = np.unique(counts, axis=0, return_inverse=True)
        completions = compositions(remaining)
        log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, remaining + 1)))])
        log_ways = log_factorial[remaining] - log_factorial[completions].sum(axis=1)  # multinomial coefficients
        chance = np.exp(log_ways[:, None] + completions @ self.log_votes.T)  # completions x classes
        now = outcome(unique, aggregation, ties)
        step = max(1, chunk_rows // len(completions))
        changed_by_class = np.empty((len(unique), self.classes))
        for start in range(0, len(unique), step):
            block = unique[start:start + step]
            after = outcome((block[:, None, :] + completions[None]).reshape(-1, N_COLUMNS), aggregation, ties)
            after = after.reshape(len(block), len(completions))
            before = now[start:start + step, None]
            changed = (after != before) | (after == TIED) | (before == TIED)
            changed_by_class[start:start + step] = changed.astype(float) @ chance
        return (self.posterior(unique) * changed_by_class).sum(axis=1)[inverse.ravel()]


def stop_reasons(sequences: np.ndarray, rules: Rules, model: VoteModel | None = None) -> np.ndarray:
    """Why each face stopped (a rule's name or ``max_votes``), or ``NEEDS_MORE``.

    ``model`` is the confident rule's fitted model; without one it is fitted here on every face's votes."""
    sequences = np.asarray(sequences, dtype=np.int64)
    if sequences.ndim != 2:
        raise ValueError(f"sequences must be faces x votes, got shape {sequences.shape}")
    if (sequences < -1).any() or (sequences >= N_COLUMNS).any():
        raise ValueError(f"votes must be vote column indices 0..{N_COLUMNS - 1}, or -1 after the last vote cast")
    holes = (np.diff((sequences >= 0).astype(int), axis=1) > 0).any(axis=1)
    if holes.any():
        raise ValueError(f"face {int(np.flatnonzero(holes)[0])}: a vote after a -1; a face's votes come first, "
                         f"then -1s")
    cast = (sequences >= 0).sum(axis=1)
    counts = counts_of(sequences)
    remaining = np.maximum(rules.votes - cast, 0)
    reasons = np.where(remaining == 0, "max_votes", NEEDS_MORE).astype(object)
    may_stop = (remaining > 0) & (cast >= max(rules.initial, rules.min_votes))
    for rule in rules.rules:
        open_ = may_stop & (reasons == NEEDS_MORE)
        if not open_.any():
            break
        if rule == "decided":
            stop = decided(counts, remaining, rules.aggregation, rules.ties)
        elif rule == "unanimous":
            stop = unanimous(sequences, rules.k)
        else:
            if model is None:
                model = VoteModel(rules.classes, rules.seed).fit(counts)
            stop = np.zeros(len(counts), dtype=bool)
            for r in np.unique(remaining[open_]):
                faces = np.flatnonzero(open_ & (remaining == r))
                stop[faces] = model.change(counts[faces], int(r), rules.aggregation, rules.ties) < rules.threshold
        reasons[open_ & stop] = rule
    return reasons.astype(str)


def sequences_from_long(long: pd.DataFrame, face_ids: pd.Series, votes: int) -> np.ndarray:
    """The sequences array of a long table of votes (``face_id``, ``column``), rows of a face in the order
    cast; faces of ``face_ids`` without votes get an empty row."""
    unknown = sorted(set(long.column) - set(VOTE_COLUMNS))
    if unknown:
        raise ValueError(f"votes long table: unknown vote column(s) {unknown}; expected {VOTE_COLUMNS}")
    missing = sorted(set(long.face_id) - set(face_ids))
    if missing:
        raise ValueError(f"votes long table: face_id(s) {missing[:5]} are not among the faces")
    row = pd.Series(np.arange(len(face_ids)), index=pd.Index(face_ids))[long.face_id].to_numpy()
    position = long.groupby("face_id", sort=False).cumcount().to_numpy()
    keep = position < votes
    sequences = np.full((len(face_ids), votes), -1, dtype=np.int64)
    sequences[row[keep], position[keep]] = pd.Index(VOTE_COLUMNS).get_indexer(long.column)[keep]
    return sequences


def settle(long: pd.DataFrame, face_ids: pd.Series, rules: Rules) -> pd.DataFrame:
    """One row per face: its votes, whether it needs more, and why it stopped (``stopped_by``)."""
    sequences = sequences_from_long(long, face_ids, rules.votes)
    reasons = stop_reasons(sequences, rules)
    return pd.DataFrame({"face_id": np.asarray(face_ids), "votes": (sequences >= 0).sum(axis=1),
                         "needs_more": reasons == NEEDS_MORE, "stopped_by": reasons})

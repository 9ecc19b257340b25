"""Adaptive votes: the stopping rules on synthetic crowds at their edges, `decided` against every completion,
the confident rule's chance against brute force, and `decided` on FER+'s real votes."""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd
import pytest

from annotation.adaptive import (
    NEEDS_MORE,
    TIED,
    Rules,
    VoteModel,
    compositions,
    counts_of,
    decided,
    outcome,
    settle,
    stop_reasons,
    unanimous,
)
from annotation.aggregate import NO_LABEL, aggregate, plurality
from pipeline.emotions import VOTE_COLUMNS
from tests.conftest import REPO

FERPLUS = REPO.parent / "shared" / "data" / "ferplus" / "fer2013new.csv"
C = {name: VOTE_COLUMNS.index(name) for name in VOTE_COLUMNS}
N, H, SA, SU, UNK, NF = (C[c] for c in ("neutral", "happiness", "sadness", "surprise", "unknown", "NF"))
RULES = [("ferplus", "none"), ("plurality", "none"), ("plurality", "random")]


def votes(*columns: int, length: int = 10) -> np.ndarray:
    """One face's sequence: the given vote columns in order, then -1s."""
    return np.array([*columns, *[-1] * (length - len(columns))])


def truly_decided(counts: np.ndarray, remaining: int, aggregation: str, ties: str) -> np.ndarray:
    """By brute force: every completion of each row's votes has the row's own outcome (and it is no draw)."""
    now = outcome(counts, aggregation, ties)
    after = outcome((counts[:, None, :] + compositions(remaining)[None]).reshape(-1, len(VOTE_COLUMNS)),
                    aggregation, ties).reshape(len(counts), -1)
    return (remaining == 0) | ((after == now[:, None]).all(axis=1) & (now != TIED))


@pytest.mark.parametrize("aggregation, ties", RULES)
@pytest.mark.parametrize("total", [3, 7])
def test_decided_is_exact_against_every_completion(aggregation, ties, total):
    """Every possible set of votes so far, every possible completion: decided stops exactly the faces whose
    outcome no completion changes; never one whose final label would differ, and none later than it could."""
    stops = []
    for cast in range(total):
        counts = compositions(cast)
        expected = truly_decided(counts, total - cast, aggregation, ties)
        got = decided(counts, total - cast, aggregation, ties)
        wrong = np.flatnonzero(got != expected)
        assert not len(wrong), f"{cast} of {total} votes cast: {counts[wrong[:3]]} decided {got[wrong[:3]]}"
        stops += list(expected)
    assert 0 < sum(stops) < len(stops)  # the check covers faces that stop early and faces that go on


@pytest.mark.parametrize("aggregation, ties", RULES)
def test_decided_is_exact_for_ten_votes_on_sampled_faces(aggregation, ties):
    rng = np.random.default_rng(0)
    for cast in range(2, 9):
        # skewed vote shares, so that many faces are nearly decided
        shares = rng.dirichlet(np.full(len(VOTE_COLUMNS), 0.3), 40)
        counts = np.array([rng.multinomial(cast, p) for p in shares])
        expected = truly_decided(counts, 10 - cast, aggregation, ties)
        assert (decided(counts, 10 - cast, aggregation, ties) == expected).all()


def test_decided_at_the_edges():
    def one(aggregation="ferplus", ties="none", remaining=4, **counts):
        row = np.zeros((1, len(VOTE_COLUMNS)), dtype=int)
        for column, n in counts.items():
            row[0, C[column]] = n
        return bool(decided(row, remaining, aggregation, ties)[0])

    assert one(happiness=6)                       # 6 of 10 at worst: still more than half of what is kept
    assert not one(happiness=5, neutral=1)        # the lone neutral vote comes back: 5 vs 1 + 4 + 1
    assert one(happiness=6, neutral=1, remaining=3)
    assert one(happiness=2, remaining=1)          # one more vote elsewhere is a lone vote, dropped as an outlier
    assert not one(happiness=2, remaining=2)      # two sad votes tie with the two happy ones: no majority
    assert one(NF=6)                              # not a face for good: no emotion can reach more than half
    assert not one(unknown=4, remaining=6)        # unsure now, but six happy votes would make happy win
    assert one(unknown=5, remaining=5)            # five happy votes only tie with the five unsure ones
    assert one(happiness=5, neutral=5, remaining=0)  # all votes in: nothing can change
    assert not one("plurality", "none", happiness=4, remaining=4)  # 4 vs 0 + 4 is a tie: no label
    assert one("plurality", "none", happiness=5, remaining=4)
    assert one("plurality", "none", happiness=3, neutral=3, remaining=0)
    assert not one("plurality", "random", happiness=3, neutral=3, remaining=1)  # a draw is not settled
    assert one("plurality", "random", NF=5, unknown=5, remaining=0)
    # a face without votes is never decided while votes remain
    assert not decided(np.zeros((1, len(VOTE_COLUMNS)), dtype=int), 10)[0]


def test_outcome_names_random_draws_as_ties():
    counts = np.zeros((4, len(VOTE_COLUMNS)), dtype=int)
    counts[0, [H, N]] = 3        # two emotions tied: a draw
    counts[1, [UNK, NF]] = 3     # unsure and not a face tied: no label either way
    counts[2, [H, NF]] = 3       # happy or no label: a draw
    counts[3, H] = 2
    assert list(outcome(counts, "plurality", "random")) == [TIED, NO_LABEL, TIED, H]
    drawn = {tuple(plurality(counts, "random", seed)) for seed in range(50)}
    assert [{d[row] for d in drawn} for row in range(3)] == [{H, N}, {NO_LABEL}, {H, NO_LABEL}]


def test_unanimous_reads_the_first_k_votes_in_order():
    sequences = np.array([votes(H, H, H, N), votes(N, H, H, H), votes(NF, NF, NF), votes(H, H), votes()])
    assert list(unanimous(sequences, 3)) == [True, False, True, False, False]
    rules = Rules(rules=("unanimous",), k=3, initial=1)
    assert list(stop_reasons(sequences, rules)) == ["unanimous", NEEDS_MORE, "unanimous", NEEDS_MORE, NEEDS_MORE]


def test_initial_min_votes_and_max_votes():
    happy = votes(*[H] * 6)
    assert stop_reasons(happy[None], Rules(initial=2))[0] == "decided"
    assert stop_reasons(happy[None], Rules(initial=7))[0] == NEEDS_MORE      # not before the initial votes
    assert stop_reasons(happy[None], Rules(min_votes=7))[0] == NEEDS_MORE    # nor before min_votes
    split = votes(H, N, H, N, H, N, H, N, H, N)
    assert stop_reasons(split[None], Rules())[0] == "max_votes"
    one_annotator = votes(H, length=1)
    assert stop_reasons(one_annotator[None], Rules(votes=1, initial=1))[0] == "max_votes"
    assert stop_reasons(votes(H)[None], Rules(initial=1))[0] == NEEDS_MORE    # one vote decides nothing of ten
    # the first rule that settles a face names it
    both = np.array([votes(H, H, H, H, H, H)])
    assert stop_reasons(both, Rules(rules=("unanimous", "decided"), k=4))[0] == "unanimous"
    assert stop_reasons(both, Rules(rules=("decided", "unanimous"), k=4))[0] == "decided"


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="expected one or more of decided"):
        Rules(rules=("majority",))
    with pytest.raises(ValueError, match="dawid_skene"):
        Rules(aggregation="dawid_skene")
    with pytest.raises(ValueError, match="k = 1"):
        Rules(rules=("unanimous",), k=1)
    with pytest.raises(ValueError, match="min_votes = 11"):
        Rules(min_votes=11)
    with pytest.raises(ValueError, match="face 1: a vote after a -1"):
        stop_reasons(np.array([votes(H), [H, -1, N, -1, -1, -1, -1, -1, -1, -1]]), Rules())
    with pytest.raises(ValueError, match="vote column indices"):
        stop_reasons(np.array([votes(12)]), Rules())


def test_settle_takes_the_long_tables_order_as_the_order_cast():
    long = pd.DataFrame({"face_id": ["a"] * 4 + ["b"] * 4 + ["c"],
                         "column": ["happiness"] * 3 + ["neutral"] + ["neutral"] + ["happiness"] * 3 + ["NF"]})
    table = settle(long, pd.Series(["a", "b", "c", "d"]), Rules(rules=("unanimous",), k=3, initial=1))
    assert list(table.stopped_by) == ["unanimous", NEEDS_MORE, NEEDS_MORE, NEEDS_MORE]
    assert list(table.votes) == [4, 4, 1, 0] and list(table.needs_more) == [False, True, True, True]
    with pytest.raises(ValueError, match="unknown vote column"):
        settle(long.assign(column="happy"), pd.Series(["a", "b", "c"]), Rules())
    with pytest.raises(ValueError, match="not among the faces"):
        settle(long, pd.Series(["a", "b"]), Rules())


def test_vote_model_chance_of_a_change_matches_brute_force():
    """The enumeration of completions (multinomial counts) against every ordered sequence of remaining votes."""
    rng = np.random.default_rng(3)
    model = VoteModel(classes=3)
    model.prior = np.array([0.5, 0.3, 0.2])
    model.log_votes = np.log(rng.dirichlet(np.ones(len(VOTE_COLUMNS)), 3))
    faces = np.array([votes(H, H, N), votes(H, SA, H), votes(NF, NF, UNK), votes(SU, H, N)])
    counts = counts_of(faces)
    remaining = 3
    for aggregation, ties in RULES:
        got = model.change(counts, remaining, aggregation, ties)
        posterior = model.posterior(counts)
        theta = np.exp(model.log_votes)
        now = outcome(counts, aggregation, ties)
        expected = np.zeros(len(counts))
        for sequence in product(range(len(VOTE_COLUMNS)), repeat=remaining):
            after = outcome(counts + counts_of(np.array([sequence])), aggregation, ties)
            changed = (after != now) | (after == TIED) | (now == TIED)
            expected += changed * (posterior * theta[:, list(sequence)].prod(axis=1)).sum(axis=1)
        assert np.allclose(got, expected), (aggregation, ties, got, expected)


def test_confident_stops_clear_faces_early_and_keeps_asking_about_split_ones():
    """A crowd of clear happy and clear sad faces and some split between neutral and sad: after three votes the
    clear ones that agree so far stop, the split ones that showed both labels ask for more."""
    rng = np.random.default_rng(0)
    one_hot = np.eye(len(VOTE_COLUMNS))
    kinds = {"happy": one_hot[H] * 0.95 + 0.005, "sad": one_hot[SA] * 0.95 + 0.005,
             "split": (one_hot[N] + one_hot[SA]) * 0.475 + 0.005}
    kind_of_face = np.repeat(list(kinds), [400, 400, 200])
    sequences = np.array([rng.choice(len(VOTE_COLUMNS), 10, p=kinds[kind] / kinds[kind].sum())
                          for kind in kind_of_face])
    sequences[:, 3:] = -1  # three votes so far
    reasons = stop_reasons(sequences, Rules(rules=("decided", "confident"), initial=3, threshold=0.02, classes=5))
    clear_agreeing = (kind_of_face != "split") & (sequences[:, :3] == sequences[:, :1]).all(axis=1)
    assert (reasons[clear_agreeing] == "confident").mean() > 0.95
    split_showing_both = (kind_of_face == "split") & ~(sequences[:, :3] == sequences[:, :1]).all(axis=1)
    assert (reasons[split_showing_both] == NEEDS_MORE).mean() > 0.95


@pytest.mark.skipif(not FERPLUS.exists(), reason="../shared/data/ferplus is not here")
@pytest.mark.parametrize("aggregation", ["ferplus", "plurality"])
def test_decided_gives_the_ten_vote_labels_on_real_ferplus_votes(aggregation):
    counts = pd.read_csv(FERPLUS, usecols=VOTE_COLUMNS, nrows=400)[VOTE_COLUMNS].to_numpy()
    rng = np.random.default_rng(0)
    sequences = np.full((len(counts), 10), -1)
    for face, row in enumerate(counts):
        cast = rng.permutation(np.repeat(np.arange(len(VOTE_COLUMNS)), row))
        sequences[face, :len(cast)] = cast
    rules = Rules(aggregation=aggregation, initial=1)
    taken = np.full(len(counts), 10)
    for n in range(1, 11):
        now = np.where(np.arange(10) < n, sequences, -1)
        stopped = (stop_reasons(now, rules) != NEEDS_MORE) & (taken == 10)
        taken[stopped] = n
    at_stop = counts_of(np.where(np.arange(10) < taken[:, None], sequences, -1))
    label = {name: aggregate(pd.DataFrame(c, columns=VOTE_COLUMNS).assign(face_id=range(len(c))), aggregation).label
             for name, c in (("stop", at_stop), ("full", counts))}
    assert (label["stop"].fillna("-") == label["full"].fillna("-")).all()
    assert taken.mean() < 9  # and it saved votes

"""Vote aggregation and agreement: the rules at their edges, small crowds with known truth, and FER+ itself."""

from __future__ import annotations

import sys
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from annotation.aggregate import (
    NO_LABEL,
    aggregate,
    dawid_skene,
    ferplus_majority,
    fleiss_kappa,
    krippendorff_alpha,
    plurality,
)
from pipeline.emotions import VOTE_COLUMNS
from tests.conftest import REPO

FERPLUS = REPO.parent / "shared" / "data" / "ferplus" / "fer2013new.csv"
N, H, SU, SA, NF, UNK = (VOTE_COLUMNS.index(c) for c in ("neutral", "happiness", "surprise", "sadness", "NF", "unknown"))


def row(**votes: int) -> np.ndarray:
    counts = np.zeros(len(VOTE_COLUMNS), dtype=int)
    for column, n in votes.items():
        counts[VOTE_COLUMNS.index(column)] = n
    return counts


@pytest.mark.parametrize("votes, expected", [
    (row(happiness=6, neutral=4), H),                      # a plain majority
    (row(happiness=5, neutral=5), NO_LABEL),               # a tie is no majority
    (row(happiness=5, neutral=4, sadness=1), H),           # the single vote is an outlier: 5 of 9 > half
    (row(happiness=4, neutral=3, sadness=3), NO_LABEL),    # 4 of 10 is not more than half
    (row(happiness=4, neutral=2, sadness=1, fear=1, anger=1, disgust=1), H),  # outliers dropped: 4 of 6
    (row(NF=7, happiness=3), NO_LABEL),                    # not a face wins: no label
    (row(unknown=6, happiness=4), NO_LABEL),               # unknown wins: no label
    (row(contempt=6, neutral=4), VOTE_COLUMNS.index("contempt")),
    (row(happiness=1, neutral=1, sadness=1), NO_LABEL),    # every vote is an outlier
    (row(), NO_LABEL),                                     # no votes
    (row(happiness=2), H),                                 # one annotator twice is still a majority of what is left
])
def test_ferplus_majority_rule(votes, expected):
    assert ferplus_majority(votes[None, :])[0] == expected


def test_plurality_ties():
    counts = np.array([row(happiness=4, neutral=4, sadness=2), row(happiness=3, sadness=1), row(NF=5, happiness=1)])
    assert list(plurality(counts, "none")) == [NO_LABEL, H, NO_LABEL]
    drawn = [plurality(counts, "random", seed)[0] for seed in range(20)]
    assert set(drawn) == {N, H}  # both tied labels come up, and nothing else
    assert plurality(counts, "random", 3)[0] == plurality(counts, "random", 3)[0]
    with pytest.raises(ValueError, match="ties"):
        plurality(counts, "first")


def simulated_crowd(n_items=300, n_classes=4, accuracies=(0.9, 0.85, 0.8, 0.3, 0.3, 0.3, 0.3), seed=1):
    rng = np.random.default_rng(seed)
    truth = rng.integers(n_classes, size=n_items)
    items, workers, labels = [], [], []
    for w, accuracy in enumerate(accuracies):
        right = rng.random(n_items) < accuracy
        wrong = (truth + rng.integers(1, n_classes, size=n_items)) % n_classes
        items += list(range(n_items))
        workers += [w] * n_items
        labels += list(np.where(right, truth, wrong))
    return truth, np.array(items), np.array(workers), np.array(labels)


def test_dawid_skene_learns_who_to_trust():
    truth, items, workers, labels = simulated_crowd()
    counts = np.zeros((len(truth), 4), dtype=int)
    np.add.at(counts, (items, labels), 1)
    majority_accuracy = (counts.argmax(axis=1) == truth).mean()
    ds_accuracy = (dawid_skene(items, workers, labels, len(truth), 4).argmax(axis=1) == truth).mean()
    assert ds_accuracy > majority_accuracy + 0.05
    assert ds_accuracy > 0.9


def test_dawid_skene_does_not_give_the_unused_columns_faces_of_a_good_crowd():
    """Ten vote columns, as the pipeline runs it, of which the faces' true labels use six: eight annotators
    right 60 to 90% of the time, wrong uniformly among the other labels. Plurality gets nearly every face;
    with too little smoothing, the unused columns (NF, unknown, disgust...) absorbed some of the happy
    faces, and Dawid-Skene got 85% of them."""
    rng = np.random.default_rng(0)
    used = [H, N, SA, SU, VOTE_COLUMNS.index("anger"), VOTE_COLUMNS.index("fear")]
    truth = rng.choice(used, 400, p=[0.45, 0.2, 0.1, 0.1, 0.1, 0.05])
    items, workers, labels = [], [], []
    for w, p in enumerate(np.linspace(0.6, 0.9, 8)):
        wrong = [[c for c in range(len(VOTE_COLUMNS)) if c not in (t, VOTE_COLUMNS.index("contempt"))]
                 for t in truth]
        for i, t in enumerate(truth):
            items.append(i)
            workers.append(w)
            labels.append(t if rng.random() < p else wrong[i][rng.integers(len(wrong[i]))])
    items, workers, labels = map(np.array, (items, workers, labels))
    counts = np.zeros((len(truth), len(VOTE_COLUMNS)), dtype=int)
    np.add.at(counts, (items, labels), 1)
    assert (counts.argmax(axis=1) == truth).mean() >= 0.99
    posterior = dawid_skene(items, workers, labels, len(truth), len(VOTE_COLUMNS))
    assert (posterior.argmax(axis=1) == truth).mean() >= 0.99


def test_dawid_skene_returns_a_unanimous_crowds_labels():
    labels = np.array([0, 2, 1, 2])
    items, workers = np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4)
    posterior = dawid_skene(items, workers, labels[items], 4, 3)
    assert list(posterior.argmax(axis=1)) == list(labels)
    assert np.allclose(posterior.sum(axis=1), 1)


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories; kappa = 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(np.array([[10, 0], [0, 10], [10, 0]])) == 1.0


def pairwise_alpha(counts: np.ndarray) -> float:
    """Krippendorff's nominal alpha from its definition: pairable values within units, one pair at a time."""
    units = [np.repeat(np.arange(counts.shape[1]), r) for r in counts if r.sum() >= 2]
    o = np.zeros((counts.shape[1],) * 2)
    for values in units:
        for i, j in combinations(range(len(values)), 2):
            o[values[i], values[j]] += 1 / (len(values) - 1)
            o[values[j], values[i]] += 1 / (len(values) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    return 1 - (n - 1) * (o.sum() - np.trace(o)) / (n * n - (n_c ** 2).sum())


def test_krippendorff_alpha_equals_its_definition():
    counts = np.random.default_rng(0).integers(0, 4, size=(40, 5))
    counts[3] = [1, 0, 0, 0, 0]  # a unit with one value adds nothing
    assert krippendorff_alpha(counts) == pytest.approx(pairwise_alpha(counts), abs=1e-9)
    assert krippendorff_alpha(np.array([[3, 0], [0, 4]])) == 1.0


def test_the_labels_table():
    votes = pd.DataFrame([row(happiness=8, neutral=2), row(NF=9, happiness=1), row(happiness=5, neutral=5), row()],
                         columns=VOTE_COLUMNS)
    votes.insert(0, "face_id", ["a", "b", "c", "d"])
    labels = aggregate(votes, "ferplus")
    assert labels.label[0] == "happy" and labels.label[1:].isna().all()
    assert list(labels.outcome) == ["decided", "not a face", "no majority", "no votes"]
    assert list(labels.agreement) == [0.8, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="dawid_skene needs the long table"):
        aggregate(votes, "dawid_skene")


@pytest.mark.skipif(not FERPLUS.exists(), reason="../shared/data/ferplus is not here")
def test_ferplus_majority_gives_the_authors_labels_on_all_of_fer2013new():
    """Against a line-by-line port of FERPlus/src/ferplus.py: _process_data(mode='majority') and the
    _load_folders filter that keeps only the eight emotions."""
    def authors(emotion_raw: list[float]) -> int:
        size = len(emotion_raw)
        emotion_unknown = [0.0] * size
        emotion_unknown[-2] = 1.0
        for i in range(size):
            if emotion_raw[i] < 1.0 + sys.float_info.epsilon:
                emotion_raw[i] = 0.0
        sum_list = sum(emotion_raw)
        emotion = [0.0] * size
        maxval = max(emotion_raw)
        if maxval > 0.5 * sum_list:
            emotion[np.argmax(emotion_raw)] = maxval
        else:
            emotion = emotion_unknown
        emotion = [float(i) / sum(emotion) for i in emotion]
        idx = int(np.argmax(emotion))
        return idx if idx < 8 else NO_LABEL

    counts = pd.read_csv(FERPLUS)[VOTE_COLUMNS].to_numpy()
    ours = ferplus_majority(counts)
    theirs = np.array([authors([float(v) for v in r]) for r in counts])
    assert len(ours) == 35887
    assert (ours == theirs).all()
    class_counts = pd.Series(ours).map(lambda i: VOTE_COLUMNS[i] if i >= 0 else "no label").value_counts()
    print("\nFER+ majority labels on fer2013new.csv:", class_counts.to_dict())
    assert class_counts["neutral"] == 11012 and class_counts["no label"] == 4475


def votes_and_long(ballots: dict[str, dict[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A votes table and its long table from {face_id: {annotator: vote column}}."""
    long = pd.DataFrame([(face, annotator, column) for face, cast in ballots.items() for annotator, column in cast.items()],
                        columns=["face_id", "annotator", "column"])
    counts = long.groupby(["face_id", "column"]).size().unstack(fill_value=0).reindex(
        index=list(ballots), columns=VOTE_COLUMNS, fill_value=0)
    return counts.reset_index(), long


@pytest.mark.parametrize("method", ["ferplus", "plurality", "dawid_skene"])
@pytest.mark.parametrize("ties", ["none", "random"])
def test_a_face_without_votes_is_never_labelled(method, ties):
    votes, long = votes_and_long({"a": {"ann1": "happiness", "ann2": "happiness", "ann3": "happiness"}, "b": {}})
    labels = aggregate(votes, method, long=long, ties=ties).set_index("face_id")
    assert labels.label["a"] == "happy"
    assert pd.isna(labels.label["b"]) and labels.outcome["b"] == "no votes" and labels.votes["b"] == 0


def test_dawid_skene_takes_a_long_table_of_more_faces_than_it_labels():
    # pull keeps faces with min_votes votes in the votes table; the long table has every vote cast so far
    votes, long = votes_and_long({f"f{i}": {f"ann{k}": "happiness" if i % 2 else "neutral" for k in range(3)}
                                  for i in range(6)})
    extra = pd.DataFrame({"face_id": ["half-done"], "annotator": ["ann0"], "column": ["sadness"]})
    labels = aggregate(votes, "dawid_skene", long=pd.concat([long, extra]))
    assert list(labels.face_id) == list(votes.face_id)
    assert list(labels.label) == ["neutral", "happy"] * 3


@pytest.mark.parametrize("method", ["plurality", "dawid_skene"])
def test_a_tie_follows_the_tie_policy(method):
    # two annotators who always disagree, in mirror image: nothing tells which of them to believe
    votes, long = votes_and_long({"x": {"ann1": "happiness", "ann2": "neutral"},
                                  "y": {"ann1": "neutral", "ann2": "happiness"}})
    none = aggregate(votes, method, long=long, ties="none")
    assert none.label.isna().all() and (none.outcome == "no majority").all()
    drawn = {tuple(aggregate(votes, method, long=long, ties="random", seed=seed).label) for seed in range(12)}
    assert {label for pair in drawn for label in pair} == {"happy", "neutral"}  # both tied labels, nothing else
    again = aggregate(votes, method, long=long, ties="random", seed=5)
    assert list(again.label) == list(aggregate(votes, method, long=long, ties="random", seed=5).label)


@pytest.mark.parametrize("method", ["ferplus", "plurality", "dawid_skene"])
def test_one_annotator_is_believed(method):
    cast = {"a": "happiness", "b": "sadness", "c": "NF"}
    votes, long = votes_and_long({face: {"only": column} for face, column in cast.items()})
    labels = aggregate(votes, method, long=long)
    if method == "ferplus":  # one vote is an outlier to FER+'s rule
        assert labels.label.isna().all()
    else:
        assert list(labels.label.fillna("-")) == ["happy", "sad", "-"]
        assert list(labels.outcome) == ["decided", "decided", "not a face"]

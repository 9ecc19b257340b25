"""Annotator quality on simulated crowds whose annotators' accuracies are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from annotation.quality import Thresholds, annotator_quality, counted_votes, leave_one_out_agreement
from pipeline.emotions import COLUMN_OF_LABEL, LABELS, VOTE_COLUMNS

EMOTION_SHARES = {"happy": 0.45, "neutral": 0.2, "sad": 0.1, "surprise": 0.1, "angry": 0.1, "fear": 0.05}


def crowd(n_faces: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, dict[str, float]]:
    """Ten annotators vote on every face: eight right with their own probability (else a uniformly drawn
    wrong label), one who answers at random, one who always answers happy."""
    rng = np.random.default_rng(seed)
    faces = [f"f{i:04d}" for i in range(n_faces)]
    truth = pd.Series(rng.choice(list(EMOTION_SHARES), n_faces, p=list(EMOTION_SHARES.values())), index=faces)
    accuracy = {f"good{k}": p for k, p in enumerate(np.linspace(0.6, 0.9, 8))}
    rows = []
    for face, true in truth.items():
        others = [label for label in LABELS if label != true]
        for annotator, p in accuracy.items():
            rows.append((face, annotator, true if rng.random() < p else others[rng.integers(len(others))]))
        rows.append((face, "random", LABELS[rng.integers(len(LABELS))]))
        rows.append((face, "always_happy", "happy"))
    long = pd.DataFrame(rows, columns=["face_id", "annotator", "label"])
    long["column"] = long.label.map(COLUMN_OF_LABEL)
    return long, truth, accuracy


def test_the_random_voter_and_the_one_who_always_answers_happy_are_flagged_and_no_one_else():
    long, truth, accuracy = crowd()
    table, confusion = annotator_quality(long)
    table = table.set_index("annotator")
    assert set(table.index[table.flagged]) == {"random", "always_happy"}
    # the good ones: the estimate follows their real accuracy
    for annotator, p in accuracy.items():
        assert abs(table.loc[annotator, "ds_balanced_accuracy"] - p) < 0.1, (annotator, p)
        assert abs(table.loc[annotator, "ds_accuracy"] - p) < 0.08, (annotator, p)
    # agreement with the others alone would not find the happy one: it is about the share of happy faces
    assert abs(table.loc["always_happy", "agreement_with_others"] - (truth == "happy").mean()) < 0.05
    assert table.loc["always_happy", "ds_balanced_accuracy"] < 0.25
    assert table.loc["random", "ds_balanced_accuracy"] < 0.25
    assert "balanced accuracy" in table.loc["always_happy", "flag_reason"]
    # the confusion matrix of the happy one: every true class goes to happiness
    mine = confusion[(confusion.annotator == "always_happy") & (confusion.given == "happiness")]
    assert (mine.share > 0.99).all() and set(mine.true) >= {"happiness", "sadness", "neutral"}
    rows = confusion[confusion.annotator == "good7"].groupby("true").share.sum()
    assert np.allclose(rows, 1.0, atol=1e-3)


def test_leaving_the_flagged_out_gives_the_good_votes_only():
    long, _, _ = crowd(60)
    table, _ = annotator_quality(long)
    kept = counted_votes(long, table)
    assert set(kept.annotator) == {f"good{k}" for k in range(8)}
    assert len(kept) == 60 * 8


def test_agreement_compares_each_vote_with_the_others_only():
    # face a: happy, happy, sad; face b: sad alone
    items = np.array([0, 0, 0, 1])
    happy, sad = VOTE_COLUMNS.index("happiness"), VOTE_COLUMNS.index("sadness")
    labels = np.array([happy, happy, sad, sad])
    agree = leave_one_out_agreement(items, labels, 2, len(VOTE_COLUMNS))
    # each happy vote's others tie (one happy, one sad); the sad vote's others are two happy; b has no others
    assert np.isnan(agree[0]) and np.isnan(agree[1]) and agree[2] == 0.0 and np.isnan(agree[3])


def test_gold_faces_score_each_annotator_and_flag_the_one_below_the_threshold():
    long, truth, _ = crowd(100, seed=1)
    gold = pd.DataFrame({"face_id": truth.index[:10], "label": truth.iloc[:10].to_numpy()})
    # good0 answers every gold face wrong ("unsure"), as someone who has stopped looking would
    on_gold = long.face_id.isin(gold.face_id) & (long.annotator == "good0")
    long.loc[on_gold, ["label", "column"]] = ["unsure", "unknown"]
    thresholds = Thresholds(min_gold_votes=10, min_gold_accuracy=0.5)
    table = annotator_quality(long, gold, thresholds)[0].set_index("annotator")
    assert table.loc["good0", "gold_votes"] == 10 and table.loc["good0", "gold_accuracy"] == 0.0
    assert "gold accuracy 0.00 < 0.5" in table.loc["good0", "flag_reason"]
    assert table.loc["always_happy", "gold_accuracy"] == (gold.label == "happy").mean()
    assert not table.loc["good7", "flagged"]


def test_the_median_time_per_vote_comes_from_the_lead_time():
    long, _, _ = crowd(30)
    long["lead_time"] = np.where(long.annotator == "random", 1.5, 6.0)
    table = annotator_quality(long)[0].set_index("annotator")
    assert table.loc["random", "median_seconds"] == 1.5 and table.loc["good3", "median_seconds"] == 6.0
    assert annotator_quality(long.drop(columns="lead_time"))[0].median_seconds.isna().all()


def test_too_few_votes_are_never_flagged_and_unknown_columns_are_refused():
    long, _, _ = crowd(10)  # 10 votes each, under min_votes
    assert not annotator_quality(long)[0].flagged.any()
    long.loc[0, "column"] = "bored"
    with pytest.raises(ValueError, match="bored"):
        annotator_quality(long)

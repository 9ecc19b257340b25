"""Adaptive votes on FER+'s real votes: how many votes each stopping rule asks for, and how many labels come out
the same as with all ten.

FER+ (``../shared/data/ferplus/fer2013new.csv``) has ten votes for each of FER2013's 35,887 images (one image has
nine), as counts. Each image's votes are put in a random order (seeded) and revealed one round at a time, as
pulls would find them: every face still open gets its next vote, then ``annotation/adaptive.py``'s
``stop_reasons`` decides which faces stop (the confident rule's model refitted on all votes so far, each
round). A face's label is the pipeline's own aggregation (``annotation/aggregate.py``) of the votes it took,
compared with the same aggregation of all its FER+ votes. Printed for each rule: the share of FER+'s votes it
asked for, the share of labels identical to the full-vote labels, beside the fixed-ten baseline.

    python benchmarks/adaptive_votes.py [--seed 0] [--initial 3] [--aggregation ferplus] [--ties none]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation.adaptive import NEEDS_MORE, Rules, VoteModel, counts_of, stop_reasons  # noqa: E402
from annotation.aggregate import aggregate  # noqa: E402
from pipeline.common import cpu_name  # noqa: E402
from pipeline.emotions import VOTE_COLUMNS  # noqa: E402

FERPLUS_CSV = REPO.parent / "shared" / "data" / "ferplus" / "fer2013new.csv"
VOTES = 10


def random_order(counts: np.ndarray, seed: int) -> np.ndarray:
    """Each face's votes as a sequence in a seeded random order (-1 after a face's last vote)."""
    faces = np.repeat(np.arange(len(counts)), counts.sum(axis=1))
    columns = np.repeat(np.tile(np.arange(counts.shape[1]), len(counts)), counts.ravel())
    order = np.lexsort((np.random.default_rng(seed).random(len(faces)), faces))
    faces, columns = faces[order], columns[order]
    position = np.arange(len(faces)) - np.searchsorted(faces, faces)
    sequences = np.full((len(counts), counts.sum(axis=1).max()), -1, dtype=np.int64)
    sequences[faces, position] = columns
    return sequences


def replay(sequences: np.ndarray, rules: Rules) -> tuple[np.ndarray, np.ndarray]:
    """The votes each face took and why it stopped, revealing one vote per open face per round."""
    taken = np.zeros(len(sequences), dtype=np.int64)
    reasons = np.full(len(sequences), NEEDS_MORE, dtype=object)
    available = (sequences >= 0).sum(axis=1)
    for _ in range(sequences.shape[1]):
        open_ = reasons == NEEDS_MORE
        taken[open_] = np.minimum(taken[open_] + 1, available[open_])
        now = np.where(np.arange(sequences.shape[1]) < taken[:, None], sequences, -1)
        # the confident rule's model learns from every face's votes so far, stopped faces' too
        model = VoteModel(rules.classes, rules.seed).fit(counts_of(now)) if "confident" in rules.rules else None
        reasons[open_] = stop_reasons(now[open_], rules, model)
    reasons[reasons == NEEDS_MORE] = "max_votes"  # a face with fewer FER+ votes than annotation.votes
    return taken, reasons


def labels_of(counts: np.ndarray, rules: Rules) -> pd.Series:
    votes = pd.DataFrame(counts, columns=VOTE_COLUMNS).assign(face_id=np.arange(len(counts)))
    return aggregate(votes, rules.aggregation, ties=rules.ties).label.fillna("(no label)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ferplus", type=Path, default=FERPLUS_CSV)
    parser.add_argument("--seed", type=int, default=0, help="the votes' random order")
    parser.add_argument("--initial", type=int, default=3, help="votes every face gets before a rule may stop it")
    parser.add_argument("--aggregation", default="ferplus", choices=["ferplus", "plurality"])
    parser.add_argument("--ties", default="none", choices=["none", "random"])
    args = parser.parse_args(argv)
    if not args.ferplus.exists():
        print(f"adaptive votes benchmark: skipped, {args.ferplus} is not here (FER+'s votes, see "
              f"../shared/data/README.md)")
        return 0
    counts = pd.read_csv(args.ferplus, usecols=VOTE_COLUMNS)[VOTE_COLUMNS].to_numpy()
    sequences = random_order(counts, args.seed)
    common = {"votes": VOTES, "initial": args.initial, "aggregation": args.aggregation, "ties": args.ties}
    full = labels_of(counts, Rules(**common))
    print(f"FER+ votes: {len(counts)} faces, {counts.sum()} votes; random order seed {args.seed}; "
          f"aggregation {args.aggregation} (ties {args.ties}); every face gets {args.initial} votes first")
    print(f"CPU: {cpu_name()}, {platform.python_implementation()} {platform.python_version()}\n")
    print(f"{'rule':<48} {'votes asked':>11} {'votes/face':>10} {'identical':>9} {'seconds':>8}")
    print(f"{'fixed ten (baseline)':<48} {'100.00%':>11} {counts.sum() / len(counts):>10.2f} {'100.000%':>9} {'-':>8}")
    configs = [
        ("decided", {"rules": ("decided",)}),
        *[(f"unanimous k={k}", {"rules": ("unanimous",), "k": k}) for k in (3, 4, 5)],
        *[(f"decided + unanimous k={k}", {"rules": ("decided", "unanimous"), "k": k}) for k in (3, 4, 5)],
        *[(f"decided + confident threshold={t}", {"rules": ("decided", "confident"), "threshold": t})
          for t in (0.005, 0.01, 0.015)],
        ("decided + confident threshold=0.015 classes=50",
         {"rules": ("decided", "confident"), "threshold": 0.015, "classes": 50}),
    ]
    for name, config in configs:
        rules = Rules(**common, **config)
        started = time.perf_counter()
        taken, reasons = replay(sequences, rules)
        seconds = time.perf_counter() - started
        got = labels_of(counts_of(np.where(np.arange(sequences.shape[1]) < taken[:, None], sequences, -1)), rules)
        identical = (got == full).mean()
        print(f"{name:<48} {taken.sum() / counts.sum():>11.2%} {taken.mean():>10.2f} {identical:>9.3%} "
              f"{seconds:>8.1f}")
        stops = pd.Series(reasons).value_counts()
        print(f"{'':<4}stopped by: " + ", ".join(f"{reason} {count}" for reason, count in stops.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

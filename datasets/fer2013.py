"""fer2013 stage: FER2013 read, checked and cleaned, with every removal recorded and the official splits kept.

    python -m datasets.fer2013 --source fer2013.csv.xz [--ferplus fer2013new.csv] \\
        --out-dir data/fer2013 --metrics metrics/fer2013.json

Reads ``fer2013.csv`` (plain, .gz or .xz) or Kaggle's image folders (``datasets.fer2013_read``), FER+'s
votes when given, and ``params.yaml:fer2013``. Writes under ``--out-dir``:

- ``images.npy``: uint8 [N, 48, 48], every input row in input order (index == row_id);
- ``manifest.csv``: the rows kept: row_id, usage, split (Training=train, PublicTest=val,
  PrivateTest=test), label (index into ``pipeline.emotions.EMOTIONS``), emotion, label_source;
- ``private_test.csv``: every PrivateTest row with its original label, untouched by cleaning, so that
  evaluation can also report the number papers report;
- ``removed.csv``: one row per removed row, with the rule that removed it and why;
- ``duplicates.csv``: every group of byte-identical images, each row marked kept or not;
- ``report.json``: the counts of every rule, class counts per split, the image face check's numbers;

and a metrics JSON of the headline counts. The source and the FER+ file come from ``--source`` and
``--ferplus`` or, when not given, from ``fer2013.source`` and ``fer2013.ferplus``. The rules, in the order they are applied (a row removed by one is recorded
under the first): blank images (``constant``); not-a-face by FER+'s NF votes, or by
``fer2013_clean.ImageFaceCheck`` when there are no FER+ votes; FER+ majority relabelling, dropping
rows that FER+ leaves unlabelled; byte-identical duplicates; near duplicates by 64-bit dHash confirmed by
grey-level correlation. Of a
group of copies one is kept: the PrivateTest copy over the PublicTest one over the Training one,
so that the test set stays comparable with published results and no training image is a copy of a
test image. Groups whose copies carry different FER2013 labels are flagged, and dropped whole when
``duplicates.drop_conflicting`` says so. FER2013 is never re-split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datasets.fer2013_clean import (
    ImageFaceCheck,
    ferplus_labels,
    grey_std,
    identical_groups,
    keepers,
    near_groups,
)
from datasets.fer2013_read import USAGES, Fer2013, read_ferplus, read_source
from pipeline.common import StageError, atomic_write, get_logger, load_params, run_stage, write_metrics, write_table
from pipeline.crops import dhash
from pipeline.emotions import EMOTIONS

log = get_logger("fer2013")

SPLIT_OF_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLITS = list(SPLIT_OF_USAGE.values())
REASONS = ["constant", "not_a_face", "ferplus_unknown", "ferplus_no_majority", "ferplus_no_votes", "contempt",
           "conflicting_labels", "duplicate", "near_duplicate"]


class Removals:
    """Why each row was removed (empty: kept); the first rule to remove a row names it."""

    def __init__(self, n: int):
        self.reason = np.full(n, "", dtype=object)
        self.detail = np.full(n, "", dtype=object)

    def remove(self, mask: np.ndarray, reason: str, detail: np.ndarray | str) -> int:
        """Remove the rows of ``mask`` not removed yet; returns how many that was."""
        new = mask & (self.reason == "")
        self.reason[new] = reason
        self.detail[new] = detail[new] if isinstance(detail, np.ndarray) else detail
        return int(new.sum())

    @property
    def kept(self) -> np.ndarray:
        return self.reason == ""


def clean(data: Fer2013, params: dict[str, Any], votes: pd.DataFrame | None = None) -> dict[str, Any]:
    """Apply the rules of ``params`` to ``data``; returns the tables and counts the stage writes."""
    n = len(data.labels)
    rows = np.arange(n)
    removals = Removals(n)
    labels, label_source = data.labels.copy(), "fer2013"
    report: list[str] = []

    std = grey_std(data.images)
    rule = params["constant"]
    if rule["enabled"]:
        count = removals.remove(std <= rule["max_std"], "constant",
                                np.array([f"grey-level std {s:.2f}" for s in std], dtype=object))
        report.append(f"constant: {count} images with grey-level std <= {rule['max_std']} removed")
    else:
        report.append("constant: off")

    rule = params["not_a_face"]
    if votes is not None and rule["ferplus"]:
        nf, total = votes["NF"].to_numpy(), votes.drop(columns=["face_id", "image_name"]).sum(axis=1).to_numpy()
        count = removals.remove(nf > rule["ferplus_min_share"] * total, "not_a_face",
                                np.array([f"FER+ NF votes {a} of {b}" for a, b in zip(nf, total)], dtype=object))
        report.append(f"not_a_face (FER+): {count} rows with NF votes > {rule['ferplus_min_share']} of their votes removed")
    elif votes is not None:
        report.append("not_a_face (FER+): off")
    image_check = rule["image_check"]
    if image_check == "auto":
        image_check = votes is None
    face_check = {}
    if image_check:
        started = time.perf_counter()
        flagged, shares = ImageFaceCheck(rule).not_a_face(data.images)
        count = removals.remove(flagged, "not_a_face",
                                np.array([f"image check: {s:.0%} of pixels at one grey level, no Haar face" for s in shares],
                                         dtype=object))
        face_check = {"flagged": int(flagged.sum()), "seconds": round(time.perf_counter() - started, 2)}
        report.append(f"not_a_face (image check): {flagged.sum()} images flagged, {count} removed, "
                      f"{face_check['seconds']} s")
    else:
        report.append("not_a_face (image check): off" + (" (FER+ votes given)" if votes is not None else ""))

    rule = params["ferplus_relabel"]
    if rule["enabled"]:
        if votes is None:
            raise StageError("ferplus_relabel.enabled is true but no --ferplus votes were given")
        ferplus, why = ferplus_labels(votes, rule["contempt"])
        counts = {}
        for reason in ("not_a_face", "ferplus_unknown", "ferplus_no_majority", "ferplus_no_votes", "contempt"):
            counts[reason] = removals.remove(why == reason, reason, f"FER+ majority rule: {reason}")
        changed = int(((ferplus != labels) & (ferplus >= 0) & removals.kept).sum())
        labels, label_source = np.where(ferplus >= 0, ferplus, labels), "ferplus"
        report.append(f"ferplus_relabel: {changed} kept rows changed label; removed "
                      + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" (contempt: {rule['contempt']})")
    else:
        report.append("ferplus_relabel: off (FER2013's own labels)")

    groups = identical_groups(data.images)
    keep = keepers(groups, data.usages)
    grouped = groups >= 0
    group_table = pd.DataFrame({"group": groups[grouped], "row_id": rows[grouped], "usage": data.usages[grouped],
                                "label": data.labels[grouped]})
    per_group = group_table.groupby("group").agg(usages=("usage", "nunique"), labels=("label", "nunique"))
    conflicting_groups = per_group.index[per_group.labels > 1].to_numpy()
    conflicting = grouped & np.isin(groups, conflicting_groups)
    rule = params["duplicates"]
    if rule["enabled"]:
        dropped_conflicting = 0
        if rule["drop_conflicting"]:
            names = group_table.assign(emotion=[EMOTIONS[k] for k in group_table.label]).groupby("group").emotion.agg(
                lambda e: ", ".join(sorted(set(e))))
            detail = np.full(n, "", dtype=object)
            detail[grouped] = [f"group {g}: labels {names[g]}" for g in groups[grouped]]
            dropped_conflicting = removals.remove(conflicting, "conflicting_labels", detail)
        count = removals.remove(keep != rows, "duplicate", np.array([f"copy of row {k}" for k in keep], dtype=object))
        report.append(f"duplicates: {len(per_group)} groups of byte-identical images ({grouped.sum()} rows), "
                      f"{int((per_group.usages > 1).sum())} across Usages, {len(conflicting_groups)} with conflicting "
                      f"labels; {count} copies removed, {dropped_conflicting} rows of conflicting groups removed")
    else:
        report.append(f"duplicates: off ({len(per_group)} groups of byte-identical images left in)")

    rule = params["near_duplicates"]
    near_count = 0
    if rule["enabled"]:
        hashes = dhash(data.images)
        candidates = np.flatnonzero((keep == rows) & (removals.reason != "constant"))
        near = near_groups(data.images, hashes, candidates, int(rule["max_bits"]), float(rule["min_correlation"]))
        near_keep = keepers(near, data.usages)
        distance = np.bitwise_count(hashes ^ hashes[near_keep])
        detail = np.array([f"near-duplicate group of row {k} (dHash {d} bits from it)" for d, k in zip(distance, near_keep)],
                          dtype=object)
        count = removals.remove(near_keep != rows, "near_duplicate", detail)
        near_count = int(len(np.unique(near[near >= 0])))
        report.append(f"near_duplicates: {near_count} groups (dHash within {rule['max_bits']} bits, grey-level "
                      f"correlation >= {rule['min_correlation']}); {count} rows removed")
    else:
        report.append("near_duplicates: off")

    kept = removals.kept
    manifest = pd.DataFrame({
        "row_id": rows[kept], "usage": data.usages[kept], "split": [SPLIT_OF_USAGE[u] for u in data.usages[kept]],
        "label": labels[kept], "emotion": [EMOTIONS[k] for k in labels[kept]], "label_source": label_source,
    })
    removed = pd.DataFrame({"row_id": rows[~kept], "usage": data.usages[~kept], "label": data.labels[~kept],
                            "reason": removals.reason[~kept], "detail": removals.detail[~kept]})
    private = data.usages == "PrivateTest"
    private_test = pd.DataFrame({"row_id": rows[private], "label": data.labels[private],
                                 "emotion": [EMOTIONS[k] for k in data.labels[private]]})
    duplicates = group_table.assign(kept=kept[grouped], conflicting_labels=conflicting[grouped])
    duplicates = duplicates.sort_values(["group", "row_id"], kind="stable").reset_index(drop=True)

    class_counts = {split: {e: 0 for e in EMOTIONS} for split in SPLITS}
    for (split, emotion), count in manifest.groupby(["split", "emotion"]).size().items():
        class_counts[split][emotion] = int(count)
    metrics = {
        "rows_read": n,
        "rows_per_usage": {u: int((data.usages == u).sum()) for u in USAGES},
        "kept": {**{s: int((manifest.split == s).sum()) for s in SPLITS}, "total": len(manifest)},
        "removed": {r: int((removed.reason == r).sum()) for r in REASONS if (removed.reason == r).any()},
        "duplicate_groups": len(per_group),
        "duplicate_rows": int(grouped.sum()),
        "duplicate_groups_across_usages": int((per_group.usages > 1).sum()),
        "duplicate_groups_conflicting_labels": len(conflicting_groups),
        "constant_images": int((std == 0).sum()),
        "near_duplicate_groups": near_count,
        "class_counts": class_counts,
    }
    if face_check:
        metrics["image_face_check"] = face_check
    return {"manifest": manifest, "removed": removed, "private_test": private_test, "duplicates": duplicates,
            "metrics": metrics, "report": report}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=None,
                        help="fer2013.csv (plain, .gz or .xz) or a folder with train/<class>/, test/<class>/ "
                             "(default: fer2013.source)")
    parser.add_argument("--ferplus", type=Path, default=None,
                        help="FER+'s fer2013new.csv, votes per FER2013 row (default: fer2013.ferplus)")
    parser.add_argument("--out-dir", type=Path, default=Path("data/fer2013"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/fer2013.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None, params: dict[str, Any] | None = None) -> int:
    """Run the stage; ``params`` (the fer2013 section) stands in for ``--params`` in tests."""
    args = get_args_parser().parse_args(argv)
    params = load_params("fer2013", args.params) if params is None else params
    if args.source is None:
        if params["source"] is None:
            raise StageError(f"{args.params}: fer2013.source is null and no --source was given: name fer2013.csv or "
                             f"Kaggle's image folders")
        args.source = Path(params["source"])
    if args.ferplus is None and params.get("ferplus"):
        args.ferplus = Path(params["ferplus"])
    started = time.perf_counter()
    data = read_source(args.source, params.get("folder_test_usage", "PrivateTest"))
    if args.source.is_dir():
        log.warning(f"fer2013: {args.source} is Kaggle's JPEG folders: JPEG noise moves the not-a-face and "
                    f"near-duplicate rules, so the cleaning differs slightly from fer2013.csv's (reported: 32,582 "
                    f"rows kept against 32,542, 8 more in test); give fer2013.csv for numbers comparable with papers")
    votes = None
    if args.ferplus is not None:
        if args.source.is_dir():
            raise StageError(f"{args.ferplus}: FER+ joins fer2013.csv by row position; the folder layout "
                             f"{args.source} has no such order, so give the CSV as --source")
        votes = read_ferplus(args.ferplus, data)
    log.info(f"fer2013: read {len(data.labels)} rows from {args.source} in {time.perf_counter() - started:.1f} s")
    result = clean(data, params, votes)

    out = args.out_dir
    with atomic_write(out / "images.npy", "wb") as f:
        np.save(f, data.images)
    for name in ("manifest", "private_test", "removed", "duplicates"):
        write_table(result[name], out / f"{name}.csv")
    metrics = result["metrics"]
    seconds = round(time.perf_counter() - started, 1)
    write_metrics(metrics, out / "report.json")
    # dvc metrics show gets the headline numbers; class counts per split stay in the report
    headline = {k: v for k, v in metrics.items() if k not in ("class_counts", "rows_per_usage", "image_face_check")}
    write_metrics({"fer2013": headline}, args.metrics)

    for line in result["report"]:
        log.info(f"fer2013: {line}")
    kept = metrics["kept"]
    print(f"fer2013: kept {kept['total']} of {metrics['rows_read']} rows (train {kept['train']}, val {kept['val']}, "
          f"test {kept['test']}); removed " + (", ".join(f"{r} {c}" for r, c in metrics["removed"].items()) or "none")
          + f"; {seconds} s")
    return 0


if __name__ == "__main__":
    run_stage(main)

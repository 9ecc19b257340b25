"""splits stage: the labelled faces split 70/15/15, stratified by class and grouped by source media.

Reads the labels table of the pull (``data/annotation/labels.csv``), the faces table
(``data/faces.csv``) and ``params.yaml:splits``; optionally an external labelled image folder
(``<root>/<emotion>/*.jpg``) merged in, as the VEMO dataset merged 30,000 AffectNet images. Writes:

- the split manifest: one row per image: ``image_id, image, label, emotion, split, group, source``
  (``image`` is the file's path; ``group`` the media it came from);
- the class count per split, as data for ``dvc plots`` and as a bar chart (the paper's Figure 4);
- metrics: images and groups per split, and how far each split's class proportions stray from the whole.

Frames of one video look alike: a split that puts frames of one video on two sides of the line lets a
model recognise the video instead of the expression, and inflates every number. So whole groups (all
faces of one ``media_id``; each external image is its own group) are dealt out to the splits, largest
first, each to the split whose class counts it brings closest to the target (ratio x class total).
This is the greedy of scikit-learn's ``StratifiedGroupKFold`` with unequal folds; ties between equally
large groups are broken by a seeded shuffle, so the same seed gives the same split.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common import (
    StageError,
    atomic_write,
    get_logger,
    load_params,
    read_table,
    run_stage,
    short_hash,
    write_metrics,
    write_table,
)
from pipeline.emotions import EMOTIONS

log = get_logger("splits")

SPLITS = ["train", "val", "test"]
MANIFEST_COLUMNS = ["image_id", "image", "label", "emotion", "split", "group", "source"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# AffectNet-style folder names for the same seven emotions
EMOTION_SYNONYMS = {"anger": "angry", "happiness": "happy", "sadness": "sad", "surprised": "surprise",
                    "disgusted": "disgust", "fearful": "fear", "scared": "fear"}


def assign_groups(labels: np.ndarray, groups: np.ndarray, ratios: list[float], seed: int) -> np.ndarray:
    """The split index of every item, so that no group spans two splits and each split's class counts
    come as close as the groups allow to ``ratio x class total``.

    ``labels`` are class indices, ``groups`` any hashable ids (one per item), ``ratios`` sum to 1.
    """
    ratios = np.asarray(ratios, dtype=float)
    group_ids, group_of_item = np.unique(groups, return_inverse=True)
    classes, label_of_item = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(group_ids), len(classes)))
    np.add.at(counts, (group_of_item, label_of_item), 1)
    totals = counts.sum(axis=0)
    target = ratios[:, None] * totals[None, :]
    # each class weighs the same however rare it is: deviations are in shares of the class
    weight = 1.0 / np.maximum(totals, 1)
    order = np.random.default_rng(seed).permutation(len(group_ids))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]  # largest first, ties shuffled
    filled = np.zeros_like(target)
    split_of_group = np.empty(len(group_ids), dtype=int)
    for g in order:
        # squared deviation from the target of every split, for each choice of split for this group
        trial = filled[None, :, :] + np.eye(len(ratios))[:, :, None] * counts[g][None, None, :]
        cost = (((trial - target[None]) * weight) ** 2).sum(axis=(1, 2))
        split_of_group[g] = int(np.argmin(cost))
        filled[split_of_group[g]] += counts[g]
    return split_of_group[group_of_item]


def labelled_faces(labels: pd.DataFrame, faces: pd.DataFrame, labels_path: Path) -> pd.DataFrame:
    """The faces with an emotion label, as manifest rows (no split yet)."""
    missing = {"face_id", "label"} - set(labels.columns)
    if missing:
        raise StageError(f"{labels_path}: missing column(s) {sorted(missing)}")
    labelled = labels.dropna(subset=["label"])
    unknown = labelled[~labelled.label.isin(EMOTIONS)]
    if len(unknown):
        row = unknown.index[0] + 2  # the header is line 1
        raise StageError(f"{labels_path}, line {row}: label {unknown.label.iloc[0]!r} is not one of {EMOTIONS}")
    rows = labelled.merge(faces[["face_id", "media_id", "crop_path"]], on="face_id", how="left")
    orphans = rows[rows.media_id.isna()]
    if len(orphans):
        raise StageError(f"{labels_path}: {len(orphans)} labelled face(s) are not in the faces table, "
                         f"e.g. {orphans.face_id.iloc[0]!r}; rerun the pipeline from faces (dvc repro)")
    return pd.DataFrame({
        "image_id": rows.face_id, "image": rows.crop_path, "label": rows.label.map(EMOTIONS.index),
        "emotion": rows.label, "group": rows.media_id, "source": "vemo",
    })


def external_images(root: Path) -> pd.DataFrame:
    """A labelled image folder (``<root>/<emotion>/*``) as manifest rows, each image its own group."""
    if not root.is_dir():
        raise StageError(f"{root}: the external image folder (splits.external) does not exist")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        emotion = EMOTION_SYNONYMS.get(folder.name.lower(), folder.name.lower())
        if emotion not in EMOTIONS:
            log.warning(f"splits: {folder}: not one of {EMOTIONS}; its images are left out")
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                image_id = f"external-{short_hash(str(path.relative_to(root)))}"
                rows.append({"image_id": image_id, "image": str(path), "label": EMOTIONS.index(emotion),
                             "emotion": emotion, "group": image_id, "source": "external"})
    if not rows:
        raise StageError(f"{root}: no images in folders named after the emotions ({', '.join(EMOTIONS)})")
    return pd.DataFrame(rows)


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per split and emotion, every emotion present (zero where a split has none)."""
    counts = pd.crosstab(manifest.emotion, manifest.split).reindex(index=EMOTIONS, columns=SPLITS, fill_value=0)
    return counts.stack().rename("count").reset_index()[["split", "emotion", "count"]]


def proportion_gap(manifest: pd.DataFrame, min_items: int) -> dict[str, float | None]:
    """Per split, the largest gap in percentage points between a class's share there and in the whole,
    over classes with at least ``min_items`` items (None when no class has that many)."""
    whole = manifest.emotion.value_counts()
    shares = manifest.emotion.value_counts(normalize=True)
    common = whole[whole >= min_items].index
    gaps = {}
    for split in SPLITS:
        part = manifest[manifest.split == split].emotion.value_counts(normalize=True)
        gap = (part.reindex(common, fill_value=0) - shares[common]).abs().max() if len(common) else None
        gaps[split] = None if gap is None else round(100 * float(gap), 2)
    return gaps


def bar_chart(counts: pd.DataFrame, path: Path) -> None:
    """The class count per split as grouped bars, like the paper's Figure 4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = counts.pivot(index="emotion", columns="split", values="count").reindex(index=EMOTIONS, columns=SPLITS)
    fig, ax = plt.subplots(figsize=(8, 4))
    table.plot.bar(ax=ax, rot=0, width=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("images")
    ax.set_title("Images per class and split")
    for bars in ax.containers:
        ax.bar_label(bars, fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=Path("data/annotation/labels.csv"))
    parser.add_argument("--faces", type=Path, default=Path("data/faces.csv"))
    parser.add_argument("--manifest", type=Path, default=Path("data/splits/manifest.csv"))
    parser.add_argument("--counts", type=Path, default=Path("plots/splits/class_counts.csv"))
    parser.add_argument("--chart", type=Path, default=Path("plots/splits/class_counts.png"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/splits.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def split_manifest(items: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """``items`` (manifest rows without a split) with their split, in a stable order."""
    ratios = [float(params["ratios"][s]) for s in SPLITS]
    if any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise StageError(f"splits.ratios must be three non-negative shares that sum to 1, not {params['ratios']}")
    items = items.sort_values("image_id", kind="stable").reset_index(drop=True)
    split = assign_groups(items.label.to_numpy(), items.group.astype(str).to_numpy(), ratios, int(params["seed"]))
    items["split"] = np.asarray(SPLITS)[split]
    return items[MANIFEST_COLUMNS]


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("splits", args.params)
    items = labelled_faces(read_table(args.labels), read_table(args.faces), args.labels)
    if params.get("external"):
        items = pd.concat([items, external_images(Path(params["external"]))], ignore_index=True)
    if items.empty:
        raise StageError(f"{args.labels}: no labelled faces to split")
    manifest = split_manifest(items, params)
    counts = class_counts(manifest)
    write_table(manifest, args.manifest)
    write_table(counts, args.counts)
    bar_chart(counts, args.chart)
    gaps = proportion_gap(manifest, int(params["min_class_items"]))
    metrics = {split: {"images": int((manifest.split == split).sum()),
                       "groups": int(manifest[manifest.split == split].group.nunique()),
                       "max_class_share_gap_points": gaps[split]} for split in SPLITS}
    write_metrics({"splits": metrics}, args.metrics)
    known = [g for g in gaps.values() if g is not None]
    print("splits: " + ", ".join(f"{s} {metrics[s]['images']} images from {metrics[s]['groups']} media"
                                 for s in SPLITS)
          + (f"; class shares within {max(known)} points of the whole" if known else
             f"; no class has {params['min_class_items']} images, so class shares were not compared"))
    return 0


if __name__ == "__main__":
    run_stage(main)

"""card stage: the dataset card (Markdown) and a contact sheet of faces per class, made from the outputs.

Reads the media, faces, labels and annotators tables, the annotation metrics, the split manifest and the
fer2013 stage's report and removals. Writes ``reports/dataset_card.md``: sources and licences, counts at
every stage, class counts per split, annotator agreement and which votes were cast blind, FER2013 cleaning
removals and known limits; and
``reports/contact_sheet.png``: up to ``card.faces_per_class`` faces of each class from the split manifest.
Both are small and kept in git, so that the README can show them; every number in them is computed here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from datasets.splits import SPLITS, class_counts
from pipeline.common import StageError, atomic_write, load_params, read_table, run_stage
from pipeline.emotions import EMOTIONS


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    cells = table.astype(object).where(table.notna(), "")  # a value the table lacks is an empty cell, not "nan"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in cells.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def blind_votes(annotation: dict) -> str:
    """Which of the counted votes were cast blind to the others' (the pull's ``votes_blind``)."""
    blind = annotation["votes_blind"]
    parts = [f"{blind['yes']} of {sum(blind.values())} votes were cast through the annotators' front, blind to "
             "the others' votes"]
    if blind["unknown"]:
        parts.append(f"{blind['unknown']} were cast straight to Label Studio, where the annotator could have seen "
                     "the others' (whether they did is unknown)")
    if blind["simulated"]:
        parts.append(f"{blind['simulated']} are the simulated crowd's, imported with the tasks: no person cast them")
    return "; ".join(parts) + "."


def known_limits(annotation: dict, manifest: pd.DataFrame, media: pd.DataFrame) -> list[str]:
    limits = []
    if annotation.get("votes_simulated"):
        limits.append("The votes are **simulated** (`annotation.crowd: simulated`): no person labelled these faces.")
    if annotation.get("tasks_incomplete"):
        limits.append(f"{annotation['tasks_incomplete']} faces still lack votes and are not in the labels table.")
    missing = [(split, e) for split in SPLITS for e in EMOTIONS
               if not ((manifest.split == split) & (manifest.emotion == e)).any()]
    absent = sorted({e for _, e in missing if not (manifest.emotion == e).any()})
    if absent:
        limits.append(f"No face is labelled {', '.join(absent)}.")
    thin = sorted({f"{e} ({split})" for split, e in missing if e not in absent})
    if thin:
        limits.append(f"Classes present in the data but missing from a split: {', '.join(thin)}.")
    biggest = manifest.group.value_counts()
    if len(biggest) and biggest.iloc[0] > 0.25 * len(manifest):
        limits.append(f"One media item ({biggest.index[0]}) holds {biggest.iloc[0]} of the {len(manifest)} "
                      "labelled faces; faces of one video are alike, so the dataset is less varied than its size.")
    limits.append("Faces are personal data: each crop traces back to its media, uploader and licence "
                  "(`python -m pipeline.provenance <crop>`); use them under those licences only.")
    limits.append(f"Media come from {media.uploader.nunique()} uploaders; who appears in them, and how they "
                  "were chosen, is not balanced by the pipeline.")
    return limits


def card(media: pd.DataFrame, faces: pd.DataFrame, labels: pd.DataFrame, annotators: pd.DataFrame,
         annotation: dict, manifest: pd.DataFrame, fer2013: dict, removed: pd.DataFrame) -> str:
    licences = (media.groupby("licence").agg(media=("media_id", "size"), uploaders=("uploader", "nunique"))
                .reset_index().sort_values("media", ascending=False))
    kinds = media.groupby(["source", "media_type"]).size().rename("media").reset_index()
    labelled = labels.dropna(subset=["label"])
    stages = pd.DataFrame([
        ("media downloaded", f"{len(media)} ({int((media.media_type == 'video').sum())} videos, "
                             f"{media.duration.fillna(0).sum():.1f} s of video; "
                             f"{int((media.media_type == 'photo').sum())} photos)"),
        ("faces cropped", f"{len(faces)} from {faces.media_id.nunique()} media"),
        ("faces with enough votes", str(len(labels))),
        ("faces labelled", f"{len(labelled)} ({len(labels) - len(labelled)} without a majority, unsure or not a face)"),
        ("faces in the splits", " / ".join(f"{split} {int((manifest.split == split).sum())}" for split in SPLITS)),
    ], columns=["stage", "count"])
    counts = class_counts(manifest).pivot(index="emotion", columns="split", values="count")
    counts = counts.reindex(index=EMOTIONS, columns=SPLITS).reset_index()
    removals = removed.reason.value_counts().rename_axis("reason").rename("rows removed").reset_index()
    votes = "simulated votes" if annotation.get("votes_simulated") else "votes of people"
    sections = [
        "# Dataset card",
        "Made by the `card` stage from the pipeline's own outputs (`dvc repro`); do not edit by hand.",
        "## Sources and licences",
        markdown_table(kinds), "", markdown_table(licences),
        "Every face's media, URL, uploader and licence are in `data/media.csv`; `data/faces.csv` links each "
        "crop to its media.",
        "## Counts per stage", markdown_table(stages),
        "## Class counts per split (VEMO-style splits, grouped by media)", markdown_table(counts),
        f"## Annotator agreement ({votes})",
        f"Fleiss' kappa {annotation.get('fleiss_kappa')}, Krippendorff's alpha {annotation.get('krippendorff_alpha')}, "
        f"{annotation.get('votes_counted')} votes counted, {annotation.get('votes_not_counted')} not counted.",
        "", blind_votes(annotation),
        "", markdown_table(annotators),
        "## FER2013 cleaning",
        f"{fer2013['rows_read']} rows read; kept train {fer2013['kept']['train']}, val {fer2013['kept']['val']}, "
        f"test {fer2013['kept']['test']}; {fer2013['duplicate_groups']} groups of identical images "
        f"({fer2013['duplicate_groups_across_usages']} across Usages, {fer2013['duplicate_groups_conflicting_labels']} "
        f"with conflicting labels), {fer2013['constant_images']} blank images.",
        "", markdown_table(removals) if len(removals) else "Nothing removed.",
        "## Known limits", "\n".join(f"- {line}" for line in known_limits(annotation, manifest, media)),
        "## Faces per class", "![Faces per class](contact_sheet.png)",
    ]
    return "\n\n".join(sections).replace("\n\n\n\n", "\n\n") + "\n"


def contact_sheet(manifest: pd.DataFrame, per_class: int, size: int, path: Path) -> None:
    """One row per emotion: up to ``per_class`` faces of it, spread evenly over the manifest's order."""
    rows = []
    for emotion in EMOTIONS:
        images = manifest[manifest.emotion == emotion].sort_values("image_id").image.tolist()
        picked = [images[int(i)] for i in np.linspace(0, len(images) - 1, num=min(per_class, len(images)))] \
            if images else []
        tiles = []
        for image_path in picked:
            image = cv2.imread(str(image_path))
            if image is None:
                raise StageError(f"{image_path}: missing or not an image (listed in the split manifest)")
            tiles.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
        tiles += [np.full((size, size, 3), 255, np.uint8)] * (per_class - len(tiles))
        label = np.full((size, 2 * size, 3), 255, np.uint8)
        cv2.putText(label, f"{emotion} ({len(images)})", (6, size // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX,
                    size / 160, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.hstack([label, *tiles]))
    ok, png = cv2.imencode(".png", np.vstack(rows))
    with atomic_write(path, "wb") as f:
        f.write(png.tobytes())


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, default=Path("data/media.csv"))
    parser.add_argument("--faces", type=Path, default=Path("data/faces.csv"))
    parser.add_argument("--labels", type=Path, default=Path("data/annotation/labels.csv"))
    parser.add_argument("--annotators", type=Path, default=Path("data/annotation/annotators.csv"))
    parser.add_argument("--annotation-metrics", type=Path, default=Path("metrics/annotation.json"))
    parser.add_argument("--splits", type=Path, default=Path("data/splits/manifest.csv"))
    parser.add_argument("--fer2013", type=Path, default=Path("data/fer2013"))
    parser.add_argument("--card", type=Path, default=Path("reports/dataset_card.md"))
    parser.add_argument("--contact-sheet", type=Path, default=Path("reports/contact_sheet.png"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("card", args.params)
    try:
        annotation = json.loads(args.annotation_metrics.read_text())["annotation"]
        fer2013 = json.loads((args.fer2013 / "report.json").read_text())
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        raise StageError(f"the annotation metrics or the fer2013 report cannot be read ({e}); run dvc repro") from None
    if "votes_blind" not in annotation:
        raise StageError(f"{args.annotation_metrics}: no votes_blind (which votes were cast blind), written by the "
                         f"pull since it records that per vote; run dvc repro -f pull")
    manifest = read_table(args.splits)
    text = card(read_table(args.media), read_table(args.faces), read_table(args.labels), read_table(args.annotators),
                annotation, manifest, fer2013, read_table(args.fer2013 / "removed.csv"))
    with atomic_write(args.card) as f:
        f.write(text)
    contact_sheet(manifest, params["faces_per_class"], params["face_size"], args.contact_sheet)
    print(f"card: {args.card} and {args.contact_sheet}")
    return 0


if __name__ == "__main__":
    run_stage(main)

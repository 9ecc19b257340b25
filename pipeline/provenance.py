"""Where a face crop came from and where it went: one command, any crop.

    python -m pipeline.provenance data/faces/<media_id>/<face_id>.jpg   (or just the face_id)

Prints the source (URL, uploader, licence, title, the source-list line, when downloaded), the place in the
media (timestamp, box, detection probability), and what it reached: the Label Studio task, the votes, the
label and the split. Reads the tables the stages wrote (``data/faces.csv``, ``data/media.csv``,
``data/annotation/*.csv``, ``data/splits/manifest.csv``); a table not made yet is said to be missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pipeline.common import StageError, read_table, run_stage
from pipeline.emotions import VOTE_COLUMNS


def lookup(path: Path, key: str, value: str) -> pd.Series | None:
    """The row of ``path`` whose ``key`` is ``value``; None when the table or the row is not there."""
    if not path.exists():
        return None
    rows = read_table(path, dtype={key: str})
    rows = rows[rows[key] == value]
    return rows.iloc[0] if len(rows) else None


def provenance(face: str, data: Path) -> list[str]:
    """Lines describing ``face`` (a crop path or a face_id)."""
    face_id = Path(face).stem if face.endswith((".jpg", ".jpeg", ".png")) else face
    row = lookup(data / "faces.csv", "face_id", face_id)
    if row is None:
        raise StageError(f"{face}: not in {data / 'faces.csv'} (a crop the faces stage made, or its face_id)")
    media = lookup(data / "media.csv", "media_id", row.media_id)
    lines = [f"face       {face_id}", f"crop       {row.crop_path}"]
    if media is None:
        lines.append(f"media      {row.media_id}: not in {data / 'media.csv'} (taken down, or the tables are stale)")
    else:
        lines += [f"media      {media.media_id} ({media.media_type}, {media.source})",
                  f"url        {media.url}", f"title      {media.title}", f"uploader   {media.uploader}",
                  f"licence    {media.licence}", f"listed at  {media.source_entry}",
                  f"downloaded {media.downloaded_at}, sha256 {media.sha256}"]
    lines.append(f"where      {row.timestamp:.3f} s (frame {row.frame_index}), box "
                 f"{row.x1:.0f},{row.y1:.0f},{row.x2:.0f},{row.y2:.0f}, detection probability {row.probability}")
    annotation = data / "annotation"
    task = lookup(annotation / "tasks.csv", "face_id", face_id)
    lines.append(f"task       {'not pushed' if task is None else f'Label Studio project {task.project_id}, task {task.task_id}'}")
    votes = lookup(annotation / "votes.csv", "face_id", face_id)
    if votes is not None:
        counted = ", ".join(f"{column} {int(votes[column])}" for column in VOTE_COLUMNS if votes[column])
        lines.append(f"votes      {int(votes.n_annotators)} annotators: {counted or 'none'}")
    label = lookup(annotation / "labels.csv", "face_id", face_id)
    lines.append("label      " + ("none yet" if label is None else
                                  f"{label.label if isinstance(label.label, str) else 'no label'} ({label.outcome}, "
                                  f"{label.method}, agreement {label.agreement}, votes by {label.votes_by})"))
    split = lookup(data / "splits" / "manifest.csv", "image_id", face_id)
    lines.append("split      " + ("not in the splits" if split is None else f"{split.split} (group {split.group})"))
    return lines


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("face", help="a crop's path or its face_id")
    parser.add_argument("--data", type=Path, default=Path("data"), help="the pipeline's data folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    print("\n".join(provenance(args.face, args.data)))
    return 0


if __name__ == "__main__":
    run_stage(main)

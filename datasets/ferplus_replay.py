"""FER+ replay: FER2013's images pushed to Label Studio with FER+'s votes as ten annotators' annotations.

    python -m datasets.ferplus_replay --fer2013 ../shared/data/fer2013/fer2013.csv.xz \\
        --ferplus ../shared/data/ferplus/fer2013new.csv [--limit 1000]

Each FER2013 row becomes a 48x48 PNG under ``--images`` (inside the server's document root) and a task
whose annotations are the row's FER+ votes, each cast by one of the annotator accounts (annotator01 votes
first). The project is then pulled back through the pull stage's own checks and counting, and the
vote counts are compared with fer2013new.csv: a faithful annotation round trip gives them back exactly.
FER2013 itself is never copied into the repository.

Both files are read, whole, by the fer2013 stage's checked readers (``datasets.fer2013_read``): a bad row, or
a FER+ file that is not this FER2013's, is refused by file and line before anything is pushed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import pandas as pd

from annotation.accounts import ensure_annotators
from annotation.client import Client
from annotation.labels import label_config
from annotation.pull import votes_from_export, votes_table
from annotation.push import choice
from datasets.fer2013_read import read_ferplus, read_source
from pipeline.common import StageError, progress, run_stage
from pipeline.emotions import LABEL_OF_COLUMN, LABELS, VOTE_COLUMNS

REPLAY_LABELS = [*LABELS[:7], "contempt", *LABELS[7:]]  # FER+ also has contempt


def replay(client: Client, fer2013: Path, ferplus: Path, images: Path, project_title: str,
           limit: int | None = None) -> dict[str, float]:
    """Push, pull back and compare; returns timings and how many rows came back identical."""
    source = read_source(fer2013)
    votes = read_ferplus(ferplus, source)[:limit]
    images.mkdir(parents=True, exist_ok=True)
    for row, image in progress(list(enumerate(source.images[:limit])), "images", unit="image"):
        path = images / f"fer{row:07d}.png"
        if not path.exists():
            cv2.imwrite(str(path), image)
    if client.find_project(project_title) is not None:
        raise StageError(f"project {project_title!r} already exists on {client.url}; replay into a new one")
    project = client.create_project(project_title, label_config(REPLAY_LABELS), 10)
    client.add_local_storage(project.id, images.resolve(), "FER2013 images")
    annotators = list(ensure_annotators(client, 10).values())
    counts = votes[VOTE_COLUMNS].to_numpy()
    relative = images.resolve().relative_to(Path.cwd().resolve())
    tasks = []
    for row, row_counts in enumerate(counts):
        labels = [LABEL_OF_COLUMN[c] for c, n in zip(VOTE_COLUMNS, row_counts) for _ in range(n)]
        tasks.append({
            "data": {"image": f"/data/local-files/?d={relative}/fer{row:07d}.png", "face_id": f"fer{row:07d}"},
            "annotations": [{"completed_by": user, "result": choice(label)} for user, label in zip(annotators, labels)],
        })
    started = time.perf_counter()
    bar = progress(None, "push", total=len(tasks), unit="task")
    task_ids = []
    for chunk_ids in client.import_tasks(project.id, tasks):
        task_ids += chunk_ids
        bar.update(len(chunk_ids))
    bar.close()
    pushed = time.perf_counter()
    long, _ = votes_from_export(client.export(project.id, task_ids), client.users(), 10, REPLAY_LABELS)
    back = votes_table(long, pd.Series([t["data"]["face_id"] for t in tasks]))
    pulled = time.perf_counter()
    identical = (back[VOTE_COLUMNS].to_numpy() == counts).all(axis=1)
    return {"rows": len(tasks), "identical": int(identical.sum()), "push_seconds": round(pushed - started, 1),
            "pull_seconds": round(pulled - pushed, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer2013", type=Path, required=True)
    parser.add_argument("--ferplus", type=Path, required=True)
    parser.add_argument("--images", type=Path, default=Path("data/ferplus_replay"))
    parser.add_argument("--project", default="FER+ replay")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    args = parser.parse_args(argv)
    result = replay(Client(), args.fer2013, args.ferplus, args.images, args.project, args.limit)
    print(f"FER+ replay: {result['identical']} of {result['rows']} rows came back with identical vote counts; "
          f"push {result['push_seconds']} s, pull {result['pull_seconds']} s")
    return 0 if result["identical"] == result["rows"] else 1


if __name__ == "__main__":
    run_stage(main)

"""pull stage: a snapshot of every vote in Label Studio, checked, counted and aggregated into labels.

Reads the task manifest of the push and ``params.yaml:annotation``; exports every annotation of the
pushed tasks (a few hundred tasks per request, several requests at a time: ``Client.export``). Checks
each vote: skipped or cancelled annotations do not count; one vote per annotator per task (their latest);
a label outside the labelling config is dropped with a warning; at most ``annotation.votes`` votes per
task (the earliest). Writes:

- the votes table: one row per face, a count per FER+ vote column and the number of annotators (the
  shape of FER+'s ``fer2013new.csv``);
- the long table: one row per counted vote (face_id, annotator, label, when it was cast, its Label Studio
  annotation id, and whether it was cast blind: ``blind`` is ``yes`` for a vote cast through the annotators'
  front, ``unknown`` for one cast straight to Label Studio, where its author could have seen the others,
  ``simulated`` for one on a face pushed with the simulated crowd that the front did not record: the
  crowd's, imported with the tasks);
- the labels table: faces with at least ``annotation.min_votes`` votes, aggregated by
  ``annotation.aggregation`` (see ``annotation/aggregate.py``); with adaptive votes also each face that a
  stopping rule settled, whatever its votes, and why it stopped (``stopped_by``, see below);
- the annotators table: each annotator's count, agreement with the aggregated label and with the others,
  Dawid-Skene accuracy estimates, gold-face accuracy, time per vote, and whether they are flagged
  (``annotation/quality.py``, thresholds in ``annotation.quality``); their Dawid-Skene confusion matrices
  beside it. With ``annotation.quality.exclude_flagged`` the flagged annotators' votes are left out of the
  votes and labels tables (the long table keeps every vote);
- metrics: tasks complete and incomplete, faces labelled, Fleiss' kappa, Krippendorff's alpha, votes
  counted and not counted (the log says why), the annotators flagged, the counted votes by ``blind``.

Which votes were cast blind comes from the front's record of the votes cast through it
(``annotation/front_record.py``), which the pull reads from the front, with the admin's token, after the
export: the front named by ``LABEL_STUDIO_FRONT_URL``, or else the local server's (``front_url`` in
``.label-studio/server.json``) when the pipeline uses that server. For another server with no front named,
no vote is known to be blind.

Label Studio keeps changing while people annotate: a pull is a snapshot, taken when the stage runs
(``dvc repro -f pull`` takes a new one). Nothing in Label Studio is changed by it, but for one thing: with
adaptive votes (``annotation.adaptive.enabled``, ``annotation/adaptive.py``) the pull tells Label Studio which
faces need no more votes. Each face's votes, in the order cast, go to the stopping rules; a settled face's task
gets the overlap of the votes it has and is marked labelled, so that no annotator is offered it again; a face
that needs more asks for one more vote (at least ``initial``, at most ``annotation.votes``). Only tasks whose
overlap or state changes are written, one request each. The metrics then say how many votes were asked, beside
``annotation.votes`` on every face, and how many faces each rule stopped.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from annotation import front_record
from annotation.adaptive import NEEDS_MORE, Rules, settle
from annotation.aggregate import aggregate, fleiss_kappa, krippendorff_alpha
from annotation.client import Client, local_state
from annotation.quality import Thresholds, annotator_quality, counted_votes
from pipeline.common import StageError, get_logger, load_params, read_table, run_stage, write_metrics, write_table
from pipeline.emotions import COLUMN_OF_LABEL, LABELS, VOTE_COLUMNS

log = get_logger("pull")

FRONT_URL_VARIABLE = "LABEL_STUDIO_FRONT_URL"
BLIND = ("yes", "unknown", "simulated")  # the long table's blind column: through the front, straight, imported


def front_url() -> str | None:
    """The annotators' front before the server the pull reads (see the module docstring), or None."""
    if url := os.environ.get(FRONT_URL_VARIABLE):
        return url.rstrip("/")
    if os.environ.get("LABEL_STUDIO_URL"):
        return None
    state = local_state()
    return state.get("front_url") if state else None


def front_casts(client: Client, url: str | None) -> tuple[dict[int, front_record.Cast], int]:
    """The votes the front at ``url`` recorded (``front_record.read``), and the lines of its record skipped."""
    if url is None:
        log.warning(f"pull: no annotators' front is named for the server at {client.url} ({FRONT_URL_VARIABLE} "
                    "names one): no vote is known to be cast blind")
        return {}, 0
    address = f"{url}{front_record.RECORD_ROUTE}"
    try:
        with client.http.stream("GET", address) as response:
            if response.status_code != 200:
                raise StageError(f"the annotators' front at {url} answered {response.status_code} when asked for its "
                                 f"record of votes ({address}); is it the front of {client.url}? (set "
                                 f"{FRONT_URL_VARIABLE} to that front's address; a front that keeps no record, "
                                 f"started before it did, answers 404: stop the server and start it again)")
            return front_record.read(response.iter_lines(), address, log.warning)
    except httpx.TransportError as e:
        raise StageError(f"the annotators' front at {url} does not answer ({type(e).__name__}); start it with the "
                         f"server (python -m annotation.server start), or set {FRONT_URL_VARIABLE} to where it "
                         f"runs") from None


def votes_from_export(tasks: list[dict], users: dict[int, str], votes_per_task: int, labels: list[str] = LABELS,
                      casts: dict[int, front_record.Cast] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The checked long table (face_id, annotator, label, column, ..., blind) and how many votes each check
    dropped; a vote is ``blind`` ``yes`` if ``casts`` (the front's record) says it was cast through the front."""
    casts = casts or {}
    dropped = {"cancelled": 0, "empty": 0, "unknown_label": 0, "repeat_by_annotator": 0, "over_limit": 0}
    rows = []
    unknown: dict[str, int] = {}
    for task in tasks:
        face_id = task["data"].get("face_id")
        if face_id is None:
            continue
        for annotation in task["annotations"]:
            if annotation.get("was_cancelled"):
                dropped["cancelled"] += 1
                continue
            choices = [r["value"]["choices"] for r in annotation.get("result", [])
                       if r.get("type") == "choices" and r.get("value", {}).get("choices")]
            if not choices:
                dropped["empty"] += 1
                continue
            label = choices[0][0]
            if label not in labels:
                dropped["unknown_label"] += 1
                unknown[label] = unknown.get(label, 0) + 1
                continue
            annotator = annotation["completed_by"]
            annotator = annotator.get("email") if isinstance(annotator, dict) else users.get(annotator, str(annotator))
            blind = "yes" if front_record.cast_blind(casts, annotation, task["id"]) else "unknown"
            rows.append((face_id, annotator, label, annotation["created_at"], annotation["updated_at"],
                         annotation["id"], annotation.get("lead_time"), blind))
    for label, count in unknown.items():
        log.warning(f"pull: {count} vote(s) for {label!r}, which is not a label of the config; not counted")
    long = pd.DataFrame(rows, columns=["face_id", "annotator", "label", "created_at", "updated_at", "annotation_id",
                                       "lead_time", "blind"])
    # one vote per annotator per face: the latest
    latest = long.sort_values(["updated_at", "annotation_id"]).drop_duplicates(["face_id", "annotator"], keep="last")
    dropped["repeat_by_annotator"] = len(long) - len(latest)
    # at most votes_per_task per face: the earliest
    latest = latest.sort_values(["created_at", "annotation_id"])
    kept = latest[latest.groupby("face_id").cumcount() < votes_per_task]
    dropped["over_limit"] = len(latest) - len(kept)
    kept = kept.sort_values(["face_id", "annotator"])[["face_id", "annotator", "label", "lead_time", "created_at",
                                                       "annotation_id", "blind"]]
    kept = kept.reset_index(drop=True)
    kept.insert(3, "column", kept.label.map(COLUMN_OF_LABEL))
    return kept, dropped


def votes_table(long: pd.DataFrame, face_ids: pd.Series) -> pd.DataFrame:
    counts = long.groupby(["face_id", "column"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=face_ids, columns=VOTE_COLUMNS, fill_value=0).fillna(0).astype(int)
    counts["n_annotators"] = counts.sum(axis=1)
    return counts.rename_axis("face_id").reset_index()


def annotator_table(long: pd.DataFrame, labels: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """One row per annotator: the quality table, with the share of their votes that agree with the
    aggregated label beside it."""
    decided = labels.dropna(subset=["label"]).set_index("face_id").label
    on_decided = long[long.face_id.isin(decided.index)]
    agree = (on_decided.label.to_numpy() == decided[on_decided.face_id].to_numpy())
    share = pd.Series(agree, index=on_decided.index).groupby(on_decided.annotator).mean().round(3)
    table = quality.copy()
    table.insert(2, "agreement_with_label", table.annotator.map(share))
    return table


def read_gold(path: Path) -> pd.DataFrame:
    """The gold faces (``face_id,label``), checked: known labels, one row per face."""
    gold = read_table(path)
    missing = {"face_id", "label"} - set(gold.columns)
    if missing:
        raise StageError(f"{path}: the gold faces need the columns face_id and label; missing {sorted(missing)}")
    for row, label in zip(gold.index, gold.label):
        if label not in LABELS:
            raise StageError(f"{path}: row {row + 2}: {label!r} is not a label of the config ({', '.join(LABELS)})")
    repeated = gold.face_id[gold.face_id.duplicated()]
    if len(repeated):
        raise StageError(f"{path}: face {repeated.iloc[0]} is given twice")
    return gold


def defined(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def annotation_metrics(votes: pd.DataFrame, labels: pd.DataFrame, long: pd.DataFrame, dropped: dict[str, int],
                       votes_per_task: int, simulated: bool, quality: pd.DataFrame | None = None) -> dict:
    """What ``dvc metrics show`` reports of a pull; an agreement that is undefined (fewer than two votes on
    every face, or one label only) is None, which JSON writes as null, where strict readers refuse NaN."""
    counts = votes[VOTE_COLUMNS].to_numpy()
    complete = int((votes.n_annotators >= votes_per_task).sum())
    return {
        "votes_simulated": simulated,
        "faces": len(votes),
        "tasks_complete": complete,
        "tasks_incomplete": len(votes) - complete,
        "faces_labelled": int(labels.label.notna().sum()),
        "fleiss_kappa": defined(fleiss_kappa(counts)),
        "krippendorff_alpha": defined(krippendorff_alpha(counts)),
        "votes_counted": len(long),
        "votes_not_counted": sum(dropped.values()),
        "annotators": 0 if quality is None else len(quality),
        "annotators_flagged": [] if quality is None else sorted(quality.loc[quality.flagged, "annotator"]),
    }


def blind_metrics(long: pd.DataFrame, skipped: int) -> dict:
    """The counted votes by ``blind``, and the lines of the front's record that could not be read."""
    counts = long.blind.value_counts()
    return {"votes_blind": {value: int(counts.get(value, 0)) for value in BLIND}, "front_record_lines_skipped": skipped}


def ask_for_votes(client: Client, project_id: int, manifest: pd.DataFrame, settled: pd.DataFrame, votes: int,
                  initial: int) -> dict:
    """Tell Label Studio how many votes each face's task is to have, and whether it is done (see the module
    docstring); the adaptive metrics."""
    tasks = manifest.dropna(subset=["task_id"])
    faces = settled.loc[tasks.face_id]
    done = ~faces.needs_more.to_numpy()
    overlap = np.where(done, faces.votes, np.minimum(np.maximum(faces.votes + 1, initial), votes))
    current = client.task_overlaps(project_id)
    changed = 0
    for task_id, want, labelled in zip(tasks.task_id.astype(int), overlap.tolist(), done.tolist()):
        if current.get(task_id) != (want, labelled):
            client.set_overlap(task_id, want, labelled)
            changed += 1
    stopped = settled.stopped_by[settled.stopped_by != NEEDS_MORE].value_counts()
    return {"votes_asked": int(overlap.sum()), "votes_fixed": votes * len(tasks),
            "votes_asked_share": round(float(overlap.sum()) / max(votes * len(tasks), 1), 4),
            "faces_needing_more": int((~done).sum()), "tasks_changed": changed,
            "stopped_by": {reason: int(n) for reason, n in sorted(stopped.items())}}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=Path, default=Path("data/annotation/tasks.csv"))
    parser.add_argument("--votes", type=Path, default=Path("data/annotation/votes.csv"))
    parser.add_argument("--long", type=Path, default=Path("data/annotation/votes_long.csv"))
    parser.add_argument("--labels", type=Path, default=Path("data/annotation/labels.csv"))
    parser.add_argument("--annotators", type=Path, default=Path("data/annotation/annotators.csv"))
    parser.add_argument("--confusion", type=Path, default=Path("data/annotation/annotator_confusion.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/annotation.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    params = load_params("annotation", args.params)
    manifest = read_table(args.tasks)
    projects = manifest.project_id.dropna().unique()
    if len(projects) != 1:
        raise StageError(f"{args.tasks}: expected the tasks of one project, found {len(projects)}")
    client = Client()
    project_id = int(projects[0])
    exported = client.export(project_id, manifest.task_id.dropna().astype(int).tolist())
    # read after the export: every vote exported through the front is in it by then
    casts, skipped = front_casts(client, front_url())
    long, dropped = votes_from_export(exported, client.users(), params["votes"], casts=casts)
    long = long[long.face_id.isin(manifest.face_id)]
    simulated_faces = manifest.face_id[manifest.crowd == "simulated"]
    long = long.assign(blind=long.blind.where((long.blind == "yes") | ~long.face_id.isin(simulated_faces),
                                              "simulated"))
    settings = params["quality"]
    gold = read_gold(Path(settings["gold"])) if settings["gold"] else None
    quality, confusion = annotator_quality(long, gold, Thresholds(
        min_votes=settings["min_votes"], min_balanced_accuracy=settings["min_balanced_accuracy"],
        min_gold_votes=settings["min_gold_votes"], min_gold_accuracy=settings["min_gold_accuracy"]))
    for row in quality[quality.flagged].itertuples():
        log.warning(f"pull: annotator {row.annotator} flagged: {row.flag_reason}"
                    + ("; their votes are left out" if settings["exclude_flagged"] else ""))
    counted = counted_votes(long, quality) if settings["exclude_flagged"] else long
    votes = votes_table(counted, manifest.face_id)
    adaptive = params["adaptive"]
    enough = votes.n_annotators >= params["min_votes"]
    if adaptive["enabled"]:
        in_order = counted.sort_values("created_at", kind="stable",
                                       key=lambda at: pd.to_datetime(at, format="ISO8601"))
        settled = settle(in_order, manifest.face_id, Rules(
            rules=tuple(adaptive["rules"]), votes=params["votes"], initial=adaptive["initial"],
            aggregation=params["aggregation"], ties=params["ties"], k=adaptive["k"],
            threshold=adaptive["threshold"], classes=adaptive["classes"])).set_index("face_id")
        enough |= votes.face_id.map(settled.stopped_by) != NEEDS_MORE  # a settled face, whatever its votes
    enough = votes[enough]
    labels = aggregate(enough, params["aggregation"], long=counted, ties=params["ties"])
    if adaptive["enabled"]:
        labels["stopped_by"] = labels.face_id.map(settled.stopped_by)
    simulated = bool((manifest.crowd == "simulated").any())
    labels["votes_by"] = "simulated" if simulated else "people"

    write_table(long, args.long)
    write_table(votes, args.votes)
    write_table(labels, args.labels)
    write_table(annotator_table(counted, labels, quality), args.annotators)
    write_table(confusion, args.confusion)
    for reason, count in dropped.items():
        if count:
            log.warning(f"pull: {count} vote(s) not counted: {reason.replace('_', ' ')}")
    metrics = annotation_metrics(votes, labels, counted, dropped, params["votes"], simulated, quality)
    metrics.update(blind_metrics(counted, skipped))
    if adaptive["enabled"]:
        metrics["adaptive"] = ask_for_votes(client, project_id, manifest, settled, params["votes"],
                                            adaptive["initial"])
    write_metrics({"annotation": metrics}, args.metrics)
    waiting = len(votes) - len(enough)
    enough_by = "are settled or have" if adaptive["enabled"] else "have"
    print(f"pull: {len(enough)} of {len(votes)} faces {enough_by} at least {params['min_votes']} votes"
          + (f" ({waiting} still waiting for votes)" if waiting else "")
          + f"; {metrics['faces_labelled']} labelled by {params['aggregation']}; "
          f"Fleiss' kappa {metrics['fleiss_kappa']}, Krippendorff's alpha {metrics['krippendorff_alpha']}"
          + f"; {metrics['votes_blind']['yes']} of {len(counted)} votes cast blind, through the annotators' front"
          + ("; the votes are SIMULATED" if simulated else "")
          + (f"; adaptive votes: {metrics['adaptive']['votes_asked']} asked of {metrics['adaptive']['votes_fixed']}, "
             f"{metrics['adaptive']['tasks_changed']} task(s) told their overlap" if adaptive["enabled"] else ""))
    return 0


if __name__ == "__main__":
    run_stage(main)

"""Adaptive votes on a real Label Studio: push, a simulated crowd that replays FER+'s real votes where the server
still offers a face, pull, until no face needs more."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from annotation import accounts
from annotation.adaptive import Rules, stop_reasons
from annotation.aggregate import aggregate
from annotation.client import Client
from annotation.push import choice
from pipeline.emotions import LABEL_OF_COLUMN, VOTE_COLUMNS
from tests.conftest import SAMPLE
from tests.test_label_studio import SHARED, project, run_pull, run_push, set_params  # noqa: F401 (a fixture)

FERPLUS = SHARED / "ferplus" / "fer2013new.csv"
FACES = 60
RULES = Rules(rules=("decided", "unanimous"), votes=10, initial=3, k=4)


def ferplus_faces(folder, count: int) -> pd.DataFrame:
    """The first ``count`` FER+ images with ten votes, none for contempt (not a label of our config), as faces
    whose crops are copies of a sample photo; their counts alongside."""
    ferplus = pd.read_csv(FERPLUS)
    ferplus = ferplus[(ferplus[VOTE_COLUMNS].sum(axis=1) == 10) & (ferplus.contempt == 0)].head(count)
    photo = SAMPLE / "photos" / "astronaut.jpg"
    rows = []
    for row in ferplus.index:  # some rows have no image name (FER+ dropped the image): named by their row
        name = f"fer{row:07d}"
        face_id = f"url-{name}-00000000-0"
        crop = folder / "data" / "faces" / "m1" / f"{face_id}.jpg"
        shutil.copy(photo, crop)
        rows.append({"face_id": face_id, "media_id": f"url-{name}", "timestamp": 0.0,
                     "crop_path": str(crop.relative_to(folder.parent))})
    faces = pd.DataFrame(rows)
    faces.to_csv(folder / "data" / "faces.csv", index=False)
    pd.DataFrame({"media_id": faces.media_id, "url": "http://127.0.0.1:8765/none"}).to_csv(
        folder / "data" / "media.csv", index=False)
    return faces.assign(**{c: ferplus[c].to_numpy() for c in VOTE_COLUMNS})


@pytest.mark.skipif(not FERPLUS.exists(), reason=f"no FER+ votes at {FERPLUS}")
def test_adaptive_votes_on_the_server_stop_each_face_where_the_rules_do(project):
    set_params(project, crowd="none", votes=10, min_votes=10, aggregation="ferplus", simulation={
        "annotators": 10, "accuracy": 0.75, "seed": 0, "reference": "none"}, adaptive={
        "enabled": True, "initial": 3, "rules": list(RULES.rules), "k": RULES.k, "threshold": 0.005,
        "classes": 30})
    faces = ferplus_faces(project, FACES)
    # each face's ten FER+ votes in a seeded random order: the order the crowd casts them in
    rng = np.random.default_rng(0)
    order = {f.face_id: rng.permutation(np.repeat(VOTE_COLUMNS, [getattr(f, c) for c in VOTE_COLUMNS]))
             for f in faces.itertuples()}
    assert run_push(project) == 0
    client = Client()
    users = list(accounts.ensure_annotators(client, 10).values())
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    face_of = dict(zip(manifest.task_id.astype(int), manifest.face_id))
    project_id = int(manifest.project_id[0])
    assert set(client.task_overlaps(project_id).values()) == {(3, False)}

    rounds, cast = 0, 0
    while True:
        offered = [t for t in client.tasks(project_id) if not t["is_labeled"]]
        for task in offered:
            have = client.get_json(f"/api/tasks/{task['id']}", "get a task")["total_annotations"]
            for position in range(have, task["overlap"]):
                label = LABEL_OF_COLUMN[order[face_of[task["id"]]][position]]
                body = {"result": choice(label), "completed_by": users[position]}
                assert client.http.post(f"/api/tasks/{task['id']}/annotations/", json=body).status_code == 201
                cast += 1
        metrics = run_pull(project)
        rounds += 1
        if metrics["adaptive"]["faces_needing_more"] == 0:
            break
        assert rounds < 10, metrics["adaptive"]

    labels = pd.read_csv(project / "data" / "labels.csv").set_index("face_id")
    assert len(labels) == FACES
    # each face stopped where the rules, given its votes in the order cast, first settle it: the benchmark's
    # replay of the same rule code
    sequences = np.stack([pd.Index(VOTE_COLUMNS).get_indexer(order[f]) for f in labels.index])
    expected = {}
    for face, sequence in zip(labels.index, sequences):
        for n in range(RULES.initial, RULES.votes + 1):
            reason = stop_reasons(np.where(np.arange(RULES.votes) < n, sequence, -1)[None], RULES)[0]
            if reason:
                expected[face] = (n, reason)
                break
    assert dict(zip(labels.index, zip(labels.votes, labels.stopped_by))) == expected
    assert {"decided", "unanimous"} <= set(labels.stopped_by)
    # and has the label the FER+ rule gives the votes it took; decided's are those of all ten votes
    taken = faces.set_index("face_id")[[]].assign(**{c: 0 for c in VOTE_COLUMNS})
    for face, (n, _) in expected.items():
        for column in order[face][:n]:
            taken.loc[face, column] += 1
    pd.testing.assert_series_equal(labels.label, aggregate(taken.reset_index(), "ferplus").set_index(
        "face_id").label.loc[labels.index], check_dtype=False)
    full = aggregate(faces, "ferplus").set_index("face_id").label
    by_decided = labels.index[labels.stopped_by == "decided"]
    pd.testing.assert_series_equal(labels.label[by_decided], full[by_decided], check_dtype=False)
    long = pd.read_csv(project / "data" / "long.csv")
    assert len(long) == cast == labels.votes.sum() == metrics["adaptive"]["votes_asked"]
    share = metrics["adaptive"]["votes_asked_share"]
    assert share == round(cast / (10 * FACES), 4) and share < 0.8  # the benchmark: about 68% for these rules, 3 first
    assert metrics["adaptive"]["stopped_by"] == labels.stopped_by.value_counts().to_dict()
    # the server holds what the pull decided: every face done, its overlap the votes it took, offered to no one
    task_of = dict(zip(manifest.face_id, manifest.task_id.astype(int)))
    overlaps = client.task_overlaps(project_id)
    assert all(overlaps[task_of[f]] == (v, True) for f, v in labels.votes.items())
    # a pull with nothing new changes no task, nor does a push that finds every face there, even with another
    # annotation.votes: Label Studio would reset every task's overlap if the project's maximum changed
    assert run_pull(project)["adaptive"]["tasks_changed"] == 0
    maximum = client.get_json(f"/api/projects/{project_id}", "get the project")["maximum_annotations"]
    set_params(project, votes=12)
    assert run_push(project) == 0 and client.task_overlaps(project_id) == overlaps
    assert client.get_json(f"/api/projects/{project_id}", "get the project")["maximum_annotations"] == maximum
    print(f"adaptive on the server: {FACES} FER+ faces, {rounds} rounds, {cast} votes of {10 * FACES} "
          f"({share:.1%}), stopped by {metrics['adaptive']['stopped_by']}")

"""Push, pull and accounts against a real Label Studio server, started by these tests on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from annotation import accounts, pull, push, server
from annotation.client import Client
from annotation.labels import HOTKEYS, label_config, labels_in_config
from annotation.server import free_port
from datasets.ferplus_replay import replay
from pipeline.common import StageError
from pipeline.emotions import LABELS, VOTE_COLUMNS
from tests.conftest import REPO, SAMPLE

SHARED = REPO.parent / "shared" / "data"


@pytest.fixture()
def project(label_studio, request, monkeypatch):
    """A scratch pipeline project inside the server's document root, talking to the test server."""
    root = label_studio["root"]
    name = request.node.name.replace("[", "_").replace("]", "")
    folder = root / name
    (folder / "data" / "faces" / "m1").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["token"])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # no model's predictions (the demo's come from the predict stage, which these tests do not run)
    params["annotation"].update(project=f"t {name[5:45]}", predictions="none", queue="sequential", simulation={
        **params["annotation"]["simulation"], "reference": str(REPO / "sample" / "reference_labels.csv")})
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def set_params(folder: Path, **changes) -> None:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["annotation"].update(changes)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def write_faces(folder: Path, photos: list[str], copies: int = 1) -> pd.DataFrame:
    """A faces table of sample photos (as crops), and the media table they come from; ``copies`` > 1 makes
    that many media of each photo."""
    rows, media = [], []
    for photo, copy in ((p, k) for k in range(copies) for p in photos):
        media_id = f"url-{Path(photo).stem}" + (f"-{copy}" if copies > 1 else "")
        crop = folder / "data" / "faces" / "m1" / f"{media_id}-00000000-0.jpg"
        shutil.copy(SAMPLE / "photos" / photo, crop)
        rows.append({"face_id": crop.stem, "media_id": media_id, "timestamp": 0.0,
                     "crop_path": str(crop.relative_to(folder.parent))})
        media.append({"media_id": media_id, "url": f"http://127.0.0.1:8765/photos/{photo}"})
    pd.DataFrame(rows).to_csv(folder / "data" / "faces.csv", index=False)
    pd.DataFrame(media).to_csv(folder / "data" / "media.csv", index=False)
    return pd.DataFrame(rows)


def run_push(folder: Path) -> int:
    return push.main(["--faces", str(folder / "data" / "faces.csv"), "--media", str(folder / "data" / "media.csv"),
                      "--out", str(folder / "data" / "tasks.csv"), "--params", str(folder / "params.yaml")])


def run_pull(folder: Path) -> dict:
    d = folder / "data"
    assert pull.main(["--tasks", str(d / "tasks.csv"), "--votes", str(d / "votes.csv"), "--long", str(d / "long.csv"),
                      "--labels", str(d / "labels.csv"), "--annotators", str(d / "annotators.csv"),
                      "--confusion", str(d / "confusion.csv"), "--metrics", str(d / "metrics.json"),
                      "--params", str(folder / "params.yaml")]) == 0
    return json.loads((d / "metrics.json").read_text())["annotation"]


PHOTOS = ["london_001_03.jpg", "london_001_08.jpg", "london_002_03.jpg", "london_002_08.jpg", "astronaut.jpg"]


def test_push_is_idempotent_and_each_face_gets_ten_attributed_votes(project, capsys):
    write_faces(project, PHOTOS)
    assert run_push(project) == 0
    assert "(5 new, 0 already there), with SIMULATED votes" in capsys.readouterr().out
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    assert manifest.task_id.notna().all() and manifest.project_id.nunique() == 1
    assert run_push(project) == 0
    assert "(0 new, 5 already there)" in capsys.readouterr().out
    assert pd.read_csv(project / "data" / "tasks.csv").equals(manifest)

    metrics = run_pull(project)
    long = pd.read_csv(project / "data" / "long.csv")
    assert (long.groupby("face_id").annotator.nunique() == 10).all()
    assert sorted(long.annotator.unique()) == [accounts.email_of(n) for n in range(1, 11)]
    votes = pd.read_csv(project / "data" / "votes.csv")
    assert list(votes.columns) == ["face_id", *VOTE_COLUMNS, "n_annotators"]
    assert (votes.n_annotators == 10).all() and (votes[VOTE_COLUMNS].sum(axis=1) == 10).all()
    assert metrics["votes_simulated"] is True and metrics["tasks_complete"] == 5
    annotators = pd.read_csv(project / "data" / "annotators.csv")
    assert len(annotators) == 10 and (annotators.votes == 5).all()
    assert annotators.agreement_with_label.between(0, 1).all()
    assert (pd.read_csv(project / "data" / "labels.csv").votes_by == "simulated").all()
    # the simulated crowd is right more often than not: the neutral and happy London faces come out so
    labels = pd.read_csv(project / "data" / "labels.csv").set_index("face_id").label
    assert labels.get("url-london_001_08-00000000-0") == "happy"


def test_a_rerun_adds_new_faces_and_loses_no_vote(project, capsys):
    write_faces(project, PHOTOS[:2])
    run_push(project)
    first = run_pull(project)
    write_faces(project, PHOTOS[:4])
    run_push(project)
    assert "(2 new, 2 already there)" in capsys.readouterr().out
    second = run_pull(project)
    assert (first["votes_counted"], second["votes_counted"]) == (20, 40)


def test_the_crop_is_served_to_the_labelling_page(project, label_studio):
    faces = write_faces(project, PHOTOS[:1])
    run_push(project)
    client = Client()
    task_id = int(pd.read_csv(project / "data" / "tasks.csv").task_id[0])
    image = client.sdk.tasks.get(task_id).data["image"]
    response = client.http.get(image)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert response.content == (project.parent / faces.crop_path[0]).read_bytes()


def test_pull_counts_one_vote_per_annotator_at_most_ten_and_known_labels(project, caplog):
    set_params(project, crowd="none", votes=10)
    write_faces(project, PHOTOS[:3])
    run_push(project)
    client = Client()
    users = list(accounts.ensure_annotators(client, 11).values())
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    a, b, c = (int(t) for t in manifest.task_id)

    def vote(task: int, user: int, label: str, cancelled: bool = False) -> None:
        body = {"result": push.choice(label), "completed_by": user, "was_cancelled": cancelled}
        r = client.http.post(f"/api/tasks/{task}/annotations/", json=body)
        assert r.status_code == 201, r.text

    for user in users:  # eleven votes on task a; the eleventh is not counted
        vote(a, user, "happy" if user != users[-1] else "sad")
    vote(b, users[0], "sad")  # annotator01 changes their mind: the latest vote counts
    vote(b, users[0], "happy")
    vote(b, users[1], "bored")  # not a label of the config
    vote(b, users[2], "angry", cancelled=True)  # skipped
    vote(c, users[3], "neutral")
    metrics = run_pull(project)
    assert metrics["votes_not_counted"] == 4
    for reason in ("1 vote(s) not counted: cancelled", "1 vote(s) not counted: unknown label",
                   "1 vote(s) not counted: repeat by annotator", "1 vote(s) not counted: over limit"):
        assert reason in caplog.text
    assert "vote(s) for 'bored', which is not a label of the config" in caplog.text
    votes = pd.read_csv(project / "data" / "votes.csv").set_index("face_id")
    face_a, face_b, face_c = manifest.face_id
    assert votes.loc[face_a, "happiness"] == 10 and votes.loc[face_a, "sadness"] == 0
    assert votes.loc[face_b, "happiness"] == 1 and votes.loc[face_b, "n_annotators"] == 1
    # only faces with min_votes (10) enter the labels table; the others are counted as waiting
    assert list(pd.read_csv(project / "data" / "labels.csv").face_id) == [face_a]
    assert (metrics["tasks_complete"], metrics["tasks_incomplete"]) == (1, 2)


def test_the_pull_finds_the_random_voter_and_the_one_who_always_answers_happy(project, caplog):
    """Thirty faces voted on through the API by ten accounts: eight right 85% of the time, one at random,
    one always happy; ten of the faces are gold."""
    set_params(project, crowd="none", votes=10, min_votes=10, quality={
        "gold": str(project / "gold.csv"), "min_votes": 20, "min_balanced_accuracy": 0.4, "min_gold_votes": 5,
        "min_gold_accuracy": 0.5, "exclude_flagged": False})
    faces = write_faces(project, PHOTOS, copies=6)
    rng = np.random.default_rng(0)
    truth = dict(zip(faces.face_id, rng.choice(["happy", "sad", "neutral", "angry", "surprise"], len(faces))))
    pd.DataFrame({"face_id": list(truth)[:10], "label": list(truth.values())[:10]}).to_csv(project / "gold.csv",
                                                                                          index=False)
    run_push(project)
    client = Client()
    users = accounts.ensure_annotators(client, 10)
    emails = sorted(users)
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    for face_id, task in zip(manifest.face_id, manifest.task_id.astype(int)):
        for k, email in enumerate(emails):
            if k == 8:
                label = LABELS[rng.integers(len(LABELS))]
            elif k == 9:
                label = "happy"
            else:
                wrong = [other for other in LABELS if other != truth[face_id]]
                label = truth[face_id] if rng.random() < 0.85 else wrong[rng.integers(len(wrong))]
            body = {"result": push.choice(label), "completed_by": users[email], "lead_time": 2.0 + k}
            assert client.http.post(f"/api/tasks/{task}/annotations/", json=body).status_code == 201
    metrics = run_pull(project)
    annotators = pd.read_csv(project / "data" / "annotators.csv").set_index("annotator")
    assert metrics["annotators_flagged"] == sorted([emails[8], emails[9]])
    assert set(annotators.index[annotators.flagged]) == {emails[8], emails[9]}
    assert f"annotator {emails[9]} flagged: balanced accuracy" in caplog.text
    assert (annotators.votes == 30).all() and (annotators.gold_votes == 10).all()
    assert annotators.loc[emails[0], "median_seconds"] == 2.0 and annotators.loc[emails[9], "median_seconds"] == 11.0
    assert annotators.loc[emails[9], "gold_accuracy"] == np.mean([truth[f] == "happy" for f in list(truth)[:10]])
    confusion = pd.read_csv(project / "data" / "confusion.csv")
    happy_one = confusion[(confusion.annotator == emails[9]) & (confusion.given == "happiness")]
    assert (happy_one.share > 0.99).all() and len(happy_one) >= 4
    assert (pd.read_csv(project / "data" / "votes.csv").n_annotators == 10).all()

    set_params(project, min_votes=8, quality={
        **yaml.safe_load((project / "params.yaml").read_text())["annotation"]["quality"], "exclude_flagged": True})
    metrics = run_pull(project)
    votes = pd.read_csv(project / "data" / "votes.csv")
    assert (votes.n_annotators == 8).all()  # the flagged two are left out of the votes and the labels
    assert metrics["votes_counted"] == 30 * 8 and len(pd.read_csv(project / "data" / "long.csv")) == 300
    labels = pd.read_csv(project / "data" / "labels.csv").set_index("face_id")
    assert len(labels) == 30 and (labels.label == pd.Series(truth)[labels.index]).mean() >= 0.9
    assert "their votes are left out" in caplog.text


def process_group(pgid: int) -> list[int]:
    """The live processes of a process group (field 5 of /proc/PID/stat, after the command's name)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_the_export_comes_in_chunks_from_several_server_processes(project, label_studio, monkeypatch):
    write_faces(project, PHOTOS)
    run_push(project)
    client = Client()
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    project_id = int(manifest.project_id[0])
    other = client.create_project(f"other {project.name[:40]}", label_config(), 10)
    [[elsewhere]] = client.import_tasks(other.id, [{"data": {"image": "/x.jpg", "face_id": "elsewhere"}}])
    requested = []
    get_json = client.get_json
    monkeypatch.setattr(client, "get_json", lambda path, what, **params: requested.append(params) or get_json(
        path, what, **params))
    monkeypatch.setattr("annotation.client.EXPORT_CHUNK", 2)
    chunked = client.export(project_id, [*manifest.task_id, elsewhere, 10**8])
    assert [len(r["ids[]"]) for r in requested] == [2, 2, 2, 1]
    whole = client.export(project_id)
    assert len(whole) == 5 and sorted(chunked, key=lambda t: t["id"]) == sorted(whole, key=lambda t: t["id"])
    assert all(len(t["annotations"]) == 10 for t in chunked)  # the simulated crowd's votes
    assert client.export(project_id, []) == []
    state = json.loads((label_studio["home"] / "server.json").read_text())
    assert state["workers"] >= 2 and len(process_group(state["pid"])) == state["workers"] + 1


def test_a_models_predictions_arrive_as_pre_annotations(project):
    faces = write_faces(project, PHOTOS[:2])
    pd.DataFrame({"face_id": faces.face_id, "label": ["neutral", "happy"], "score": [0.8, 0.95],
                  "model": "resmaskingnet-test"}).to_csv(project / "predictions.csv", index=False)
    set_params(project, crowd="none", predictions=str(project / "predictions.csv"))
    run_push(project)
    client = Client()
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    predicted = {}
    for face_id, task_id in zip(manifest.face_id, manifest.task_id):
        [prediction] = client.sdk.predictions.list(task=int(task_id))
        predicted[face_id] = (prediction.result[0]["value"]["choices"][0], prediction.score, prediction.model_version)
    assert predicted == {faces.face_id[0]: ("neutral", 0.8, "resmaskingnet-test"),
                         faces.face_id[1]: ("happy", 0.95, "resmaskingnet-test")}
    exported = client.export(int(manifest.project_id[0]))
    assert all(t["annotations"] == [] for t in exported)  # suggestions, not votes


def test_server_down_and_wrong_token_say_what_to_do(label_studio):
    port = free_port()
    with pytest.raises(StageError, match=rf"Label Studio at http://127.0.0.1:{port} does not answer"):
        Client(f"http://127.0.0.1:{port}", "token")
    with pytest.raises(StageError, match="refused the API token \\(401\\).*LABEL_STUDIO_API_KEY"):
        Client(label_studio["url"], "not-the-token")


def test_the_server_command_reads_its_options_after_the_action(label_studio, tmp_path, capsys):
    assert server.main(["status", "--home", str(label_studio["home"])]) == 0
    assert f"Label Studio is up at {label_studio['url']}" in capsys.readouterr().out
    assert server.main(["status", "--home", str(tmp_path)]) == 1
    with pytest.raises(SystemExit):
        server.main(["stop", "--home", str(tmp_path), "--", "dvc", "repro"])
    assert "stop takes no command" in capsys.readouterr().err


def test_a_project_deleted_between_push_and_pull_is_named(project):
    write_faces(project, PHOTOS[:1])
    run_push(project)
    project_id = int(pd.read_csv(project / "data" / "tasks.csv").project_id[0])
    Client().sdk.projects.delete(project_id)
    with pytest.raises(StageError, match=f"project {project_id} no longer exists .*dvc repro -f push"):
        run_pull(project)


def test_a_config_changed_under_annotations_is_left_alone(project):
    write_faces(project, PHOTOS[:1])
    run_push(project)
    client = Client()
    project_id = int(pd.read_csv(project / "data" / "tasks.csv").project_id[0])
    changed = label_config([label for label in LABELS if label != "fear"])
    client.update_project(project_id, label_config=changed)
    with pytest.raises(StageError, match="has a labelling config with other labels .* will not change it"):
        run_push(project)
    assert "fear" not in labels_in_config(client.project(project_id).label_config)  # untouched


def test_accounts_can_log_in_and_progress_is_shown(project, label_studio, capsys):
    write_faces(project, PHOTOS[:2])
    run_push(project)
    # the session's server is shared: the accounts were made, and their passwords kept, by whichever
    # test's project needed them first
    kept = {}
    for kept_file in label_studio["root"].rglob("annotators.json"):
        kept.update(json.loads(kept_file.read_text()))
    email = accounts.email_of(1)
    token = kept[email]["token"]
    assert Client(token=token, url=Client().url).user.email == email
    with httpx.Client(base_url=Client().url) as browser:
        page = browser.get("/user/login/")
        login = browser.post("/user/login/", headers={"Referer": str(page.url)},
                             data={"email": email, "password": kept[email]["password"],
                                   "csrfmiddlewaretoken": browser.cookies.get("csrftoken")})
    assert login.status_code == 302
    os.chdir(project)
    assert accounts.main(["progress"]) == 0
    assert f"{email}" in capsys.readouterr().out


@pytest.mark.skipif(not (SHARED / "ferplus").exists(), reason="../shared/data is not here")
def test_ferplus_round_trip_on_a_subset(label_studio, monkeypatch):
    monkeypatch.chdir(label_studio["root"])
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["token"])
    result = replay(Client(), SHARED / "fer2013" / "fer2013.csv.xz", SHARED / "ferplus" / "fer2013new.csv",
                    label_studio["root"] / "ferplus", "FER+ replay subset", limit=300)
    assert result["identical"] == result["rows"] == 300


def test_a_ferplus_file_of_another_fer2013_is_refused_before_anything_is_pushed(label_studio, monkeypatch, tmp_path):
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["token"])
    grey = " ".join(["128"] * 48 * 48)
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n" + f"3,{grey},Training\n" * 2 + f"0,{grey},PublicTest\n")
    votes = ",".join(["10", *["0"] * (len(VOTE_COLUMNS) - 1)])
    (tmp_path / "fer2013new.csv").write_text(f"Usage,Image name,{','.join(VOTE_COLUMNS)}\n"
                                             + "".join(f"Training,fer{i:07d}.png,{votes}\n" for i in range(3)))
    client = Client()
    with pytest.raises(StageError, match=r"fer2013new.csv: line 4: Usage 'Training' where FER2013's row 2 is 'PublicTest'"):
        replay(client, tmp_path / "fer2013.csv", tmp_path / "fer2013new.csv", tmp_path / "images", "FER+ mismatch")
    assert client.find_project("FER+ mismatch") is None


# -- the labelling page, in a real headless browser ---------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the flags a headless Chromium needs on a closed, GPU-less machine
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")
def test_the_crop_shows_in_the_labelling_page(project, label_studio, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    write_faces(project, PHOTOS[:1])
    run_push(project)
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    project_id, task_id = int(manifest.project_id[0]), int(manifest.task_id[0])
    admin = json.loads((label_studio["home"] / "credentials.json").read_text())
    url = label_studio["url"]
    # Every wait below waits for the condition it asserts, with room for a slow, busy machine: the page
    # renders the image and then the choices, each at its own pace.
    wait_ms = 120_000
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(wait_ms)
        # the page's scripts run as on a CPU four times slower than this one, so that a check made at a
        # fixed moment, not on its condition, fails here rather than on a slower machine
        page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": 4})
        try:
            page.goto(f"{url}/user/login/")
            page.fill("input[name=email]", admin["username"])
            page.fill("input[name=password]", admin["password"])
            page.click("button[type=submit]")
            page.wait_for_url(lambda address: "/user/login" not in address)
            page.goto(f"{url}/projects/{project_id}/data?task={task_id}")
            # the labelling interface loads the crop through the local-files route: wait until it has pixels
            page.wait_for_function(
                """() => [...document.querySelectorAll('img')].some(
                       img => img.src.includes('local-files') && img.complete && img.naturalWidth > 0)""")
            size = page.evaluate("""() => { const img = [...document.querySelectorAll('img')]
                                                .find(i => i.src.includes('local-files'));
                                            return [img.naturalWidth, img.naturalHeight]; }""")
            # each choice of the labelling config with its hotkey, "angry[a]" (the instructions above them
            # name not_a_face and unsure inside a sentence, which this does not match)
            for label in LABELS:
                choice = page.get_by_text(re.compile(rf"^{re.escape(label)}\s*\[{HOTKEYS[label]}\]$"))
                expect(choice.first).to_be_visible(timeout=wait_ms)
        finally:
            page.screenshot(path=str(tmp_path / "labelling_page.png"))
            browser.close()
    assert size == [540, 540]


@pytest.mark.parametrize("cut", ["server stopped", "push killed"])
def test_a_push_cut_off_half_way_is_finished_by_the_rerun(project, label_studio, cut):
    # 5,000 faces go in three import requests; the server is stopped, or the push killed with SIGKILL, once
    # the first has landed
    crop = project / "data" / "faces" / "m1" / "crop.jpg"
    shutil.copy(SAMPLE / "photos" / "london_001_08.jpg", crop)
    media_id = "url-london_001_08"
    faces = pd.DataFrame({"face_id": [f"{media_id}-{200 * k:08d}-0" for k in range(5000)], "media_id": media_id,
                          "timestamp": 0.0, "crop_path": str(crop.relative_to(project.parent))})
    faces.to_csv(project / "data" / "faces.csv", index=False)
    pd.DataFrame({"media_id": [media_id], "url": ["http://127.0.0.1:8765/photos/london_001_08.jpg"]}).to_csv(
        project / "data" / "media.csv", index=False)
    title = f"cut off: {cut}"
    set_params(project, project=title)
    command = [sys.executable, "-m", "annotation.push", "--faces", str(project / "data" / "faces.csv"),
               "--media", str(project / "data" / "media.csv"), "--out", str(project / "data" / "tasks.csv"),
               "--params", str(project / "params.yaml")]
    pushing = subprocess.Popen(command, cwd=label_studio["root"], env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client, landed = Client(), 0
    deadline = time.monotonic() + 300
    while landed < 2000 and pushing.poll() is None and time.monotonic() < deadline:
        found = client.find_project(title)
        landed = client.project(found.id).task_number if found else 0
        time.sleep(0.1)
    assert 0 < landed < 5000, "the push was not caught half-way"
    if cut == "push killed":
        pushing.kill()
        pushing.communicate(timeout=60)
    else:
        port = int(label_studio["url"].rsplit(":", 1)[1])
        server.stop(label_studio["home"])
        try:
            out, err = pushing.communicate(timeout=300)
            assert pushing.returncode == 1, out + err
            assert f"Label Studio at {label_studio['url']} does not answer" in err
        finally:
            server.start(port, label_studio["home"], files_root=label_studio["root"])
    assert not (project / "data" / "tasks.csv").exists()

    assert run_push(project) == 0
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    assert manifest.task_id.notna().all() and manifest.task_id.is_unique and len(manifest) == 5000
    exported = Client().export(int(manifest.project_id[0]))
    assert sorted(t["data"]["face_id"] for t in exported) == sorted(faces.face_id)  # each face once
    assert all(len(t["annotations"]) == 10 for t in exported)  # and no vote lost in the cut

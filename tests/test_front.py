"""The annotators' front (annotation/front.py) before a real Label Studio, started by these tests on
127.0.0.1: an annotator labels blind and reaches nothing else; the admin and the pipeline's token reach
everything. The browser tests drive Debian's Chromium through Playwright."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from annotation import front_record, pull, server
from annotation.accounts import email_of, ensure_annotators
from annotation.client import Client
from annotation.labels import label_config
from tests.conftest import LABEL_STUDIO_VENV, REPO, SAMPLE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the flags a headless Chromium needs on a closed, GPU-less machine (as in tests/test_label_studio.py)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
WAIT_MS = 180_000  # every browser wait waits for its condition; this is only the ceiling on a busy machine
PHOTO = SAMPLE / "photos" / "london_001_03.jpg"  # 540 x 540
OTHER_VOTES = {2: "surprise", 3: "disgust", 4: "fear"}  # annotator number -> the vote cast before annotator01's


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A Label Studio of this module's own with its front, each on a free port."""
    if not (LABEL_STUDIO_VENV / "bin" / "label-studio").exists():
        pytest.skip("Label Studio is not installed (make install puts it in .label-studio/venv)")
    root = tmp_path_factory.mktemp("front-projects")
    home = tmp_path_factory.mktemp("front-home")
    (home / "venv").symlink_to(LABEL_STUDIO_VENV)
    state = server.start(server.free_port(), home, files_root=root, front_port=server.free_port())
    yield {**state, "root": root, "home": home,
           "admin_password": json.loads((home / "credentials.json").read_text())["password"]}
    server.stop(home)


@pytest.fixture(scope="module")
def face(served):
    """One face in a project of its own, with three other annotators' votes already on it (imported with
    the task, as push's simulated crowd does). Each vote's result region carries a marker
    (``othervote2``...), so that any payload carrying it is found by searching for the marker."""
    root = served["root"]
    client = Client(served["url"], served["token"])
    users = ensure_annotators(client, 4, root / "annotators.json")
    accounts = json.loads((root / "annotators.json").read_text())
    (root / "faces").mkdir()
    shutil.copy(PHOTO, root / "faces" / "face.jpg")
    project = client.create_project("blind votes", label_config(), 10)
    client.add_local_storage(project.id, root / "faces", "face crops")
    votes = [{"completed_by": users[email_of(n)], "result": [
        {"id": f"othervote{n}", "from_name": "emotion", "to_name": "image", "type": "choices",
         "value": {"choices": [label]}}]} for n, label in OTHER_VOTES.items()]
    [[task_id]] = client.import_tasks(project.id, [{"data": {"image": "/data/local-files/?d=faces/face.jpg",
                                                             "face_id": "face"}, "annotations": votes}])
    [task] = client.export(project.id)
    return {"project": project.id, "task": task_id, "client": client, "users": users, "accounts": accounts,
            "others": [a["id"] for a in task["annotations"]], "markers": [f"othervote{n}" for n in OTHER_VOTES],
            "other_emails": [email_of(n) for n in OTHER_VOTES]}


def annotator01(face) -> dict[str, str]:
    return {"Authorization": f"Token {face['accounts'][email_of(1)]['token']}"}


def token_of(face, n: int) -> dict[str, str]:
    return {"Authorization": f"Token {face['accounts'][email_of(n)]['token']}"}


def vote(label: str) -> dict:
    return {"result": [{"from_name": "emotion", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]}


@pytest.fixture(scope="module")
def unvoted(served, face):
    """A project of its own with faces no one has voted on yet, and one imported with a vote, as push's
    simulated crowd votes (face_id -> task id)."""
    client = face["client"]
    project = client.create_project("cast blind", label_config(), 10)
    face_ids = ["through", "changed", "straight", "restart", "imported"]
    tasks = [{"data": {"image": f"http://127.0.0.1:9/{f}.jpg", "face_id": f}} for f in face_ids]
    tasks[-1]["annotations"] = [{**vote("happy"), "completed_by": face["users"][email_of(2)]}]
    [task_ids] = client.import_tasks(project.id, tasks)
    return {"project": project.id, "tasks": dict(zip(face_ids, task_ids))}


def record_file(served) -> Path:
    """The front's record of the votes cast through it, in the server's data folder."""
    return served["home"] / "data" / server.FRONT_RECORD


def record_lines(served) -> list[dict]:
    return [json.loads(line) for line in record_file(served).read_text().splitlines()]


def test_an_annotators_token_reaches_only_the_label_streams_requests(served, face):
    front, project, task = served["front_url"], face["project"], face["task"]
    me = annotator01(face)
    for method, path in [("GET", "/api/projects"), ("GET", f"/api/projects/{project}/export?exportType=JSON"),
                         ("PATCH", f"/api/projects/{project}"), ("DELETE", f"/api/tasks/{task}"),
                         ("GET", f"/api/annotations/{face['others'][0]}"),
                         ("PATCH", f"/api/annotations/{face['others'][0]}"),
                         ("GET", "/api/current-user/token"), ("GET", "/api/organizations"),
                         ("GET", f"/projects/{project}/data"), ("GET", f"/projects/{project}/settings"),
                         ("POST", f"/api/dm/actions?id=delete_tasks&project={project}")]:
        answer = httpx.request(method, f"{front}{path}", headers=me, json={})
        assert answer.status_code == 403, (method, path, answer.status_code, answer.text[:200])
    # the task and its annotations come without the other votes
    for path in [f"/api/tasks/{task}", f"/api/tasks/{task}/annotations/", f"/api/projects/{project}/next",
                 f"/api/tasks?project={project}"]:
        answer = httpx.get(f"{front}{path}", headers=me)
        assert answer.status_code == 200, (path, answer.text[:200])
        assert not any(marker in answer.text for marker in face["markers"]), path
        assert not any(email in answer.text for email in face["other_emails"]), path
    # a vote in another's name, and a tab or next task picked by a filter on results, are refused
    other = face["users"][email_of(2)]
    vote = {"result": [{"from_name": "emotion", "to_name": "image", "type": "choices",
                        "value": {"choices": ["happy"]}}], "completed_by": other}
    assert httpx.post(f"{front}/api/tasks/{task}/annotations/", headers=me, json=vote).status_code == 403
    by_result = {"filters": {"conjunction": "and", "items": [{"filter": "filter:tasks:annotations_results",
                                                              "operator": "contains", "type": "String",
                                                              "value": "surprise"}]}}
    assert httpx.post(f"{front}/api/dm/views?project={project}", headers=me,
                      json={"project": project, "data": by_result}).status_code == 403
    assert httpx.post(f"{front}/api/dm/actions?id=next_task&project={project}", headers=me,
                      json={"project": project, **by_result}).status_code == 403
    assert len(face["client"].export(project)[0]["annotations"]) == 3  # none of it reached the server
    # the pipeline's token (the admin's) reaches everything through the front
    admin = {"Authorization": f"Token {served['token']}"}
    exported = httpx.get(f"{front}/api/projects/{project}/export?exportType=JSON", headers=admin)
    assert exported.status_code == 200 and all(marker in exported.text for marker in face["markers"])


def test_the_invite_link_leads_to_the_label_stream(served, face):
    front = served["front_url"]
    invite = httpx.get(f"{front}/api/invite", headers={"Authorization": f"Token {served['token']}"}).json()
    with httpx.Client(base_url=front, follow_redirects=True) as browser:
        browser.get(invite["invite_url"])
        form = {"email": "newcomer@annotators.fer-pipeline.local", "password": "a-long-password-1",
                "csrfmiddlewaretoken": browser.cookies["csrftoken"], "allow_newsletters": "false"}
        landed = browser.post(invite["invite_url"], data=form, headers={"Referer": f"{front}{invite['invite_url']}"})
        assert landed.status_code == 200
        assert str(landed.url) == f"{front}/projects/{face['project']}/data?labeling=1"
        assert browser.get("/projects/").url == landed.url  # the home page is the label stream too
        assert browser.get("/api/projects").status_code == 403


def _browser(p):
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    # the page's scripts run as on a CPU four times slower than this one, so that a check made at a fixed
    # moment, not on its condition, fails here rather than on a slower machine
    page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": 4})
    return browser, page


def _record(page) -> tuple[list[tuple[str, int, bytes]], list[str]]:
    """Every response the page receives, with its body; the URLs of those whose body could not be read."""
    received, unread = [], []

    def keep(response) -> None:
        try:
            received.append((response.url, response.status, response.body()))
        except Exception:  # a redirect, or a page navigated away from, has no body to read
            unread.append(response.url)

    page.on("response", keep)
    return received, unread


def _log_in(page, front: str, email: str, password: str) -> None:
    page.goto(f"{front}/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda address: "/user/login" not in address)


CROP_SHOWN = """() => [...document.querySelectorAll('img')].some(
                    img => img.complete && img.naturalWidth === 540 && img.naturalHeight === 540)"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")
@pytest.mark.timeout(900)
def test_an_annotator_labels_blind_in_the_label_stream(served, face, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    front, project, task = served["front_url"], face["project"], face["task"]
    email = email_of(1)
    with sync_playwright() as p:
        browser, page = _browser(p)
        received, unread = _record(page)
        try:
            _log_in(page, front, email, face["accounts"][email]["password"])
            # the login lands in the label stream of the one project there is
            page.wait_for_url(f"{front}/projects/{project}/data?labeling=1")
            page.wait_for_function(CROP_SHOWN)
            happy = page.get_by_text(re.compile(r"^happy\s*\[h\]$")).first
            expect(happy).to_be_visible(timeout=WAIT_MS)
            happy.click()
            with page.expect_response(lambda r: r.request.method == "POST"
                                      and f"/api/tasks/{task}/annotations" in r.url) as submitted:
                page.get_by_role("button", name=re.compile("submit", re.I)).first.click()
            assert submitted.value.status == 201
            # the stream asks for the next task (there is none left for this annotator) before it settles
            expect(page.get_by_text(re.compile("no more tasks", re.I)).first).to_be_visible(timeout=WAIT_MS)
            shown = page.content()
            expect(page.get_by_text("Compare All")).to_have_count(0)
            refused = {what: page.goto(f"{front}{path}").status for what, path in [
                ("data manager", f"/projects/{project}/data"), ("settings", f"/projects/{project}/settings")]}
            refused["export"] = page.request.get(f"{front}/api/projects/{project}/export?exportType=JSON").status
            refused["another's annotation"] = page.request.get(f"{front}/api/annotations/{face['others'][0]}").status
        finally:
            page.screenshot(path=str(tmp_path / "label_stream.png"))
            browser.close()

    # the vote is on the server, in annotator01's name, and the front's record says it was cast blind
    mine = [a for a in face["client"].export(project)[0]["annotations"] if a["completed_by"] == face["users"][email]]
    assert [a["result"][0]["value"]["choices"] for a in mine] == [["happy"]]
    casts, _ = front_record.read(record_file(served).read_text().splitlines(), "", print)
    assert front_record.cast_blind(casts, mine[0], task)
    # the other votes were neither on the page nor in anything the page received
    assert any(f"/api/tasks/{task}/annotations" in url for url, _, _ in received)
    assert not [url for url in unread if "/api/" in url]
    for marker in face["markers"]:
        assert marker not in shown
        leaks = [url for url, _, body in received if marker.encode() in body]
        assert not leaks, f"{marker} reached the annotator's page in {leaks}"
    for other in face["other_emails"]:
        assert not [url for url, _, body in received if other.encode() in body]
    assert refused == {"data manager": 403, "settings": 403, "export": 403, "another's annotation": 403}


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")
@pytest.mark.timeout(900)
def test_the_admin_sees_everything_through_the_front(served, face, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    front, project, task = served["front_url"], face["project"], face["task"]
    votes = len(face["client"].export(project)[0]["annotations"])  # annotator01's too, if that test ran first
    with sync_playwright() as p:
        browser, page = _browser(p)
        received, _ = _record(page)
        try:
            _log_in(page, front, served["username"], served["admin_password"])
            page.goto(f"{front}/projects/{project}/data?task={task}")
            page.wait_for_function(CROP_SHOWN)
            # a tab for each vote, and one to compare them all
            expect(page.get_by_text("Compare All")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text(re.compile(r"^annotato.*local$"))).to_have_count(votes, timeout=WAIT_MS)
            allowed = {what: page.goto(f"{front}{path}").status for what, path in [
                ("data manager", f"/projects/{project}/data"), ("settings", f"/projects/{project}/settings")]}
            export = page.request.get(f"{front}/api/projects/{project}/export?exportType=JSON")
            allowed["export"] = export.status
            allowed["another's annotation"] = page.request.get(f"{front}/api/annotations/{face['others'][0]}").status
            exported = export.text()
        finally:
            page.screenshot(path=str(tmp_path / "admin.png"))
            browser.close()
    assert allowed == {"data manager": 200, "settings": 200, "export": 200, "another's annotation": 200}
    for marker in face["markers"]:
        assert marker in exported
        assert any(marker.encode() in body for url, _, body in received if f"/api/tasks/{task}" in url)


def test_the_pull_marks_the_votes_cast_through_the_front_blind(served, face, unvoted, tmp_path, monkeypatch):
    front, url, tasks = served["front_url"], served["url"], unvoted["tasks"]
    created = {}

    def cast(n: int, face_id: str, label: str, at: str) -> None:
        answer = httpx.post(f"{at}/api/tasks/{tasks[face_id]}/annotations/", headers=token_of(face, n),
                            json=vote(label))
        assert answer.status_code == 201, answer.text[:200]
        created[n, face_id] = answer.json()["id"]

    def change(n: int, face_id: str, label: str, at: str) -> None:
        answer = httpx.patch(f"{at}/api/annotations/{created[n, face_id]}", headers=token_of(face, n), json=vote(label))
        assert answer.status_code == 200, answer.text[:200]

    cast(1, "through", "happy", front)
    cast(2, "through", "sad", url)  # straight to Label Studio, where the others' votes can be read
    change(1, "through", "surprise", front)  # changed through the front: still blind
    cast(3, "changed", "happy", front)
    change(3, "changed", "angry", url)  # changed straight to Label Studio: no longer known to be blind
    cast(4, "changed", "fear", url)
    change(4, "changed", "disgust", front)  # cast straight, changed through the front: not blind
    cast(1, "straight", "neutral", url)

    manifest = pd.DataFrame({"face_id": list(tasks), "task_id": list(tasks.values()), "project_id": unvoted["project"],
                             "crowd": ["simulated" if face_id == "imported" else "none" for face_id in tasks]})
    manifest.to_csv(tmp_path / "tasks.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["annotation"].update(crowd="none", min_votes=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", served["token"])

    def run_pull(out) -> tuple[pd.DataFrame, dict]:
        out.mkdir()
        assert pull.main(["--tasks", str(tmp_path / "tasks.csv"), "--params", str(tmp_path / "params.yaml"),
                          *(item for name in ("votes", "long", "labels", "annotators", "confusion")
                            for item in (f"--{name}", str(out / f"{name}.csv"))),
                          "--metrics", str(out / "metrics.json")]) == 0
        long = pd.read_csv(out / "long.csv").set_index(["face_id", "annotator"])
        return long, json.loads((out / "metrics.json").read_text())["annotation"]

    monkeypatch.setenv(pull.FRONT_URL_VARIABLE, front)
    long, metrics = run_pull(tmp_path / "with-front")
    assert long.blind.to_dict() == {("through", email_of(1)): "yes", ("through", email_of(2)): "unknown",
                                    ("changed", email_of(3)): "unknown", ("changed", email_of(4)): "unknown",
                                    ("straight", email_of(1)): "unknown", ("imported", email_of(2)): "simulated"}
    assert long.loc[("through", email_of(1)), "annotation_id"] == created[1, "through"]
    assert long.loc[("through", email_of(1)), "label"] == "surprise"
    assert metrics["votes_blind"] == {"yes": 1, "unknown": 4, "simulated": 1}
    assert metrics["front_record_lines_skipped"] == 0
    # the record holds what the front relayed, and only that
    recorded = [(line["annotation"], line["action"]) for line in record_lines(served)]
    assert recorded[-4:] == [(created[1, "through"], "created"), (created[1, "through"], "updated"),
                             (created[3, "changed"], "created"), (created[4, "changed"], "updated")]
    # with no front named, as for a team's server without one, no vote is known to be blind
    monkeypatch.delenv(pull.FRONT_URL_VARIABLE)
    long, metrics = run_pull(tmp_path / "without-front")
    assert metrics["votes_blind"] == {"yes": 0, "unknown": 5, "simulated": 1}


def test_only_the_admin_reads_the_record(served, face):
    front = served["front_url"]
    assert httpx.get(f"{front}{front_record.RECORD_ROUTE}", headers=annotator01(face)).status_code == 403
    assert httpx.get(f"{front}{front_record.RECORD_ROUTE}").headers["Location"].startswith("/user/login/")
    answer = httpx.get(f"{front}{front_record.RECORD_ROUTE}", headers={"Authorization": f"Token {served['token']}"})
    assert answer.status_code == 200
    assert answer.text == record_file(served).read_text()


def test_a_front_that_died_is_started_again_alone(served, face, unvoted):
    record = record_file(served)
    kept = record.read_bytes()
    before = server.read_state(served["home"])
    os.killpg(before["front_pid"], signal.SIGKILL)
    with pytest.raises(httpx.TransportError):
        for _ in range(100):  # until the killed process's port closes
            httpx.get(f"{before['front_url']}/health", timeout=2)
            time.sleep(0.1)
    assert server.running(served["home"]) is None
    port, front_port = (int(before[key].rsplit(":", 1)[1]) for key in ("url", "front_url"))
    after = server.start(port, served["home"], files_root=served["root"], front_port=front_port)
    assert after["pid"] == before["pid"] and after["front_pid"] != before["front_pid"]
    assert server.running(served["home"]) == after
    admin = {"Authorization": f"Token {after['token']}"}
    assert httpx.get(f"{after['front_url']}/api/projects", headers=admin).is_success
    # the record outlives the front: the new one appends to it
    answer = httpx.post(f"{after['front_url']}/api/tasks/{unvoted['tasks']['restart']}/annotations/",
                        headers=token_of(face, 2), json=vote("happy"))
    assert answer.status_code == 201
    assert record.read_bytes().startswith(kept)
    assert record_lines(served)[-1]["annotation"] == answer.json()["id"]

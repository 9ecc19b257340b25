"""The record of the votes cast through the annotators' front (annotation/front_record.py): which exported
vote counts as cast blind, what a line that cannot be read does, and which front the pull asks for it. The
real server's test is in tests/test_front.py."""

from __future__ import annotations

import json
import os

from annotation import front_record, pull
from annotation.client import LOCAL_STATE
from annotation.front import open_record

AT = "2026-12-01T16:20:01.123456Z"
LATER = "2026-12-01T16:25:00.000001Z"


def entry(annotation: int, action: str = "created", updated_at: str = AT, task: int = 7, user: int = 3) -> str:
    return json.dumps({"annotation": annotation, "task": task, "user": user, "action": action,
                       "updated_at": updated_at, "recorded_at": AT})


def exported(annotation: int, updated_at: str = AT, task_author: int = 3) -> dict:
    return {"id": annotation, "completed_by": task_author, "updated_at": updated_at}


def test_a_vote_is_blind_when_the_front_recorded_its_creation_and_the_state_it_is_in():
    casts, skipped = front_record.read([entry(1), entry(2), entry(2, "updated", LATER), entry(3, "updated")],
                                       "record", print)
    assert skipped == 0 and sorted(casts) == [1, 2]  # 3: changed through the front, not created there
    assert front_record.cast_blind(casts, exported(1), 7)
    assert not front_record.cast_blind(casts, exported(1, LATER), 7)  # changed since, straight to Label Studio
    assert front_record.cast_blind(casts, exported(2, LATER), 7)  # changed through the front
    assert front_record.cast_blind(casts, exported(2), 7)  # exported before the change through the front
    assert not front_record.cast_blind(casts, exported(1), 8)  # another task: another server's ids
    assert not front_record.cast_blind(casts, exported(1, task_author=4), 7)
    assert not front_record.cast_blind(casts, exported(3), 7)
    # Label Studio's export may write the time with an offset rather than Z: the same moment
    assert front_record.cast_blind(casts, exported(1, "2026-12-01T16:20:01.123456+00:00"), 7)


def test_a_line_that_cannot_be_read_is_skipped_with_a_warning_naming_it():
    warnings: list[str] = []
    lines = [entry(1), '{"annotation": 2, "task": 7, "us', "", entry(3, action="deleted"), "[1, 2]",
             json.dumps({"annotation": 4, "task": 7, "user": 3, "action": "created"}),
             entry(5, updated_at="yesterday"), entry(6)]
    casts, skipped = front_record.read(lines, "http://front/front/votes", warnings.append)
    assert sorted(casts) == [1, 6] and skipped == 5
    assert all(w.startswith("http://front/front/votes: line ") for w in warnings)
    assert [int(w.split(": line ")[1].split()[0]) for w in warnings] == [2, 4, 5, 6, 7]
    assert "action 'deleted'" in warnings[1] and "no updated_at" in warnings[3]


def test_the_front_ends_a_line_cut_short_before_it_appends(tmp_path):
    record = tmp_path / "front_votes.jsonl"
    record.write_text(entry(1) + "\n" + entry(2)[:30])  # a front killed mid-write
    fd = open_record(record)
    try:
        os.write(fd, front_record.line({"id": 3, "task": 7, "updated_at": AT}, 3, "created").encode())
    finally:
        os.close(fd)
    casts, skipped = front_record.read(record.read_text().splitlines(), str(record), lambda _: None)
    assert sorted(casts) == [1, 3] and skipped == 1
    fd = open_record(record)  # a whole record is left as it is
    os.close(fd)
    assert record.read_text().count("\n") == 3


def test_the_pull_reads_the_front_named_or_the_local_servers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", pull.FRONT_URL_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    assert pull.front_url() is None  # no server at all
    LOCAL_STATE.parent.mkdir()
    LOCAL_STATE.write_text(json.dumps({"url": "http://127.0.0.1:8080", "token": "t", "pid": 1,
                                       "front_url": "http://127.0.0.1:8081"}))
    assert pull.front_url() == "http://127.0.0.1:8081"  # the local server's front
    monkeypatch.setenv("LABEL_STUDIO_URL", "https://labels.example.org")
    assert pull.front_url() is None  # another server: its front, if any, is not the local one
    monkeypatch.setenv(pull.FRONT_URL_VARIABLE, "https://vote.example.org/")
    assert pull.front_url() == "https://vote.example.org"

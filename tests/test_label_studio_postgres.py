"""The annotation tests again, on a Label Studio whose database is PostgreSQL (``--database postgresql``),
as a team's server runs: push, pull, reruns and checks, then what the database holds (annotator quality is computed
from the export, the same on either database, and is tested on SQLite).

This module's ``label_studio`` fixture stands in for the session's SQLite one, so the tests imported from
``tests.test_label_studio`` (and its ``project`` fixture) run here against the PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from annotation import postgres, server
from tests.conftest import LABEL_STUDIO_VENV
from tests.test_label_studio import (  # noqa: F401 (collected here again, on PostgreSQL)
    PHOTOS,
    project,
    run_push,
    test_a_config_changed_under_annotations_is_left_alone,
    test_a_models_predictions_arrive_as_pre_annotations,
    test_a_project_deleted_between_push_and_pull_is_named,
    test_a_rerun_adds_new_faces_and_loses_no_vote,
    test_pull_counts_one_vote_per_annotator_at_most_ten_and_known_labels,
    test_push_is_idempotent_and_each_face_gets_ten_attributed_votes,
    test_the_crop_is_served_to_the_labelling_page,
    test_the_export_comes_in_chunks_from_several_server_processes,
    write_faces,
)
from tests.test_postgres import installed


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if not (LABEL_STUDIO_VENV / "bin" / "label-studio").exists():
        pytest.skip("Label Studio is not installed (make install puts it in .label-studio/venv)")
    if not installed():
        pytest.skip("no PostgreSQL here (apt-get install postgresql)")
    root = tmp_path_factory.mktemp("ls-projects-pg")
    # run as root, the cluster runs as Debian's postgres account, which must reach its folder in the home
    home = Path(tempfile.mkdtemp(prefix="ls-home-pg", dir="/tmp"))
    home.chmod(0o755)
    (home / "venv").symlink_to(LABEL_STUDIO_VENV)
    state = server.start(server.free_port(), home, files_root=root, database="postgresql")
    yield {"root": root, "url": state["url"], "token": state["token"], "home": home}
    server.stop(home)
    shutil.rmtree(home, ignore_errors=True)


def sql(home: Path, query: str) -> str:
    settings = postgres.config(home / server.POSTGRES)
    done = subprocess.run([str(postgres.binaries() / "psql"), "--host", "127.0.0.1", "--port", str(settings["port"]),
                           "--username", settings["user"], "--dbname", settings["database"], "--no-psqlrc",
                           "--tuples-only", "--no-align", "--command", query],
                          env={**os.environ, "PGPASSWORD": settings["password"]}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_tasks_and_votes_live_in_postgresql(project, label_studio):
    write_faces(project, PHOTOS[:3])
    assert run_push(project) == 0
    manifest = pd.read_csv(project / "data" / "tasks.csv")
    project_id = int(manifest.project_id[0])
    home = label_studio["home"]
    assert int(sql(home, f"SELECT count(*) FROM task WHERE project_id = {project_id}")) == 3
    assert int(sql(home, f"SELECT count(*) FROM task_completion WHERE project_id = {project_id}")) == 30
    assert not list((home / "data").glob("*.sqlite3"))  # no SQLite beside it
    assert server.read_state(home)["database"] == "postgresql"


def test_stopping_the_server_stops_its_postgresql_and_a_start_brings_the_votes_back(project, label_studio):
    write_faces(project, PHOTOS[:2])
    run_push(project)
    home = label_studio["home"]
    folder = home / server.POSTGRES
    state = server.read_state(home)
    port = int(state["url"].rsplit(":", 1)[1])
    assert server.stop(home) and not postgres.running(folder)
    again = server.start(port, home, files_root=label_studio["root"], database="postgresql")
    assert again["token"] == state["token"] and postgres.running(folder)
    project_id = int(pd.read_csv(project / "data" / "tasks.csv").project_id[0])
    assert int(sql(home, f"SELECT count(*) FROM task_completion WHERE project_id = {project_id}")) == 20

"""The project's own PostgreSQL: a real cluster made in a folder, on loopback, with a password."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from annotation import postgres, server
from pipeline.common import StageError


def installed() -> bool:
    try:
        postgres.binaries()
    except StageError:
        return False
    return True


pytestmark = pytest.mark.skipif(not installed(), reason="no PostgreSQL here (apt-get install postgresql)")


@pytest.fixture
def folder():
    # run as root, the cluster runs as Debian's postgres account, which must reach the folder: not pytest's
    # tmp_path, whose parent is closed to other accounts
    root = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    root.chmod(0o755)
    yield root / "postgres"
    postgres.stop(root / "postgres")
    shutil.rmtree(root, ignore_errors=True)


def psql(settings: dict, sql: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": settings["password"] if password is None else password}
    return subprocess.run([str(postgres.binaries() / "psql"), "--host", "127.0.0.1", "--port", str(settings["port"]),
                           "--username", settings["user"], "--dbname", settings["database"], "--no-psqlrc",
                           "--tuples-only", "--no-align", "--command", sql], env=env, capture_output=True, text=True)


def test_a_cluster_of_its_own_on_loopback_with_a_password_keeps_its_data_across_restarts(folder):
    settings = postgres.start(folder, server.free_port())
    assert psql(settings, "SHOW listen_addresses").stdout.strip() == "127.0.0.1"
    assert psql(settings, "SELECT current_database()").stdout.strip() == "label_studio"
    refused = psql(settings, "SELECT 1", password="not the password")
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    assert psql(settings, "CREATE TABLE votes (face_id text); INSERT INTO votes VALUES ('v_0001_f00')").returncode == 0
    assert (folder / "postgres.json").stat().st_mode & 0o077 == 0  # the password: the owner's only

    assert postgres.stop(folder) and not postgres.running(folder)
    assert psql(settings, "SELECT 1").returncode != 0  # stopped means stopped
    again = postgres.start(folder, server.free_port())
    assert again == settings  # the same cluster, port and password
    assert psql(again, "SELECT face_id FROM votes").stdout.strip() == "v_0001_f00"
    assert postgres.start(folder, server.free_port()) == settings  # started twice: still one server
    env = postgres.environment(settings)
    assert env["DJANGO_DB"] == "default" and env["POSTGRE_PORT"] == str(settings["port"])


def test_a_folder_the_server_account_cannot_reach_is_named(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root hands the cluster to another account")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(StageError, match=f"{closed}.*closed to it"):
        postgres.start(closed / "inner" / "postgres", server.free_port())

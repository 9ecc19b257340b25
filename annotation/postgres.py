"""A PostgreSQL of the project's own, for a Label Studio that several people use.

Label Studio recommends PostgreSQL over SQLite for teams: SQLite locks the whole database on every write,
so annotators saving at once wait on each other. ``start(folder)`` runs Debian's ``postgresql`` (its
``initdb``, ``pg_ctl``) on a cluster in ``folder``, made on the first start, listening on 127.0.0.1 and on a
socket in the folder, never on another address; ``stop(folder)`` stops it. The cluster has one role,
``label_studio``, with a generated password (``folder/postgres.json``, readable by the owner only) that
``environment`` hands to Label Studio as its ``DJANGO_DB=default`` and ``POSTGRE_*`` variables.

PostgreSQL refuses to run as root; run as root (as CI does), the cluster's files belong to Debian's
``postgres`` account and its programs run as that account (``runuser``).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from pipeline.common import StageError, atomic_write, get_logger

log = get_logger("postgres")

ROLE = "label_studio"
CONFIG = "postgres.json"
CLUSTER = "cluster"
SYSTEM_ACCOUNT = "postgres"  # Debian's package makes it


def binaries() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: PATH's, else the newest of Debian's versions."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent  # a link into /usr/lib/postgresql/N/bin, where psql is too
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise StageError("PostgreSQL is not installed: no pg_ctl on PATH nor under /usr/lib/postgresql "
                         "(apt-get install postgresql)")
    return versions[-1].parent


def _as_owner(command: list[str]) -> list[str]:
    """``command`` as the account the cluster runs as: this one, or Debian's ``postgres`` when this is root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SYSTEM_ACCOUNT, "--", *command]


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(_as_owner(command), capture_output=True, text=True)
    if done.returncode:
        raise StageError(f"PostgreSQL: {what} failed (status {done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-800:]}")


def config(folder: Path) -> dict | None:
    path = folder / CONFIG
    return json.loads(path.read_text()) if path.exists() else None


def _initialise(folder: Path, port: int) -> dict:
    """A new cluster in ``folder``: its role and password, its port, its socket folder."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"port": port, "user": ROLE, "password": secrets.token_urlsafe(24),
                "database": ROLE}
    cluster, sockets = folder / CLUSTER, folder / "socket"
    scratch = folder / f".{CLUSTER}-new"
    shutil.rmtree(scratch, ignore_errors=True)
    sockets.mkdir(exist_ok=True)
    password_file = folder / ".password"
    with atomic_write(password_file) as f:
        f.write(settings["password"])
    if os.geteuid() == 0:  # the cluster's owner must be able to reach and write these
        account = pwd.getpwnam(SYSTEM_ACCOUNT)
        for parent in folder.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise StageError(f"PostgreSQL runs as {SYSTEM_ACCOUNT} under root, and {parent} (above {folder}) "
                                 f"is closed to it: chmod o+x {parent}, or put the cluster elsewhere")
        scratch.mkdir()
        for path in (folder, scratch, sockets, password_file):
            os.chown(path, account.pw_uid, account.pw_gid)
    try:
        _run([str(binaries() / "initdb"), "--pgdata", str(scratch), "--username", ROLE, "--pwfile",
              str(password_file), "--auth", "scram-sha-256", "--encoding", "UTF8", "--no-locale"],
             f"initdb in {scratch}")
    finally:
        password_file.unlink(missing_ok=True)
    with (scratch / "postgresql.conf").open("a") as f:
        # loopback and the folder's socket only; a small server: Label Studio holds a few connections
        f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {settings['port']}\n"
                f"unix_socket_directories = '{sockets.resolve()}'\nmax_connections = 50\n")
    scratch.rename(cluster)  # only a whole cluster goes under its name: a start killed midway leaves none
    with atomic_write(folder / CONFIG) as f:
        json.dump(settings, f)
    (folder / CONFIG).chmod(0o600)
    return settings


def running(folder: Path) -> bool:
    cluster = folder / CLUSTER
    if not (cluster / "postmaster.pid").exists():
        return False
    done = subprocess.run(_as_owner([str(binaries() / "pg_ctl"), "status", "--pgdata", str(cluster)]),
                          capture_output=True, text=True)
    return done.returncode == 0


def start(folder: Path, port: int, timeout: float = 60) -> dict:
    """Start the cluster in ``folder`` (made on the first start, to listen on ``port``; a made one keeps its
    own), create its database, and return its settings."""
    settings = config(folder)
    if settings is None or not (folder / CLUSTER).is_dir():
        log.info(f"postgres: a new cluster in {folder}")
        settings = _initialise(folder, port)
    if not running(folder):
        _run([str(binaries() / "pg_ctl"), "start", "--pgdata", str(folder / CLUSTER), "--wait",
              "--timeout", str(int(timeout)), "--log", str((folder / "postgres.log").resolve())],
             f"starting the cluster in {folder / CLUSTER} (see {folder / 'postgres.log'})")
    _create_database(folder, settings)
    return settings


def _create_database(folder: Path, settings: dict) -> None:
    host = str((folder / "socket").resolve())
    env = {**os.environ, "PGPASSWORD": settings["password"]}
    base = [str(binaries() / "psql"), "--host", host, "--port", str(settings["port"]), "--username",
            settings["user"], "--dbname", "postgres", "--no-psqlrc", "--tuples-only", "--no-align"]
    deadline = time.monotonic() + 30
    while True:
        exists = subprocess.run([*base, "--command",
                                 f"SELECT 1 FROM pg_database WHERE datname = '{settings['database']}'"],
                                env=env, capture_output=True, text=True)
        if exists.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the server accepts connections a moment after pg_ctl says it started
    if exists.returncode:
        raise StageError(f"PostgreSQL in {folder}: cannot connect: {exists.stderr.strip()[-500:]}")
    if exists.stdout.strip() != "1":
        created = subprocess.run([*base, "--command", f"CREATE DATABASE {settings['database']}"], env=env,
                                 capture_output=True, text=True)
        if created.returncode:
            raise StageError(f"PostgreSQL in {folder}: creating the database {settings['database']} failed: "
                             f"{created.stderr.strip()[-500:]}")


def stop(folder: Path) -> bool:
    """Stop the cluster in ``folder``; False if it was not running."""
    if not running(folder):
        return False
    _run([str(binaries() / "pg_ctl"), "stop", "--pgdata", str(folder / CLUSTER), "--mode", "fast", "--wait"],
         f"stopping the cluster in {folder / CLUSTER}")
    return True


def environment(settings: dict) -> dict[str, str]:
    """The variables that point Label Studio at the cluster."""
    return {"DJANGO_DB": "default", "POSTGRE_NAME": settings["database"], "POSTGRE_USER": settings["user"],
            "POSTGRE_PASSWORD": settings["password"], "POSTGRE_HOST": "127.0.0.1",
            "POSTGRE_PORT": str(settings["port"])}

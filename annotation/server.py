"""A local Label Studio server for the pipeline: start it, stop it, or run a command while it runs.

    python -m annotation.server start [--port 8080] [--front-port 8081] [--workers N] [--database postgresql]
    python -m annotation.server status
    python -m annotation.server stop
    python -m annotation.server run -- dvc repro

Label Studio runs from its own environment (``.label-studio/venv``, installed by ``make``: its pins
conflict with the torch stack), bound to 127.0.0.1, with its data in ``.label-studio/data``. The admin
is ``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD`` with the API token ``LABEL_STUDIO_USER_TOKEN``;
those left unset are generated on the first start and kept in ``.label-studio/credentials.json``
(git-ignored, readable by the owner only). The running server's address and token are written to
``.label-studio/server.json``, where the pipeline finds them unless ``LABEL_STUDIO_URL`` and
``LABEL_STUDIO_API_KEY`` point it at another server. Face crops are served to the labelling page from
the project folder (Label Studio's local-files serving).

Annotators are given the front's address, not the server's: the front (``annotation/front.py``, on
``--front-port``, also on 127.0.0.1) lets the admin and the pipeline's token through and an annotator
only into the label stream, for their own annotations. It is started and stopped with the server, and
its address is ``front_url`` in ``server.json``. It records every vote cast through it in
``.label-studio/data/front_votes.jsonl`` (kept with the server's data, across restarts), which the pull reads
through the front to tell the votes cast blind from the others.

Its database is SQLite (``.label-studio/data/label_studio.sqlite3``), or with ``--database postgresql``
(or ``LABEL_STUDIO_DATABASE=postgresql``) a PostgreSQL of its own in ``.label-studio/postgres``
(``annotation/postgres.py``), started and stopped with it: Label Studio's recommendation for a server that
several people use at once. The first start on PostgreSQL migrates its database (a minute or two).

It serves with gunicorn and a worker process per core (``annotation/gunicorn.conf.py`` says why), after
Label Studio's own ``label-studio start`` has set the data dir up once (database, admin, token). A new
data dir starts from a migrated template kept beside the environment, so a first start takes seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from annotation import postgres
from annotation.front import ADMIN_TOKEN_VARIABLE
from pipeline.common import StageError, atomic_write, get_logger, run_stage

log = get_logger("label-studio")

HOME = Path(".label-studio")
STATE = "server.json"
CREDENTIALS = "credentials.json"
DATABASE = "label_studio.sqlite3"
INITIALISED = "initialised.json"
GUNICORN_CONFIG = Path(__file__).resolve().with_name("gunicorn.conf.py")
DATABASES = ("sqlite", "postgresql")
POSTGRES = "postgres"  # the cluster's folder in the home
FRONT_RECORD = "front_votes.jsonl"  # the votes cast through the front, in the data folder


def _write_private(path: Path, content: dict) -> None:
    with atomic_write(path) as f:
        json.dump(content, f, indent=1)
    path.chmod(0o600)


def credentials(home: Path) -> dict[str, str]:
    """The admin's email, password and token: from the environment, else generated once and kept."""
    path = home / CREDENTIALS
    kept = json.loads(path.read_text()) if path.exists() else {}
    creds = {
        "username": os.environ.get("LABEL_STUDIO_USERNAME") or kept.get("username") or "admin@fer-pipeline.local",
        "password": os.environ.get("LABEL_STUDIO_PASSWORD") or kept.get("password") or secrets.token_urlsafe(16),
        "token": os.environ.get("LABEL_STUDIO_USER_TOKEN") or kept.get("token") or secrets.token_hex(20),
    }
    if creds != kept:
        _write_private(path, creds)
    return creds


def read_state(home: Path = HOME) -> dict | None:
    """What ``start`` wrote of the server it started from ``home`` (None if it wrote nothing)."""
    path = home / STATE
    try:
        state = json.loads(path.read_text())
        if isinstance(state, dict) and isinstance(state["pid"], int) and isinstance(state["url"], str):
            return state
    except FileNotFoundError:
        return None
    except (ValueError, KeyError):
        pass
    # written atomically by start, so a broken one was cut or edited by hand: the server's pid is unknown
    raise StageError(f"{path}: not readable as the state of a Label Studio server (truncated?). If a server "
                     f"still runs from {home}, stop it by hand; then delete {path} and start again")


def _up(pid: int | None, url: str | None) -> bool:
    try:
        os.kill(pid, 0)
        return httpx.get(f"{url}/health", timeout=2).is_success
    except (OSError, TypeError, httpx.HTTPError):
        return False


def running(home: Path = HOME) -> dict | None:
    """The state of the server started from ``home``, if it is up with its front."""
    state = read_state(home)
    if state is None:
        return None
    up = _up(state["pid"], state["url"]) and _up(state.get("front_pid"), state.get("front_url"))
    return state if up else None


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (for throwaway servers in tests and benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # as a server binds: connections of a server just stopped (TIME_WAIT) do not count, a listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _environment(home: Path, creds: dict[str, str], files_root: Path | None) -> dict[str, str]:
    return {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str((home / "data").resolve()),
        "LABEL_STUDIO_USERNAME": creds["username"],
        "LABEL_STUDIO_PASSWORD": creds["password"],
        "LABEL_STUDIO_USER_TOKEN": creds["token"],
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str((files_root or Path.cwd()).resolve()),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # off, as they are by default, but said here: otherwise every exported annotation asks the
        # feature-flag client (about a fifth of an export's time)
        "fflag_feat_fit_568_finite_state_management": "false",
        "fflag_feat_fit_710_fsm_state_fields": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }


def _check_port(port: int, what: str, option: str) -> None:
    if not _port_free(port):
        raise StageError(f"port {port} on 127.0.0.1, for {what}, is taken (a server would silently move to "
                         f"another); stop what uses it or pass {option}")


def _serve(command: list[str], env: dict[str, str], home: Path, port: int, timeout: float,
           what: str = "Label Studio", log_name: str = "server.log") -> subprocess.Popen:
    """Start a server process (in its own process group) and wait until it answers on ``port``."""
    # in its home: Label Studio may write a version_.py into its working directory
    with (home / log_name).open("ab") as log_file:
        process = subprocess.Popen(command, env=env, cwd=home, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StageError(f"{what} exited with status {process.returncode}; see {home / log_name}")
        try:
            if httpx.get(f"{url}/health", timeout=2).is_success:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    _kill_group(process.pid)
    raise StageError(f"{what} did not answer at {url} within {timeout:.0f} s; see {home / log_name}")


def _start_front(home: Path, url: str, token: str, port: int, timeout: float) -> dict:
    """The annotators' front before the server at ``url``, from this environment (it needs aiohttp)."""
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])]),
           ADMIN_TOKEN_VARIABLE: token}
    record = (home / "data" / FRONT_RECORD).resolve()
    process = _serve([sys.executable, "-m", "annotation.front", "--upstream", url, "--port", str(port),
                      "--record", str(record)], env, home, port, timeout, what="The annotators' front",
                     log_name="front.log")
    return {"front_url": f"http://127.0.0.1:{port}", "front_pid": process.pid}


def _kill_group(pid: int, sig: int = signal.SIGTERM) -> bool:
    """``sig`` to a server's whole process group, then SIGKILL to what is left after 10 s: a child still
    holding the port would make the next start move silently to another one. False if none was left."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    for _ in range(100):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped if it is this process's child: a zombie stays in the group
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def _template(venv: Path) -> Path:
    """A migrated, empty data dir beside Label Studio's environment, made once: migrating a new database
    takes about 40 s, copying this one a moment."""
    venv = venv.resolve()
    template = venv.parent / "template"
    if not (template / DATABASE).exists():
        manage = next(venv.glob("lib/python*/site-packages/label_studio/manage.py"))
        scratch = Path(tempfile.mkdtemp(prefix=".template-", dir=venv.parent))
        log.info("migrating a new Label Studio database (once, about 40 s)")
        command = [str(venv / "bin" / "python"), str(manage), "migrate", "--no-color", "--verbosity", "0"]
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(scratch), "SENTRY_DSN": ""}
        migrated = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if migrated.returncode:
            shutil.rmtree(scratch)
            raise StageError(f"migrating a new Label Studio database failed ({manage} migrate, status "
                             f"{migrated.returncode}): {migrated.stderr[-500:]}")
        try:
            scratch.rename(template)
        except OSError:  # another start made it meanwhile
            shutil.rmtree(scratch)
    return template


def _initialise(home: Path, env: dict[str, str], timeout: float, database: str = "sqlite") -> None:
    """What Label Studio's own start does once for a data dir: migrate its database, create the admin with
    its token and the organisation. Run it on a spare port until it answers, then stop it; recorded in the
    data dir, so that later starts skip it until Label Studio or the admin changes."""
    venv, data = home / "venv", home / "data"
    version = next(venv.resolve().glob("lib/python*/site-packages/label_studio-*.dist-info")).name
    done = {"label_studio": version, "username": env["LABEL_STUDIO_USERNAME"],
            "token_sha256": hashlib.sha256(env["LABEL_STUDIO_USER_TOKEN"].encode()).hexdigest(), "database": database}
    marker = data / INITIALISED
    if marker.exists() and json.loads(marker.read_text()) == done:
        return
    if database == "sqlite" and not (data / DATABASE).exists():
        shutil.copytree(_template(venv), data, dirs_exist_ok=True)
    if database == "postgresql":
        timeout *= 4  # Label Studio migrates the new database as it starts: 2.5 min measured on a loaded machine
    port = free_port()
    process = _serve([str((venv / "bin" / "label-studio").resolve()), "start", "--no-browser",
                      "--internal-host", "127.0.0.1", "-p", str(port)], env, home, port, timeout)
    # it has set the data dir up before it serves; as started here it ignores SIGTERM and SIGINT
    _kill_group(process.pid, signal.SIGKILL)
    with atomic_write(marker) as f:
        json.dump(done, f)


def start(port: int = 8080, home: Path = HOME, files_root: Path | None = None, timeout: float = 180,
          workers: int | None = None, front_port: int | None = None, database: str = "sqlite") -> dict:
    """Start Label Studio and the annotators' front (unless they already run from ``home``) and wait until
    both answer. The front listens on ``front_port``, or on a free port if None; ``database`` is ``sqlite``
    or ``postgresql`` (a cluster of its own in ``home``, started first)."""
    if database not in DATABASES:
        raise StageError(f"the database is {database!r}: it should be one of {', '.join(DATABASES)}")
    if state := running(home):
        return state
    front_port = front_port or free_port()
    state = read_state(home)
    if state and isinstance(state.get("front_pid"), int):
        _kill_group(state["front_pid"])  # a front whose server died, or one that stopped answering
    if state and _up(state["pid"], state["url"]):  # the server runs without its front: start that alone
        _check_port(front_port, "the annotators' front", "--front-port")
        state = {**state, **_start_front(home, state["url"], state["token"], front_port, timeout)}
        _write_private(home / STATE, state)
        return state
    venv = home / "venv"
    if not (venv / "bin" / "label-studio").exists():
        raise StageError(f"{venv / 'bin' / 'label-studio'} is missing: install Label Studio with `make install`")
    if port == front_port:
        raise StageError(f"Label Studio and the annotators' front cannot share port {port}; pass another --front-port")
    _check_port(port, "Label Studio", "--port")
    _check_port(front_port, "the annotators' front", "--front-port")
    creds = credentials(home)
    (home / "data").mkdir(parents=True, exist_ok=True)
    env = _environment(home, creds, files_root)
    if database == "postgresql":
        env.update(postgres.environment(postgres.start(home / POSTGRES, free_port())))
    try:
        _initialise(home, env, timeout, database)
    except StageError:
        if database == "postgresql":
            postgres.stop(home / POSTGRES)
        raise
    # a process holds about 270 MB, 550 MB after exporting 10,000 tasks: one per usable core, from 2 to 8
    workers = workers or min(8, max(2, len(os.sched_getaffinity(0))))
    process = _serve([str(venv.resolve() / "bin" / "python"), "-m", "gunicorn", "--config", str(GUNICORN_CONFIG),
                      "--bind", f"127.0.0.1:{port}", "--workers", str(workers)], env, home, port, timeout)
    state = {"url": f"http://127.0.0.1:{port}", "pid": process.pid, "token": creds["token"],
             "username": creds["username"], "workers": workers, "database": database}
    try:
        state.update(_start_front(home, state["url"], creds["token"], front_port, timeout))
    except StageError:
        _kill_group(process.pid)
        raise
    _write_private(home / STATE, state)
    return state


def stop(home: Path = HOME) -> bool:
    """Stop the server started from ``home`` and its front; False if none was running."""
    state = read_state(home)
    if state is None:
        return False
    (home / STATE).unlink()
    if isinstance(state.get("front_pid"), int):
        _kill_group(state["front_pid"])
    stopped = _kill_group(state["pid"])
    if state.get("database") == "postgresql":
        postgres.stop(home / POSTGRES)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start, stop or use a local Label Studio.")
    parser.add_argument("action", choices=["start", "stop", "status", "run"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("LABEL_STUDIO_PORT", 8080)))
    parser.add_argument("--front-port", type=int, default=int(os.environ.get("LABEL_STUDIO_FRONT_PORT", 8081)),
                        help="the annotators' front (default 8081)")
    parser.add_argument("--home", type=Path, default=HOME)
    parser.add_argument("--workers", type=int, default=None, help="server processes (default: one per core, "
                        "from 2 to 8)")
    parser.add_argument("--database", choices=DATABASES, default=os.environ.get("LABEL_STUDIO_DATABASE", "sqlite"),
                        help="sqlite (default) or postgresql (a cluster of its own in the home, for teams)")
    parser.epilog = "run: the command follows --, as in: run --port 8081 -- dvc repro"
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    if command and args.action != "run":
        parser.error(f"{args.action} takes no command")
    if args.action == "start":
        state = start(args.port, args.home, workers=args.workers, front_port=args.front_port,
                      database=args.database)
        print(f"Label Studio is up at {state['url']} (admin {state['username']}; "
              f"password in {args.home / CREDENTIALS}); annotators use the front at {state['front_url']}")
    elif args.action == "status":
        state = running(args.home)
        print(f"Label Studio is up at {state['url']}, annotators' front at {state['front_url']}" if state
              else "Label Studio is not running")
        return 0 if state else 1
    elif args.action == "stop":
        print("Label Studio stopped" if stop(args.home) else "Label Studio was not running")
    else:
        if not command:
            parser.error("give the command to run after --")
        already = running(args.home)
        state = start(args.port, args.home, workers=args.workers, front_port=args.front_port,
                      database=args.database)
        print(f"Label Studio is up at {state['url']}, annotators' front at {state['front_url']}", file=sys.stderr)
        try:
            return subprocess.call(command)
        finally:
            if not already:
                stop(args.home)
    return 0


if __name__ == "__main__":
    run_stage(main)

"""A local Label Studio server for the pipeline: start it, stop it, or run a command while it runs.

    python -m annotation.server start [--port 8080]
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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from pipeline.common import StageError, atomic_write, get_logger, run_stage

log = get_logger("label-studio")

HOME = Path(".label-studio")
STATE = "server.json"
CREDENTIALS = "credentials.json"


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


def running(home: Path = HOME) -> dict | None:
    """The state of the server started from ``home``, if it is up."""
    path = home / STATE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    try:
        os.kill(state["pid"], 0)
        up = requests.get(f"{state['url']}/health", timeout=2).ok
    except (OSError, requests.RequestException):
        up = False
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


def start(port: int = 8080, home: Path = HOME, files_root: Path | None = None, timeout: float = 180) -> dict:
    """Start Label Studio (unless it already runs from ``home``) and wait until it answers."""
    if state := running(home):
        return state
    executable = home / "venv" / "bin" / "label-studio"
    if not executable.exists():
        raise StageError(f"{executable} is missing: install Label Studio with `make install`")
    if not _port_free(port):
        raise StageError(f"port {port} on 127.0.0.1 is taken (Label Studio would silently move to another); "
                         f"stop what uses it or pass --port")
    creds = credentials(home)
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data.resolve()),
        "LABEL_STUDIO_USERNAME": creds["username"],
        "LABEL_STUDIO_PASSWORD": creds["password"],
        "LABEL_STUDIO_USER_TOKEN": creds["token"],
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str((files_root or Path.cwd()).resolve()),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }
    log_file = (home / "server.log").open("ab")
    process = subprocess.Popen(
        [str(executable.resolve()), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StageError(f"Label Studio exited with status {process.returncode}; see {home / 'server.log'}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        process.terminate()
        raise StageError(f"Label Studio did not answer at {url} within {timeout:.0f} s; see {home / 'server.log'}")
    state = {"url": url, "pid": process.pid, "token": creds["token"], "username": creds["username"]}
    _write_private(home / STATE, state)
    return state


def stop(home: Path = HOME) -> bool:
    """Stop the server started from ``home``; False if none was running."""
    path = home / STATE
    if not path.exists():
        return False
    state = json.loads(path.read_text())
    path.unlink()
    try:
        os.killpg(state["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return False
    # the whole process group, not only the server's first process: a child still holding the port would
    # make the next start move silently to another one
    for _ in range(100):
        try:
            os.killpg(state["pid"], 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state["pid"], signal.SIGKILL)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start, stop or use a local Label Studio.")
    parser.add_argument("action", choices=["start", "stop", "status", "run"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("LABEL_STUDIO_PORT", 8080)))
    parser.add_argument("--home", type=Path, default=HOME)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="with run: -- then the command")
    args = parser.parse_args(argv)
    if args.action == "start":
        state = start(args.port, args.home)
        print(f"Label Studio is up at {state['url']} (admin {state['username']}; "
              f"password in {args.home / CREDENTIALS})")
    elif args.action == "status":
        state = running(args.home)
        print(f"Label Studio is up at {state['url']}" if state else "Label Studio is not running")
        return 0 if state else 1
    elif args.action == "stop":
        print("Label Studio stopped" if stop(args.home) else "Label Studio was not running")
    else:
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("give the command to run after --")
        already = running(args.home)
        state = start(args.port, args.home)
        print(f"Label Studio is up at {state['url']}", file=sys.stderr)
        try:
            return subprocess.call(command)
        finally:
            if not already:
                stop(args.home)
    return 0


if __name__ == "__main__":
    run_stage(main)

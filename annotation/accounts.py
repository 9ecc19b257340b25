"""Annotator accounts: create N of them, and show how far each has got.

    python -m annotation.accounts create 10
    python -m annotation.accounts progress

Accounts are made the way a person joins a Label Studio organisation: by signing up through the
organisation's invite link (the admin's token fetches it), so this works on a local or a remote server.
Each account gets its own password and API token, kept in ``.label-studio/annotators.json`` (git-ignored,
readable by the owner only) so that they can be handed out.
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections import Counter
from pathlib import Path

from annotation.client import Client
from pipeline.common import StageError, atomic_write, load_params, run_stage

ACCOUNTS_FILE = Path(".label-studio") / "annotators.json"
EMAIL_DOMAIN = "annotators.fer-pipeline.local"


def email_of(number: int) -> str:
    return f"annotator{number:02d}@{EMAIL_DOMAIN}"


def ensure_annotators(client: Client, count: int, path: Path = ACCOUNTS_FILE) -> dict[str, int]:
    """Make sure annotator01..annotatorNN exist; email -> user id, in order."""
    kept = json.loads(path.read_text()) if path.exists() else {}
    users = {email: uid for uid, email in client.users().items()}
    changed = False
    for number in range(1, count + 1):
        email = email_of(number)
        if email in users:
            continue
        password = secrets.token_urlsafe(12)
        kept[email] = {"password": password, "token": client.sign_up(email, password), "server": client.url}
        changed = True
    if changed:
        with atomic_write(path) as f:
            json.dump(kept, f, indent=1)
        path.chmod(0o600)
        users = {email: uid for uid, email in client.users().items()}
    return {email_of(n): users[email_of(n)] for n in range(1, count + 1)}


def progress(client: Client, project_id: int) -> list[tuple[str, int, int]]:
    """(email, tasks annotated, tasks in the project) per annotator who has annotated or exists."""
    tasks = client.export(project_id)
    done = Counter(a["completed_by"] for task in tasks for a in task["annotations"] if not a.get("was_cancelled"))
    emails = client.users()
    return [(emails.get(uid, str(uid)), n, len(tasks)) for uid, n in sorted(done.items(), key=lambda x: emails.get(x[0], ""))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create annotator accounts")
    create.add_argument("count", type=int)
    sub.add_parser("progress", help="show each annotator's progress in the pipeline's project")
    args = parser.parse_args(argv)
    client = Client()
    if args.action == "create":
        accounts = ensure_annotators(client, args.count)
        for email in accounts:
            print(email)
        print(f"{len(accounts)} annotators; passwords and tokens in {ACCOUNTS_FILE}")
    else:
        params = load_params("annotation")
        project = client.find_project(params["project"])
        if project is None:
            raise StageError(f"no project {params['project']!r} on {client.url}; run the push first")
        for email, done, total in progress(client, project.id):
            print(f"{email:45} {done:6d} of {total} faces ({done / max(total, 1):.0%})")
    return 0


if __name__ == "__main__":
    run_stage(main)

"""Push and pull speed against a real local Label Studio on SQLite and on PostgreSQL, and the FER+ round trip
on all of FER2013.

For each database (``--database``, both by default) starts a fresh throwaway Label Studio the way the project
does (``annotation.server.start``; on PostgreSQL a cluster of its own in the server's home,
``annotation/postgres.py``), and measures, through the stages' own code:

- push: 10,000 faces into a new project (``annotation.push``: list what is there, import in chunks),
  against a baseline of creating tasks one request at a time (timed on 200, scaled to 10,000);
- pull: export of 10,000 tasks x 10 votes, the checks, the votes table and the FER+ aggregation
  (``annotation.pull``), against baselines of the whole project in one export request (as the pull did
  before it asked for chunks of task ids concurrently) and of fetching each task's annotations one
  request at a time (timed on 200, scaled);
- the FER+ replay of all 35,887 rows (skipped without ../shared/data): how many come back identical.

Every time is the median of ``--repeats`` runs, baselines included. The servers run one after the other,
and one table prints both side by side. PostgreSQL is skipped, with the reason, where Debian's
``postgresql`` is not installed.

    uv run python benchmarks/label_studio_speed.py [--database sqlite postgresql] [--faces 10000]
        [--repeats 3] [--no-ferplus] [--ferplus-rows N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation import postgres, pull, push, server  # noqa: E402
from annotation.accounts import ensure_annotators  # noqa: E402
from annotation.client import EXPORT_REQUESTS, Client  # noqa: E402
from annotation.labels import label_config  # noqa: E402
from datasets.ferplus_replay import replay  # noqa: E402
from pipeline.common import StageError, cpu_name  # noqa: E402
from pipeline.emotions import LABELS  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
ONE_BY_ONE = 200  # requests timed for the one-request-per-task baselines, scaled to --faces


def make_faces(folder: Path, n: int) -> Path:
    """A faces table of n faces whose crops are hard links to one sample photo."""
    crops = folder / "data" / "faces" / "bench"
    crops.mkdir(parents=True)
    source = REPO / "sample" / "media" / "photos" / "astronaut.jpg"
    rows = []
    for i in range(n):
        crop = crops / f"bench-{i:08d}-0.jpg"
        os.link(source, crop)
        rows.append({"face_id": crop.stem, "media_id": "bench", "timestamp": i * 0.2,
                     "crop_path": str(crop.relative_to(folder))})
    pd.DataFrame(rows).to_csv(folder / "data" / "faces.csv", index=False)
    pd.DataFrame([{"media_id": "bench", "url": "file:///bench"}]).to_csv(folder / "data" / "media.csv", index=False)
    return folder / "data" / "faces.csv"


def write_params(folder: Path, title: str) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # people's votes, no model's predictions: the benchmark runs no predict stage
    params["annotation"].update(project=title, crowd="none", predictions="none", queue="sequential",
                                simulation={**params["annotation"]["simulation"], "reference": "none"})
    path = folder / f"params-{title.replace(' ', '_')}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(database: str, folder: Path, faces: Path, args: argparse.Namespace) -> dict[str, str]:
    """The benchmark's rows for one database, on a fresh server of its own (its home in ``folder``)."""
    home = folder / f"home-{database}"
    home.mkdir()
    (home / "venv").symlink_to(REPO / ".label-studio" / "venv")
    started = time.perf_counter()
    state = server.start(server.free_port(), home, files_root=folder, database=database)
    start_seconds = time.perf_counter() - started
    print(f"{database}: Label Studio {state['url']} started in {start_seconds:.0f} s", flush=True)
    os.environ.update(LABEL_STUDIO_URL=state["url"], LABEL_STUDIO_API_KEY=state["token"],
                      LABEL_STUDIO_FRONT_URL=state["front_url"])  # the pull reads the front's record of votes
    try:
        client = Client()
        row = {"Label Studio": client.get_json("/api/version", "read the version")["release"],
               "server processes": str(state["workers"]),
               "server start (a new data dir)": f"{start_seconds:.0f} s"}
        data = folder / "data"
        n = f"{args.faces:,}"

        def run_push(title: str) -> Path:
            params = write_params(folder, title)
            push.main(["--faces", str(faces), "--media", str(data / "media.csv"), "--out", str(data / "tasks.csv"),
                       "--params", str(params)])
            return params

        one_by_one = client.create_project("bench baseline", label_config(), 10)

        def create_one_by_one(repeat: int) -> None:
            for i in range(ONE_BY_ONE):
                client.http.post("/api/tasks/", json={"project": one_by_one.id, "data": {
                    "image": f"/data/local-files/?d=x{i}.jpg", "face_id": f"b{repeat}-{i}"}}).raise_for_status()

        push_times = [seconds(lambda r=repeat: run_push(f"bench push {r}")) for repeat in range(args.repeats)]
        baseline_push = [seconds(lambda r=repeat: create_one_by_one(r)) / ONE_BY_ONE * args.faces
                         for repeat in range(args.repeats)]

        # a project whose every face has ten votes, imported with the tasks
        params = run_push("bench pull")
        manifest = pd.read_csv(data / "tasks.csv")
        annotators = list(ensure_annotators(client, 10).values())
        voted = client.create_project("bench pull votes", label_config(), 10)
        tasks = [{"data": {"image": "/data/local-files/?d=x.jpg", "face_id": face_id},
                  # seven of ten agree on the face's label, three say something else
                  "annotations": [{"completed_by": user, "result": push.choice(LABELS[i % 7 if j < 7 else (i + j) % 9])}
                                  for j, user in enumerate(annotators)]}
                 for i, face_id in enumerate(manifest.face_id)]
        started = time.perf_counter()
        task_ids = [task_id for chunk in client.import_tasks(voted.id, tasks) for task_id in chunk]
        import_votes = time.perf_counter() - started
        manifest.assign(project_id=voted.id, task_id=task_ids).to_csv(data / "tasks.csv", index=False)

        def run_pull() -> None:
            pull.main(["--tasks", str(data / "tasks.csv"), "--votes", str(data / "votes.csv"),
                       "--long", str(data / "long.csv"), "--labels", str(data / "labels.csv"),
                       "--annotators", str(data / "annotators.csv"),
                       "--metrics", str(data / "metrics.json"), "--params", str(params)])

        timed = task_ids[:ONE_BY_ONE]

        def annotations_one_by_one() -> None:
            for task_id in timed:
                client.http.get(f"/api/tasks/{task_id}/annotations/").raise_for_status()

        pull_times, export_times, whole_times, baseline_pull = [], [], [], []
        for _ in range(args.repeats):
            export_times.append(seconds(lambda: client.export(voted.id, task_ids)))
            whole_times.append(seconds(lambda: client.export(voted.id)))
            pull_times.append(seconds(run_pull))
            baseline_pull.append(seconds(annotations_one_by_one) / len(timed) * args.faces)

        def median(times: list[float]) -> str:
            return f"{statistics.median(times):.1f} s"

        row.update({
            f"push {n} faces (target <= 10 s)": median(push_times),
            f"  baseline: one task per request ({ONE_BY_ONE} timed, scaled)": median(baseline_push),
            f"pull {n} x 10 votes + aggregation (target <= 15 s)": median(pull_times),
            f"  of which the export ({EXPORT_REQUESTS} requests at a time)": median(export_times),
            "  baseline: the whole project in one export request": median(whole_times),
            f"  baseline: one task's annotations per request ({len(timed)} timed, scaled)": median(baseline_pull),
            f"setting up: importing {n} tasks with 10 votes each (once)": f"{import_votes:.1f} s",
        })
        if not args.no_ferplus and (SHARED / "ferplus").exists():
            result = replay(client, SHARED / "fer2013" / "fer2013.csv.xz", SHARED / "ferplus" / "fer2013new.csv",
                            folder / "ferplus", "FER+ replay", limit=args.ferplus_rows)
            row.update({
                "FER+ replay (once): rows identical": f"{result['identical']:,} of {result['rows']:,}",
                "  push": f"{result['push_seconds']:.1f} s",
                "  pull": f"{result['pull_seconds']:.1f} s",
            })
    finally:
        server.stop(home)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", nargs="+", choices=server.DATABASES, default=list(server.DATABASES),
                        help="the databases to run on, one server each (default: both)")
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (the median is printed)")
    parser.add_argument("--no-ferplus", action="store_true")
    parser.add_argument("--ferplus-rows", type=int, default=None, help="replay only FER+'s first N rows")
    args = parser.parse_args()
    databases = list(dict.fromkeys(args.database))
    if "postgresql" in databases:
        try:
            postgres.binaries()
        except StageError as e:
            print(f"PostgreSQL skipped: {e}")
            databases.remove("postgresql")
            if not databases:
                return
    if not args.no_ferplus and not (SHARED / "ferplus").exists():
        print(f"FER+ replay skipped: {SHARED} is not here")
    # run as root, PostgreSQL runs as Debian's postgres account, which must reach its folder: mkdtemp's is closed
    folder = Path(tempfile.mkdtemp(prefix="ls-bench-", dir="/tmp"))
    folder.chmod(0o755)
    os.chdir(folder)  # the FER+ replay's image paths are relative to here, where the servers serve files from
    try:
        faces = make_faces(folder, args.faces)
        rows = {database: measure(database, folder, faces, args) for database in databases}
    finally:
        os.chdir(REPO)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nLabel Studio benchmark, medians of {args.repeats} runs; CPU: {cpu_name()} ({os.cpu_count()} cores)")
    print(pd.DataFrame(rows).to_string())


if __name__ == "__main__":
    main()

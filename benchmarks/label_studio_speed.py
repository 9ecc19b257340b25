"""Push and pull speed against a real local Label Studio, and the FER+ round trip on all of FER2013.

Starts a throwaway Label Studio (from ``.label-studio/venv``) and measures, through the stages' own code:

- push: 10,000 faces into a new project (``annotation.push``: list what is there, import in chunks),
  against a baseline of creating tasks one request at a time (timed on 200, scaled to 10,000);
- pull: export of 10,000 tasks x 10 votes, the checks, the votes table and the FER+ aggregation
  (``annotation.pull``), against baselines of the whole project in one export request (as the pull did
  before it asked for chunks of task ids concurrently) and of fetching each task's annotations one
  request at a time (timed on 200, scaled);
- the FER+ replay of all 35,887 rows (skipped without ../shared/data): how many come back identical.

    uv run python benchmarks/label_studio_speed.py [--faces 10000] [--repeats 3] [--no-ferplus]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation import pull, push, server  # noqa: E402
from annotation.accounts import ensure_annotators  # noqa: E402
from annotation.client import EXPORT_REQUESTS, Client  # noqa: E402
from datasets.ferplus_replay import replay  # noqa: E402
from annotation.labels import label_config  # noqa: E402
from pipeline.emotions import LABELS  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


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
    params["annotation"].update(project=title, crowd="none")
    path = folder / f"params-{title.replace(' ', '_')}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ferplus", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ls-bench-"))
    home = folder / ".ls"
    home.mkdir()
    (home / "venv").symlink_to(REPO / ".label-studio" / "venv")
    started = time.perf_counter()
    state = server.start(server.free_port(), home, files_root=folder)
    print(f"Label Studio {state['url']} started in {time.perf_counter() - started:.0f} s (first start migrates)")
    os.environ.update(LABEL_STUDIO_URL=state["url"], LABEL_STUDIO_API_KEY=state["token"])
    os.chdir(folder)
    try:
        client = Client()
        faces = make_faces(folder, args.faces)
        data = folder / "data"

        push_times = []
        for repeat in range(args.repeats):
            params = write_params(folder, f"bench push {repeat}")
            start = time.perf_counter()
            push.main(["--faces", str(faces), "--media", str(data / "media.csv"), "--out", str(data / "tasks.csv"),
                       "--params", str(params)])
            push_times.append(time.perf_counter() - start)
        one_by_one = client.create_project("bench baseline", label_config(), 10)
        start = time.perf_counter()
        for i in range(200):
            client.http.post("/api/tasks/", json={"project": one_by_one.id, "data": {
                "image": f"/data/local-files/?d=x{i}.jpg", "face_id": f"b{i}"}}).raise_for_status()
        baseline_push = (time.perf_counter() - start) / 200 * args.faces

        # a project whose every face has ten votes, imported with the tasks
        params = write_params(folder, "bench pull")
        push.main(["--faces", str(faces), "--media", str(data / "media.csv"), "--out", str(data / "tasks.csv"),
                   "--params", str(params)])
        manifest = pd.read_csv(data / "tasks.csv")
        annotators = list(ensure_annotators(client, 10).values())
        voted = client.create_project("bench pull votes", label_config(), 10)
        tasks = [{"data": {"image": "/data/local-files/?d=x.jpg", "face_id": face_id},
                  # seven of ten agree on the face's label, three say something else
                  "annotations": [{"completed_by": user, "result": push.choice(LABELS[i % 7 if j < 7 else (i + j) % 9])}
                                  for j, user in enumerate(annotators)]}
                 for i, face_id in enumerate(manifest.face_id)]
        start = time.perf_counter()
        task_ids = [task_id for chunk in client.import_tasks(voted.id, tasks) for task_id in chunk]
        import_votes = time.perf_counter() - start
        manifest.assign(project_id=voted.id, task_id=task_ids).to_csv(data / "tasks.csv", index=False)
        pull_times, export_times, whole_times = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            client.export(voted.id, task_ids)
            export_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.export(voted.id)
            whole_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            pull.main(["--tasks", str(data / "tasks.csv"), "--votes", str(data / "votes.csv"),
                       "--long", str(data / "long.csv"), "--labels", str(data / "labels.csv"),
                       "--annotators", str(data / "annotators.csv"),
                       "--metrics", str(data / "metrics.json"), "--params", str(params)])
            pull_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for task_id in task_ids[:200]:
            client.http.get(f"/api/tasks/{task_id}/annotations/").raise_for_status()
        baseline_pull = (time.perf_counter() - start) / 200 * args.faces

        n = f"{args.faces:,}"
        print(f"\npush {n} faces:   {statistics.median(push_times):6.1f} s (median of {len(push_times)}; target <= 10 s)"
              f"   baseline, one task per request: {baseline_push:6.1f} s")
        print(f"pull {n} x 10 votes + aggregation: {statistics.median(pull_times):6.1f} s (median of {len(pull_times)}; "
              f"target <= 15 s), of which Label Studio's export {statistics.median(export_times):.1f} s "
              f"({EXPORT_REQUESTS} requests at a time on {state['workers']} server processes)\n"
              f"   baselines: the whole project in one export request {statistics.median(whole_times):.1f} s; "
              f"one task's annotations per request {baseline_pull:.1f} s")
        print(f"(setting up: importing {n} tasks with 10 votes each took {import_votes:.1f} s)")

        if not args.no_ferplus and (SHARED / "ferplus").exists():
            result = replay(client, SHARED / "fer2013" / "fer2013.csv.xz", SHARED / "ferplus" / "fer2013new.csv",
                            folder / "ferplus", "FER+ replay")
            print(f"FER+ replay: {result['identical']:,} of {result['rows']:,} rows identical "
                  f"({result['identical'] / result['rows']:.1%}); push {result['push_seconds']} s, "
                  f"pull {result['pull_seconds']} s")
        elif not args.no_ferplus:
            print("FER+ replay skipped: ../shared/data is not here")
    finally:
        os.chdir(REPO)
        server.stop(home)


if __name__ == "__main__":
    main()

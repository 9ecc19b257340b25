"""The faces stage's ``ray`` engine: media items sharded over a Ray cluster, one task per item.

``faces.ray_address`` (else ``RAY_ADDRESS``) names the cluster to join, as ``ray.init(address=...)`` takes it;
with neither, the stage starts a Ray of its own on this machine's cores and stops it at the end. Each worker is
a Ray actor holding one MTCNN (``pipeline.faces.FaceCropper``), with one CPU, or one GPU when the cluster has
GPUs; ``faces.ray_workers`` caps their number (null: one per GPU, else one per CPU). Ray's ``ActorPool``
hands each free worker the next item.

A task carries the media file's bytes (through Ray's object store) and returns the item's faces, crops
included; the stage's driver writes the part. So the workers need neither the project's files nor a shared
file system, only the same Python packages: the ``pipeline`` package itself is shipped to them
(``runtime_env``'s ``py_modules``), so that they run the code whose version is in the parts' keys.

Under ``uv run`` (``make demo``, ``uv run dvc repro``), Ray would by default run the workers with ``uv run`` too,
in an uploaded copy of the working directory: a new environment synced from PyPI on every worker (offline
here), or, where that folder has no pyproject.toml, an interpreter without the project's packages, whose
workers never start. The stage turns that off (``RAY_ENABLE_UV_RUN_RUNTIME_ENV=0``, read when Ray is
imported): its workers run in the cluster's Python, as they do without uv.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # before Ray reads it; see above
import ray
from ray.util import ActorPool

from pipeline.common import StageError, get_logger
from pipeline.face_parts import ItemFaces, MediaItem

log = get_logger("faces")
PACKAGE = Path(__file__).resolve().parent


class FaceWorker:
    """One detector on a Ray worker."""

    def __init__(self, params: dict[str, Any]):
        from pipeline.faces import FaceCropper

        self.cropper = FaceCropper(params, threads=1)  # the one CPU Ray gives this actor

    def process(self, item: MediaItem, data: bytes | None) -> ItemFaces:
        from pipeline.faces import process

        if data is None:  # the driver could not read it: fails here as it would locally, with the reason
            return process(self.cropper, item)
        with tempfile.TemporaryDirectory(prefix="faces-") as folder:
            path = Path(folder) / Path(item.path).name
            path.write_bytes(data)
            return process(self.cropper, item, path)


def cluster_address(params: dict[str, Any]) -> str:
    """Where the cluster is: ``faces.ray_address``, else ``RAY_ADDRESS``, else ``local`` (a new Ray here)."""
    return params.get("ray_address") or os.environ.get("RAY_ADDRESS") or "local"


def read(item: MediaItem) -> bytes | None:
    try:
        return Path(item.path).read_bytes()
    except OSError:
        return None


def run_ray(items: list[MediaItem], params: dict[str, Any]) -> Iterator[ItemFaces]:
    """Each item's faces, in the order the workers finish them."""
    if not items:
        return
    address = cluster_address(params)
    try:
        ray.init(address=address, num_cpus=os.cpu_count() if address == "local" else None,
                 include_dashboard=False, runtime_env={"py_modules": [str(PACKAGE)]}, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise StageError(f"params.yaml: faces.ray_address (or RAY_ADDRESS) is {address!r}, and Ray cannot join "
                         f"it: {e}; start the cluster (ray start --head) or set it to null for a Ray here") from None
    try:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        workers = min(params.get("ray_workers") or gpus or cpus, gpus or cpus, len(items))
        if workers < 1:
            raise StageError(f"the Ray cluster at {address} has no CPU for a worker ({resources})")
        actor = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(FaceWorker)
        pool = ActorPool([actor.remote(params) for _ in range(workers)])
        log.info(f"faces: {len(items)} media on Ray at {address}: {workers} workers, "
                 f"{'one GPU' if gpus else 'one CPU'} each ({cpus} CPUs, {gpus} GPUs in the cluster)")
        # the pool submits an item only when a worker is free: at most one file per worker is in flight
        yield from pool.map_unordered(lambda worker, item: worker.process.remote(item, read(item)), items)
    finally:
        ray.shutdown()

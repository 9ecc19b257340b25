"""What every stage shares: its params section, atomic writes, tables, metrics, hashing, face ids, logging, progress.

A stage reads only its own section of ``params.yaml`` (``load_params("download")``, checked against the
schema in ``pipeline.params`` before the stage touches anything) and writes every output through
``atomic_write``, ``write_table`` or ``write_metrics``, so that a stage killed half-way never leaves a
half-written file where a later stage, or a rerun, would take it for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import yaml
from tqdm import tqdm

if TYPE_CHECKING:
    import torch

PARAMS_FILE = Path("params.yaml")
UMASK = os.umask(0o022)
os.umask(UMASK)

T = TypeVar("T")


class StageError(Exception):
    """A failure the user can act on; the stage prints the message alone and exits 1."""


def load_params(section: str, path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """Return one stage's section of ``params.yaml``, checked against its schema (``pipeline.params``)."""
    from pipeline.params import checked_section  # here: pipeline.params imports StageError from this module

    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            params = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise StageError(f"{path}: not found (run the stage from the project root)") from None
    except yaml.YAMLError as e:
        raise StageError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(params, dict):
        raise StageError(f"{path}: should be a mapping of sections (download:, faces:, ...), not a "
                         f"{type(params).__name__}")
    return checked_section(params, section, path)


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w", newline: str | None = None) -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": newline}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~UMASK)  # as open() would: others (a Label Studio server) may read outputs
    try:
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_table(df: pd.DataFrame, path: Path | str) -> None:
    """Write a table as CSV, atomically."""
    with atomic_write(path, newline="") as f:
        df.to_csv(f, index=False)


def write_metrics(metrics: dict[str, Any], path: Path | str) -> None:
    """Write a stage's metrics (``{stage: {name: value}}``, for ``dvc metrics show``) as JSON, atomically.

    Keys sorted and two-space indents, so that a rerun with the same numbers writes the same bytes; values are
    written as the stage rounded them. A NaN or an infinity, which JSON cannot hold, is refused by its key.
    """
    for key, value in _leaves(metrics):
        if isinstance(value, float) and not math.isfinite(value):
            raise StageError(f"{path}: metric {key} is {value}; metrics must be finite numbers")
    with atomic_write(path) as f:
        f.write(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _leaves(tree: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of each value that is not a dict or a list in ``tree``."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        yield key, tree
        return
    for name, value in items:
        yield from _leaves(value, f"{key}.{name}" if key else str(name))


def read_table(path: Path | str, **kwargs: Any) -> pd.DataFrame:
    """Read a table written by ``write_table``, naming the file when it is missing or unreadable."""
    path = Path(path)
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise StageError(f"{path}: not found; run the stage that makes it first (dvc repro)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise StageError(f"{path}: not a readable table: {e}") from None


def sha256_file(path: Path | str, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def short_hash(text: str, length: int = 16) -> str:
    """A stable hex digest of ``text``, for ids made from URLs and paths."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def format_face_id(media_id: str, timestamp: float, index: int) -> str:
    """The stable id of a face: ``<media_id>-<milliseconds, 8 digits>-<index in its frame>``.

    ``media_of_face`` reads the media back; media ids hold '-' and '_' themselves, so it reads from the right.
    """
    return f"{media_id}-{round(timestamp * 1000):08d}-{index}"


def media_of_face(face: str) -> str:
    """The media_id inside a face_id that ``format_face_id`` made; anything else is refused, naming it."""
    media_id, milliseconds, index = (face.rsplit("-", 2) + ["", ""])[:3]
    if not (media_id and milliseconds.isdigit() and index.isdigit()):
        raise StageError(f"face_id {face!r} is not <media_id>-<milliseconds>-<index> (as format_face_id makes them)")
    return media_id


def pick_device(name: str = "auto") -> torch.device:
    """The torch device a stage runs on: ``auto`` is CUDA when present, else the CPU; or a name (cpu, cuda:1)."""
    import torch  # here, not at the top: most stages never need torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def get_logger(name: str) -> logging.Logger:
    """A logger that prints ``level: message`` to stderr, configured once per process."""
    root = logging.getLogger("fer")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("FER_LOG_LEVEL", "INFO"))
        root.propagate = False
    return root.getChild(name)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    """A progress bar on stderr; silent when stderr is not a terminal (CI logs, pipes)."""
    return tqdm(items, desc=desc, total=total, unit=unit, dynamic_ncols=True, disable=None)


def run_stage(main: Any) -> None:
    """Run a stage's ``main()``; a ``StageError`` ends it with the message and exit status 1."""
    try:
        sys.exit(main())
    except StageError as e:
        get_logger("stage").error(str(e))
        sys.exit(1)


def cpu_name() -> str:
    """The CPU's model name, for benchmarks to say which machine a number came from."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()

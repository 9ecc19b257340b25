"""dvc.yaml tells the truth: every module a stage's command imports, directly or through other modules of
the project, is among that stage's deps, so that a change to it reruns the stage."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from dvc.repo import Repo

from tests.conftest import REPO

PACKAGES = ("pipeline", "annotation", "datasets", "models")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None when it is not the project's."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path) -> set[Path]:
    """The project files ``path`` imports anywhere in its body (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from models import zoo` imports models/zoo.py; `from models.zoo import x` imports models/zoo.py
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            file = module_file(name)
            if file is not None and (file.name != "__init__.py" or file.stat().st_size):  # empty ones change nothing
                found.add(file)
    return found


def closure(start: Path) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported_files(path) - seen)
    return seen


def stages():
    return [(stage.addressing, stage) for stage in Repo(str(REPO)).index.stages]


@pytest.mark.parametrize("name, stage", stages(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_imported_module_is_a_dep(name, stage):
    module = re.search(r"python -m ([\w.]+)", stage.cmd)
    assert module, f"{name}: its cmd does not run a module of the project: {stage.cmd}"
    entry = module_file(module.group(1))
    assert entry is not None, f"{name}: {module.group(1)} is not a module of the project"
    needed = {str(path.relative_to(REPO)) for path in closure(entry)}
    declared = {dep.def_path for dep in stage.deps}
    missing = sorted(needed - declared)
    assert not missing, f"dvc.yaml: stage {name} imports {', '.join(missing)} but does not list it among its deps"

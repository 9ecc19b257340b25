"""dvc.yaml tells the truth: every module a stage's command imports, directly or through other modules of
the project, and every file its params name, is among that stage's deps, so that a change to it reruns the
stage; and a stage that declares some keys of its params section declares every key it reads."""

from __future__ import annotations

import ast
import fnmatch
import re
import shutil
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from pipeline.params import NO_FILE, READS_PATH, SECTIONS, Section
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


# -- the files params name ------------------------------------------------------------------------------------

def path_keys(model: type[Section], prefix: str) -> list[str]:
    """The dotted keys that the schema marks as naming a file or folder a stage reads (``READS_PATH``); a
    mapping's keys as ``*``."""
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        if READS_PATH in field.metadata:
            keys.append(key)
        value_type = get_args(field.annotation)[1] if get_origin(field.annotation) is dict else None
        if READS_PATH in getattr(value_type, "__metadata__", ()):
            keys.append(f"{key}.*")
        for kind in (field.annotation, *get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, Section):
                keys += path_keys(kind, key)
    return keys


PATH_KEYS = [key for section, model in SECTIONS.items() for key in path_keys(model, section)]
# models.ensemble.SPLITS, the {split} of ensemble.members, read from the source: importing models costs torch
SPLITS = next(ast.literal_eval(node.value) for node in ast.parse((REPO / "models" / "ensemble.py").read_text()).body
              if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "SPLITS")


def values(params: dict[str, Any], key: str) -> dict[str, Any]:
    """dotted key -> value in ``params``, with a ``*`` for every key of the mapping there; nothing for a key
    that is not there."""
    found = {"": params}
    for part in key.split("."):
        found = {f"{at}.{k}".lstrip("."): value[k] for at, value in found.items() if isinstance(value, dict)
                 for k in (value if part == "*" else [part]) if k in value}
    return found


def param_keys(stage) -> list[str]:
    return [key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params]


def reads(stage, key: str) -> bool:
    """Whether ``stage`` declares ``key`` among its params, itself or a key above it."""
    return any(key == declared or key.startswith(declared + ".") for declared in param_keys(stage))


def covered(path: str, deps: set[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def files_named(value: str) -> list[str]:
    """The paths a path key's value names: one, or one per split where it has ``{split}``."""
    return [value.format(split=split) for split in SPLITS] if "{split}" in value else [value]


def graph_outputs(stages) -> set[str]:
    return {out.def_path for stage in stages for out in stage.outs}


def test_the_schema_marks_the_keys_that_name_files():
    assert set(PATH_KEYS) == {"download.sources", "annotation.simulation.reference", "annotation.predictions",
                              "annotation.quality.gold", "predict.model",
                              "splits.external", "fer2013.source", "fer2013.ferplus", "ensemble.members.*"}


@pytest.mark.parametrize("name, stage", stages(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_file_a_stage_reads_through_its_params_is_a_dep(name, stage):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    deps = {dep.def_path for dep in stage.deps}
    for key in PATH_KEYS:
        for dotted, value in values(params, key).items():
            if value is None or not reads(stage, dotted):
                continue
            missing = [path for path in files_named(value) if not covered(path, deps)]
            assert not missing, (f"dvc.yaml: stage {name} reads {dotted} = {value}, but does not list "
                                 f"{', '.join(missing)} among its deps (for a file of the user's: - ${{{dotted}}})")
    # a key that names a file of the project without the schema's mark would escape the checks here
    for declared in param_keys(stage):
        for dotted, value in flatten(values(params, declared)).items():
            if isinstance(value, str) and value != NO_FILE and (REPO / value).exists():
                assert any(fnmatch.fnmatchcase(dotted, key) for key in PATH_KEYS), (
                    f"params.yaml: {dotted} = {value} names a file of the project; mark its key READS_PATH in "
                    f"pipeline/params.py, and list it among the deps of the stages that read it")


def flatten(found: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in found.items():
        if isinstance(value, dict):
            flat.update(flatten({f"{key}.{k}": v for k, v in value.items()}))
        else:
            flat[key] = value
    return flat


def test_a_path_key_pointed_at_another_file_makes_that_file_the_dep(tmp_path):
    """The deps follow the params (templating, ``- ${fer2013.ferplus}``), so that ``dvc exp run -S
    fer2013.ferplus=mine.csv`` depends on mine.csv. Keys that name another stage's outputs and that dvc.yaml
    does not template (ensemble.members) are left out: pointing one at other outputs means another stage in
    dvc.yaml, and with it new deps; the test above checks those against the deps as they are. A templated key
    that names an output by default (annotation.predictions, predict.model) may name a file of the user's."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    outputs = graph_outputs(Repo(str(REPO)).index.stages)
    templated = (REPO / "dvc.yaml").read_text()
    moved = {}
    for key in PATH_KEYS:
        for dotted, value in values(params, key).items():
            if value is None or (any(covered(path, outputs) for path in files_named(value))
                                 and f"${{{dotted}}}" not in templated):
                continue
            *parents, leaf = dotted.split(".")
            section = params
            for parent in parents:
                section = section[parent]
            section[leaf] = moved[dotted] = f"elsewhere/{dotted}"
    assert set(moved) >= {"download.sources", "annotation.simulation.reference", "annotation.predictions",
                          "splits.external", "fer2013.source", "fer2013.ferplus", "predict.model"}
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    Repo.init(str(tmp_path), no_scm=True)
    for stage in Repo(str(tmp_path)).index.stages:
        deps = {dep.def_path for dep in stage.deps}
        stale = [dotted for dotted, path in moved.items() if reads(stage, dotted) and path not in deps]
        assert not stale, (f"dvc.yaml: stage {stage.name}'s deps do not follow {', '.join(stale)}; list "
                           + ", ".join(f"- ${{{dotted}}}" for dotted in stale) + " among them")


# -- the params keys a stage reads ----------------------------------------------------------------------------

def keys_read(path: Path) -> dict[str, set[str]]:
    """section -> the keys ``path`` reads from what ``load_params(section, ...)`` gave it: ``params["key"]`` and
    ``params.get("key")`` on the name it was assigned to."""
    tree = ast.parse(path.read_text(), filename=str(path))
    loaded = {node.targets[0].id: node.value.args[0].value for node in ast.walk(tree)
              if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
              and getattr(node.value.func, "id", None) == "load_params" and isinstance(node.targets[0], ast.Name)}
    found: dict[str, set[str]] = {section: set() for section in loaded.values()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in loaded:
            target, key = node.value.id, node.slice
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and isinstance(node.func.value, ast.Name) and node.func.value.id in loaded and node.args):
            target, key = node.func.value.id, node.args[0]
        else:
            continue
        assert isinstance(key, ast.Constant), f"{path}:{node.lineno}: a params key the test cannot read"
        found[loaded[target]].add(key.value)
    return found


@pytest.mark.parametrize("name, stage", [(n, s) for n, s in stages() if any("." in k for k in param_keys(s))],
                         ids=lambda value: value if isinstance(value, str) else "")
def test_a_stage_that_declares_some_keys_declares_every_key_it_reads(name, stage):
    entry = module_file(re.search(r"python -m ([\w.]+)", stage.cmd).group(1))
    read = keys_read(entry)
    assert read, f"{entry}: no load_params found"
    undeclared = sorted(f"{section}.{key}" for section, keys in read.items() for key in keys
                        if not reads(stage, f"{section}.{key}"))
    assert not undeclared, f"dvc.yaml: stage {name} reads {', '.join(undeclared)} but does not list it among its params"

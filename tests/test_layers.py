"""The import order the code keeps: ``pipeline`` (the shared vocabulary and helpers, and getting media and
faces) at the bottom, then ``annotation``, ``datasets`` and ``models``; each folder imports only from itself
and the folders below it, so that no two folders import each other."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.test_dvc_deps import PACKAGES, imported_files

ORDER = {package: rank for rank, package in enumerate(PACKAGES)}
FILES = sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_a_module_imports_only_its_own_folder_and_those_below(path):
    own = path.relative_to(REPO).parts[0]
    above = sorted(str(f.relative_to(REPO)) for f in imported_files(path)
                   if ORDER[f.relative_to(REPO).parts[0]] > ORDER[own])
    assert not above, f"{path.relative_to(REPO)} ({own}) imports {above}, from a folder above {own}"

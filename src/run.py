"""Run the console app: ``python3 src/run.py <todo args>``, e.g. ``add "Buy groceries"``.

Needs only Python 3.11+: on first use it creates ``.venv`` at the repo root and installs the
project into it with its runtime dependencies only (``-e .``: no test or dev tools); it
reinstalls only when pyproject.toml changes. Standard library only, because it runs before any
dependency exists. tests/run.py reuses `bootstrap`, which by default installs ``-e .[dev]``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
# Holds the hash of the pyproject.toml last installed and what was installed ("runtime" or
# "dev"), so unchanged projects skip pip entirely. A bare hash was written by older versions,
# which always installed the dev tools.
_STAMP_NAME = ".taskcore-install.sha256"
_RUNTIME, _DEV = "runtime", "dev"


def venv_bin(name: str, venv: Path = VENV) -> Path:
    """Path of an executable inside the virtualenv (the repo's by default)."""
    folder = venv / ("Scripts" if os.name == "nt" else "bin")
    return folder / (f"{name}.exe" if os.name == "nt" else name)


def install_needed(stamp: str, digest: str, *, dev: bool) -> bool:
    """Whether pip must run: pyproject.toml changed, or the dev tools are wanted but missing."""
    installed_digest, _, kind = stamp.strip().partition(" ")
    if installed_digest != digest:
        return True
    return dev and (kind or _DEV) != _DEV


def _fail(message: str, code: int = 1) -> None:
    """Print `message` to stderr and exit with `code`."""
    print(f"run.py: {message}", file=sys.stderr)
    raise SystemExit(code)


def bootstrap(*, dev: bool = True, venv: Path = VENV) -> Path:
    """Make sure ``venv`` exists with the project installed; return its python.

    ``dev`` (the default, for tests/run.py) installs ``-e .[dev]``: the test and lint tools
    too. The app needs only ``dev=False``: ``-e .`` with the runtime dependencies; a venv
    already holding the dev tools for this pyproject.toml serves it as it is.
    """
    # Older interpreters can run this far; say why we stop instead of failing somewhere odd.
    if sys.version_info < (3, 11):  # noqa: UP036
        _fail(f"Python 3.11+ is required, this is {sys.version.split()[0]}")
    python = venv_bin("python", venv)
    if not python.exists():
        print(f"run.py: creating {_shown(venv)} ...", file=sys.stderr)
        # A subprocess, not venv.create(): its error (e.g. ensurepip missing) reaches the user.
        created = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "venv", str(venv)], check=False
        )
        if created.returncode != 0:
            _fail(
                "could not create the virtualenv (on Debian/Ubuntu: apt install python3-venv)",
                created.returncode,
            )
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    stamp = venv / _STAMP_NAME
    try:
        installed = stamp.read_text()
    except OSError:
        installed = ""
    if install_needed(installed, digest, dev=dev):
        target = f"{REPO}[dev]" if dev else str(REPO)
        shown = "-e .[dev]" if dev else "-e ."
        what = "the project and its dev tools" if dev else "the project"
        print(f"run.py: installing {what} into {_shown(venv)} ...", file=sys.stderr)
        # Output is kept back and shown in full only on failure: a successful install says
        # nothing, while build-backend warnings would otherwise bury the test output.
        quiet = ["-q", "--disable-pip-version-check"]
        pip = subprocess.run(  # noqa: S603 - the venv's pip, fixed arguments
            [str(python), "-m", "pip", "install", *quiet, "-e", target],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if pip.returncode != 0:
            sys.stderr.write(pip.stdout)
            _fail(f"pip install {shown} failed (output above)", pip.returncode)
        stamp.write_text(f"{digest} {_DEV if dev else _RUNTIME}\n")
    return python


def _shown(venv: Path) -> str:
    """``venv`` relative to the repo when inside it (``.venv``), else in full."""
    try:
        return str(venv.relative_to(REPO))
    except ValueError:
        return str(venv)


def exec_in_venv(program: Path, args: list[str]) -> None:
    """Replace this process with `program` (so signals and the exit code pass straight through)."""
    argv = [str(program), *args]
    if os.name == "nt":  # no real exec on Windows: run and forward the exit code
        raise SystemExit(subprocess.run(argv, check=False).returncode)  # noqa: S603
    os.execv(argv[0], argv)  # noqa: S606 - exec of the venv's own entry point


def main() -> None:
    """Bootstrap (runtime dependencies only), then run `todo` with this script's arguments."""
    bootstrap(dev=False)
    exec_in_venv(venv_bin("todo"), sys.argv[1:])


if __name__ == "__main__":
    main()

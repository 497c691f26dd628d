"""Run the console app: ``python3 src/run.py <todo args>``, e.g. ``add "Buy groceries"``.

Needs only Python 3.11+: on first use it creates ``.venv`` at the repo root and installs the
project into it (``-e .[dev]``); it reinstalls only when pyproject.toml changes. Standard
library only, because it runs before any dependency exists. tests/run.py reuses `bootstrap`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
_BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
# Holds the hash of the pyproject.toml last installed, so unchanged projects skip pip entirely.
_STAMP = VENV / ".taskcore-install.sha256"


def venv_bin(name: str) -> Path:
    """Path of an executable inside the repo's virtualenv."""
    return _BIN / (f"{name}.exe" if os.name == "nt" else name)


def _fail(message: str, code: int = 1) -> None:
    """Print `message` to stderr and exit with `code`."""
    print(f"run.py: {message}", file=sys.stderr)
    raise SystemExit(code)


def bootstrap() -> Path:
    """Make sure .venv exists with the project installed; return its python."""
    # Older interpreters can run this far; say why we stop instead of failing somewhere odd.
    if sys.version_info < (3, 11):  # noqa: UP036
        _fail(f"Python 3.11+ is required, this is {sys.version.split()[0]}")
    python = venv_bin("python")
    if not python.exists():
        print(f"run.py: creating {VENV.relative_to(REPO)} ...", file=sys.stderr)
        # A subprocess, not venv.create(): its error (e.g. ensurepip missing) reaches the user.
        created = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "venv", str(VENV)], check=False
        )
        if created.returncode != 0:
            _fail(
                "could not create the virtualenv (on Debian/Ubuntu: apt install python3-venv)",
                created.returncode,
            )
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    try:
        installed = _STAMP.read_text().strip()
    except OSError:
        installed = ""
    if installed != digest:
        print("run.py: installing the project and its dev tools into .venv ...", file=sys.stderr)
        # Output is kept back and shown in full only on failure: a successful install says
        # nothing, while build-backend warnings would otherwise bury the test output.
        pip = subprocess.run(  # noqa: S603 - the venv's pip, fixed arguments
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-e",
                f"{REPO}[dev]",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if pip.returncode != 0:
            sys.stderr.write(pip.stdout)
            _fail("pip install -e .[dev] failed (output above)", pip.returncode)
        _STAMP.write_text(digest + "\n")
    return python


def exec_in_venv(program: Path, args: list[str]) -> None:
    """Replace this process with `program` (so signals and the exit code pass straight through)."""
    argv = [str(program), *args]
    if os.name == "nt":  # no real exec on Windows: run and forward the exit code
        raise SystemExit(subprocess.run(argv, check=False).returncode)  # noqa: S603
    os.execv(argv[0], argv)  # noqa: S606 - exec of the venv's own entry point


def main() -> None:
    """Bootstrap, then run `todo` with this script's arguments."""
    bootstrap()
    exec_in_venv(venv_bin("todo"), sys.argv[1:])


if __name__ == "__main__":
    main()

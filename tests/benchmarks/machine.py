"""The machine, software versions and date a benchmark ran on, for the results."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["COMMIT_ENV", "machine_info", "taskcore_source"]

#: Set by ``--taskcore-commit``: the commit whose taskcore source is first on the path.
COMMIT_ENV = "BENCH_TASKCORE_COMMIT"

_PACKAGES = ("sqlalchemy", "sqlmodel", "psycopg2-binary", "pydantic", "tenacity")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def taskcore_source() -> dict[str, Any]:
    """Which taskcore is measured: its folder, version and commit (dirty: uncommitted changes)."""
    import taskcore

    folder = Path(taskcore.__file__).resolve().parent
    info: dict[str, Any] = {"path": str(folder), "version": taskcore.__version__}
    pinned = os.environ.get(COMMIT_ENV)
    if pinned:
        info.update(commit=pinned, dirty=False, source="--taskcore-commit (git archive)")
        return info
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return info
    info.update(commit=head, dirty=bool(dirty), source="working tree")
    return info


def machine_info(server_version: str, server_version_num: int) -> dict[str, Any]:
    """Platform, CPUs, Python, library and server versions, load and the date (UTC)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {name: _version(name) for name in _PACKAGES},
        "postgresql": server_version,
        "postgresql_num": server_version_num,
        "taskcore": taskcore_source(),
    }

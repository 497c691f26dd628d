"""Run the benchmark: ``python3 tests/bench.py [--quick] [--only SCENARIO] [options]``.

Needs only Python 3.11+: like tests/run.py, it reuses src/run.py's bootstrap to create ``.venv``
and install ``-e .[dev]`` when needed, then runs the benchmark (the ``tests/benchmarks``
package) with the venv's Python; ``--help`` lists the options. The database is ``DATABASE_URL``
when set, else a throwaway embedded PostgreSQL (tests/_pgserver.py). Results are printed and
written as JSON (``bench-results.json`` in the current directory unless ``--json`` says
otherwise). Method and published numbers: specs/003-db-persistence-layer/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_TESTS = Path(__file__).resolve().parent
_SRC_RUN = _TESTS.parent / "src" / "run.py"


def _load_bootstrap_module() -> ModuleType:
    """Import src/run.py by path (it is a script, not part of an installed package)."""
    spec = importlib.util.spec_from_file_location("_taskcore_bootstrap", _SRC_RUN)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench.py: cannot load {_SRC_RUN}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_venv(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def main() -> None:
    """Bootstrap the venv; re-run this script with its Python; there, run the benchmark."""
    boot = _load_bootstrap_module()
    python = boot.bootstrap()
    if not _in_venv(boot.VENV):
        boot.exec_in_venv(python, [str(Path(__file__).resolve()), *sys.argv[1:]])
        return
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    from benchmarks import main as run_benchmark_cli

    raise SystemExit(run_benchmark_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()

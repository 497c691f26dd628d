"""The benchmark of issues 5 and 10, run by ``python3 tests/bench.py``.

:func:`run_benchmark` measures taskcore against raw psycopg2 (same SQL) and the SQLModel
tutorial pattern on one database and returns the results as a JSON-ready dict;
:func:`render` prints them (:func:`markdown` as Markdown); :func:`main` is the command line.
"""

from .cli import main
from .config import BenchConfig
from .database import Database, open_database
from .report import markdown, render
from .runner import run_benchmark

__all__ = [
    "BenchConfig",
    "Database",
    "main",
    "markdown",
    "open_database",
    "render",
    "run_benchmark",
]

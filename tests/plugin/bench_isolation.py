"""Per-test overhead of the plugin's isolation fixture on PostgreSQL (a benchmark, not a test).

    .venv/bin/python tests/plugin/bench_isolation.py [--rounds 500]

Times what ``taskcore_db`` does around every test: ``isolated()`` (check out the connection,
BEGIN) plus ``use_database``, then the ROLLBACK at exit; also with one write inside, and the
whole fixture through pytest (a suite of empty tests with and without it). The server is
TEST_DATABASE_URL's when set, else a throwaway embedded one. Target: median <= 5 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import taskcore
from taskcore.testing._pgserver import ENV_URL, PgServer, embedded_server, external_server

_DB = "test_taskcore_bench"


@contextmanager
def _server() -> Iterator[PgServer]:
    url = os.environ.get(ENV_URL, "").strip()
    if url:
        yield external_server(url)
        return
    with embedded_server() as server:
        yield server


def _time(fn: Callable[[], object], rounds: int) -> list[float]:
    for _ in range(20):  # warm-up: pool connection opened, statements cached
        fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(
        f"{name:<44} min {ordered[0]:6.3f} ms   median {statistics.median(ordered):6.3f} ms"
        f"   p95 {p95:6.3f} ms   (n={len(ordered)})"
    )


def _direct(url: str, rounds: int) -> None:
    with taskcore.Database(url) as database:
        database.init_db()

        def empty() -> None:
            with database.isolated() as db, taskcore.use_database(db):
                pass

        def one_write() -> None:
            with database.isolated() as db, taskcore.use_database(db):
                taskcore.create_task(taskcore.TaskCreate(title="t"), "bench")

        _report("isolation fixture, empty test", _time(empty, rounds))
        _report("isolation fixture, test with one create_task", _time(one_write, rounds))


_SUITE = """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_isolated(taskcore_db, i):
    pass

@pytest.mark.parametrize("i", range({n}))
def test_bare(taskcore_database, i):
    pass
"""


def _through_pytest(url: str, rounds: int) -> None:
    """Per-test time of empty tests with ``taskcore_db`` minus the same tests without it."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "test_bench.py").write_text(_SUITE.format(n=rounds))
        report = Path(tmp, "durations.txt")
        plugin = Path(tmp, "timing.py")
        plugin.write_text(
            "import time\n"
            "T = {}\n"
            "def pytest_runtest_protocol(item, nextitem):\n"
            "    T[item.name] = time.perf_counter()\n"
            "def pytest_runtest_logfinish(nodeid, location):\n"
            "    name = nodeid.split('::')[-1]\n"
            "    T[name] = time.perf_counter() - T[name]\n"
            "def pytest_unconfigure(config):\n"
            f"    open({str(report)!r}, 'w').write(repr(T))\n"
        )
        env = {**os.environ, ENV_URL: url, "PYTHONPATH": tmp}
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "timing", "-p", "no:cacheprovider",
             *_plugin_args(), "test_bench.py"],
            cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        times = eval(report.read_text())  # noqa: S307 - our own repr of a dict of floats
    isolated = [v * 1000 for k, v in times.items() if k.startswith("test_isolated")][20:]
    bare = [v * 1000 for k, v in times.items() if k.startswith("test_bare")][20:]
    _report("pytest: empty test with taskcore_db", isolated)
    _report("pytest: empty test without it", bare)
    print(
        f"{'pytest: overhead of taskcore_db (medians)':<44} "
        f"{statistics.median(isolated) - statistics.median(bare):6.3f} ms"
    )


def _plugin_args() -> list[str]:
    """``-p`` for the plugin unless its pytest11 entry point already loads it."""
    from importlib.metadata import entry_points

    registered = any(ep.name == "taskcore" for ep in entry_points(group="pytest11"))
    autoload = not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    return [] if registered and autoload else ["-p", "taskcore.testing.pytest_plugin"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    with _server() as server:
        server.create_database(_DB)
        try:
            print(server.describe(_DB))
            _direct(server.url(_DB), args.rounds)
            _through_pytest(server.url(_DB), args.rounds)
        finally:
            server.drop_database(_DB)


if __name__ == "__main__":
    main()

"""``python3 tests/bench.py [--quick] [options]``: parse, run, print, write JSON (and Markdown)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .config import BenchConfig
from .database import open_database
from .machine import COMMIT_ENV
from .report import markdown, render
from .runner import run_benchmark

__all__ = ["main"]

_SCENARIOS = ("single", "load", "think")
_LOAD_IMPLS = ("taskcore", "raw_psycopg2", "raw_wait_callback", "tutorial")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 tests/bench.py",
        description=(
            "taskcore against raw psycopg2 sending the same SQL (and the SQLModel tutorial "
            "pattern), on this machine. Single client: round trips counted on the wire, "
            "ops/s and client CPU per call on loopback and through a 2 ms link, units of "
            "work, create_many vs execute_values, recovery after an outage. Many clients: "
            "a closed loop of processes x threads clients (one user each), directly and "
            "through PgBouncer in transaction mode, and the same clients with exponential "
            "think time (server sessions opened). Every timed scenario is repeated; the "
            "report prints min / median and ratios measured within one repetition. Uses "
            "DATABASE_URL if set, else a throwaway embedded PostgreSQL."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke: every scenario, short and once (about 2 minutes; noisy numbers)",
    )
    parser.add_argument(
        "--only",
        choices=_SCENARIOS,
        action="append",
        metavar="SCENARIO",
        help="run only this scenario (repeatable): single, load (1,000 clients) or think",
    )
    parser.add_argument(
        "--runs",
        type=_positive,
        metavar="N",
        help="repeat every timed scenario N times (full: 5 single-client rounds, 3 load runs)",
    )
    parser.add_argument(
        "--ops",
        type=_positive,
        metavar="N",
        help="one-shot calls per implementation per round on loopback "
        "(full 600, --quick 40; the 2 ms link uses N/6)",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        metavar="S",
        help="seconds measured per many-clients run (full 25, think time 30; --quick 4/5)",
    )
    parser.add_argument(
        "--warmup",
        type=_seconds,
        metavar="S",
        help="unmeasured seconds before each many-clients window (full 5)",
    )
    parser.add_argument(
        "--processes", type=_positive, metavar="P", help="client processes (default 4)"
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        metavar="T",
        help="client threads per process, one user each (default 250)",
    )
    parser.add_argument(
        "--pool-size",
        type=_positive,
        metavar="N",
        help="server connections per process in the closed loop, both sides "
        "(default: taskcore's default pool_size)",
    )
    parser.add_argument(
        "--no-pgbouncer",
        action="store_true",
        help="skip the many-clients runs through PgBouncer",
    )
    parser.add_argument(
        "--load-impl",
        choices=_LOAD_IMPLS,
        action="append",
        metavar="IMPL",
        help="implementations in the many-clients scenarios (repeatable; default taskcore "
        "and raw_psycopg2; tutorial: the SQLModel pattern; raw_wait_callback: raw psycopg2 "
        "with taskcore's wait callback installed)",
    )
    parser.add_argument(
        "--taskcore-commit",
        metavar="REV",
        help="measure taskcore as committed at REV (git archive into a private temp dir put "
        "first on PYTHONPATH), not the working tree: reproducible while the tree changes",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        metavar="PATH",
        help="where to write the results (default: bench-results.json)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write the results tables as Markdown (for README/specs)",
    )
    return parser


def config_from(args: argparse.Namespace) -> BenchConfig:
    """The configuration the command line asks for."""
    config = BenchConfig.quick() if args.quick else BenchConfig.full()
    if args.ops is not None:
        config = config.with_ops(args.ops)
    if args.runs is not None:
        config = config.with_runs(args.runs)
    changes: dict[str, object] = {}
    if args.duration is not None:
        changes.update(load_duration_s=args.duration, think_duration_s=args.duration)
    if args.warmup is not None:
        changes.update(load_warmup_s=args.warmup, think_warmup_s=args.warmup)
    if args.processes is not None:
        changes["load_processes"] = args.processes
    if args.threads is not None:
        changes["load_threads"] = args.threads
    if args.pool_size is not None:
        changes["load_pool_size"] = args.pool_size
    if args.no_pgbouncer:
        changes["load_pgbouncer"] = False
    return config.with_changes(**changes) if changes else config


def _run_on_commit(rev: str, argv: Sequence[str]) -> int:
    """Re-run this command with taskcore's source as committed at ``rev`` first on the path."""
    repo = Path(__file__).resolve().parents[2]
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix="taskcore-bench-src-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", commit, "backend/taskcore"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(folder / "backend"), env.get("PYTHONPATH", "")])
        )
        env[COMMIT_ENV] = commit
        rest: list[str] = []
        skip = False
        for arg in argv:  # the same arguments, less --taskcore-commit and its value
            if skip or arg.startswith("--taskcore-commit="):
                skip = False
                continue
            skip = arg == "--taskcore-commit"
            if not skip:
                rest.append(arg)
        return subprocess.run(
            [sys.executable, str(repo / "tests" / "bench.py"), *rest], env=env, check=False
        ).returncode
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 only if a round-trip target (deterministic) is missed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.taskcore_commit and not os.environ.get(COMMIT_ENV):
        return _run_on_commit(args.taskcore_commit, argv)
    config = config_from(args)
    scenarios = frozenset(args.only) if args.only else None
    load_impls = tuple(dict.fromkeys(args.load_impl or ("taskcore", "raw_psycopg2")))
    if "raw_psycopg2" not in load_impls:
        load_impls = (*load_impls, "raw_psycopg2")  # ratios need the baseline
    with open_database() as db:
        results = run_benchmark(db, config, scenarios=scenarios, load_impls=load_impls)
    print(render(results))
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\nresults written to {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(markdown(results) + "\n")
        print(f"Markdown tables written to {args.markdown}")
    missed = [t["name"] for t in results["targets"] if t["deterministic"] and t["pass"] is False]
    return 1 if missed else 0

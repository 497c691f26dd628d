"""``python3 tests/bench.py [--quick] [--json PATH] [--ops N]``: parse, run, print, write JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .config import BenchConfig
from .database import open_database
from .report import markdown, render
from .runner import run_benchmark

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 tests/bench.py",
        description=(
            "Round trips (counted on the wire) and throughput of taskcore's operations against "
            "raw psycopg2 running the same SQL and the SQLModel tutorial pattern, on loopback "
            "and through a proxy adding 2 ms each way; plus units of work, bulk create and "
            "recovery after an outage. Uses DATABASE_URL if set, else a throwaway embedded "
            "PostgreSQL."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer iterations (under 30 s; noisier numbers)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        metavar="PATH",
        help="where to write the results (default: bench-results.json)",
    )
    parser.add_argument(
        "--ops",
        type=_positive,
        metavar="N",
        help="one-shot calls per implementation per round on loopback "
        "(default 150, --quick 40; the 2 ms link uses N/6)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write the results tables as Markdown (for README/specs)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 only if a round-trip target (deterministic) is missed."""
    args = _parser().parse_args(argv)
    config = BenchConfig.quick() if args.quick else BenchConfig.default()
    if args.ops is not None:
        config = config.with_ops(args.ops)
    with open_database() as db:
        results = run_benchmark(db, config)
    print(render(results))
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\nresults written to {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(markdown(results) + "\n")
        print(f"Markdown tables written to {args.markdown}")
    missed = [t["name"] for t in results["targets"] if t["deterministic"] and t["pass"] is False]
    return 1 if missed else 0

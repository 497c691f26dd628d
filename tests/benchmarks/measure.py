"""Measuring: round trips on the wire, interleaved throughput rounds, and cProfile summaries."""

from __future__ import annotations

import contextlib
import cProfile
import gc
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

from .wire import TracingProxy

__all__ = [
    "Count",
    "Timing",
    "count_round_trips",
    "interleaved",
    "percentiles",
    "profile",
    "spread",
]

Call = Callable[[int], object]


@dataclass(frozen=True)
class Count:
    """Round trips per call in steady state, counted by the proxy."""

    round_trips: float | None  # None: the link was encrypted, nothing could be parsed
    new_connections: int
    wire: list[str] = field(default_factory=list)  # statements of the last call, in order
    #: Whether the last call found (or wrote) a row: a baseline that matches no row (a wrong
    #: id or owner bound) does less work than taskcore and would look unfairly fast.
    found: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "round_trips": _number(self.round_trips),
            "new_connections": self.new_connections,
            "wire": self.wire,
            "found": self.found,
        }


def _number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(value, 3)


def count_round_trips(
    proxy: TracingProxy, prepare: Callable[[int], Call], *, warmup: int, calls: int
) -> Count:
    """Run ``warmup`` calls, then count the round trips of ``calls`` more; trace the last one."""
    fn = prepare(warmup + calls)
    for i in range(warmup):
        fn(i)
    proxy.reset_stats()
    for i in range(warmup, warmup + calls - 1):
        fn(i)
    with proxy.tracing() as wire:
        result = fn(warmup + calls - 1)
    stats = proxy.stats
    encrypted = stats.round_trips == 0 and stats.bytes_up > 0
    per_call = None if encrypted else stats.round_trips / calls
    return Count(per_call, stats.connections, list(wire), found=bool(result))


@dataclass(frozen=True)
class Timing:
    """Throughput samples (calls per second), one per round, per implementation.

    ``cpu`` holds this process's CPU time per call (µs) for the same rounds: the wall time
    of a call is its CPU time plus waiting (network, server, scheduling). Round ``r`` of every
    implementation ran back to back, so ratios are taken round by round (same conditions).
    """

    samples: Mapping[str, list[float]]
    cpu: Mapping[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratios(self, name: str, other: str) -> list[float]:
        """ops/s of ``name`` ÷ ops/s of ``other``, per round (> 1: ``name`` is faster)."""
        return [a / b for a, b in zip(self.samples[name], self.samples[other], strict=True)]

    def cpu_ratios(self, name: str, other: str) -> list[float]:
        """CPU per call of ``name`` ÷ that of ``other``, per round (> 1: ``name`` costs more)."""
        return [a / b for a, b in zip(self.cpu[name], self.cpu[other], strict=True) if b > 0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops_per_s": {name: spread(values, 1) for name, values in self.samples.items()},
            "us_per_op": {name: round(1e6 / self.median(name), 1) for name in self.samples},
            "cpu_us_per_op": {name: spread(values, 1) for name, values in self.cpu.items()},
            "samples_ops_per_s": {
                name: [round(s, 1) for s in values] for name, values in self.samples.items()
            },
            "samples_cpu_us_per_op": {
                name: [round(s, 1) for s in values] for name, values in self.cpu.items()
            },
        }


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """min, median and max of per-run values (what the report prints as min / median)."""
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
        "runs": len(values),
    }


def interleaved(
    prepares: Mapping[str, Callable[[int], Call]],
    *,
    n: int,
    rounds: int,
    warmup: int,
    modes: Mapping[str, Callable[[], AbstractContextManager[object]]] | None = None,
) -> Timing:
    """Time ``n`` calls per implementation per round; implementations take turns each round.

    The order rotates from round to round so that none is always first (or right after a
    noisy neighbour); set-up (``prepare``) and a GC collection happen outside the timed loop.
    ``modes[name]()`` is entered around each of ``name``'s batches (e.g. no wait callback).
    """
    names = list(prepares)
    enter = modes or {}

    def mode(name: str) -> AbstractContextManager[object]:
        factory = enter.get(name)
        return factory() if factory is not None else contextlib.nullcontext()

    for name in names:
        fn = prepares[name](warmup)
        with mode(name):
            for i in range(warmup):
                fn(i)
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = prepares[name](n)
            gc.collect()
            with mode(name):
                cpu_started = time.process_time()
                started = time.perf_counter()
                for i in range(n):
                    fn(i)
                elapsed = time.perf_counter() - started
                cpu_used = time.process_time() - cpu_started
            cpu[name].append(1e6 * cpu_used / n)
            samples[name].append(n / elapsed)
    return Timing(samples, cpu)


def percentiles(latencies: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of ``latencies`` (seconds) in milliseconds."""
    if not latencies:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return 1e3 * ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {
        "p50_ms": round(at(0.50), 3),
        "p90_ms": round(at(0.90), 3),
        "p99_ms": round(at(0.99), 3),
        "max_ms": round(1e3 * ordered[-1], 3),
    }


# -- profiles ---------------------------------------------------------------------------------


def _where(code: CodeType | str) -> tuple[str, str]:
    """(library, readable function name) of a profiler entry; taskcore by module."""
    if isinstance(code, str):  # a built-in: "<method 'execute' of 'psycopg2...cursor' objects>"
        if "psycopg2" in code:
            return "psycopg2 (C: send, wait for the server, parse)", code
        if "pydantic_core" in code:
            return "pydantic", code
        if "select.poll" in code or "poll' of" in code:
            return "builtins (select.poll)", code
        return "builtins", code
    path = code.co_filename.replace("\\", "/")
    name = f"{code.co_qualname} ({_short(path)}:{code.co_firstlineno})"
    if "/taskcore/" in path:
        module = path.rsplit("/taskcore/", 1)[1].removesuffix(".py").replace("/", ".")
        return f"taskcore.{module}", name
    for marker, library in (
        ("/sqlalchemy/", "sqlalchemy"),
        ("/sqlmodel/", "sqlmodel"),
        ("/pydantic", "pydantic"),
        ("/tenacity/", "tenacity"),
        ("/psycopg2/", "psycopg2 (Python)"),
        ("/benchmarks/", "benchmark harness"),
    ):
        if marker in path:
            return library, name
    if "/lib/python3" in path:
        return f"stdlib {path.rsplit('/', 1)[-1].removesuffix('.py')}", name
    return "other", name


def _short(path: str) -> str:
    for marker in ("site-packages/", "backend/", "tests/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/", 2)[-1] if "/" in path else path


#: A stage of a call: its label, then functions whose cumulative time is added, then ones
#: subtracted (qualified names; a built-in matches by substring, e.g. "psycopg2").
Stage = tuple[str, tuple[str, ...], tuple[str, ...]]


def profile(
    fn: Call,
    calls: int,
    *,
    stages: Sequence[Stage] = (),
    top: int = 25,
    warm: bool = True,
) -> dict[str, Any]:
    """cProfile ``calls`` calls: time per call, own time by library, stages, top functions.

    ``fn`` is called with 1..calls (and 0 first, unprofiled, when ``warm``).
    """
    profiler = cProfile.Profile()
    if warm:
        fn(0)  # first-call work (caches) is not what is measured here
    started = time.perf_counter()
    profiler.enable()
    for i in range(1, calls + 1):
        fn(i)
    profiler.disable()
    wall = time.perf_counter() - started
    entries = profiler.getstats()
    total = sum(entry.inlinetime for entry in entries) or 1.0
    by_library: defaultdict[str, float] = defaultdict(float)
    functions: list[tuple[float, float, int, str, str]] = []
    for entry in entries:
        library, name = _where(entry.code)
        by_library[library] += entry.inlinetime
        functions.append((entry.totaltime, entry.inlinetime, entry.callcount, library, name))
    cumulative: defaultdict[str, float] = defaultdict(float)
    for entry in entries:
        key = entry.code if isinstance(entry.code, str) else entry.code.co_qualname
        cumulative[key] += entry.totaltime

    def cum(name: str) -> float:
        if name in cumulative:
            return cumulative[name]
        return sum(t for key, t in cumulative.items() if key.startswith("<") and name in key)

    stage_us = {
        label: round(1e6 * (sum(map(cum, plus)) - sum(map(cum, minus))) / calls, 1)
        for label, plus, minus in stages
        if all(cum(name) for name in plus)
    }
    functions = [row for row in functions if row[3] != "benchmark harness"]
    functions.sort(reverse=True)
    by_own = sorted(functions, key=lambda row: -row[1])[:top]
    shown = functions[:top]
    return {
        "calls": calls,
        "us_per_call_profiled": round(1e6 * wall / calls, 1),
        "stages_us_per_call": stage_us,
        "exclusive_time_by_library_pct": {
            library: round(100 * seconds / total, 1)
            for library, seconds in sorted(by_library.items(), key=lambda kv: -kv[1])
        },
        "top_cumulative": [
            {
                "function": name,
                "library": library,
                "calls_per_op": round(ncalls / calls, 2),
                "cum_us_per_op": round(1e6 * cum / calls, 1),
                "own_us_per_op": round(1e6 * own / calls, 1),
            }
            for cum, own, ncalls, library, name in shown
        ],
        "top_own": [
            {
                "function": name,
                "library": library,
                "calls_per_op": round(ncalls / calls, 2),
                "own_us_per_op": round(1e6 * own / calls, 1),
                "cum_us_per_op": round(1e6 * cum / calls, 1),
            }
            for cum, own, ncalls, library, name in by_own
        ],
    }

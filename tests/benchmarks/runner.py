"""Runs every scenario of the benchmark against one database and returns the results as a dict."""

from __future__ import annotations

import gc
import logging
import math
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import taskcore
from taskcore import RetryPolicy
from taskcore.engine import current_settings, get_engine

from .config import BenchConfig
from .database import Database
from .impls import ONE_SHOTS, READS, Fixture, Implementation, RawPsycopg2, Taskcore, Tutorial, Users
from .link import Endpoint, ProxyProcess
from .machine import machine_info
from .measure import Call, Stage, Timing, count_round_trips, interleaved, profile
from .wire import TracingProxy

__all__ = ["TARGETS", "run_benchmark"]

#: Issue 5's throughput targets: taskcore ops/s divided by raw psycopg2's, same run.
TARGETS = {"loopback_write": 0.5, "loopback_read": 0.4, "link": 0.85, "bulk_time": 1.5}
IMPLEMENTATIONS = ("taskcore", "raw_psycopg2", "tutorial")

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_benchmark(
    db: Database, config: BenchConfig, *, progress: Progress = _stderr
) -> dict[str, Any]:
    """Measure everything; the returned dict is what --json writes."""
    started = time.monotonic()

    def say(message: str) -> None:
        progress(f"[{time.monotonic() - started:6.1f}s] {message}")

    taskcore.configure(database_url=db.sa_url())
    taskcore.init_db()
    seeder = db.connect()
    fixture = Fixture(seeder, Users(f"bench-{secrets.token_hex(4)}"), config.list_size)
    results: dict[str, Any] = {"benchmark": "taskcore round trips and throughput (issue 5)"}
    impls: dict[str, Implementation] = {}
    try:
        with seeder.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
        server_version = str(row[0]) if row else "?"
        results["machine"] = machine_info(server_version, seeder.server_version)
        results["database"] = db.describe(server_version)
        results["config"] = config.as_dict()
        say(f"database: {results['database']}")
        fixture.setup(IMPLEMENTATIONS)
        tc = Taskcore(db, fixture)
        tc.bind(None)
        templates = tc.capture()
        impls = {
            "taskcore": tc,
            "raw_psycopg2": RawPsycopg2(db, fixture, templates),
            "tutorial": Tutorial(db, fixture),
        }
        results["sql"] = {op: template.sql for op, template in templates.items()}
        one_shots: dict[str, dict[str, Any]] = {
            op: {"operation": op, "kind": "read" if op in READS else "write"} for op in ONE_SHOTS
        }
        units = _unit_rows(config)
        # Everything imported and set up so far is long-lived: freezing it keeps the
        # gc.collect() before each timed batch cheap (a full collection takes ~0.1 s here).
        gc.collect()
        gc.freeze()
        with TracingProxy(db.host, db.port) as proxy:
            say("counting round trips on the wire (in-process proxy, no added latency) ...")
            _bind_all(impls, proxy)
            _count_phase(proxy, impls, one_shots, units, config)
            results["bulk"] = _count_bulk(proxy, impls, fixture, config)
        say("loopback throughput (direct connections, no proxy) ...")
        _bind_all(impls, None)
        _time_phase("loopback", impls, one_shots, units, config, say)
        say("bulk create (loopback) ...")
        _time_bulk(impls, fixture, config, results["bulk"])
        link_ms = config.link_one_way_s * 1e3
        say(f"throughput through a proxy process adding {link_ms:g} ms each way ...")
        with ProxyProcess(db.host, db.port) as link:
            link.set_latency(config.link_one_way_s)
            _bind_all(impls, link)
            _time_phase("link", impls, one_shots, units, config, say)
            _close_all(impls)
            results["link"] = {
                "one_way_latency_s": config.link_one_way_s,
                "proxy": "FlakyProxy in a child process (tests/benchmarks/link.py)",
                "round_trips_relayed": link.stats()["round_trips"],
            }
        _close_all(impls)
        say(f"recovery after a {config.outage_s:g} s outage (real retry waits) ...")
        results["recovery"] = _recovery(db, tc, fixture, config)
        results["one_shots"] = list(one_shots.values())
        results["units_of_work"] = list(units.values())
        results["targets"] = _targets(results)
        results["duration_s"] = round(time.monotonic() - started, 1)
        if hasattr(os, "getloadavg"):
            results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        say("done")
        return results
    finally:
        gc.unfreeze()
        _close_all(impls)
        taskcore.dispose()
        fixture.cleanup()
        seeder.close()


def _bind_all(impls: Mapping[str, Implementation], proxy: Endpoint | None) -> None:
    for impl in impls.values():
        impl.bind(proxy)


def _close_all(impls: Mapping[str, Implementation]) -> None:
    for impl in impls.values():
        impl.close()


def _commit_protection_on() -> bool:
    """Whether writing units of work take a commit ticket (+1 round trip; taskcore >= issue 3).

    taskcore takes it on PostgreSQL 13+ (pg_current_xact_id) when the setting is on.
    """
    setting = bool(getattr(current_settings(), "commit_protection", False))
    version = get_engine().dialect.server_version_info or (0,)  # known: the engine is warm
    return setting and version >= (13,)


# -- units of work ------------------------------------------------------------------------------


def _unit_rows(config: BenchConfig) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for k in config.unit_sizes:
        rows[f"k={k}"] = {
            "unit": f"UnitOfWork, {k} create{'s' if k > 1 else ''}",
            "statements": k,
            "read_only": False,
        }
    rows["read-only"] = {
        "unit": "read-only UnitOfWork, get + list",
        "statements": 2,
        "read_only": True,
    }
    return rows


def _prepare(impl: Implementation, op: str) -> Callable[[int], Call]:
    """n -> the callable doing n calls of ``op`` (set-up, such as rows to delete, included)."""
    return lambda n: impl.operation(op, n)


def _unit_call(impl: Implementation, row: Mapping[str, Any]) -> Callable[[int], Call]:
    assert isinstance(impl, Taskcore | RawPsycopg2)
    k = int(row["statements"])
    if row["read_only"]:
        read_only = impl.read_only_unit
        return lambda n: lambda i: read_only()
    unit = impl.unit
    return lambda n: lambda i: unit(k, i)


# -- round trips --------------------------------------------------------------------------------


def _count_phase(
    proxy: TracingProxy,
    impls: Mapping[str, Implementation],
    one_shots: dict[str, dict[str, Any]],
    units: dict[str, dict[str, Any]],
    config: BenchConfig,
) -> None:
    warmup = min(config.warmup, 3)
    for op, row in one_shots.items():
        row["round_trips"] = {
            name: count_round_trips(
                proxy, _prepare(impl, op), warmup=warmup, calls=config.count_calls
            ).as_dict()
            for name, impl in impls.items()
        }
        row["round_trips_target"] = 1
        row["round_trips_pass"] = _check(row["round_trips"]["taskcore"]["round_trips"], 1, 1)
    protection = _commit_protection_on()
    for row in units.values():
        k = int(row["statements"])
        extra = 1 if protection and not row["read_only"] else 0
        row["commit_protection"] = bool(extra)
        row["round_trips_target"] = k + 2 + extra
        row["round_trips"] = {
            name: count_round_trips(
                proxy, _unit_call(impls[name], row), warmup=warmup, calls=config.count_calls
            ).as_dict()
            for name in ("taskcore", "raw_psycopg2")
        }
        # A read-only unit may cost less than k + 2 (it never does with psycopg2).
        low = 0 if row["read_only"] else k + 2 + extra
        row["round_trips_pass"] = _check(
            row["round_trips"]["taskcore"]["round_trips"], low, k + 2 + extra
        )
    if protection:
        # The same units with commit protection switched off: exactly k + 2.
        taskcore.configure(database_url=impls["taskcore"].db.sa_url(proxy), commit_protection=False)
        for row in units.values():
            if row["read_only"]:
                continue
            count = count_round_trips(
                proxy, _unit_call(impls["taskcore"], row), warmup=warmup, calls=config.count_calls
            )
            row["round_trips_without_commit_protection"] = count.as_dict()
        impls["taskcore"].bind(proxy)


def _check(value: float | None, low: float, high: float) -> bool | None:
    """low <= value <= high; None when the value could not be counted (encrypted link)."""
    return None if value is None else low <= value <= high


def _count_bulk(
    proxy: TracingProxy,
    impls: Mapping[str, Implementation],
    fixture: Fixture,
    config: BenchConfig,
) -> dict[str, Any]:
    n = config.bulk_n
    protection = _commit_protection_on()
    limit = math.ceil(n / config.bulk_page_size) + 2
    counts = {
        name: _count_one_bulk(proxy, impls[name], fixture, n)
        for name in ("taskcore", "raw_psycopg2")
    }
    result: dict[str, Any] = {
        "n": n,
        "round_trips": counts,
        "round_trips_target_max": limit + (1 if protection else 0),
        "commit_protection": protection,
    }
    if protection:
        taskcore.configure(database_url=impls["taskcore"].db.sa_url(proxy), commit_protection=False)
        impls["taskcore"].get_task()  # warm: first use of the new engine
        result["round_trips_without_commit_protection"] = _count_one_bulk(
            proxy, impls["taskcore"], fixture, n
        )
        impls["taskcore"].bind(proxy)
    result["round_trips_pass"] = _check(
        counts["taskcore"]["round_trips"], 0, result["round_trips_target_max"]
    )
    return result


def _count_one_bulk(
    proxy: TracingProxy, impl: Implementation, fixture: Fixture, n: int
) -> dict[str, Any]:
    assert isinstance(impl, Taskcore | RawPsycopg2)
    run = impl.bulk(n)
    proxy.reset_stats()
    with proxy.tracing() as wire:
        created = run()
    stats = proxy.stats
    _clear_bulk(fixture)
    if created != n:
        raise RuntimeError(f"{impl.name} created {created} of {n} tasks")
    return {
        # Nothing parsed (TLS makes the link opaque to the proxy): unknown, not zero.
        "round_trips": stats.round_trips if wire else None,
        "new_connections": stats.connections,
        "wire": [text[:70] for text in wire],
    }


def _clear_bulk(fixture: Fixture) -> None:
    fixture.execute("DELETE FROM tasks WHERE user_id = %s", (fixture.users["bulk"],))
    fixture.execute("VACUUM tasks")


# -- throughput ---------------------------------------------------------------------------------


def _time_phase(
    phase: str,
    impls: Mapping[str, Implementation],
    one_shots: dict[str, dict[str, Any]],
    units: dict[str, dict[str, Any]],
    config: BenchConfig,
    say: Progress,
) -> None:
    loop = phase == "loopback"
    n, rounds = (
        (config.loop_ops, config.loop_rounds) if loop else (config.link_ops, config.link_rounds)
    )
    for op, row in one_shots.items():
        timing = interleaved(
            {name: _prepare(impl, op) for name, impl in impls.items()},
            n=n,
            rounds=rounds,
            warmup=config.warmup if loop else min(config.warmup, 2),
        )
        target = TARGETS["link"]
        if loop:
            target = TARGETS["loopback_read" if op in READS else "loopback_write"]
        result = _judge(timing, target)
        if not result["pass"] and config.profile_misses:
            calls = config.profile_calls if loop else n
            result["profile"] = profile(
                impls["taskcore"].operation(op, calls + 1), calls, stages=_stages(op)
            )
        row[phase] = result
        say(
            f"  {op:<16} taskcore {timing.median('taskcore'):8.0f} ops/s   "
            f"x raw {result['ratio_vs_raw']:.2f}   x tutorial {result['ratio_vs_tutorial']:.2f}"
        )
    n_units = config.unit_loop_ops if loop else config.unit_link_ops
    for row in units.values():
        timing = interleaved(
            {name: _unit_call(impls[name], row) for name in ("taskcore", "raw_psycopg2")},
            n=n_units,
            rounds=rounds,
            warmup=min(config.warmup, 2),
        )
        row[phase] = _judge(timing, None)


_REPOSITORY_METHOD = {
    "create_task": "create",
    "get_task": "get",
    "get_tasks": "list",
    "update_task": "update",
    "toggle_complete": "toggle_complete",
    "delete_task": "delete",
    "bulk": "create_many",
}
_DRIVER = "psycopg2.extensions.cursor' objects"  # <method 'execute' of ... objects>


def _stages(op: str) -> list[Stage]:
    """Where a taskcore call's time goes, from its profile (functions as named in taskcore)."""
    method = f"TaskRepository.{_REPOSITORY_METHOD[op]}"
    attempt = ("run_unit.<locals>.attempt",)
    driver = (f"<method 'execute' of '{_DRIVER}>",)
    return [
        ("retry layer (tenacity, policy), around the attempt", ("call_with_retries",), attempt),
        ("unit of work: open a Session", ("UnitOfWork.__enter__",), ()),
        (
            "repository: validate input, build the statement",
            (method,),
            ("UnitOfWork.run_statement",),
        ),
        (
            "check out a pooled connection (+ liveness poll, autocommit)",
            ("UnitOfWork._connect",),
            (),
        ),
        ("SQLAlchemy ORM execute, excluding the driver", ("Session.scalars",), driver),
        ("psycopg2 cursor.execute: send, server, receive", driver, ()),
        ("rows to Task objects (ORM loading)", ("ScalarResult.all",), ()),
        ("unit of work: end (commit no-op, close, check-in)", ("UnitOfWork.__exit__",), ()),
    ]


def _judge(timing: Timing, target: float | None) -> dict[str, Any]:
    result = timing.as_dict()
    ratio = timing.ratio("taskcore", "raw_psycopg2")
    result["ratio_vs_raw"] = round(ratio, 3)
    if "tutorial" in timing.samples:
        result["ratio_vs_tutorial"] = round(timing.ratio("taskcore", "tutorial"), 3)
    result["target_ratio_vs_raw"] = target
    result["pass"] = None if target is None else ratio >= target
    return result


def _time_bulk(
    impls: Mapping[str, Implementation],
    fixture: Fixture,
    config: BenchConfig,
    bulk: dict[str, Any],
) -> None:
    names = ("taskcore", "raw_psycopg2")
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(config.bulk_rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            impl = impls[name]
            assert isinstance(impl, Taskcore | RawPsycopg2)
            run = impl.bulk(config.bulk_n)
            gc.collect()
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
            _clear_bulk(fixture)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    ratio = medians["taskcore"] / medians["raw_psycopg2"]
    bulk["loopback"] = {
        "seconds": {name: round(value, 4) for name, value in medians.items()},
        "samples_s": {name: [round(v, 4) for v in values] for name, values in seconds.items()},
        "time_ratio_vs_raw": round(ratio, 3),
        "target_time_ratio_max": TARGETS["bulk_time"],
        "pass": ratio <= TARGETS["bulk_time"],
    }
    if ratio > TARGETS["bulk_time"] and config.profile_misses:
        tc = impls["taskcore"]
        assert isinstance(tc, Taskcore)
        run = tc.bulk(config.bulk_n)
        bulk["loopback"]["profile"] = profile(
            lambda i: run(), 1, stages=_stages("bulk"), warm=False
        )
        _clear_bulk(fixture)


# -- recovery -----------------------------------------------------------------------------------


class _RetryLog(logging.Handler):
    """Collects taskcore's retry_scheduled events with the monotonic time they were logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[tuple[float, int, float]] = []  # (when, failed attempt, wait)

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__
        if fields.get("taskcore_event") == "retry_scheduled":
            self.events.append(
                (time.monotonic(), int(fields.get("attempt", 0)), float(fields.get("wait", 0.0)))
            )


@contextmanager
def _retry_log() -> Iterator[_RetryLog]:
    handler = _RetryLog()
    logger = logging.getLogger("taskcore")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _recovery(db: Database, tc: Taskcore, fixture: Fixture, config: BenchConfig) -> dict[str, Any]:
    policy = RetryPolicy.from_settings(current_settings())
    result: dict[str, Any] = {
        "outage_s": config.outage_s,
        "policy": {
            "wait_initial": policy.wait_initial,
            "wait_max": policy.wait_max,
            "wait_jitter": policy.wait_jitter,
            "attempts": policy.attempts,
            "deadline": policy.deadline,
        },
        "operation": "get_tasks",
    }
    with TracingProxy(db.host, db.port) as proxy:
        tc.bind(proxy)
        taskcore.dispose()  # no pooled connection: the call has to connect during the outage
        with _retry_log() as log:
            before = time.monotonic()
            proxy.refuse_for(config.outage_s)
            back_at = before + config.outage_s  # the earliest moment it accepts again
            try:
                tasks = taskcore.get_tasks(user_id=fixture.users["list"])
            except taskcore.TaskcoreError as error:
                result.update(ok=False, error=type(error).__name__, recovery_s=None, step_s=None)
                result["pass"] = False
                return result
            finished = time.monotonic()
        tc.close()
    assert len(tasks) == config.list_size
    recovery = finished - back_at
    step = None
    for when, attempt, wait in log.events:
        if when <= back_at:
            step = (when, attempt, wait)
    result.update(
        ok=True,
        attempts=len(log.events) + 1,
        waits_s=[round(wait, 3) for _, _, wait in log.events],
        call_s=round(finished - before, 3),
        recovery_s=round(recovery, 3),
    )
    if step is None:  # no wait had started when the database returned: nothing to compare
        result.update(step=None, step_s=None, target="the call succeeds")
        result["pass"] = True
        return result
    when, attempt, wait = step
    base = min(policy.wait_max, policy.wait_initial * 2 ** (attempt - 1))
    result.update(
        step={
            "after_attempt": attempt,
            "base_s": round(base, 3),
            "jitter_s": round(wait - base, 3),
            "began_before_return_s": round(back_at - when, 3),
        },
        step_s=round(wait, 3),
        target="recovery_s <= step_s (one backoff step)",
    )
    result["pass"] = recovery <= wait
    return result


# -- summary ------------------------------------------------------------------------------------


def _targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 5 with its measured value and verdict, for the summary."""
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: Any, passed: bool | None, *, exact: bool) -> None:
        rows.append(
            {"name": name, "target": target, "value": value, "pass": passed, "deterministic": exact}
        )

    for row in results["one_shots"]:
        op = row["operation"]
        add(
            f"{op} round trips",
            "= 1",
            row["round_trips"]["taskcore"]["round_trips"],
            row["round_trips_pass"],
            exact=True,
        )
    for row in results["one_shots"]:
        op, loop = row["operation"], row["loopback"]
        add(
            f"{op} loopback x raw",
            f">= {loop['target_ratio_vs_raw']}",
            loop["ratio_vs_raw"],
            loop["pass"],
            exact=False,
        )
    for row in results["one_shots"]:
        op, link = row["operation"], row["link"]
        add(
            f"{op} 2 ms link x raw",
            f">= {link['target_ratio_vs_raw']}",
            link["ratio_vs_raw"],
            link["pass"],
            exact=False,
        )
    for row in results["units_of_work"]:
        relation = "<=" if row["read_only"] else "="
        add(
            f"{row['unit']} round trips",
            f"{relation} {row['round_trips_target']}",
            row["round_trips"]["taskcore"]["round_trips"],
            row["round_trips_pass"],
            exact=True,
        )
    bulk = results["bulk"]
    add(
        f"bulk {bulk['n']} round trips",
        f"<= {bulk['round_trips_target_max']}",
        bulk["round_trips"]["taskcore"]["round_trips"],
        bulk["round_trips_pass"],
        exact=True,
    )
    add(
        f"bulk {bulk['n']} time x execute_values",
        f"<= {TARGETS['bulk_time']}",
        bulk["loopback"]["time_ratio_vs_raw"],
        bulk["loopback"]["pass"],
        exact=False,
    )
    rec = results["recovery"]
    add(
        "recovery after outage (s)",
        f"<= one backoff step ({rec.get('step_s')} s)" if rec.get("step_s") else "succeeds",
        rec.get("recovery_s"),
        rec["pass"],
        exact=False,
    )
    return rows

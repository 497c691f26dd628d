"""The many-clients scenarios of issue 10: a closed loop of 1,000 clients, and think time.

Clients are threads of worker processes (``_load_worker.py``, started by path with this
interpreter): ``processes`` x ``threads``, one user per client, each with its own seeded
tasks. An implementation's run: seed, start the workers, let them connect and warm up for
``warmup_s``, measure ``duration_s``, collect, clean up. Implementations alternate within a
run (the order rotates from run to run), so a ratio compares two back-to-back measurements.

Measured per run and implementation: calls completed in the window per second, latency of
every call started in the window (p50/p90/p99/max, overall and per operation, failed calls
included), errors by type, the client processes' CPU per call, server sessions opened in the
window (``pg_stat_database.sessions`` and the pools' own counters) and how busy the machine's
CPUs were.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg2.extensions import connection
from psycopg2.extras import execute_values

from .config import LOAD_MIX, LOAD_PAGE, BenchConfig
from .measure import percentiles, spread
from .wire import StatementTemplate

__all__ = ["LoadTarget", "machine_cpu", "run_load"]

_WORKER = Path(__file__).with_name("_load_worker.py")
_READY_TIMEOUT_S = 120.0
#: Operations whose calls need one of the client's own tasks.
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LoadTarget:
    """Where the workers connect: directly, or through PgBouncer."""

    name: str  # "direct" or "pgbouncer"
    url: str = ""  # SQLAlchemy URL with the password (taskcore, tutorial)
    connect_params: Mapping[str, Any] | None = None  # psycopg2.connect(**params) (raw)
    description: str = ""
    skipped: str | None = None  # why this target is not measured


def machine_cpu() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far (Linux /proc/stat), or None."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(x) for x in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return sum(ticks) - idle, sum(ticks)


def _busy_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] == before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def _server_sessions(seeder: connection) -> int | None:
    """pg_stat_database.sessions of this database (PostgreSQL 14+), fresh snapshot."""
    if seeder.server_version < 140000:
        return None
    with seeder.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        row = cur.fetchone()
    return int(row[0]) if row else None


class _Worker:
    """One worker process, driven over its stdin/stdout."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.send(job)

    def send(self, message: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(30)
            raise RuntimeError(f"a load worker exited with code {code} (its stderr is above)")
        message: dict[str, Any] = json.loads(line)
        return message

    def finish(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _seed(seeder: connection, users: Sequence[str], per_user: int) -> dict[str, list[int]]:
    """``per_user`` tasks for each user (untimed); their ids by user."""
    rows = [(f"seeded {i}", "load test", user) for user in users for i in range(per_user)]
    with seeder.cursor() as cur:
        got = execute_values(
            cur,
            "INSERT INTO tasks (title, description, user_id) VALUES %s RETURNING id, user_id",
            rows,
            page_size=1000,
            fetch=True,
        )
    ids: dict[str, list[int]] = {user: [] for user in users}
    for task_id, user in got:
        ids[str(user)].append(int(task_id))
    return ids


_ACTIVITY = """
SELECT count(*) FILTER (WHERE state = 'active'), count(*)
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
"""
#: How often the window samples what the server's sessions are doing.
_SAMPLE_EVERY_S = 0.1


def _sample_activity(seeder: connection, until: float) -> dict[str, float | int | None]:
    """Until ``until``: how many of the database's sessions are running a statement.

    A session that is open but not active is idle in a client's pool or checked out by a
    client that is not sending anything (busy in Python, or waiting for the GIL): a
    low share with clients queueing for connections means the clients are the limit.
    """
    active: list[int] = []
    total: list[int] = []
    while time.monotonic() < until:
        with seeder.cursor() as cur:
            cur.execute(_ACTIVITY)
            row = cur.fetchone()
        if row is not None:
            active.append(int(row[0]))
            total.append(int(row[1]))
        _sleep_until(min(until, time.monotonic() + _SAMPLE_EVERY_S))
    if not total:
        return {"samples": 0, "sessions": None, "active_mean": None, "active_pct": None}
    sessions = statistics.mean(total)
    mean_active = statistics.mean(active)
    return {
        "samples": len(total),
        "sessions": round(sessions, 1),
        "active_mean": round(mean_active, 2),
        "active_pct": round(100 * mean_active / sessions, 1) if sessions else None,
    }


def _sleep_until(moment: float) -> None:
    """Wait for a scheduled moment of the monotonic clock (the measuring window's edges)."""
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _one_run(
    *,
    impl: str,
    target: LoadTarget,
    config: BenchConfig,
    seeder: connection,
    templates: Mapping[str, StatementTemplate],
    users_prefix: str,
    think_mean_s: float,
    duration_s: float,
    warmup_s: float,
    pool_size: int | None,
    seed: int,
) -> dict[str, Any]:
    """One implementation's run: seed, start workers, measure the window, collect, clean up."""
    procs, threads = config.load_processes, config.load_threads
    users = [[f"{users_prefix}-p{p}-c{t}" for t in range(threads)] for p in range(procs)]
    ids = _seed(seeder, [u for group in users for u in group], config.load_seed_tasks)
    workers: list[_Worker] = []
    try:
        for p in range(procs):
            job: dict[str, Any] = {
                "impl": impl,
                "url": target.url,
                "connect_params": dict(target.connect_params or {}),
                "pool_size": pool_size,
                "users": users[p],
                "task_ids": {u: ids[u] for u in users[p]},
                "templates": {op: t.as_dict() for op, t in templates.items()},
                "mix": [list(pair) for pair in LOAD_MIX],
                "think_mean_s": think_mean_s,
                "page": LOAD_PAGE,
                "seed": seed * 1000 + p,
            }
            workers.append(_Worker(job))
        started = time.monotonic()
        for worker in workers:
            worker.read()  # {"ready": ...}: threads created, waiting for go
            if time.monotonic() - started > _READY_TIMEOUT_S:
                raise RuntimeError("load workers did not get ready in time")
        t0 = time.monotonic() + 0.05
        w0, w1 = t0 + warmup_s, t0 + warmup_s + duration_s
        for worker in workers:
            worker.send({"go": t0, "window": [w0, w1]})
        _sleep_until(w0)
        sessions0, cpu0 = _server_sessions(seeder), machine_cpu()
        activity = _sample_activity(seeder, w1)
        sessions1, cpu1 = _server_sessions(seeder), machine_cpu()
        results = [worker.read() for worker in workers]
    finally:
        for worker in workers:
            worker.finish()
        with seeder.cursor() as cur:
            cur.execute("DELETE FROM tasks WHERE user_id LIKE %s", (users_prefix + "-%",))
    summary = _summarise_run(
        results,
        duration_s=duration_s,
        sessions=(sessions0, sessions1),
        busy=_busy_pct(cpu0, cpu1),
    )
    summary["server_activity"] = activity
    return summary


def _summarise_run(
    results: Sequence[Mapping[str, Any]],
    *,
    duration_s: float,
    sessions: tuple[int | None, int | None],
    busy: float | None,
) -> dict[str, Any]:
    ops = [op for op, _ in LOAD_MIX]
    completed = {op: sum(int(r["completed"][op]) for r in results) for op in ops}
    total = sum(completed.values())
    by_op: dict[str, Any] = {}
    everything: list[float] = []
    for op in ops:
        values = [us / 1e6 for r in results for us in r["latencies_us"][op]]
        everything.extend(values)
        by_op[op] = {"calls": len(values), **percentiles(values)}
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r["errors"].items():
            errors[name] = errors.get(name, 0) + int(count)
    s0, s1 = sessions
    server_sessions = None if s0 is None or s1 is None else s1 - s0
    opened = sum(int(r["opened"]) for r in results)
    return {
        "ops_per_s": round(total / duration_s, 1),
        "completed": total,
        "calls_started_in_window": len(everything),
        "latency": percentiles(everything),
        "by_operation": by_op,
        "errors": errors,
        "error_count": sum(errors.values()),
        "client_cpu_us_per_op": round(1e6 * sum(float(r["cpu_s"]) for r in results) / total, 1)
        if total
        else None,
        "server_sessions_opened": server_sessions,
        "pool_sessions_opened": opened,
        "sessions_opened_per_30s": round(
            30 * (server_sessions if server_sessions is not None else opened) / duration_s, 1
        ),
        "pool_at_end": [r["pool_at_end"] for r in results],
        "machine_cpu_busy_pct": busy,
        "stuck_threads": sum(int(r["stuck_threads"]) for r in results),
    }


def run_load(
    *,
    kind: str,
    target: LoadTarget,
    impls: Sequence[str],
    config: BenchConfig,
    seeder: connection,
    templates: Mapping[str, StatementTemplate],
    prefix: str,
    pool_size: int | None,
    default_pool_size: int,
    say: Progress,
) -> dict[str, Any]:
    """``kind`` "closed" (no think time) or "think"; every implementation ``runs`` times."""
    closed = kind == "closed"
    runs = config.load_runs if closed else config.think_runs
    duration = config.load_duration_s if closed else config.think_duration_s
    warmup = config.load_warmup_s if closed else config.think_warmup_s
    think = 0.0 if closed else config.think_mean_s
    result: dict[str, Any] = {
        "target": target.name,
        "via": target.description,
        "clients": config.clients,
        "processes": config.load_processes,
        "threads_per_process": config.load_threads,
        "think_mean_s": think,
        "duration_s": duration,
        "warmup_s": warmup,
        "pool_size_per_process": pool_size,
        "list_page": LOAD_PAGE,
        "pool_size_note": (
            f"every implementation: {pool_size} connections per process"
            if pool_size is not None
            else f"each implementation's default pool (taskcore and raw: {default_pool_size} per "
            "process; tutorial: SQLAlchemy's 5 + 10 overflow)"
        ),
        "implementations": list(impls),
        "runs": [],
    }
    if target.skipped:
        result["skipped"] = target.skipped
        return result
    for r in range(runs):
        order = list(impls[r % len(impls) :]) + list(impls[: r % len(impls)])
        run: dict[str, Any] = {"run": r + 1, "order": order}
        for impl in order:
            size = pool_size
            if size is None and impl.startswith("raw_"):
                size = default_pool_size
            run[impl] = _one_run(
                impl=impl,
                target=target,
                config=config,
                seeder=seeder,
                templates=templates,
                users_prefix=f"{prefix}-{kind[0]}{target.name[0]}{r}{impl[0]}",
                think_mean_s=think,
                duration_s=duration,
                warmup_s=warmup,
                pool_size=size,
                seed=r,
            )
            got = run[impl]
            say(
                f"  {kind} {target.name} run {r + 1}/{runs} {impl:<13} "
                f"{got['ops_per_s']:8.0f} ops/s  p50 {_ms(got['latency']['p50_ms'])}  "
                f"p99 {_ms(got['latency']['p99_ms'])}  max {_ms(got['latency']['max_ms'])}  "
                f"errors {got['error_count']}  sessions/30s {got['sessions_opened_per_30s']:g}  "
                f"active {got['server_activity']['active_pct']}% of "
                f"{got['server_activity']['sessions']} sessions  cpu {got['machine_cpu_busy_pct']}%"
            )
        if "raw_psycopg2" in run:
            raw = run["raw_psycopg2"]
            for impl in impls:
                if impl == "raw_psycopg2":
                    continue
                mine = run[impl]
                mine["ratio_vs_raw"] = _ratio(mine["ops_per_s"], raw["ops_per_s"])
                mine["p99_ratio_vs_raw"] = _ratio(
                    mine["latency"]["p99_ms"], raw["latency"]["p99_ms"]
                )
        result["runs"].append(run)
    result["summary"] = _summary(result["runs"], impls)
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:7.1f} ms"


def _over(
    rows: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], float | None]
) -> dict[str, float] | None:
    values = [v for v in (get(row) for row in rows) if v is not None]
    return spread(values) if values else None


def _p99_of(op: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda row: row["by_operation"][op]["p99_ms"]


def _summary(runs: Sequence[Mapping[str, Any]], impls: Sequence[str]) -> dict[str, Any]:
    """min / median / max over runs of each implementation's numbers, and of the ratios."""
    out: dict[str, Any] = {}
    for impl in impls:
        rows = [run[impl] for run in runs]
        entry: dict[str, Any] = {
            "ops_per_s": _over(rows, lambda row: row["ops_per_s"]),
            "p50_ms": _over(rows, lambda row: row["latency"]["p50_ms"]),
            "p99_ms": _over(rows, lambda row: row["latency"]["p99_ms"]),
            "max_ms": _over(rows, lambda row: row["latency"]["max_ms"]),
            "errors": sum(int(row["error_count"]) for row in rows),
            "client_cpu_us_per_op": _over(rows, lambda row: row["client_cpu_us_per_op"]),
            "sessions_opened_per_30s": _over(rows, lambda row: row["sessions_opened_per_30s"]),
            "machine_cpu_busy_pct": _over(rows, lambda row: row["machine_cpu_busy_pct"]),
            "server_sessions_active_pct": _over(
                rows, lambda row: row["server_activity"]["active_pct"]
            ),
            "p99_ms_by_operation": {op: _over(rows, _p99_of(op)) for op, _ in LOAD_MIX},
        }
        if impl != "raw_psycopg2" and all("ratio_vs_raw" in row for row in rows):
            entry["ratio_vs_raw"] = _over(rows, lambda row: row["ratio_vs_raw"])
            entry["p99_ratio_vs_raw"] = _over(rows, lambda row: row["p99_ratio_vs_raw"])
        out[impl] = entry
    return out

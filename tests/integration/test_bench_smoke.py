"""The benchmark (tests/bench.py) keeps working: every scenario runs in a tiny mode.

Only the deterministic columns are asserted (round trips counted on the wire, calls that
completed, errors), never times: a change that adds a round trip to an operation, or breaks
the benchmark, fails here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from _pgbouncer import find_pgbouncer
from _pgserver import PgTarget
from benchmarks import BenchConfig, Database, markdown, render, run_benchmark
from benchmarks.placement import placed

pytestmark = pytest.mark.postgres

_OPS = {"create_task", "get_task", "get_tasks", "update_task", "toggle_complete", "delete_task"}


@pytest.fixture(scope="module")
def results(pg: PgTarget) -> dict[str, Any]:
    """One tiny benchmark run against the suite's server (real retry waits for recovery)."""
    db = Database.from_url(pg.url, "pytest")
    assert (db.host, db.port) == (pg.host, pg.port)
    return run_benchmark(db, BenchConfig.tiny(), progress=lambda message: None)


def _rt(row: dict[str, Any], implementation: str) -> Any:
    return row["round_trips"][implementation]["round_trips"]


@pytest.mark.real_waits
def test_one_shots_cost_exactly_one_round_trip(results: dict[str, Any]) -> None:
    """taskcore and the raw psycopg2 baseline: 1 each; the tutorial pattern pays more."""
    rows = {row["operation"]: row for row in results["one_shots"]}
    assert set(rows) == _OPS
    for op, row in rows.items():
        assert _rt(row, "taskcore") == 1, (op, row["round_trips"]["taskcore"]["wire"])
        assert _rt(row, "raw_psycopg2") == 1, op
        assert _rt(row, "tutorial") > 1, op
        assert row["round_trips"]["taskcore"]["new_connections"] == 0, op
        assert row["round_trips_pass"] is True
        assert set(row["loopback"]["ops_per_s"]) == {
            "taskcore",
            "raw_psycopg2",
            "tutorial",
            "raw_wait_callback",
        }
        assert set(row["link"]["ops_per_s"]) == {"taskcore", "raw_psycopg2", "tutorial"}
        cpu = row["loopback"]["cpu"]["us_per_op"]
        assert cpu["taskcore"]["median"] > 0 and cpu["raw_psycopg2"]["median"] > 0, op
        assert row["loopback"]["judged"] is True and row["loopback_shared"]["judged"] is False
    assert results["placements"]["loopback"]["placement"] == "split"
    assert results["placements"]["loopback_shared"]["placement"] == "shared"


@pytest.mark.real_waits
def test_baseline_replays_taskcores_own_sql(results: dict[str, Any]) -> None:
    """The raw baseline's statements are the ones captured from taskcore's hot path."""
    sql = results["sql"]
    assert {"create_task", "get_task", "get_tasks", "update_task", "toggle_complete"} <= set(sql)
    assert "ON CONFLICT" in sql["create_task"]
    assert "task_operations" in sql["update_task"] and "task_operations" in sql["delete_task"]
    assert results["wait_callback"] is not None  # taskcore installed its deadline callback
    # The reads replay with the same bound values: the same statement on the wire, byte for byte
    # (a baseline reading no row, e.g. "tasks.id = NULL", would be unfairly fast).
    for row in results["one_shots"]:
        if row["kind"] == "read":
            wires = row["round_trips"]
            assert wires["raw_psycopg2"]["wire"] == wires["taskcore"]["wire"], row["operation"]
        # Every side's call found its row: a write bound to a row it cannot match (e.g. another
        # owner's task) writes nothing and would look unfairly fast.
        for name, count in row["round_trips"].items():
            assert count["found"] is True, (row["operation"], name, count["wire"])


@pytest.mark.real_waits
def test_units_of_work_cost_k_plus_2(results: dict[str, Any]) -> None:
    """BEGIN + k + COMMIT (+1 commit ticket for a writing unit when protection is on)."""
    units = results["units_of_work"]
    assert [u["statements"] for u in units if not u["read_only"]] == [1, 3, 10]
    for unit in units:
        k = unit["statements"]
        assert _rt(unit, "raw_psycopg2") == k + 2
        if unit["read_only"]:
            assert _rt(unit, "taskcore") == k + 2
            continue
        ticket = 1 if unit["commit_protection"] else 0
        assert _rt(unit, "taskcore") == k + 2 + ticket
        if ticket:
            assert unit["round_trips_without_commit_protection"]["round_trips"] == k + 2


@pytest.mark.real_waits
def test_bulk_round_trips_and_recovery(results: dict[str, Any]) -> None:
    """create_many: one INSERT per 1,000 rows inside BEGIN/COMMIT; recovery succeeds."""
    bulk = results["bulk"]
    pages = math.ceil(bulk["n"] / 1000)
    ticket = 1 if bulk["commit_protection"] else 0
    assert bulk["round_trips"]["raw_psycopg2"]["round_trips"] == pages + 2
    assert bulk["round_trips"]["taskcore"]["round_trips"] == pages + 2 + ticket
    assert bulk["loopback"]["seconds"]["taskcore"]["median"] > 0
    assert results["recovery"]["ok"] is True


def _check_load(load: dict[str, Any], impls: set[str]) -> None:
    assert load["summary"].keys() == impls
    for run in load["runs"]:
        for impl in impls:
            got = run[impl]
            assert got["completed"] > 0, (impl, got)
            assert got["error_count"] == 0, (impl, got["errors"])
            assert got["stuck_threads"] == 0
            assert got["latency"]["p99_ms"] is not None
            assert set(got["by_operation"]) == {
                "get_task",
                "get_tasks",
                "create_task",
                "toggle_complete",
                "update_task",
            }
    assert "ratio_vs_raw" in load["summary"]["taskcore"]


@pytest.mark.real_waits
def test_many_clients_closed_loop_and_think_time(results: dict[str, Any]) -> None:
    """Both many-clients scenarios complete calls on every side, with no errors."""
    impls = {"taskcore", "raw_psycopg2"}
    direct = results["load"]["direct"]
    assert direct["clients"] == 2 * 4
    _check_load(direct, impls)
    bouncer = results["load"]["pgbouncer"]
    if find_pgbouncer() is None:
        assert "skipped" in bouncer
    else:
        _check_load(bouncer, impls)
    _check_load(results["think_time"], impls)


@pytest.mark.real_waits
def test_report_and_json(results: dict[str, Any], tmp_path: Path) -> None:
    """The text and Markdown reports render and the results survive a JSON round trip."""
    text = render(results)
    assert "create_task" in text and "Recovery" in text and "create_many" in text
    assert "closed loop" in text and "think time" in text and "Targets" in text
    assert "| operation |" in markdown(results)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(results))
    assert json.loads(path.read_text())["machine"]["cpu_count"] >= 1


def _server_cpus(conn: Any) -> set[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
    return os.sched_getaffinity(pid)


@pytest.mark.parametrize("placement", ["split", "shared"])
def test_placement_pins_both_sides_and_restores_them(pg: PgTarget, placement: str) -> None:
    """The single-client phases' CPU pinning: as named while it lasts, as before afterwards;
    a backend forked while pinned (it inherits the postmaster's mask) is restored too."""
    db = Database.from_url(pg.url, "pytest")
    seeder = db.connect()
    try:
        client_before, server_before = os.sched_getaffinity(0), _server_cpus(seeder)
        with placed(placement, seeder) as where:
            if not where["controlled"]:
                pytest.skip(f"CPU placement not controllable here: {where['reason']}")
            assert os.sched_getaffinity(0) == {where["client_cpu"]}
            assert _server_cpus(seeder) == {where["server_cpu"]}
            assert (where["client_cpu"] == where["server_cpu"]) is (placement == "shared")
            forked = db.connect()  # a new backend, forked by the pinned postmaster
            assert _server_cpus(forked) == {where["server_cpu"]}
        assert os.sched_getaffinity(0) == client_before
        assert _server_cpus(seeder) == server_before
        assert _server_cpus(forked) == server_before
        forked.close()
    finally:
        seeder.close()

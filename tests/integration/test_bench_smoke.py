"""The benchmark (tests/bench.py) keeps working: every scenario runs in a tiny mode.

Only the deterministic columns are asserted (round trips counted on the wire), never times:
a change that adds a round trip to an operation, or breaks the benchmark, fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from _pgserver import PgTarget
from benchmarks import BenchConfig, Database, render, run_benchmark

pytestmark = pytest.mark.postgres


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
    assert set(rows) == {
        "create_task",
        "get_task",
        "get_tasks",
        "update_task",
        "toggle_complete",
        "delete_task",
    }
    for op, row in rows.items():
        assert _rt(row, "taskcore") == 1, (op, row["round_trips"]["taskcore"]["wire"])
        assert _rt(row, "raw_psycopg2") == 1, op
        assert _rt(row, "tutorial") > 1, op
        assert row["round_trips"]["taskcore"]["new_connections"] == 0, op
        assert row["round_trips_pass"] is True
        for phase in ("loopback", "link"):
            assert set(row[phase]["ops_per_s"]) == {"taskcore", "raw_psycopg2", "tutorial"}


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
    assert bulk["loopback"]["seconds"]["taskcore"] > 0
    assert results["recovery"]["ok"] is True


@pytest.mark.real_waits
def test_report_and_json(results: dict[str, Any], tmp_path: Path) -> None:
    """The table renders and the results survive a JSON round trip."""
    text = render(results)
    assert "create_task" in text and "Recovery" in text and "Bulk" in text
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(results))
    assert json.loads(path.read_text())["machine"]["cpu_count"] >= 1

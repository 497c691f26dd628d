"""The purge of operation keys reads a bounded number of index entries however many live keys
the table holds (issue 10: "purge in small bounded batches that never put a spike on a caller").

The statement is the library's own (``_statements.purge_keys``, the same DELETE that keyed writes
carry as a CTE); EXPLAIN ANALYZE runs it for real and reports how many rows of task_operations
each scan read, which is the cost that must not grow with the table.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql

from _db import PostgresDb
from taskcore import _statements as sql

pytestmark = pytest.mark.postgres

_LIVE = 20_000  # of each kind: far more than a purge may read
#: Index entries one purge may read: each of its two parts stops after PURGE_BATCH rows, and
#: each key it deletes is then found once through the primary key.
_BOUND = 4 * sql.PURGE_BATCH + 10


def _add_keys(db: PostgresDb, count: int, *, version: str, age: str) -> None:
    """``count`` keys of UUID ``version`` ("4": generated per call, "5": a caller's) aged ``age``."""
    db.query(
        "INSERT INTO task_operations (key, created_at) "
        "SELECT overlay(gen_random_uuid()::text placing %s from 15 for 1), "
        "now() - %s::interval - n * interval '1 millisecond' FROM generate_series(1, %s) AS n",
        (version, age, count),
    )


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows of task_operations read by every scan in ``plan`` (kept or filtered out)."""
    read = 0
    if plan.get("Relation Name") == "task_operations":
        per_loop = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        read += per_loop * plan.get("Actual Loops", 1)
    for child in plan.get("Plans", []):
        read += _rows_read(child)
    return read


def _purge(db: PostgresDb) -> tuple[int, int]:
    """Run the library's purge once: (keys it deleted, task_operations rows it read)."""
    compiled = sql.purge_keys("postgresql").compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    before = db.scalar("SELECT count(*) FROM task_operations")
    ((result,),) = db.query("EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), compiled.params)
    plan = (json.loads(result) if isinstance(result, str) else result)[0]["Plan"]
    return before - db.scalar("SELECT count(*) FROM task_operations"), _rows_read(plan)


@pytest.fixture
def keys(pg_db: PostgresDb) -> PostgresDb:
    pg_db.query("DELETE FROM task_operations")
    return pg_db


def test_a_purge_with_nothing_expired_reads_almost_nothing(keys: PostgresDb) -> None:
    """20,000 young generated keys and 20,000 caller keys an hour old: nothing to delete, and
    the purge must not walk past them to find that out."""
    _add_keys(keys, _LIVE, version="5", age="1 hour")
    _add_keys(keys, _LIVE, version="4", age="1 minute")
    keys.query("ANALYZE task_operations")
    deleted, read = _purge(keys)
    assert deleted == 0
    assert read <= 10, f"a purge with nothing expired read {read} keys"


def test_a_purge_deletes_the_oldest_expired_batch_of_each_kind_in_bounded_reads(
    keys: PostgresDb,
) -> None:
    """Expired keys of both kinds lie behind (generated) and among (caller) 40,000 live ones:
    one purge deletes the PURGE_BATCH oldest expired of each kind and reads about that many."""
    _add_keys(keys, 150, version="5", age="2 days")  # caller keys past their day
    _add_keys(keys, _LIVE, version="5", age="2 hours")  # caller keys kept (< 1 day)
    _add_keys(keys, 150, version="4", age="20 minutes")  # generated keys past 10 minutes
    _add_keys(keys, _LIVE, version="4", age="1 minute")  # generated keys kept
    keys.query("ANALYZE task_operations")
    deleted, read = _purge(keys)
    assert deleted == 2 * sql.PURGE_BATCH
    assert read <= _BOUND, f"one purge read {read} keys (bound {_BOUND})"
    # Only expired keys went, and the oldest of each kind first.
    left = dict(
        keys.query(
            "SELECT substr(key, 15, 1) || (created_at < now() - interval '10 minutes')::text, "
            "count(*) FROM task_operations GROUP BY 1"
        )
    )
    assert left == {"5true": _LIVE + 50, "4true": 50, "4false": _LIVE}
    assert (
        keys.scalar(
            "SELECT count(*) FROM task_operations WHERE created_at < now() - interval '1 day'"
        )
        == 50
    )

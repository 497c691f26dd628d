"""Chaos: random faults at every phase, from several processes; exactly-once invariants hold.

Soak run (longer, same invariants): ``CHAOS_OPS=50000 python3 tests/run.py tests/resilience -k chaos -s``
Replay a failing run: ``CHAOS_SEED=<seed printed by the failure> python3 tests/run.py ...``
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

import psycopg2
import pytest

import taskcore
from _db import PostgresDb
from _pgserver import PgTarget
from taskcore import Task, TaskCreate, UnitOfWork, events
from taskcore.testing import FlakyProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROCESSES = 2
OPS = int(os.environ.get("CHAOS_OPS", "2000"))  # in total, across processes
SEED = int(os.environ.get("CHAOS_SEED", "20261123"))
SHARED_TASKS = 8
FAULTS = {
    "p_reset_per_statement": 0.02,  # link cut mid-transaction or mid-statement
    "p_cut_after_commit": 0.05,  # COMMIT applied, reply lost
    "p_lose_reply": 0.03,  # any statement applied (autocommit writes!), reply lost
    "p_cut_mid_result": 0.03,  # link cut while rows stream back
    "p_refuse_connect": 0.05,  # connection refused (compute waking up)
}


@dataclass
class Log:
    """What one worker saw: outcomes per operation, as the caller would know them."""

    creates: dict[str, str] = field(default_factory=dict)  # title -> ack | absent | unknown
    created_ids: dict[str, int] = field(default_factory=dict)  # acknowledged creates
    units: dict[str, str] = field(default_factory=dict)  # marker -> ack | absent | unknown
    deletes: dict[int, str] = field(default_factory=dict)  # task id -> ack | absent | unknown
    toggles_acked: Counter[int] = field(default_factory=Counter)
    toggles_unknown: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    escapes: list[str] = field(default_factory=list)  # anything that is not a taskcore error
    counters: dict[str, int] = field(default_factory=dict)


def _outcome(error: BaseException) -> str:
    """'unknown' when the error says the outcome is unknown, else 'absent' (not applied)."""
    assert isinstance(error, taskcore.TaskcoreError)
    return "absent" if error.outcome_known else "unknown"


def _worker(number: int, url: str, shared: list[int], ops: int, seed: int, out: Queue[Log]) -> None:
    """Run a seeded random mix of one-shots and multi-step units; report what was seen."""
    taskcore.configure(
        database_url=url,
        retry_attempts=8,
        deadline=10,
        retry_wait_initial=0.002,
        retry_wait_max=0.05,
        retry_wait_jitter=0.01,
        retry_budget=False,  # at these fault rates the budget would fail calls fast instead
    )
    rng = random.Random(seed)
    log = Log()
    mine: list[int] = []
    events.reset_counters()
    for i in range(ops):
        choice = rng.random()
        target = rng.choice(shared)
        try:
            if choice < 0.30:
                title = f"c-{number}-{i}"
                log.creates[title] = "unknown"  # until we know better
                task = taskcore.create_task(TaskCreate(title=title), user_id="chaos")
                log.creates[title] = "ack"
                log.created_ids[title] = task.id
                mine.append(task.id)
            elif choice < 0.55:
                taskcore.toggle_complete(target, user_id="chaos")
                log.toggles_acked[target] += 1
            elif choice < 0.80:
                marker = f"u-{number}-{i}"
                log.units[marker] = "unknown"

                def unit(uow: UnitOfWork, marker: str = marker, target: int = target) -> None:
                    uow.tasks.create(TaskCreate(title=marker + "-a"), user_id="chaos")
                    uow.tasks.toggle_complete(target, user_id="chaos")
                    uow.tasks.create(TaskCreate(title=marker + "-b"), user_id="chaos")

                UnitOfWork.run(unit)
                log.units[marker] = "ack"
                log.toggles_acked[target] += 1
            elif choice < 0.90 and mine:
                victim = mine.pop(rng.randrange(len(mine)))
                log.deletes[victim] = "unknown"
                assert taskcore.delete_task(victim, user_id="chaos") is True
                log.deletes[victim] = "ack"
            else:
                assert len(taskcore.get_tasks(user_id="chaos")) >= SHARED_TASKS
        except taskcore.TaskcoreError as error:
            log.errors[type(error).__name__] += 1
            outcome = _outcome(error)
            if choice < 0.30:
                log.creates[title] = outcome
            elif choice < 0.55:
                if outcome == "unknown":
                    log.toggles_unknown[target] += 1
            elif choice < 0.80:
                log.units[marker] = outcome
                if outcome == "unknown":
                    log.toggles_unknown[target] += 1
            elif choice < 0.90 and log.deletes.get(victim) == "unknown":
                log.deletes[victim] = outcome
        except Exception as error:  # noqa: BLE001 - an escape is exactly what we look for
            log.escapes.append(f"{type(error).__module__}.{type(error).__name__}")
    log.counters = events.counters()
    out.put(log)


def _rows(pg: PgTarget, sql: str) -> list[tuple[Any, ...]]:
    """Read through a direct connection to the server, bypassing the proxy and taskcore."""
    conn = psycopg2.connect(pg.url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _toggle(uow: UnitOfWork, task_id: int) -> Task:
    """Toggle one task inside a unit of work."""
    return uow.tasks.toggle_complete(task_id)


def test_chaos_every_acknowledged_operation_applies_exactly_once(
    pg: PgTarget, pg_db: PostgresDb
) -> None:
    """Under random faults at every phase, from 2 processes, the exactly-once invariants hold.

    Acknowledged creates exist once, units are whole (0 or 2 rows, 2 when acknowledged),
    acknowledged deletes are gone, every failure was a typed error, operations reported as
    not applied left nothing behind, and each shared task's completed flag equals the parity
    of its acknowledged toggles (allowing only for toggles reported as unknown).
    """
    shared = [
        taskcore.create_task(TaskCreate(title=f"shared-{n}"), user_id="chaos").id
        for n in range(SHARED_TASKS)
    ]
    ctx = multiprocessing.get_context("fork")
    out: Queue[Log] = ctx.Queue()
    with FlakyProxy(pg.host, pg.port, seed=SEED) as proxy:
        proxy.set_random_faults(**FAULTS)
        workers = [
            ctx.Process(
                target=_worker,
                args=(n, proxy.url(pg.url), shared, OPS // PROCESSES, SEED + n, out),
            )
            for n in range(PROCESSES)
        ]
        for w in workers:
            w.start()
        logs: list[Log] = [out.get(timeout=600) for _ in workers]
        for w in workers:
            w.join(timeout=60)
        faults = proxy.stats.faults
    titles = Counter(title for (title,) in _rows(pg, "SELECT title FROM tasks"))
    completed = dict(_rows(pg, "SELECT id, completed FROM tasks WHERE title LIKE 'shared-%'"))
    present = {task_id for (task_id,) in _rows(pg, "SELECT id FROM tasks")}

    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    for log in logs:
        problems += [f"escaped: {name}" for name in log.escapes]
        for title, outcome in log.creates.items():
            outcomes[outcome] += 1
            allowed = {"ack": {1}, "absent": {0}, "unknown": {0, 1}}[outcome]
            deleted = log.deletes.get(log.created_ids.get(title, -1))
            if deleted is not None:  # this worker later deleted it: ack'd delete means gone
                allowed = {"ack": {0}, "absent": {1}, "unknown": {0, 1}}[deleted]
            if titles[title] not in allowed:
                problems.append(f"create {title} {outcome}: {titles[title]} rows")
        for marker, outcome in log.units.items():
            outcomes[outcome] += 1
            found = (titles[marker + "-a"], titles[marker + "-b"])
            allowed_units = {"ack": {(1, 1)}, "absent": {(0, 0)}, "unknown": {(0, 0), (1, 1)}}
            if found not in allowed_units[outcome]:
                problems.append(f"unit {marker} {outcome}: rows {found}")
        for task_id, outcome in log.deletes.items():
            outcomes[outcome] += 1
            if outcome == "ack" and task_id in present:
                problems.append(f"delete {task_id} acknowledged but the row is there")
            if outcome == "absent" and task_id not in present:
                problems.append(f"delete {task_id} reported not applied but the row is gone")
    for task_id in shared:
        acked = sum(log.toggles_acked[task_id] for log in logs)
        unknown = sum(log.toggles_unknown[task_id] for log in logs)
        parities = {(acked + k) % 2 == 1 for k in range(unknown + 1)}
        if completed[task_id] not in parities:
            problems.append(f"task {task_id}: completed={completed[task_id]}, {acked} acked")
    counters = Counter[str]()
    for log in logs:
        counters.update(log.counters)
    errors = Counter[str]()
    for log in logs:
        errors.update(log.errors)
    print(
        f"\nchaos: {OPS} operations from {PROCESSES} processes, seed {SEED}, {faults} faults "
        f"fired; outcomes {dict(outcomes)}; toggles acked "
        f"{sum(sum(log.toggles_acked.values()) for log in logs)}; errors {dict(errors)}; "
        f"retries {counters['retries']}, lost commits resolved "
        f"{counters['commits_resolved_committed']} committed / "
        f"{counters['commits_resolved_aborted']} aborted"
    )
    assert faults > OPS * 0.05, "the proxy must really have injected faults"
    assert not problems, f"seed {SEED}: " + "; ".join(problems[:20])


def test_200_lost_replies_in_a_row_apply_each_write_exactly_once(
    pg: PgTarget, pg_db: PostgresDb
) -> None:
    """Cutting the link right after every COMMIT/write 200 times: each task created once,
    each toggled task toggled once."""
    with FlakyProxy(pg.host, pg.port) as proxy:
        taskcore.configure(database_url=proxy.url(pg.url))
        created = []
        for i in range(200):
            proxy.cut_after_reply()  # the autocommit INSERT lands; its reply is lost
            created.append(taskcore.create_task(TaskCreate(title=f"once-{i}"), user_id="u"))
        for task in created[:100]:
            proxy.cut_after_reply()
            assert taskcore.toggle_complete(task.id).completed is True
        for task in created[100:]:
            proxy.cut_after_commit()  # the unit's COMMIT lands; its reply is lost
            UnitOfWork.run(functools.partial(_toggle, task_id=task.id))
        assert proxy.faults_fired == 400
    titles = Counter(title for (title,) in _rows(pg, "SELECT title FROM tasks"))
    assert all(titles[f"once-{i}"] == 1 for i in range(200))
    assert len(titles) == 200
    assert _rows(pg, "SELECT count(*) FROM tasks WHERE completed") == [(200,)]

"""Helpers for the fleet tests: run workers in real processes, and the workers themselves.

Workers live at module level so that every start method can run them ('fork' copies them,
'spawn' and ProcessPoolExecutor import this module by name; pytest puts tests/ (this folder) on
sys.path and a spawned child inherits it). A worker takes its index first, reports a
picklable payload, and reports what it saw (backend pids, acknowledged operations, typed
errors, retries); the test checks the database itself through an independent connection.

Synchronisation is by multiprocessing primitives (Barrier, Queue) and polling with deadlines;
nothing waits a fixed time and hopes.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import random
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.context import BaseContext
from threading import Barrier  # multiprocessing's Barrier is one too
from typing import Any

from sqlalchemy import func, select

import taskcore
from taskcore import RetryPolicy, TaskcoreError, TaskCreate, TaskUpdate, UnitOfWork

FLEET_TIMEOUT_S = 90.0  # upper bound for a whole fleet; the tests finish far sooner
BARRIER_TIMEOUT_S = 30.0

#: Serializable units under contention: many quick, jittered attempts (waits are real in the
#: children of tests marked real_waits).
CONTENTION_POLICY = RetryPolicy(attempts=200, wait_initial=0.002, wait_max=0.05, wait_jitter=0.02)


# ---------------------------------------------------------------------------- running a fleet


def _child_main(
    target: Callable[..., Any], index: int, args: tuple[Any, ...], results: Any
) -> None:
    """Run one worker and report ("ok", index, payload) or ("error", index, traceback)."""
    try:
        payload = target(index, *args)
    except BaseException:  # noqa: BLE001 - every failure must reach the parent as text
        results.put(("error", index, traceback.format_exc()))
    else:
        results.put(("ok", index, payload))


def run_fleet(
    ctx: BaseContext,
    target: Callable[..., Any],
    args_per_worker: Sequence[tuple[Any, ...]],
    *,
    timeout: float = FLEET_TIMEOUT_S,
) -> list[Any]:
    """Start one process per args tuple, wait for every report, and return the payloads in order.

    A worker that raised fails the test with its traceback; one that died without reporting
    (killed, crashed) fails it at once; the whole fleet has ``timeout`` seconds.
    """
    results = ctx.Queue()
    processes = [
        ctx.Process(  # type: ignore[attr-defined]
            target=_child_main, args=(target, i, args, results), name=f"fleet-{i}", daemon=True
        )
        for i, args in enumerate(args_per_worker)
    ]
    for process in processes:
        process.start()
    payloads: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(payloads) < len(processes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"fleet did not finish in {timeout}s; got {sorted(payloads)}")
            try:
                kind, index, payload = results.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                dead = [
                    p.name
                    for i, p in enumerate(processes)
                    if i not in payloads and p.exitcode not in (None, 0)
                ]
                if dead:
                    raise AssertionError(f"workers died without reporting: {dead}") from None
                continue
            if kind == "error":
                raise AssertionError(f"worker {index} failed:\n{payload}")
            payloads[index] = payload
    finally:
        for process in processes:
            process.join(timeout=max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        results.close()
        results.join_thread()
    return [payloads[i] for i in range(len(processes))]


# ---------------------------------------------------------------------------- in a worker


def start_worker(url: str | None) -> None:
    """Prepare a worker process: zero taskcore's counters; configure it if ``url`` is given.

    A forked worker passes None: it keeps the settings it inherited, and taskcore must notice
    the fork by itself. A spawned worker starts empty and must be told the database.
    """
    logger = logging.getLogger("taskcore")
    logger.handlers[:] = [logging.NullHandler()]  # counted below, not printed
    logger.propagate = False  # pytest's handlers are of no use in a child
    taskcore.events.reset_counters()  # a forked child starts with a copy of the parent's
    if url is not None:
        taskcore.configure(database_url=url)


def finish_worker(tally: Tally) -> Tally:
    """Attach this process's taskcore counters (retries, gave_up_*, budget_exhausted...)."""
    tally.events = Counter(taskcore.events.counters())
    return tally


def wait_at(barrier: Barrier | None) -> None:
    """Line up with the other workers, so that they really run at the same time."""
    if barrier is not None:
        barrier.wait(timeout=BARRIER_TIMEOUT_S)


@dataclass(frozen=True)
class ConnectionSeen:
    """Who answered a unit of work: the server backend pid and our socket's local TCP port.

    Through PgBouncer the backend changes per transaction, but the client socket is ours: a
    child that reused a parent's pooled connection would show the parent's local port.
    """

    backend_pid: int
    local_port: int


def connection_seen(uow: UnitOfWork) -> ConnectionSeen:
    """Ask the server which backend runs this unit, and read our socket's local port."""
    pid = uow.session.scalar(select(func.pg_backend_pid()))
    dbapi = uow.session.connection().connection.dbapi_connection
    assert dbapi is not None and pid is not None
    with socket.socket(fileno=os.dup(dbapi.fileno())) as sock:
        local_port = int(sock.getsockname()[1])
    return ConnectionSeen(backend_pid=int(pid), local_port=local_port)


def hold_connections(n: int) -> list[ConnectionSeen]:
    """Run ``n`` units of work at once (``n`` pooled connections) and say who answered each."""
    with contextlib.ExitStack() as stack:
        units = [stack.enter_context(UnitOfWork()) for _ in range(n)]
        return [connection_seen(uow) for uow in units]


# ---------------------------------------------------------------------------- fork safety


@dataclass
class ForkReport:
    """What a child of the fork-safety test did and saw."""

    os_pid: int
    seen: list[ConnectionSeen]
    created: list[int]


def fork_child_work(index: int, url: str | None) -> ForkReport:
    """Do real work in a child (one-shots and units of work) and report who answered."""
    start_worker(url)
    created = [
        taskcore.create_task(TaskCreate(title=f"child {index} #{i}"), user_id="fork").id
        for i in range(3)
    ]
    taskcore.toggle_complete(created[0])
    seen = hold_connections(2)
    seen.append(UnitOfWork.run(connection_seen))
    gc.collect()  # finalisers of anything inherited run now, while the parent still checks
    return ForkReport(os_pid=os.getpid(), seen=seen, created=created)


def fork_pool_job(job: int) -> tuple[int, list[ConnectionSeen], int]:
    """One job of a process pool: create a task, report (os pid, who answered, task id)."""
    task = taskcore.create_task(TaskCreate(title=f"pool job {job}"), user_id="fork")
    seen = [UnitOfWork.run(connection_seen)]
    gc.collect()
    return os.getpid(), seen, task.id


# ---------------------------------------------------------------------------- concurrency


@dataclass
class Tally:
    """What one worker got acknowledged, per task and per kind, and what went wrong."""

    toggles: Counter[int] = field(default_factory=Counter)
    ops: int = 0
    unit_attempts: int = 0
    unit_runs: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    last_written: dict[tuple[int, str], str] = field(default_factory=dict)
    pairs_committed: list[str] = field(default_factory=list)
    pairs_aborted: list[str] = field(default_factory=list)
    counter_titles: list[str] = field(default_factory=list)
    seen_orders: dict[str, list[int]] = field(default_factory=dict)

    @property
    def reruns(self) -> int:
        """Whole-unit re-runs by UnitOfWork.run (attempts beyond the first of each call)."""
        return self.unit_attempts - self.unit_runs


def _attempt(tally: Tally, call: Callable[[], Any]) -> tuple[bool, Any]:
    """Make one call: (True, result) when acknowledged, (False, None) on a typed taskcore error."""
    tally.ops += 1
    try:
        result = call()
    except TaskcoreError as error:
        tally.errors[type(error).__name__] += 1
        return False, None
    return True, result


def _run_unit(tally: Tally, fn: Callable[[UnitOfWork], Any], **kwargs: Any) -> tuple[bool, Any]:
    """UnitOfWork.run(fn, **kwargs), counting attempts: (acknowledged, fn's result)."""

    def counted(uow: UnitOfWork) -> Any:
        tally.unit_attempts += 1
        return fn(uow)

    try:
        return _attempt(tally, lambda: UnitOfWork.run(counted, **kwargs))
    finally:
        tally.unit_runs += 1  # whatever the outcome, even fn's own exception


def _two_toggles(a: int, b: int) -> Callable[[UnitOfWork], None]:
    """A unit of work toggling ``a`` and ``b`` (a < b: rows are locked in one global order,
    so such units cannot deadlock each other) with a read in between."""

    def unit(uow: UnitOfWork) -> None:
        uow.tasks.toggle_complete(a)
        uow.tasks.get(b)
        uow.tasks.toggle_complete(b)

    return unit


def toggle_worker(
    index: int, url: str | None, task_ids: list[int], m: int, seed: int, barrier: Barrier | None
) -> Tally:
    """Toggle the shared tasks ``m`` times: one-shot toggles and two-toggle units of work."""
    start_worker(url)
    rng = random.Random(seed)
    tally = Tally()
    wait_at(barrier)
    done = 0
    while done < m:
        if rng.random() < 0.5 or m - done < 2:
            task_id = rng.choice(task_ids)
            if _attempt(tally, partial(taskcore.toggle_complete, task_id))[0]:
                tally.toggles[task_id] += 1
            done += 1
        else:
            a, b = sorted(rng.sample(task_ids, 2))
            if _run_unit(tally, _two_toggles(a, b))[0]:
                tally.toggles[a] += 1
                tally.toggles[b] += 1
            done += 2
    return finish_worker(tally)


def _number(value: str | None) -> int | None:
    """The sequence number of a written value such as ``title#7``."""
    return int(value.rsplit("#", 1)[1]) if value and "#" in value else None


def field_writer(
    index: int, url: str | None, task_id: int, role: str, m: int, barrier: Barrier | None
) -> Tally:
    """Write one field of one task ``m`` times: ``title``, ``description`` or ``toggle``.

    Values are numbered (``title#7``). From every row an update returns, record the numbers of
    both text fields, so the test can check that no field ever went backwards.
    """
    start_worker(url)
    tally = Tally()
    orders: dict[str, list[int]] = {"title": [], "description": []}
    wait_at(barrier)
    for i in range(m):
        if role == "toggle":
            call = partial(taskcore.toggle_complete, task_id)
        else:
            call = partial(
                taskcore.update_task, task_id, TaskUpdate.model_validate({role: f"{role}#{i}"})
            )
        acknowledged, row = _attempt(tally, call)
        if not acknowledged:
            continue
        if role == "toggle":
            tally.toggles[task_id] += 1
        else:
            tally.last_written[(task_id, role)] = f"{role}#{i}"
        for name, value in (("title", row.title), ("description", row.description)):
            number = _number(value)
            if number is not None:
                orders[name].append(number)
    tally.seen_orders = orders
    return finish_worker(tally)


def counter_unit(uow: UnitOfWork, user_id: str, barrier: Barrier | None = None) -> str:
    """Read how many tasks ``user_id`` has, then create one titled with that number."""
    n = len(uow.tasks.list(user_id=user_id))
    wait_at(barrier)  # with a barrier, every unit has read before any writes: a write skew
    return uow.tasks.create(TaskCreate(title=str(n)), user_id=user_id).title


def serializable_counter_worker(
    index: int,
    url: str | None,
    user_id: str,
    n: int,
    barrier: Barrier | None,
    skew: Barrier | None,
) -> Tally:
    """Run ``n`` serializable counter units; with ``skew``, the very first attempt lines up
    with the other workers between its read and its write (re-runs never wait)."""
    start_worker(url)
    tally = Tally()
    wait_at(barrier)
    for k in range(n):
        before = tally.unit_attempts

        def unit(uow: UnitOfWork, k: int = k, before: int = before) -> str:
            first_attempt = k == 0 and tally.unit_attempts == before + 1
            return counter_unit(uow, user_id, skew if first_attempt else None)

        acknowledged, title = _run_unit(
            tally, unit, isolation="serializable", policy=CONTENTION_POLICY
        )
        if acknowledged:
            tally.counter_titles.append(title)
    return finish_worker(tally)


# ---------------------------------------------------------------------------- stress


@dataclass(frozen=True)
class StressPlan:
    """The shared layout of a stress run; every worker gets the same plan."""

    hot_ids: list[int]  # toggled by everyone; title and description each have one owner
    processes: int
    ops_per_process: int
    pair_user: str = "pairs"
    counter_user: str = "counter"

    def title_owner(self, position: int) -> int:
        """Which worker writes the title of hot task number ``position``."""
        return position % self.processes

    def description_owner(self, position: int) -> int:
        """Which worker writes the description of hot task number ``position``."""
        return (position + 1) % self.processes


class _AbortError(Exception):
    """Raised inside a pair unit on purpose: the unit must leave nothing behind."""


def stress_worker(
    index: int, url: str | None, plan: StressPlan, seed: int, barrier: Barrier | None
) -> Tally:
    """A random mix of every kind of operation, each acknowledged one recorded in the tally."""
    start_worker(url)
    rng = random.Random(seed)
    tally = Tally()
    hot = plan.hot_ids
    my_fields = [("title", t) for p, t in enumerate(hot) if plan.title_owner(p) == index] + [
        ("description", t) for p, t in enumerate(hot) if plan.description_owner(p) == index
    ]
    wait_at(barrier)
    for op in range(plan.ops_per_process):
        roll = rng.random()
        if roll < 0.35:  # a one-shot toggle
            task_id = rng.choice(hot)
            if _attempt(tally, partial(taskcore.toggle_complete, task_id))[0]:
                tally.toggles[task_id] += 1
        elif roll < 0.50:  # two toggles and a read in one unit of work
            a, b = sorted(rng.sample(hot, 2))
            if _run_unit(tally, _two_toggles(a, b))[0]:
                tally.toggles[a] += 1
                tally.toggles[b] += 1
        elif roll < 0.65 and my_fields:  # a partial update of a field only I write
            name, task_id = rng.choice(my_fields)
            value = f"{name} w{index} #{op}"
            update = TaskUpdate.model_validate({name: value})
            if _attempt(tally, partial(taskcore.update_task, task_id, update))[0]:
                tally.last_written[(task_id, name)] = value
        elif roll < 0.82:  # two tasks sharing a marker in one unit; a third abort midway
            marker = f"w{index}-{op}"
            try:
                committed = _run_unit(
                    tally, _pair(marker, plan.pair_user, abort=rng.random() < 0.33)
                )[0]
            except _AbortError:
                tally.pairs_aborted.append(marker)
            else:
                if committed:
                    tally.pairs_committed.append(marker)
        elif roll < 0.92:  # a serializable read-then-write counter unit
            acknowledged, title = _run_unit(
                tally,
                partial(counter_unit, user_id=plan.counter_user),
                isolation="serializable",
                policy=CONTENTION_POLICY,
            )
            if acknowledged:
                tally.counter_titles.append(title)
        elif roll < 0.96:  # a read-only unit of work
            _run_unit(tally, lambda uow: uow.tasks.list(user_id=plan.pair_user), read_only=True)
        else:  # a one-shot read
            _attempt(tally, partial(taskcore.get_task, rng.choice(hot)))
    return finish_worker(tally)


def _pair(marker: str, user_id: str, *, abort: bool) -> Callable[[UnitOfWork], None]:
    """A unit creating two tasks that share ``marker``; with ``abort`` it raises in between."""

    def unit(uow: UnitOfWork) -> None:
        uow.tasks.create(TaskCreate(title="pair a", description=marker), user_id=user_id)
        if abort:
            raise _AbortError(marker)
        uow.tasks.create(TaskCreate(title="pair b", description=marker), user_id=user_id)

    return unit

"""One process of the many-clients scenarios (run by path by :mod:`benchmarks.load`).

Reads one JSON job from stdin, starts ``threads`` client threads (one user each) that wait,
prints ``{"ready": ...}``, waits for ``{"go": t0}``, then every client calls the job's
implementation in a loop (with exponential think time when ``think_mean_s`` > 0) until the
measured window ends. Prints one JSON line of results and exits. Times are
``time.monotonic()`` (CLOCK_MONOTONIC: one clock for all processes of the machine).

Clients: ``taskcore`` (one ``taskcore.Database`` per process, ``pool_size`` connections),
``raw_psycopg2`` (taskcore's own SQL on a minimal blocking pool of the same size, no wait
callback) and ``tutorial`` (the SQLModel tutorial pattern on a SQLAlchemy engine).
"""

from __future__ import annotations

import collections
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for benchmarks.wire

import psycopg2
import psycopg2.extensions

from benchmarks.wire import StatementTemplate

DESCRIPTION = "load test"
#: Longest wait for a pooled connection (taskcore's default deadline).
_WAIT_S = 30.0
_OPEN = object()  # handed to a waiter: "open a connection yourself"
Call = Callable[[int, int], object]  # (call number, task id) -> result


class Client:
    """One implementation's calls for one user."""

    def __init__(self, user: str) -> None:
        self.user = user

    def calls(self) -> dict[str, Call]:
        raise NotImplementedError


# -- taskcore ---------------------------------------------------------------------------------


class TaskcoreSide:
    """One handle per process, shared by its client threads (as an application would)."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        import taskcore

        settings = dict(job.get("settings") or {})
        if job.get("pool_size"):
            settings["pool_size"] = int(job["pool_size"])
        self.taskcore = taskcore
        self.page = int(job["page"])
        self.db = taskcore.Database(str(job["url"]), **settings)

    def client(self, user: str) -> Client:
        from taskcore import TaskCreate, TaskUpdate

        db, page = self.db, self.page

        class _Client(Client):
            def calls(self) -> dict[str, Call]:
                return {
                    "get_task": lambda i, task_id: db.get_task(task_id, user_id=user),
                    "get_tasks": lambda i, task_id: db.get_tasks(user_id=user, limit=page),
                    "create_task": lambda i, task_id: db.create_task(
                        TaskCreate(title=f"load {i}", description=DESCRIPTION), user_id=user
                    ),
                    "toggle_complete": lambda i, task_id: db.toggle_complete(task_id, user_id=user),
                    "update_task": lambda i, task_id: db.update_task(
                        task_id, TaskUpdate(title=f"updated {i}"), user_id=user
                    ),
                }

        return _Client(user)

    def opened(self) -> int:
        return int(self.db.stats().opened)

    def pool(self) -> dict[str, int]:
        stats = self.db.stats()
        return {"open": stats.open, "in_use": stats.in_use, "waiting": stats.waiting}

    def close(self) -> None:
        self.db.close()


# -- raw psycopg2 -------------------------------------------------------------------------------


class RawPool:
    """The smallest fair blocking pool: at most ``size`` connections, opened on demand, kept
    open; a returned connection goes straight to the longest-waiting thread (first come,
    first served), so no caller is starved while others take turns."""

    def __init__(self, params: Mapping[str, Any], size: int) -> None:
        self._params = dict(params)
        self._lock = threading.Lock()
        self._idle: collections.deque[Any] = collections.deque()
        self._waiters: collections.deque[list[Any]] = collections.deque()  # [event, conn]
        self._size = size
        self._made = 0
        self._opened = 0

    def _acquire(self) -> Any:
        with self._lock:
            if not self._waiters and self._idle:
                return self._idle.pop()
            make = not self._waiters and self._made < self._size
            if make:
                self._made += 1
            else:
                waiter: list[Any] = [threading.Event(), None]
                self._waiters.append(waiter)
        if make:
            return self._acquire_new()
        if not waiter[0].wait(_WAIT_S):
            with self._lock:
                if waiter[1] is None and waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise TimeoutError("no pooled connection within 30 s")
        if waiter[1] is _OPEN:
            return self._acquire_new()
        return waiter[1]

    def _acquire_new(self) -> Any:
        try:
            conn = psycopg2.connect(**self._params)
        except BaseException:
            self._release(None)
            raise
        conn.autocommit = True
        with self._lock:
            self._opened += 1
        return conn

    def _release(self, conn: Any) -> None:
        """Hand ``conn`` (None: the right to open one) to the oldest waiter, or keep it."""
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter[1] = _OPEN if conn is None else conn
                waiter[0].set()
                return
            if conn is None:
                self._made -= 1
            else:
                self._idle.append(conn)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self._acquire()
        try:
            yield conn
        except psycopg2.Error:
            if conn.closed:
                self._release(None)
                raise
            self._release(conn)
            raise
        except BaseException:
            self._release(conn)
            raise
        self._release(conn)

    @property
    def opened(self) -> int:
        """Connections opened so far (each a server session)."""
        return self._opened

    @property
    def open(self) -> int:
        """Connections open now."""
        return self._made

    def close(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for conn in idle:
            conn.close()


class RawSide:
    """taskcore's captured statements, replayed on a :class:`RawPool` of the same size.

    ``raw_wait_callback``: the same with taskcore's psycopg2 wait callback installed, to see
    what the callback costs with hundreds of threads.
    """

    def __init__(self, job: Mapping[str, Any]) -> None:
        if job["impl"] == "raw_wait_callback":
            from taskcore._deadline import install_wait_callback

            install_wait_callback()
        elif psycopg2.extensions.get_wait_callback() is not None:
            raise RuntimeError("the raw baseline must run without a psycopg2 wait callback")
        self.templates = {
            op: StatementTemplate.from_dict(data) for op, data in job["templates"].items()
        }
        self.pool_obj = RawPool(job["connect_params"], int(job["pool_size"]))

    def client(self, user: str) -> Client:
        pool, templates = self.pool_obj, self.templates

        def one(op: str, **values: Any) -> list[tuple[Any, ...]]:
            template = templates[op]
            args = template.bind(user=user, **values)
            with pool.connection() as conn, conn.cursor() as cur:
                cur.execute(template.sql, args)
                rows: list[tuple[Any, ...]] = cur.fetchall()
                return rows

        class _Client(Client):
            def calls(self) -> dict[str, Call]:
                return {
                    "get_task": lambda i, task_id: one("get_task", task_id=task_id),
                    "get_tasks": lambda i, task_id: one("get_tasks_page"),
                    "create_task": lambda i, task_id: one("create_task", title=f"load {i}"),
                    "toggle_complete": lambda i, task_id: one("toggle_complete", task_id=task_id),
                    "update_task": lambda i, task_id: one(
                        "update_task", task_id=task_id, title=f"updated {i}"
                    ),
                }

        return _Client(user)

    def opened(self) -> int:
        return self.pool_obj.opened

    def pool(self) -> dict[str, int]:
        return {"open": self.pool_obj.open}

    def close(self) -> None:
        self.pool_obj.close()


# -- SQLModel tutorial ------------------------------------------------------------------------


class TutorialSide:
    """A Session per call on one engine per process (pool_pre_ping=True, as the tutorial)."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        from sqlalchemy import create_engine, event

        options: dict[str, Any] = {"pool_pre_ping": True}
        if job.get("pool_size"):
            options.update(pool_size=int(job["pool_size"]), max_overflow=0, pool_timeout=30)
        self.engine = create_engine(str(job["url"]), **options)
        self.page = int(job["page"])
        self._opened = 0
        self._lock = threading.Lock()

        def connected(dbapi_connection: Any, record: Any) -> None:
            with self._lock:
                self._opened += 1

        event.listen(self.engine, "connect", connected)

    def client(self, user: str) -> Client:
        from datetime import UTC, datetime

        from sqlmodel import Session, col, select

        from taskcore import Task

        engine, page = self.engine, self.page

        def get(task_id: int) -> object:
            with Session(engine) as session:
                task = session.get(Task, task_id)
                return task if task is not None and task.user_id == user else None

        def listing() -> object:
            with Session(engine) as session:
                statement = (
                    select(Task).where(col(Task.user_id) == user).order_by(col(Task.id)).limit(page)
                )
                return list(session.exec(statement).all())

        def create(i: int) -> object:
            with Session(engine) as session:
                fields: dict[str, Any] = {"title": f"load {i}", "description": DESCRIPTION}
                task = Task(**fields, user_id=user)
                session.add(task)
                session.commit()
                session.refresh(task)
                return task

        def modify(task_id: int, change: Callable[[Task], object]) -> object:
            with Session(engine) as session:
                task = session.get(Task, task_id)
                if task is None or task.user_id != user:
                    raise LookupError(task_id)
                change(task)
                task.updated_at = datetime.now(UTC)
                session.add(task)
                session.commit()
                session.refresh(task)
                return task

        def flip(task: Task) -> None:
            task.completed = not task.completed

        class _Client(Client):
            def calls(self) -> dict[str, Call]:
                return {
                    "get_task": lambda i, task_id: get(task_id),
                    "get_tasks": lambda i, task_id: listing(),
                    "create_task": lambda i, task_id: create(i),
                    "toggle_complete": lambda i, task_id: modify(task_id, flip),
                    "update_task": lambda i, task_id: modify(
                        task_id, lambda task: task.sqlmodel_update({"title": f"updated {i}"})
                    ),
                }

        return _Client(user)

    def opened(self) -> int:
        with self._lock:
            return self._opened

    def pool(self) -> dict[str, int]:
        pool: Any = self.engine.pool
        return {"open": int(pool.checkedin() + pool.checkedout())}

    def close(self) -> None:
        self.engine.dispose()


SIDES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "taskcore": TaskcoreSide,
    "raw_psycopg2": RawSide,
    "raw_wait_callback": RawSide,
    "tutorial": TutorialSide,
}


# -- the clients ------------------------------------------------------------------------------


class Recorder:
    """What one client thread saw: latencies of calls started in the window, completions."""

    __slots__ = ("completed", "errors", "latencies")

    def __init__(self, ops: list[str]) -> None:
        self.latencies: dict[str, list[int]] = {op: [] for op in ops}  # µs, ok or not
        self.completed: dict[str, int] = dict.fromkeys(ops, 0)
        self.errors: dict[str, int] = {}


def run_client(
    client: Client,
    task_ids: list[int],
    mix: list[tuple[str, float]],
    *,
    seed: int,
    think_mean_s: float,
    start: threading.Event,
    stop: threading.Event,
    window: list[float],
    recorder: Recorder,
) -> None:
    """Call until the window closes: closed loop, or exponential think time between calls."""
    rng = random.Random(seed)
    calls = client.calls()
    ops = [op for op, _ in mix]
    weights = [share for _, share in mix]
    start.wait()
    w0, w1 = window
    i = 0
    while not stop.is_set():
        op = rng.choices(ops, weights)[0]
        task_id = rng.choice(task_ids)
        began = time.monotonic()
        if began >= w1:
            break
        try:
            calls[op](i, task_id)
            ok = True
        except Exception as exc:  # noqa: BLE001 - counted and reported: errors are a result
            name = type(exc).__name__
            recorder.errors[name] = recorder.errors.get(name, 0) + 1
            ok = False
        ended = time.monotonic()
        i += 1
        if began >= w0:
            recorder.latencies[op].append(round(1e6 * (ended - began)))
        if ok and w0 <= ended < w1:
            recorder.completed[op] += 1
        if think_mean_s > 0:
            stop.wait(rng.expovariate(1.0 / think_mean_s))


def _send(message: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _wait_until(moment: float, stop: threading.Event) -> None:
    """Block until the monotonic clock reaches ``moment`` (a scheduled time, not a sync)."""
    stop.wait(max(0.0, moment - time.monotonic()))


def main() -> None:
    """Run one job from stdin; results to stdout."""
    job = json.loads(sys.stdin.readline())
    side = SIDES[str(job["impl"])](job)
    mix = [(str(op), float(share)) for op, share in job["mix"]]
    users: list[str] = list(job["users"])
    task_ids: dict[str, list[int]] = {u: list(ids) for u, ids in job["task_ids"].items()}
    start, stop = threading.Event(), threading.Event()
    window = [0.0, 0.0]
    recorders = [Recorder([op for op, _ in mix]) for _ in users]
    threads = [
        threading.Thread(
            target=run_client,
            args=(side.client(user), task_ids[user], mix),
            kwargs={
                "seed": int(job["seed"]) * 100_003 + n,
                "think_mean_s": float(job["think_mean_s"]),
                "start": start,
                "stop": stop,
                "window": window,
                "recorder": recorders[n],
            },
            name=f"client-{n}",
            daemon=True,
        )
        for n, user in enumerate(users)
    ]
    for thread in threads:
        thread.start()
    _send({"ready": True, "pid": os.getpid()})
    go = json.loads(sys.stdin.readline())
    window[0], window[1] = float(go["window"][0]), float(go["window"][1])
    start.set()
    wake = threading.Event()  # never set: the main thread only waits for scheduled times
    _wait_until(window[0], wake)
    cpu0, opened0 = time.process_time(), side.opened()
    _wait_until(window[1], wake)
    cpu1, opened1 = time.process_time(), side.opened()
    pool_at_end = side.pool()
    stop.set()
    grace = float(job.get("join_timeout_s", 60.0))
    for thread in threads:
        thread.join(grace)
    stuck = sum(thread.is_alive() for thread in threads)
    latencies: dict[str, list[int]] = {op: [] for op, _ in mix}
    completed: dict[str, int] = {op: 0 for op, _ in mix}
    errors: dict[str, int] = {}
    for recorder in recorders:
        for op, values in recorder.latencies.items():
            latencies[op].extend(values)
        for op, count in recorder.completed.items():
            completed[op] += count
        for name, count in recorder.errors.items():
            errors[name] = errors.get(name, 0) + count
    side.close()
    _send(
        {
            "latencies_us": latencies,
            "completed": completed,
            "errors": errors,
            "cpu_s": cpu1 - cpu0,
            "opened": opened1 - opened0,
            "opened_total": opened1,
            "pool_at_end": pool_at_end,
            "stuck_threads": stuck,
        }
    )


if __name__ == "__main__":
    main()

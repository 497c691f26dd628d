"""A worker that drains a queue of task operations with taskcore. Copy it and adapt it.

Run it (the database comes from DATABASE_URL, never from the command line, where other users
could read it in the process list)::

    DATABASE_URL=postgresql://... python src/examples/queue_worker.py jobs.jsonl --workers 4
    producer | python src/examples/queue_worker.py - --workers 4   # a long-running consumer

Each input line is one job, as JSON; ``id`` is optional and echoed in the result::

    {"id": "j1", "op": "create", "user_id": "u1", "title": "Buy milk", "key": "order-17"}
    {"id": "j2", "op": "update", "task_id": 7, "title": "Buy oat milk"}
    {"id": "j3", "op": "toggle", "task_id": 7}
    {"id": "j4", "op": "delete", "task_id": 7}

Each job runs in its own unit of work through ``UnitOfWork.run``, which re-runs the whole unit
when it failed before COMMIT was sent (a dropped connection, a cold start, a serialization
failure or deadlock), so a job lands once or not at all. Give creates a ``key`` (an
idempotency key): a job delivered twice, or re-enqueued after an unknown outcome, then returns
the task the first delivery stored instead of making a duplicate. One JSON result line per job
goes to stdout: ``status`` is ``ok``, ``failed`` (nothing was applied: not found, invalid,
database unavailable...) or ``unknown`` (the connection died while COMMIT was in flight and the
outcome could not be resolved: the job may or may not have been applied; re-enqueue it only if
it is keyed or otherwise safe to repeat). A summary goes to stderr. SIGTERM or Ctrl-C stops the
reading of input; jobs already accepted are finished; then the workers and the parent exit with
status 0 (1 if any outcome is unknown).

Recipes
=======

taskcore keeps one engine (connection pool) per process, built on first use, and notices a
fork by itself: a child never touches a pooled connection of its parent (it starts a pool of
its own) and the parent's connections stay open and usable. Nothing to do before or after a
fork; ``taskcore.dispose()`` is optional hygiene (it closes this process's idle connections
now instead of at exit). Never pass a ``UnitOfWork``, a ``Task`` being edited or a session to
another process: pass plain data (ids, dicts) and let each process run its own units.

multiprocessing with fork (the Linux default before Python 3.14)::

    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(handle_job, jobs)

multiprocessing with spawn or forkserver (macOS and Windows; Linux from 3.14 uses
forkserver): each child is a fresh interpreter that reads DATABASE_URL from the environment it
inherits. If the parent configured taskcore in code instead, repeat that in an initializer::

    with multiprocessing.get_context("spawn").Pool(
        4, initializer=configure_worker, initargs=(database_url,)
    ) as pool:
        results = pool.map(handle_job, jobs)

concurrent.futures: the same, with the executor's initializer::

    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn"),
                             initializer=configure_worker, initargs=(database_url,)) as ex:
        results = list(ex.map(handle_job, jobs))

A long-running consumer loop (:func:`consume`): one ``UnitOfWork.run`` per job; never hold a
unit of work open while waiting for the next job (an idle open transaction pins a server
connection, and behind Neon's pooled endpoint a PgBouncer server slot). Shut down gracefully:
here the parent turns SIGTERM/SIGINT into "stop reading, then one sentinel per worker", and the
workers ignore those signals, finish the jobs already accepted and exit at the sentinel. A
consumer of an external queue (Redis, SQS...) would instead set a flag in its signal handler
and check it between jobs. Size pools for the whole fleet: ``processes x
(TASKCORE_POOL_SIZE + TASKCORE_POOL_MAX_OVERFLOW)`` connections at most, which must fit the
server's ``max_connections``; or use Neon's pooled (``-pooler``) endpoint, which taskcore
supports as is (transaction pooling: no session state is relied on).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from multiprocessing.context import BaseContext
from types import FrameType
from typing import IO, Any

import taskcore
from taskcore import (
    CommitOutcomeUnknownError,
    TaskcoreError,
    TaskCreate,
    TaskUpdate,
    UnitOfWork,
)

Job = Mapping[str, Any]
Result = dict[str, Any]

_UPDATABLE = ("title", "description", "completed")


class BadJobError(ValueError):
    """The job itself is malformed (unknown op, missing field); nothing was sent."""


def apply_job(uow: UnitOfWork, job: Job) -> Result:
    """Apply one job inside ``uow``; return what the caller should know about the result."""
    op = job.get("op")
    user_id = job.get("user_id")
    try:
        if op == "create":
            data = TaskCreate(title=job["title"], description=job.get("description"))
            task = uow.tasks.create(data, user_id=job["user_id"], idempotency_key=job.get("key"))
        elif op == "update":
            changes = {name: job[name] for name in _UPDATABLE if name in job}
            task = uow.tasks.update(job["task_id"], TaskUpdate(**changes), user_id=user_id)
        elif op == "toggle":
            task = uow.tasks.toggle_complete(job["task_id"], user_id=user_id)
        elif op == "delete":
            return {"deleted": uow.tasks.delete(job["task_id"], user_id=user_id)}
        else:
            raise BadJobError(f"unknown op {op!r}")
    except KeyError as missing:
        raise BadJobError(f"{op} job lacks {missing}") from None
    return {"task_id": task.id, "completed": task.completed}


def handle_job(job: Job) -> Result:
    """Run one job in its own unit of work (re-run whole on a transient failure); never raises.

    This is the function to hand to ``Pool.map`` or ``ProcessPoolExecutor.map``.
    """
    result: Result = {"id": job.get("id"), "op": job.get("op")}
    try:
        result |= UnitOfWork.run(lambda uow: apply_job(uow, job))
    except CommitOutcomeUnknownError:
        # Applied or not: only a look at the data can tell. Never re-run it blindly.
        result |= {"status": "unknown", "error": "CommitOutcomeUnknownError"}
    except (TaskcoreError, BadJobError) as error:
        # Sanitised errors: the message names the problem, never a password or the input.
        result |= {"status": "failed", "error": type(error).__name__, "message": str(error)}
    else:
        result["status"] = "ok"
    return result


def configure_worker(database_url: str | None = None) -> None:
    """Pool/executor initializer for spawn and forkserver children configured in code.

    With fork, or with DATABASE_URL in the environment, no initializer is needed.
    """
    if database_url is not None:
        taskcore.configure(database_url=database_url)


def run_with_pool(
    jobs: Iterable[Job],
    *,
    processes: int = 4,
    start_method: str = "fork",
    database_url: str | None = None,
) -> list[Result]:
    """The Pool recipe: run ``jobs`` on ``processes`` workers, results in input order."""
    ctx = multiprocessing.get_context(start_method)
    with ctx.Pool(processes, initializer=configure_worker, initargs=(database_url,)) as pool:
        return pool.map(handle_job, list(jobs), chunksize=8)


# -- the long-running consumer -------------------------------------------------------------

_DONE = "done"


def consume(jobs: Any, results: Any) -> None:
    """Worker process: take jobs until the None sentinel, put one result per job.

    The parent coordinates shutdown, so a worker ignores SIGINT (Ctrl-C reaches the whole
    process group) and SIGTERM (systemd signals every process of the unit): it finishes the
    jobs already accepted, which the bounded queue keeps few, and stops at the sentinel. If
    the parent dies without sending one, the worker notices and stops too.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    try:
        while True:
            try:
                job = jobs.get(timeout=0.5)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    break
                continue
            if job is None:
                break
            results.put(handle_job(job))
    finally:
        taskcore.dispose()  # optional hygiene: close this process's pooled connections now
        results.put((_DONE, os.getpid()))


def read_jobs(stream: IO[str]) -> Iterator[tuple[Job | None, Result | None]]:
    """Parse JSON lines into (job, None); a line that is not a JSON object gives (None, result)
    with a failed result at once."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except json.JSONDecodeError:
            job = None
        if isinstance(job, dict):
            yield job, None
        else:
            yield None, {"id": f"line {number}", "status": "failed", "error": "BadJobError",
                         "message": "not a JSON object"}


class Feeder(threading.Thread):
    """Reads jobs and queues them, until the input ends or :meth:`stop` is called."""

    def __init__(self, stream: IO[str], jobs: Any, results: Any, workers: int) -> None:
        """Feed ``jobs`` from ``stream``; malformed lines go straight to ``results``."""
        super().__init__(name="feeder", daemon=True)  # daemon: it may sit in readline() forever
        self.stream, self.jobs, self.results, self.workers = stream, jobs, results, workers
        self._lock = threading.Lock()
        self._closed = False

    def run(self) -> None:
        """Queue each job (blocking while the queue is full), then close the queue."""
        for job, refused in read_jobs(self.stream):
            with self._lock:
                if self._closed:
                    return
                if job is None:
                    self.results.put(refused)
                else:
                    self.jobs.put(job)
        self.stop()

    def stop(self) -> None:
        """Accept no more input; queue one sentinel per worker after what was accepted."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in range(self.workers):
                    self.jobs.put(None)


def serve(
    stream: IO[str], out: IO[str], *, workers: int, ctx: BaseContext
) -> tuple[Counter[str], str]:
    """Run the consumer fleet over ``stream``; print results to ``out``; return (counts, why)."""
    jobs = ctx.Queue(maxsize=workers * 2)  # bounded: input is read only as fast as it is used
    results = ctx.Queue()
    processes = [
        ctx.Process(target=consume, args=(jobs, results), name=f"worker-{i}")  # type: ignore[attr-defined]
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    feeder = Feeder(stream, jobs, results, workers)
    feeder.start()

    stopped_by: list[str] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopped_by.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    counts: Counter[str] = Counter()
    done: set[int] = set()
    try:
        while len(done) < workers:
            if stopped_by:
                feeder.stop()
            try:
                item = results.get(timeout=0.2)
            except queue.Empty:
                crashed = [p.name for p in processes if p.exitcode not in (None, 0)]
                if crashed:
                    raise RuntimeError(f"workers crashed: {crashed}") from None
                continue
            if isinstance(item, tuple) and item[0] == _DONE:
                done.add(item[1])
                continue
            counts[item["status"]] += 1
            out.write(json.dumps(item) + "\n")
            out.flush()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        feeder.stop()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    return counts, stopped_by[0] if stopped_by else "end of input"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description="Drain a JSON-lines queue of task operations.")
    parser.add_argument("jobs", help="a JSON-lines file of jobs, or - for standard input")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--start-method", choices=multiprocessing.get_all_start_methods(),
                        default=None, help="multiprocessing start method (default: Python's)")
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context(args.start_method)
    started = time.monotonic()
    # Create the table if it is missing (idempotent). The parent has now used its pool before
    # starting workers: with fork, taskcore keeps the two apart by itself.
    taskcore.init_db()
    if args.jobs == "-":
        counts, why = serve(sys.stdin, sys.stdout, workers=args.workers, ctx=ctx)
    else:
        with open(args.jobs, encoding="utf-8") as stream:
            counts, why = serve(stream, sys.stdout, workers=args.workers, ctx=ctx)
    summary = {"processed": sum(counts.values()), **counts, "stopped_by": why,
               "seconds": round(time.monotonic() - started, 3)}
    print(json.dumps(summary), file=sys.stderr)
    return 1 if counts["unknown"] else 0


if __name__ == "__main__":
    sys.exit(main())

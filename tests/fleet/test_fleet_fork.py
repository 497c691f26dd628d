"""Process safety: a pooled connection never crosses a fork, and the parent's pool survives it.

The parent uses its pool first (so there are connections to inherit), keeps one unit of work
open across the fork, then starts 4 children that each do real work. Who answered is read from
the server (``pg_backend_pid()``) and from our own socket (its local TCP port): through
PgBouncer backends rotate per transaction, but a client socket that crossed the fork would
still show the parent's port. The children's writes are counted through an independent
connection straight to PostgreSQL.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import taskcore
from _db import Db, PostgresDb
from _fleet import (
    ConnectionSeen,
    ForkReport,
    connection_seen,
    fork_child_work,
    fork_pool_job,
    hold_connections,
    run_fleet,
    start_worker,
)
from taskcore import TaskCreate, UnitOfWork

CHILDREN = 4
PARENT_CONNECTIONS = 3


def _parent_uses_its_pool() -> list[ConnectionSeen]:
    """Open (and return to the pool) PARENT_CONNECTIONS connections; say who answered."""
    seen = hold_connections(PARENT_CONNECTIONS)
    assert len({s.local_port for s in seen}) == PARENT_CONNECTIONS
    return seen


def _assert_parent_pool_intact(db: Db, before: list[ConnectionSeen], via_pgbouncer: bool) -> None:
    """The parent's pooled connections still answer, and they are the very same connections."""
    after = hold_connections(PARENT_CONNECTIONS)
    assert {s.local_port for s in after} == {s.local_port for s in before}
    if not via_pgbouncer:
        # Directly on PostgreSQL a pooled connection is one backend: the same pids answer, and
        # the server still has every one of them (no child closed them).
        assert {s.backend_pid for s in after} == {s.backend_pid for s in before}
        alive = db.query(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)",
            ([s.backend_pid for s in before],),
        )
        assert len(alive) == PARENT_CONNECTIONS


def _assert_disjoint(
    parent: list[ConnectionSeen], children: list[ConnectionSeen], *, via_pgbouncer: bool
) -> None:
    """No connection a child used is one of the parent's."""
    assert children
    assert not {s.local_port for s in parent} & {s.local_port for s in children}
    if not via_pgbouncer:
        assert not {s.backend_pid for s in parent} & {s.backend_pid for s in children}


Children = tuple[list[int], list[ConnectionSeen], list[int]]  # os pids, who answered, tasks


def _fork_safety(db: Db, run_children: Callable[[], Children], *, workers: int = CHILDREN) -> None:
    """Parent uses its pool, keeps a unit open, runs the children; then check everything."""
    via_pgbouncer = type(db).__name__ == "PgBouncerDb"
    parent_seen = _parent_uses_its_pool()
    with UnitOfWork() as held:  # a checked-out connection, mid-transaction, across the fork
        held.tasks.create(TaskCreate(title="parent's open unit"), user_id="parent")
        held_seen = connection_seen(held)
        child_os_pids, child_seen, created = run_children()
        held.tasks.create(TaskCreate(title="parent's open unit, after"), user_id="parent")
        # Even through PgBouncer a transaction keeps its server connection to the end.
        assert connection_seen(held) == held_seen
    assert workers <= len(set(child_os_pids)) <= CHILDREN
    _assert_disjoint([*parent_seen, held_seen], child_seen, via_pgbouncer=via_pgbouncer)
    _assert_parent_pool_intact(db, parent_seen, via_pgbouncer)
    assert db.scalar("SELECT count(*) FROM tasks WHERE user_id = 'parent'") == 2
    assert db.scalar("SELECT count(*) FROM tasks WHERE user_id = 'fork'") == len(created)
    assert len(set(created)) == len(created)


def _with_processes(method: str, db: Db) -> Children:
    ctx = multiprocessing.get_context(method)
    # A forked child keeps the parent's settings and must cope alone; a spawned one is told.
    url = None if method == "fork" else db.url
    reports: list[ForkReport] = run_fleet(ctx, fork_child_work, [(url,) for _ in range(CHILDREN)])
    return (
        [r.os_pid for r in reports],
        [s for r in reports for s in r.seen],
        [t for r in reports for t in r.created],
    )


def test_forked_children_never_use_the_parents_connections(server_db: PostgresDb) -> None:
    """4 children forked from a parent that used its pool get their own connections, and the
    parent's pooled and checked-out connections still work afterwards."""
    _fork_safety(server_db, lambda: _with_processes("fork", server_db))


def test_spawned_children_never_use_the_parents_connections(server_db: PostgresDb) -> None:
    """4 spawned children get their own connections; the parent's pool still works after."""
    _fork_safety(server_db, lambda: _with_processes("spawn", server_db))


def _with_executor(method: str, url: str) -> Children:
    ctx = multiprocessing.get_context(method)
    # fork: nothing to do. spawn: the initializer tells each fresh interpreter the database.
    if method == "fork":
        executor = ProcessPoolExecutor(max_workers=CHILDREN, mp_context=ctx)
    else:
        executor = ProcessPoolExecutor(
            max_workers=CHILDREN, mp_context=ctx, initializer=start_worker, initargs=(url,)
        )
    with executor as pool:
        # More jobs than workers, so workers serve several each (reusing their own pools).
        results = list(pool.map(fork_pool_job, range(CHILDREN * 3), timeout=90))
    return (
        [pid for pid, _, _ in results],
        [s for _, seen, _ in results for s in seen],
        [t for _, _, t in results],
    )


def test_process_pool_executor_workers_never_use_the_parents_connections(
    server_db: PostgresDb,
) -> None:
    """ProcessPoolExecutor workers forked from a parent that used its pool (nothing to do)
    get their own connections; the parent's pool still works after."""
    # The executor decides which worker takes which job: at least one worker served jobs.
    _fork_safety(server_db, lambda: _with_executor("fork", server_db.url), workers=1)


def test_process_pool_executor_with_spawn_and_an_initializer(pg_db: PostgresDb) -> None:
    """ProcessPoolExecutor with spawn and an initializer that configures taskcore: workers
    get their own connections; the parent's pool still works after."""
    _fork_safety(pg_db, lambda: _with_executor("spawn", pg_db.url), workers=1)


def test_fork_hook_gives_the_child_fresh_connections_and_leaves_the_parent_alone(
    pg_db: PostgresDb,
) -> None:
    """A child forked while the parent holds a pooled connection opens its own on first use and
    never touches the parent's: the parent goes on using its pooled connection, opening none."""
    taskcore.create_task(TaskCreate(title="warm"), user_id="u")
    database = taskcore.default_database()
    before = database.stats()
    assert before.idle == 1
    ctx = multiprocessing.get_context("fork")
    [report] = run_fleet(ctx, fork_child_work, [(None,)])
    assert report.seen
    assert taskcore.get_tasks(user_id="u")  # on the same pooled connection, still alive
    assert taskcore.default_database() is database
    assert database.stats().opened == before.opened

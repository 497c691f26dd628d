"""Which CPU the benchmark process and the database server run on, for the single-client phases.

On a 2-core machine the scheduler sometimes puts the client and the server backend on the same
core and sometimes on different ones, and a loopback call costs about 3x more wall *and* client
CPU time when they are apart (a wake-up across cores) than when they share one. Left to the
scheduler, one 200-call batch of an implementation may run in one placement and the next
implementation's batch in the other: per-round ratios then range from 0.45 to 0.87 and their
median does not reproduce. So the single-client loopback phases pin both sides explicitly:

- ``split``: the benchmark on CPU 0, every process of the server on CPU 1 (a server with a
  core of its own, as a client of a remote database sees it): the judged numbers;
- ``shared``: both on CPU 0, where every µs of client CPU delays the server too: reported
  next to them, the harshest view of the client's cost.

Only a server on this machine that this process may re-pin is placed (the embedded one, or a
local one when run as root): the backend of one of the benchmark's own connections leads to its
postmaster, whose children (and later forks) are pinned with it. Otherwise the phase runs
unplaced and says why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["PLACEMENTS", "placed"]

#: placement name -> (client CPU index, server CPU index) among the CPUs this process may use.
PLACEMENTS = {"split": (0, 1), "shared": (0, 0)}


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1])


def _is_postgres(pid: int) -> bool:
    try:
        return "postgres" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def _server_processes(backend_pid: int) -> list[int] | str:
    """The postmaster serving ``backend_pid`` and all its children, or why they cannot be found."""
    if not _is_postgres(backend_pid):
        return "the server does not run on this machine (its backend is not a local process)"
    postmaster = _parent(backend_pid)
    if postmaster is None or not _is_postgres(postmaster):
        return "the server's postmaster is not visible here"
    children = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent(int(entry.name)) == postmaster
    ]
    return [postmaster, *children]


@contextlib.contextmanager
def placed(placement: str, seeder: Any) -> Iterator[dict[str, Any]]:
    """Pin this process and the server (``seeder``'s backend leads to it) for the block.

    Yields what was done: ``{"placement", "controlled", "client_cpu", "server_cpu"}`` or
    ``{"placement", "controlled": False, "reason"}``; affinities are restored afterwards
    (backends forked meanwhile inherit the pinned postmaster's and are restored too).
    """
    if not hasattr(os, "sched_setaffinity"):
        yield {"placement": placement, "controlled": False, "reason": "no sched_setaffinity"}
        return
    allowed = sorted(os.sched_getaffinity(0))
    client_index, server_index = PLACEMENTS[placement]
    if len(allowed) <= max(client_index, server_index):
        yield {
            "placement": placement,
            "controlled": False,
            "reason": f"{len(allowed)} CPU(s) available",
        }
        return
    with seeder.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        row = cur.fetchone()
    processes = _server_processes(int(row[0]))
    if isinstance(processes, str):
        yield {"placement": placement, "controlled": False, "reason": processes}
        return
    client_cpu, server_cpu = allowed[client_index], allowed[server_index]
    saved: dict[int, set[int]] = {}
    try:
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                saved[pid] = os.sched_getaffinity(pid)
                os.sched_setaffinity(pid, {server_cpu})
    except PermissionError:
        _restore(saved)
        yield {
            "placement": placement,
            "controlled": False,
            "reason": "not permitted to set the server's CPU affinity",
        }
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {client_cpu})
    try:
        yield {
            "placement": placement,
            "controlled": True,
            "client_cpu": client_cpu,
            "server_cpu": server_cpu,
        }
    finally:
        os.sched_setaffinity(0, own)
        postmaster = processes[0]
        later = _server_processes(int(row[0]))
        if isinstance(later, list):  # backends forked meanwhile inherited the pinning
            for pid in later:
                saved.setdefault(pid, saved[postmaster])
        _restore(saved)


def _restore(saved: dict[int, set[int]]) -> None:
    for pid, cpus in saved.items():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, cpus)

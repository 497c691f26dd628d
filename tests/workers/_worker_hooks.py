"""Pause points inside worker jobs, signalled through Redis (never through sleeps).

A job calls :func:`pause_first_delivery` at the point under test. On the job's first delivery
it announces itself on ``<ns>:arrived`` (point, job id, pid) and blocks on ``<ns>:release``
until the test kills its process or releases it; later deliveries of the same job pass. The
namespace and Redis URL come from the environment the test gave the worker.
"""

from __future__ import annotations

import json
import os

import redis

ENV_NS = "WORKERS_NS"
ENV_REDIS = "WORKERS_REDIS_URL"
HOLD_TIMEOUT_S = 60  # a paused job the test forgot resumes by itself rather than hang CI

_client: tuple[int, redis.Redis] | None = None


def client() -> redis.Redis:
    """This process's Redis client (a forked child makes its own)."""
    global _client  # noqa: PLW0603 - one client per process, rebuilt after a fork
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(os.environ[ENV_REDIS], socket_timeout=None))
    return _client[1]


def key(name: str) -> str:
    """A Redis key in this test's namespace."""
    return f"{os.environ[ENV_NS]}:{name}"


def pause_first_delivery(point: str, job_id: str) -> None:
    """On ``job_id``'s first arrival at ``point``: announce it, then wait to be released."""
    r = client()
    if not r.set(key(f"paused:{point}:{job_id}"), os.getpid(), nx=True, ex=600):
        return
    r.rpush(key("arrived"), json.dumps({"point": point, "job": job_id, "pid": os.getpid()}))
    r.blpop([key("release")], timeout=HOLD_TIMEOUT_S)


def count(event: str) -> None:
    """Add one to ``event`` in the namespace's counters (read by the test)."""
    client().hincrby(key("counts"), event, 1)

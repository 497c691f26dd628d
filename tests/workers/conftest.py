"""Fixtures of the worker tests: brokers (skipped, saying why, when one does not answer), a
PostgreSQL database per test module, and a Redis namespace per test, all cleaned up."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

for _name in ("celery", "rq", "redis"):
    pytest.importorskip(
        _name, reason=f"{_name} is not installed: pip install 'taskcore[celery,rq]'"
    )

from _workers import AMQP_URL, REDIS_URL, WorkerDb, broker_missing  # noqa: E402


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis at 127.0.0.1:6379 (RQ's broker, Celery's result backend, the pause signals)."""
    reason = broker_missing("127.0.0.1", 6379, "Redis")
    if reason:
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture(scope="session")
def amqp_url(redis_url: str) -> str:
    """RabbitMQ at 127.0.0.1:5672, guest/guest (Celery's broker); Celery's tests need Redis too."""
    reason = broker_missing("127.0.0.1", 5672, "RabbitMQ")
    if reason:
        pytest.skip(reason)
    return AMQP_URL


@pytest.fixture
def ns(redis_url: str) -> Iterator[str]:
    """A Redis key namespace (and queue name) of this test's own; its keys deleted afterwards."""
    import redis

    name = f"taskcore-workers-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    with client:
        keys = list(client.scan_iter(f"*{name}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def rclient(redis_url: str) -> Iterator[Any]:
    """A Redis client for the test's side of the signals (blocking reads wait as long as asked)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=None)
    with client:
        yield client


@pytest.fixture(scope="module")
def worker_db(request: pytest.FixtureRequest) -> Iterator[WorkerDb]:
    """A database of this module's own on the suite's PostgreSQL, with taskcore's tables."""
    pg: Any = request.getfixturevalue("pg")
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    db = WorkerDb(pg, f"taskcore_workers_{os.getpid()}_{module}")
    db.create()
    try:
        yield db
    finally:
        db.drop()

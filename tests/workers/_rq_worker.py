"""An RQ worker for the tests: ``python _rq_worker.py QUEUE [--simple] [--burst] [--hold-pool]
[--preload=MODULE]``.

``--preload`` imports the jobs' module before the first fork, as a production worker script
would (otherwise every work horse imports it again).

``--hold-pool`` opens this process's taskcore pool before the first fork (so every work horse
is forked with a live pooled connection in its memory), uses it again after the burst, and
then waits at pause point ``after_burst`` so the test can look at the server's backends.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from _worker_hooks import ENV_REDIS, pause_first_delivery
from redis import Redis
from rq import Queue, SimpleWorker, Worker

import taskcore


def main(argv: list[str]) -> int:
    """Run the worker as the arguments say; 0 when it stopped normally."""
    queue_name, flags = argv[0], set(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    connection = Redis.from_url(os.environ[ENV_REDIS])
    for flag in flags:
        if flag.startswith("--preload="):
            importlib.import_module(flag.removeprefix("--preload="))
    if "--hold-pool" in flags:
        taskcore.init_db()  # uses (and keeps) a pooled connection of this, the parent, process
    worker_class = SimpleWorker if "--simple" in flags else Worker
    worker = worker_class(
        [Queue(queue_name, connection=connection)],
        connection=connection,
        name=f"{queue_name}-{os.getpid()}",
    )
    print("worker starting", flush=True)
    worker.work(burst="--burst" in flags, logging_level="INFO", with_scheduler=False)
    if "--hold-pool" in flags:
        taskcore.get_tasks(user_id="nobody", limit=1)  # the parent's pool after all the forks
        pause_first_delivery("after_burst", queue_name)
    print("worker stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

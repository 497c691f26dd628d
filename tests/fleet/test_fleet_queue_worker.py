"""The copyable worker example, src/examples/queue_worker.py, run for real and checked from outside."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest

import taskcore
from taskcore import TaskCreate

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "examples"
WORKER = EXAMPLES / "queue_worker.py"
DEADLINE_S = 60.0


def _env(url: str) -> dict[str, str]:
    """The worker's environment: the database only through DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCORE_", "DATABASE_"))}
    env["DATABASE_URL"] = url
    return env


def _jobs(existing: list[int]) -> tuple[list[dict[str, Any]], Counter[int]]:
    """A batch of independent jobs over pre-created tasks, and the toggles it makes per task."""
    jobs: list[dict[str, Any]] = [
        {"id": f"c{i}", "op": "create", "user_id": "worker", "title": f"made {i}"}
        for i in range(24)
    ]
    toggles: Counter[int] = Counter()
    for i in range(30):
        task_id = existing[i % 3]  # tasks 0-2 get toggled concurrently by several workers
        toggles[task_id] += 1
        jobs.append({"id": f"t{i}", "op": "toggle", "task_id": task_id})
    jobs.append({"id": "u", "op": "update", "task_id": existing[3], "description": "updated"})
    jobs.append({"id": "d", "op": "delete", "task_id": existing[4]})
    for i in range(3):  # one create delivered three times: its key makes it one task
        jobs.append(
            {"id": f"k{i}", "op": "create", "user_id": "keyed", "title": "once", "key": "order-17"}
        )
    jobs.append({"id": "missing", "op": "toggle", "task_id": 999_999})
    jobs.append({"id": "bad", "op": "explode"})
    return jobs, toggles


def _check_batch(
    db: Any, existing: list[int], toggles: Counter[int], results: list[dict[str, Any]]
) -> None:
    by_id = {r["id"]: r for r in results}
    assert by_id["missing"]["status"] == "failed" and by_id["missing"]["error"] == "NotFoundError"
    assert by_id["bad"]["status"] == "failed" and by_id["bad"]["error"] == "BadJobError"
    assert Counter(r["status"] for r in results) == {"ok": len(results) - 2, "failed": 2}
    made = db.query("SELECT title FROM tasks WHERE user_id = 'worker' ORDER BY title")
    assert sorted(t for (t,) in made) == sorted(f"made {i}" for i in range(24))
    completed = dict(db.query("SELECT id, completed FROM tasks WHERE user_id = 'pre'"))
    for task_id, n in toggles.items():
        assert completed[task_id] == (n % 2 == 1)
    assert db.scalar(f"SELECT description FROM tasks WHERE id = {existing[3]}") == "updated"
    assert existing[4] not in completed
    assert db.query("SELECT title FROM tasks WHERE user_id = 'keyed'") == [("once",)]
    assert len({by_id[f"k{i}"]["task_id"] for i in range(3)}) == 1


def _precreate() -> list[int]:
    return [taskcore.create_task(TaskCreate(title=f"pre {i}"), user_id="pre").id for i in range(5)]


def test_queue_worker_drains_a_jobs_file_with_spawned_workers(
    server_db: Any, tmp_path: Path
) -> None:
    """The example's command line drains a JSON-lines file with 2 spawned workers: one result
    per job, every acknowledged job applied once, refused jobs reported and not applied."""
    existing = _precreate()
    jobs, toggles = _jobs(existing)
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs) + "not json\n")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(path), "--workers", "2", "--start-method", "spawn"],
        env=_env(server_db.url),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(jobs) + 1
    bad_line = f"line {len(jobs) + 1}"
    assert [r for r in results if r["id"] == bad_line] == [
        {"id": bad_line, "status": "failed", "error": "BadJobError", "message": "not a JSON object"}
    ]
    _check_batch(server_db, existing, toggles, [r for r in results if r["id"] != bad_line])
    summary = json.loads(proc.stderr.strip().splitlines()[-1])
    assert summary["processed"] == len(jobs) + 1 and summary["stopped_by"] == "end of input"
    assert server_db.url not in proc.stdout + proc.stderr


def test_queue_worker_pool_recipe_with_fork(
    server_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's Pool recipe with fork: the parent's configured taskcore is inherited, the
    fork is handled by taskcore, and results come back in input order."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import queue_worker

    existing = _precreate()
    jobs, toggles = _jobs(existing)
    results = queue_worker.run_with_pool(jobs, processes=4, start_method="fork")
    assert [r["id"] for r in results] == [j["id"] for j in jobs]
    _check_batch(server_db, existing, toggles, results)
    assert taskcore.get_task(existing[0]) is not None  # the parent's own pool still works


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    """Read ``stream`` line by line on a thread; None marks its end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line(lines: queue.Queue[str | None], deadline: float) -> str | None:
    return lines.get(timeout=max(0.0, deadline - time.monotonic()))


def test_queue_worker_consumer_loop_stops_gracefully_on_sigterm(pg_db: Any) -> None:
    """A long-running consumer on stdin, sent SIGTERM mid-stream with its input still open,
    finishes the jobs it accepted and exits 0; exactly the jobs it reported are applied."""
    n = 200
    with subprocess.Popen(
        [sys.executable, str(WORKER), "-", "--workers", "2", "--start-method", "fork"],
        env=_env(pg_db.url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + DEADLINE_S
        try:
            out = _lines(proc.stdout)
            for i in range(n):
                proc.stdin.write(
                    json.dumps({"id": i, "op": "create", "user_id": "loop", "title": f"job {i}"})
                    + "\n"
                )
            proc.stdin.flush()  # stdin stays open: only the signal can end this consumer
            results = []
            for _ in range(5):  # the consumer is busy: stop it mid-stream
                line = _next_line(out, deadline)
                assert line is not None, proc.stderr.read()
                results.append(json.loads(line))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
            while (line := _next_line(out, deadline)) is not None:
                results.append(json.loads(line))
            summary = json.loads(proc.stderr.read().strip().splitlines()[-1])
        finally:
            if proc.poll() is None:
                proc.kill()
    assert summary["stopped_by"] == "SIGTERM"
    assert summary["processed"] == len(results) < n  # it stopped early, reporting every job
    assert {r["status"] for r in results} == {"ok"}
    stored = pg_db.query("SELECT title FROM tasks WHERE user_id = 'loop'")
    assert sorted(t for (t,) in stored) == sorted(f"job {r['id']}" for r in results)
    print(
        f"\n[queue worker] SIGTERM after 5 results: {len(results)} of {n} jobs accepted, "
        f"finished and reported; the rest never started"
    )

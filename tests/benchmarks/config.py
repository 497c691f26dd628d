"""How much to measure: the full run, --quick, and the tiny mode of the smoke test."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["LOAD_MIX", "LOAD_PAGE", "BenchConfig"]

#: The many-clients scenarios list the first page of this many tasks: a client's list grows as
#: it creates, and an unbounded list would cost the faster implementation more rows per call.
LOAD_PAGE = 20

#: The 1,000-client mix of issue 10 (operation -> share of calls).
LOAD_MIX: tuple[tuple[str, float], ...] = (
    ("get_task", 0.40),
    ("get_tasks", 0.20),
    ("create_task", 0.20),
    ("toggle_complete", 0.10),
    ("update_task", 0.10),
)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Iteration counts, scenario sizes and repetitions.

    Every timed scenario is repeated (``*_rounds`` / ``*_runs``); the report prints min and
    median over the repetitions, and ratios are taken within one repetition (both sides ran
    back to back under the same conditions).
    """

    mode: str
    #: One-shot calls per implementation per round, on loopback and through the slow link.
    loop_ops: int
    loop_rounds: int
    link_ops: int
    link_rounds: int
    #: Units of work per implementation per round (they cost k + 2 round trips each).
    unit_loop_ops: int
    unit_link_ops: int
    #: Untimed calls per implementation before measuring (pool, caches, plans).
    warmup: int
    #: Calls whose round trips are counted, per operation and implementation.
    count_calls: int
    bulk_n: int
    bulk_rounds: int
    #: Length of the outage in the recovery scenario (the target is stated for 2 s).
    outage_s: float
    #: Calls profiled (cProfile) for an operation that misses a target.
    profile_calls: int
    #: The many-clients closed loop: processes x threads, one user per client.
    load_processes: int
    load_threads: int
    #: Seconds measured per run, after ``load_warmup_s`` of unmeasured load.
    load_duration_s: float
    load_warmup_s: float
    load_runs: int
    #: The think-time scenario: exponential think time of this mean between calls.
    think_mean_s: float
    think_duration_s: float
    think_warmup_s: float
    think_runs: int
    #: Profile what misses a target (off in --quick, to stay short).
    profile_misses: bool = True
    #: Also run the many-clients scenarios through PgBouncer (transaction mode) when installed.
    load_pgbouncer: bool = True
    #: Tasks seeded per client before a load run (get/toggle/update pick one of them).
    load_seed_tasks: int = 10
    #: Server connections per process for both sides; None: taskcore's default pool_size.
    load_pool_size: int | None = None
    link_one_way_s: float = 0.002
    list_size: int = 20
    unit_sizes: tuple[int, ...] = (1, 3, 10)
    bulk_page_size: int = 1000

    @classmethod
    def full(cls) -> BenchConfig:
        """The published numbers: every scenario 3+ times (about 15 minutes on two cores)."""
        return cls(
            mode="full",
            loop_ops=600,
            loop_rounds=7,
            link_ops=25,
            link_rounds=3,
            unit_loop_ops=100,
            unit_link_ops=8,
            warmup=20,
            count_calls=5,
            bulk_n=10_000,
            bulk_rounds=5,
            outage_s=2.0,
            profile_calls=300,
            load_processes=4,
            load_threads=250,
            load_duration_s=25.0,
            load_warmup_s=5.0,
            load_runs=3,
            think_mean_s=0.5,
            think_duration_s=30.0,
            think_warmup_s=5.0,
            think_runs=3,
        )

    @classmethod
    def quick(cls) -> BenchConfig:
        """--quick (CI smoke): the same scenarios, short and fewer times, no profiles."""
        return cls(
            mode="quick",
            loop_ops=40,
            loop_rounds=3,
            link_ops=4,
            link_rounds=2,
            unit_loop_ops=10,
            unit_link_ops=1,
            warmup=3,
            count_calls=2,
            bulk_n=10_000,
            bulk_rounds=3,
            outage_s=2.0,
            profile_calls=0,
            load_processes=4,
            load_threads=250,
            load_duration_s=4.0,
            load_warmup_s=2.0,
            load_runs=1,
            think_mean_s=0.5,
            think_duration_s=5.0,
            think_warmup_s=2.0,
            think_runs=1,
            profile_misses=False,
        )

    @classmethod
    def tiny(cls) -> BenchConfig:
        """A few iterations of everything: checks the benchmark code, measures nothing."""
        return cls(
            mode="tiny",
            loop_ops=4,
            loop_rounds=1,
            link_ops=2,
            link_rounds=1,
            unit_loop_ops=1,
            unit_link_ops=1,
            warmup=1,
            count_calls=2,
            bulk_n=2_500,
            bulk_rounds=1,
            outage_s=0.3,
            profile_calls=2,
            load_processes=2,
            load_threads=4,
            load_duration_s=0.6,
            load_warmup_s=0.2,
            load_runs=1,
            think_mean_s=0.02,
            think_duration_s=0.6,
            think_warmup_s=0.2,
            think_runs=1,
            load_seed_tasks=3,
            load_pool_size=2,
            link_one_way_s=0.0005,
        )

    def with_ops(self, n: int) -> BenchConfig:
        """--ops N: N one-shot calls per implementation per round on loopback (N/6 on the link)."""
        if n < 1:
            raise ValueError("--ops must be at least 1")
        return dataclasses.replace(
            self,
            loop_ops=n,
            link_ops=max(1, n // 6),
            unit_loop_ops=max(1, n * 2 // 5),
            unit_link_ops=max(1, n // 18),
        )

    def with_runs(self, n: int) -> BenchConfig:
        """--runs N: every timed scenario N times."""
        if n < 1:
            raise ValueError("--runs must be at least 1")
        return dataclasses.replace(
            self,
            loop_rounds=n,
            link_rounds=n,
            bulk_rounds=n,
            load_runs=n,
            think_runs=n,
        )

    def with_changes(self, **changes: Any) -> BenchConfig:
        """A copy with some fields changed (command-line overrides)."""
        return dataclasses.replace(self, **changes)

    @property
    def clients(self) -> int:
        """Concurrent clients of the load scenarios."""
        return self.load_processes * self.load_threads

    def as_dict(self) -> dict[str, Any]:
        """The settings, for the JSON results."""
        data = dataclasses.asdict(self)
        data["load_mix"] = dict(LOAD_MIX)
        return data

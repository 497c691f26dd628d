"""How much to measure: the default run, --quick, and the tiny mode of the smoke test."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["BenchConfig"]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Iteration counts and scenario sizes. Times are medians over ``*_rounds`` rounds."""

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
    #: Calls profiled (cProfile) for an operation that misses its throughput target.
    profile_calls: int
    #: Profile what misses a target (off in --quick, to stay short).
    profile_misses: bool = True
    link_one_way_s: float = 0.002
    list_size: int = 20
    unit_sizes: tuple[int, ...] = (1, 3, 10)
    bulk_page_size: int = 1000

    @classmethod
    def default(cls) -> BenchConfig:
        """The full run: about two minutes on two idle cores."""
        return cls(
            mode="default",
            loop_ops=150,
            loop_rounds=5,
            link_ops=25,
            link_rounds=3,
            unit_loop_ops=60,
            unit_link_ops=8,
            warmup=20,
            count_calls=5,
            bulk_n=10_000,
            bulk_rounds=5,
            outage_s=2.0,
            profile_calls=200,
        )

    @classmethod
    def quick(cls) -> BenchConfig:
        """--quick: the same scenarios with fewer iterations and no profiles (under 30 s)."""
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
            bulk_rounds=1,
            outage_s=2.0,
            profile_calls=0,
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

    def as_dict(self) -> dict[str, Any]:
        """The settings, for the JSON results."""
        return dataclasses.asdict(self)

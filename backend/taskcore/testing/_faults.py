"""FlakyProxy's fault plan: what to break and when, armed by tests and consulted by the relay."""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import threading
import time

from taskcore.testing._stats import Counters

__all__ = ["FaultPlan", "Verdict"]


class Verdict(enum.Enum):
    """What to do with a statement the client just sent."""

    FORWARD = "forward"
    CUT = "cut"  # reset the link right after forwarding the statement
    WITHHOLD_REPLY = "withhold-reply"  # let the server answer, drop the answer, reset the link


@dataclasses.dataclass(slots=True)
class _Arms:
    """Fault configuration; clear() replaces it whole."""

    one_way: float = 0.0
    jitter: float = 0.0
    refusing: bool = False
    refuse_until: float = 0.0
    statement_countdown: int | None = None
    reply_countdown: int | None = None
    commit_cuts: int = 0
    mid_result_rows: int | None = None
    p_reset_per_statement: float = 0.0
    p_cut_after_commit: float = 0.0
    p_cut_mid_result: float = 0.0
    p_refuse_connect: float = 0.0
    p_lose_reply: float = 0.0


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return float(value)


def _check_seconds(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _check_count(name: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


class FaultPlan:
    """Armed faults and the seeded decisions; every method is safe from any thread.

    Arming methods clear ``fired`` so a test waits for the fault it armed last. All random
    decisions draw from one ``random.Random(seed)``; latency jitter draws from a child
    generator so the chunking of the byte stream cannot shift the fault decisions.
    """

    __slots__ = ("_arms", "_jitter_rng", "_lock", "_rng", "counters", "fired")

    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._jitter_rng = random.Random(self._rng.getrandbits(64))
        self._arms = _Arms()
        self.counters = Counters()
        self.fired = threading.Event()

    # ------------------------------------------------------------------ arming

    def set_latency(self, one_way: float, jitter: float) -> None:
        one_way = _check_seconds("one_way", one_way)
        jitter = _check_seconds("jitter", jitter)
        with self._lock:
            self._arms.one_way, self._arms.jitter = one_way, jitter

    def refuse(self, seconds: float | None = None) -> None:
        """Refuse new connections until accept(), or for ``seconds`` if given."""
        until = None if seconds is None else _check_seconds("seconds", seconds)
        with self._lock:
            self._arms.refusing = until is None
            self._arms.refuse_until = 0.0 if until is None else time.monotonic() + until
            self.fired.clear()

    def accept(self) -> None:
        with self._lock:
            self._arms.refusing = False
            self._arms.refuse_until = 0.0

    def cut_after_statements(self, n: int) -> None:
        n = _check_count("n", n, 1)
        with self._lock:
            self._arms.statement_countdown = n
            self.fired.clear()

    def cut_after_reply(self, n: int) -> None:
        n = _check_count("n", n, 1)
        with self._lock:
            self._arms.reply_countdown = n
            self.fired.clear()

    def cut_after_commit(self, times: int) -> None:
        times = _check_count("times", times, 1)
        with self._lock:
            self._arms.commit_cuts = times
            self.fired.clear()

    def cut_mid_result(self, after_rows: int) -> None:
        after_rows = _check_count("after_rows", after_rows, 0)
        with self._lock:
            self._arms.mid_result_rows = after_rows
            self.fired.clear()

    def set_random(
        self,
        *,
        p_reset_per_statement: float,
        p_cut_after_commit: float,
        p_cut_mid_result: float,
        p_refuse_connect: float,
        p_lose_reply: float,
    ) -> None:
        p_reply = _check_probability("p_lose_reply", p_lose_reply)
        p_stmt = _check_probability("p_reset_per_statement", p_reset_per_statement)
        p_commit = _check_probability("p_cut_after_commit", p_cut_after_commit)
        p_result = _check_probability("p_cut_mid_result", p_cut_mid_result)
        p_refuse = _check_probability("p_refuse_connect", p_refuse_connect)
        with self._lock:
            arms = self._arms
            arms.p_reset_per_statement = p_stmt
            arms.p_cut_after_commit = p_commit
            arms.p_cut_mid_result = p_result
            arms.p_refuse_connect = p_refuse
            arms.p_lose_reply = p_reply
            self.fired.clear()

    def clear(self) -> None:
        with self._lock:
            self._arms = _Arms()
            self.fired.clear()

    # ------------------------------------------------------------------ decisions

    def fault_fired(self) -> None:
        self.counters.add(faults=1)
        self.fired.set()

    def delay(self) -> float:
        """Seconds to hold the next forwarded chunk."""
        with self._lock:
            one_way, jitter = self._arms.one_way, self._arms.jitter
            if jitter > 0.0:
                one_way += self._jitter_rng.uniform(0.0, jitter)
            return one_way

    def refuse_connection(self) -> bool:
        with self._lock:
            arms = self._arms
            if arms.refusing or time.monotonic() < arms.refuse_until:
                return True
            p = arms.p_refuse_connect
            return p > 0.0 and self._rng.random() < p

    def cut_at_row(self, rows: int) -> bool:
        """Whether to cut before the ``rows``-th DataRow of the current result."""
        with self._lock:
            arms = self._arms
            if arms.mid_result_rows is not None and rows > arms.mid_result_rows:
                arms.mid_result_rows = None
                return True
            p = arms.p_cut_mid_result
            return rows == 1 and p > 0.0 and self._rng.random() < p

    def statement(self, commit: bool) -> Verdict:
        """Decide the fate of a statement sent after authentication (armed cuts first)."""
        with self._lock:
            arms = self._arms
            if arms.statement_countdown is not None:
                arms.statement_countdown -= 1
                if arms.statement_countdown == 0:
                    arms.statement_countdown = None
                    return Verdict.CUT
            if arms.reply_countdown is not None:
                arms.reply_countdown -= 1
                if arms.reply_countdown == 0:
                    arms.reply_countdown = None
                    return Verdict.WITHHOLD_REPLY
            if commit and arms.commit_cuts > 0:
                arms.commit_cuts -= 1
                return Verdict.WITHHOLD_REPLY
            # The draw order below is part of the seed's meaning: changing it changes replays.
            p = arms.p_reset_per_statement
            if p > 0.0 and self._rng.random() < p:
                return Verdict.CUT
            p = arms.p_cut_after_commit if commit else arms.p_lose_reply
            if p > 0.0 and self._rng.random() < p:
                return Verdict.WITHHOLD_REPLY
            return Verdict.FORWARD

"""A per-process retry budget, so a fleet does not multiply its load on a database that is down."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RetryBudget"]


@dataclass
class RetryBudget:
    """Retries allowed as a fraction of recent successes, with a small floor.

    Within the last ``window`` seconds, a retry is allowed while
    ``retries < floor * window + ratio * successes``. Once a retry is refused the process
    fails fast: a call makes no attempt at all, except one probe per ``probe_interval``
    (jittered to 0.5-1 x, so processes do not probe in step). The first success closes it.

    So during an outage each process makes at most ``floor * window`` retries per window plus
    about one probe per ``probe_interval``; when the database returns, the next probe (within
    ``probe_interval``) succeeds and every caller recovers.

    ``clock`` (monotonic seconds) and ``jitter`` (a float in [0, 1), placing each probe within
    0.5-1 x ``probe_interval``) are injectable so tests can drive time exactly. The default
    jitter is the process-wide ``random.random``, which Python reseeds in a forked child, so
    forked workers do not probe in step.
    """

    ratio: float = 0.2
    floor: float = 1.0
    window: float = 10.0
    probe_interval: float = 1.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    jitter: Callable[[], float] = field(default=random.random, repr=False)
    _successes: deque[float] = field(default_factory=deque, repr=False)
    _retries: deque[float] = field(default_factory=deque, repr=False)
    #: True while the process fails fast (read freely; changed only under the budget's lock).
    exhausted: bool = field(default=False, init=False, repr=False)
    _next_probe: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def admit(self) -> bool:
        """May a call make its first attempt now? False means: fail fast without trying."""
        with self._lock:
            if not self.exhausted:
                return True
            now = self.clock()
            if now < self._next_probe:
                return False
            self._schedule_probe(now)
            return True

    def spend(self) -> bool:
        """Take one retry from the budget; False (and fail-fast mode) when none is left."""
        with self._lock:
            now = self.clock()
            self._trim(now)
            allowed = len(self._retries) < self.floor * self.window + self.ratio * len(
                self._successes
            )
            if allowed and not self.exhausted:
                self._retries.append(now)
                return True
            if not self.exhausted:
                self.exhausted = True
                self._schedule_probe(now)
            return False

    def record_success(self) -> None:
        """A call succeeded: deposit, and leave fail-fast mode.

        On every successful call, so kept cheap: ``deque.append`` is atomic, and expired
        successes are dropped about once a second (``spend`` trims exactly before it counts).
        """
        now = self.clock()
        successes = self._successes
        successes.append(now)
        if successes[0] < now - self.window - 1.0 or self.exhausted:
            with self._lock:
                self._trim(now)
                self.exhausted = False

    def _schedule_probe(self, now: float) -> None:
        self._next_probe = now + self.probe_interval * (0.5 + 0.5 * self.jitter())

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        for times in (self._successes, self._retries):
            while times and times[0] < horizon:
                times.popleft()

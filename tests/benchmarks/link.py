"""The added-latency link for timing: a FlakyProxy in its own process.

An in-process FlakyProxy relays on a thread of the measured process: its Python work per
round trip (parsing, scheduling) then competes with the code under test for the GIL and the
same core, and penalises the implementation that does more Python work per call. A real
network costs the client nothing but waiting, so the timed link runs the same FlakyProxy in a
child process. (Round trips are counted with an in-process proxy, where timing is irrelevant.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = ["Endpoint", "ProxyProcess"]

_CHILD = Path(__file__).with_name("_link_process.py")
_STOP_TIMEOUT_S = 10.0


class Endpoint(Protocol):
    """Anything clients can connect to instead of the server (a proxy)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class ProxyProcess:
    """A FlakyProxy relaying to ``upstream_host:upstream_port`` from a child process."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._proc: subprocess.Popen[str] | None = None
        self._address: tuple[str, int] | None = None

    def start(self) -> Self:
        """Start the child and wait until it listens."""
        self._proc = subprocess.Popen(
            [sys.executable, str(_CHILD), self._upstream[0], str(self._upstream[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self._read()
        self._address = (str(hello["host"]), int(hello["port"]))
        return self

    @property
    def host(self) -> str:
        assert self._address is not None, "start() first"
        return self._address[0]

    @property
    def port(self) -> int:
        assert self._address is not None, "start() first"
        return self._address[1]

    def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the proxy process exited (code {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"proxy process: {reply['error']}")
        return reply

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def set_latency(self, one_way: float, jitter: float = 0.0) -> None:
        """Delay every forwarded chunk by ``one_way`` (+ up to ``jitter``) seconds, both ways."""
        self._call("set_latency", one_way=one_way, jitter=jitter)

    def stats(self) -> dict[str, int]:
        """The proxy's counters (FlakyProxy.stats as a dict)."""
        return {key: int(value) for key, value in self._call("stats").items()}

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._call("reset_stats")

    def stop(self) -> None:
        """Stop the child (closing its stdin ends it); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.close()
            proc.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

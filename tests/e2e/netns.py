"""Separate hosts on this machine: Linux network namespaces joined by veth links to a bridge.

Every namespace, link, bridge and address lives inside namespaces this module creates (named with
the test process's id): nothing is added to the machine's own network. ``hosts`` removes them all
on exit, failure or not, after killing what still runs in them.

The test process stays in the machine's namespace; it reaches a server inside a namespace through
``relay``: a Unix socket (files are shared by every namespace) between a TCP listener on this
process's loopback and a forwarder inside the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NETWORK = "10.213.0.0/24"


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no ``ip``, no CAP_SYS_ADMIN)."""


@dataclass(frozen=True)
class Host:
    """One namespace: its name (for ``ip netns exec``) and its address on the bridge."""

    name: str
    address: str

    def exec(self, *argv: str) -> list[str]:
        """``argv`` run inside this host."""
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise NamespacesUnavailable(f"ip {' '.join(args)}: {result.stderr.strip()}")


def why_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return None


@contextmanager
def hosts(names: Sequence[str]) -> Iterator[dict[str, Host]]:
    """One namespace per name, addresses 10.213.0.1, .2, ... in order, all on one bridge (in a
    namespace of its own). Everything is removed on exit."""
    reason = why_unavailable()
    if reason is not None:
        raise NamespacesUnavailable(reason)
    prefix = f"df{os.getpid()}-"
    switch = f"{prefix}switch"
    made: list[str] = []
    try:
        _ip("netns", "add", switch)
        made.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        found = {}
        for number, name in enumerate(names, start=1):
            host = Host(f"{prefix}{name}", f"10.213.0.{number}")
            _ip("netns", "add", host.name)
            made.append(host.name)
            port = f"port{number}"
            # Both ends created inside the namespaces: nothing appears on the machine's network.
            _ip("-n", host.name, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", switch)  # fmt: skip
            _ip("-n", switch, "link", "set", port, "master", "br0")
            _ip("-n", switch, "link", "set", port, "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.name, "link", "set", "eth0", "up")
            _ip("-n", host.name, "link", "set", "lo", "up")
            found[name] = host
        yield found
    finally:
        for name in reversed(made):
            _kill_inside(name)
            with contextlib.suppress(NamespacesUnavailable):
                _ip("netns", "del", name)


def _kill_inside(namespace: str) -> None:
    """Kill every process still in ``namespace`` (a process keeps a deleted namespace alive)."""
    listed = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


# --- the relay ------------------------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(mode: str, listen: str, connect: str) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if mode == "to-tcp":
                host, port = connect.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
            else:
                up_reader, up_writer = await asyncio.open_unix_connection(connect)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    if mode == "to-tcp":
        server = await asyncio.start_unix_server(forward, path=listen)
    else:
        host, port = listen.rsplit(":", 1)
        server = await asyncio.start_server(forward, host, int(port))
    async with server:
        await server.serve_forever()


def relay_argv(mode: str, listen: str, connect: str) -> list[str]:
    """``to-tcp UNIX_PATH HOST:PORT`` (inside a namespace) or ``to-unix HOST:PORT UNIX_PATH``."""
    return [sys.executable, str(Path(__file__)), mode, listen, connect]


if __name__ == "__main__":
    asyncio.run(_serve(*sys.argv[1:4]))

"""Router backend that splits traffic through HAProxy's runtime API (admin socket), no reload.

The backend has two server slots, ``stable`` and ``canary``, declared in the HAProxy config with a
placeholder address; this router re-points them (``set server ... addr``), weighs them
(``set server ... weight``) and takes them in and out of maintenance (``set server ... state``).
Weights are percentages: canary weight ``w`` and stable weight ``100 - w``, so HAProxy's weighted
round robin sends ``w`` percent of the requests to the canary.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from deployflow.providers.base import BackendError, Instance, RouterState
from deployflow.spec_types import HttpUrl, StrictModel

# srv_admin_state bits (HAProxy include/haproxy/server-t.h). CMAINT (0x04, "disabled" in the
# config) is deliberately absent: it stays set after "state ready" and then only records history.
_ADMIN_MAINT = 0x01 | 0x02 | 0x20 | 0x40  # forced, inherited, resolution, hostname maintenance
_ADMIN_DRAIN = 0x08 | 0x10  # forced, inherited drain: no new traffic
_OP_STOPPED = 0
# "set server ... addr" reports what it changed; every other set command answers nothing.
_ADDR_OK_PREFIXES = ("IP changed from", "no need to change the addr")


_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"


class RouterError(BackendError):
    """HAProxy refused a command, or its admin socket could not be reached (then ``admin`` is
    the socket's path or host:port and ``timeout`` the seconds an answer was waited for;
    ``deployflow.error_words`` says it in words)."""

    def __init__(
        self, message: str, *, admin: str | None = None, timeout: float | None = None
    ) -> None:
        super().__init__(message)
        self.admin = admin
        self.timeout = timeout

    def __reduce__(self) -> tuple[object, ...]:  # a result store may pickle it
        return (_router_error, (str(self), self.admin, self.timeout))


def _router_error(message: str, admin: str | None, timeout: float | None) -> RouterError:
    return RouterError(message, admin=admin, timeout=timeout)


class HAProxyRouterSpec(StrictModel):
    """Traffic is split by HAProxy through its runtime API (no reload)."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("admin_socket",)

    kind: Literal["haproxy"] = Field(description="HAProxy runtime API on its admin socket.")
    admin_socket: Path | None = Field(
        None,
        description="Path of HAProxy's stats socket at level admin (HAProxy on the worker's "
        "machine); or admin_address.",
    )
    admin_address: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+:[0-9]{1,5}$",
        description="host:port of HAProxy's runtime API over TCP (`stats socket "
        "ipv4@host:port level admin`), for HAProxy on another machine than the workers; or "
        "admin_socket.",
    )
    # Names go into runtime API commands: one word each, as HAProxy's own names are.
    backend: str = Field(
        "app", pattern=_NAME, description="Backend holding the stable and canary servers."
    )
    stable_server: str = Field(
        "stable", pattern=_NAME, description="Server slot of the stable version."
    )
    canary_server: str = Field(
        "canary", pattern=_NAME, description="Server slot of the canary version."
    )
    frontend_url: HttpUrl = Field(description="URL users reach; smoke requests go through it.")

    @model_validator(mode="after")
    def _one_way_in(self) -> HAProxyRouterSpec:
        if (self.admin_socket is None) == (self.admin_address is None):
            raise ValueError("set one of admin_socket (a path) or admin_address (host:port)")
        return self


@dataclass(frozen=True)
class ServerState:
    """One server line of ``show servers state``.

    Attributes:
        name: Server name in the backend.
        address: IP address the server points at.
        port: TCP port the server points at.
        op_state: 0 stopped, 1 starting, 2 running, 3 stopping.
        admin_state: Bit field of maintenance/drain flags.
        weight: Current (user) weight.
    """

    name: str
    address: str
    port: int
    op_state: int
    admin_state: int
    weight: int

    @property
    def in_maintenance(self) -> bool:
        """True when HAProxy sends this server no traffic because of its state."""
        return bool(self.admin_state & _ADMIN_MAINT) or self.op_state == _OP_STOPPED

    @property
    def effective_weight(self) -> int:
        """Weight that counts for new requests: 0 in maintenance or drain."""
        if self.in_maintenance or self.admin_state & _ADMIN_DRAIN:
            return 0
        return self.weight


def parse_servers_state(answer: str) -> dict[str, ServerState]:
    """Parse the answer to ``show servers state <backend>`` into servers by name.

    The column order is read from the ``# be_id be_name ...`` header line rather than assumed,
    because it has grown between HAProxy versions.

    Raises:
        ValueError: The answer is not a servers-state table (HAProxy answered with an error).
    """
    lines = [line for line in answer.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("# ")), None)
    if header is None:
        raise ValueError(f"not a 'show servers state' answer: {answer.strip()!r}")
    columns = header[2:].split()
    needed = ("srv_name", "srv_addr", "srv_op_state", "srv_admin_state", "srv_uweight", "srv_port")
    missing = [name for name in needed if name not in columns]
    if missing:
        raise ValueError(f"'show servers state' header lacks columns {missing}: {header!r}")
    index = {name: columns.index(name) for name in needed}
    servers: dict[str, ServerState] = {}
    for position, line in enumerate(lines):
        if line.startswith("#") or (position == 0 and line.strip().isdigit()):
            continue  # the header, and the format version line ("1")
        fields = line.split()
        if len(fields) < len(columns):
            raise ValueError(f"short line in 'show servers state' answer: {line!r}")
        server = ServerState(
            name=fields[index["srv_name"]],
            address=fields[index["srv_addr"]],
            port=int(fields[index["srv_port"]]),
            op_state=int(fields[index["srv_op_state"]]),
            admin_state=int(fields[index["srv_admin_state"]]),
            weight=int(fields[index["srv_uweight"]]),
        )
        servers[server.name] = server
    return servers


class HAProxyRouter:
    """Split traffic between a stable and a canary slot of one HAProxy backend (``Router``).

    Example:
        router = HAProxyRouter(Path("haproxy.sock"), frontend_url="http://127.0.0.1:8080")
        router.set_split(stable_instance, canary_instance, canary_weight=10)
    """

    def __init__(
        self,
        admin_socket: Path | None,
        backend: str = "app",
        stable_server: str = "stable",
        canary_server: str = "canary",
        *,
        frontend_url: str,
        timeout: float = 5.0,
        admin_address: str | None = None,
    ) -> None:
        """Configure the router; nothing is sent until a method is called.

        Args:
            admin_socket: Path of HAProxy's ``stats socket ... level admin``; None with
                ``admin_address``.
            admin_address: ``host:port`` of the runtime API over TCP, instead of the path.
            frontend_url: The URL users reach through this HAProxy.
            backend: Backend holding the two slots.
            stable_server: Server name of the stable slot.
            canary_server: Server name of the canary slot.
            timeout: Seconds to wait for one answer.
        """
        if (admin_socket is None) == (admin_address is None):
            raise ValueError("one of admin_socket or admin_address")
        self.admin_socket = Path(admin_socket) if admin_socket is not None else None
        self.admin_address = admin_address
        self._frontend_url = frontend_url.rstrip("/")
        self.backend = backend
        self.stable_server = stable_server
        self.canary_server = canary_server
        self.timeout = timeout

    @classmethod
    def from_spec(cls, spec: HAProxyRouterSpec) -> HAProxyRouter:
        """The router a spec's ``router`` section of kind ``haproxy`` describes."""
        return cls(
            spec.admin_socket,
            admin_address=spec.admin_address,
            frontend_url=spec.frontend_url,
            backend=spec.backend,
            stable_server=spec.stable_server,
            canary_server=spec.canary_server,
        )

    @property
    def frontend_url(self) -> str:
        """The URL users reach through this HAProxy."""
        return self._frontend_url

    def describe(self) -> str:
        return f"haproxy backend {self.backend} via {self._admin}"

    @property
    def _admin(self) -> str:
        return str(self.admin_socket) if self.admin_socket is not None else f"{self.admin_address}"

    def command(self, command: str) -> str:
        """Send one runtime API command and return HAProxy's raw answer.

        Raises:
            RouterError: The socket could not be reached or the exchange failed.
        """
        if "\n" in command or ";" in command:
            raise ValueError(f"one runtime API command at a time, got {command!r}")
        try:
            with self._connect() as sock:
                sock.sendall(command.encode() + b"\n")
                # Not in interactive mode, HAProxy closes the connection after one answer.
                chunks: list[bytes] = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise RouterError(
                f"HAProxy admin socket {self._admin} unreachable for {command!r}: {exc}",
                admin=self._admin,
                timeout=self.timeout,
            ) from exc
        return b"".join(chunks).decode("utf-8", errors="replace")

    def _connect(self) -> socket.socket:
        if self.admin_socket is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(str(self.admin_socket))
            except BaseException:
                sock.close()
                raise
            return sock
        host, _, port = str(self.admin_address).rpartition(":")
        return socket.create_connection((host, int(port)), timeout=self.timeout)

    def _set(self, server: str, what: str) -> None:
        command = f"set server {self.backend}/{server} {what}"
        answer = self.command(command).strip()
        if answer and not (what.startswith("addr ") and answer.startswith(_ADDR_OK_PREFIXES)):
            raise RouterError(f"HAProxy refused {command!r}: {answer}")

    def servers(self) -> dict[str, ServerState]:
        """The servers of the backend as HAProxy sees them now."""
        command = f"show servers state {self.backend}"
        answer = self.command(command)
        try:
            servers = parse_servers_state(answer)
        except ValueError:
            raise RouterError(f"HAProxy refused {command!r}: {answer.strip()}") from None
        for name in (self.stable_server, self.canary_server):
            if name not in servers:
                raise RouterError(
                    f"backend {self.backend!r} has no server {name!r}; it has {sorted(servers)}"
                )
        return servers

    def state(self) -> RouterState:
        """Where traffic goes now, computed from HAProxy's live weights and states."""
        servers = self.servers()
        stable = servers[self.stable_server]
        canary = servers[self.canary_server]
        stable_weight = stable.effective_weight
        canary_weight = canary.effective_weight
        total = stable_weight + canary_weight
        percent = round(100 * canary_weight / total) if total else 0
        return RouterState(
            stable=None if stable.in_maintenance else f"{stable.address}:{stable.port}",
            canary=None if canary.in_maintenance else f"{canary.address}:{canary.port}",
            canary_weight=percent,
        )

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        """Send ``canary_weight`` percent to ``canary`` and the rest to ``stable``.

        ``canary_weight`` 0 (or no canary) puts the canary slot in maintenance; 100 leaves the
        stable slot ready at weight 0. Commands are ordered so that no request meets a slot that
        points nowhere: the slot gaining traffic is ready before the other one loses it.

        Raises:
            ValueError: ``canary_weight`` is not an integer 0..100, or is above 0 without canary.
            RouterError: HAProxy refused a command.
        """
        if isinstance(canary_weight, bool) or not isinstance(canary_weight, int):
            raise ValueError(f"canary_weight must be an integer 0..100, got {canary_weight!r}")
        if not 0 <= canary_weight <= 100:
            raise ValueError(f"canary_weight must be between 0 and 100, got {canary_weight}")
        if canary is None and canary_weight > 0:
            raise ValueError(f"canary_weight is {canary_weight} but no canary instance was given")
        servers = self.servers()
        if canary is None or canary_weight == 0:
            self._point(servers[self.stable_server], stable, weight=100)
            self._set(self.canary_server, "state maint")
            return
        self._point(servers[self.canary_server], canary, weight=canary_weight)
        self._point(servers[self.stable_server], stable, weight=100 - canary_weight)

    def promote(self, instance: Instance) -> None:
        """Make ``instance`` the stable server with all the traffic; canary slot in maintenance."""
        servers = self.servers()
        self._point(servers[self.stable_server], instance, weight=100)
        self._set(self.canary_server, "state maint")
        self._set(self.canary_server, "weight 0")

    def _fresh_health(self, server: str) -> None:
        """A new version in the canary slot starts afresh: whatever the router held against
        the previous one (marked down by the data-plane guard, which then takes many good checks
        to undo) goes with it. The health checks go on judging the new one from here."""
        command = f"set server {self.backend}/{server} health up"
        answer = self.command(command).strip()
        if answer and "not enabled" not in answer.lower():
            raise RouterError(f"HAProxy refused {command!r}: {answer}")

    def _point(self, current: ServerState, instance: Instance, *, weight: int) -> None:
        if (current.address, current.port) != (instance.host, instance.port):
            self._set(current.name, f"addr {instance.host} port {instance.port}")
            if current.name == self.canary_server:
                self._fresh_health(current.name)
        self._set(current.name, f"weight {weight}")
        self._set(current.name, "state ready")

"""Router backend that splits traffic with nginx: an upstream file deployflow owns, and a reload.

deployflow owns one file (``upstream_file``) that the nginx configuration includes in its ``http``
block. The file holds:

- ``upstream <name>`` with the stable and the canary server and their weights (the user's own
  ``server``/``location`` sends traffic there with ``proxy_pass http://<name>;``);
- a small state server on ``state_listen`` whose ``/deployflow/state`` answers the split the running
  nginx was loaded with, and a generation id. The router reads the state from there, so what it
  reports is what nginx serves, not what a file on disk says; and after a reload it waits until
  nginx answers the new generation, so a reload that did not take is an error, not a silent no-op.

Every change is: write the new file next to the live one, put it in place with a rename, run
``nginx -t`` against the main configuration, and reload. When the test fails the previous file is
put back before anything reloads, so nginx keeps serving the previous split, and the error names
nginx's own message. The live file holds the candidate only while ``nginx -t`` runs, under a lock
that every change through this router takes (an operator's reload in that instant would meet it).

Weights: nginx server weights are at least 1, so the percentages map as follows. Canary weight
``w`` in 1..99 is ``weight=100-w`` on the stable server and ``weight=w`` on the canary; canary
weight 0 leaves the canary server out of the upstream; 100 marks the stable server ``down`` (it
stays listed, so the state still names it, as HAProxy's stable slot at weight 0 does).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from deployflow.polling import DeadlineExceeded, wait_for
from deployflow.processes import CommandResult, run_command
from deployflow.providers.base import BackendError, Instance, RouterState
from deployflow.spec_types import Argv, Duration, HttpUrl, StrictModel

DEFAULT_NGINX = Path("/usr/sbin/nginx")
STATE_PATH = "/deployflow/state"
_GENERATION_PREFIX = "# generation "
_UPSTREAM_NAME = r"^[A-Za-z0-9_]{1,64}$"
# What may appear in a server address: it goes into nginx's config and a single-quoted string.
_HOST = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,252}|[0-9A-Fa-f:.]{2,45})$")
_LISTEN = re.compile(r"^(?:unix:/[A-Za-z0-9._/-]{1,200}|[A-Za-z0-9.-]{1,253}:[0-9]{1,5})$")


class NginxError(BackendError):
    """nginx refused the new configuration, did not reload, or its state cannot be read."""


class NginxRouterSpec(StrictModel):
    """Traffic is split by nginx: an upstream file deployflow owns, checked with ``nginx -t`` and
    applied with a reload."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("main_config", "upstream_file")

    kind: Literal["nginx"] = Field(description="nginx with an upstream file deployflow owns.")
    main_config: Path = Field(
        description="nginx's main configuration file (tested with 'nginx -t -c <main_config>'); "
        "its http block includes upstream_file."
    )
    upstream_file: Path = Field(
        description="The file deployflow writes (upstream and state server); included from the "
        "http block. Do not edit it by hand."
    )
    upstream: str = Field(
        "deployflow",
        pattern=_UPSTREAM_NAME,
        description="Name of the upstream; the site sends traffic to it with "
        "'proxy_pass http://<upstream>;'.",
    )
    state_listen: str = Field(
        description="Where the state server in upstream_file listens: 'host:port' (keep it on "
        "loopback) or 'unix:/path/to.sock'."
    )
    frontend_url: HttpUrl = Field(description="URL users reach; smoke requests go through it.")
    nginx_binary: Path = Field(DEFAULT_NGINX, description="The nginx program.")
    test_command: Argv | None = Field(
        None,
        description="argv that tests the configuration; default "
        "[<nginx_binary>, '-t', '-q', '-c', <main_config>].",
    )
    reload_command: Argv | None = Field(
        None,
        description="argv that reloads nginx; default [<nginx_binary>, '-c', <main_config>, "
        "'-s', 'reload']; for a systemd nginx ['systemctl', 'reload', 'nginx'].",
    )
    command_timeout: Duration = Field(
        30.0, description="How long the test or the reload command may take, e.g. '30s'."
    )
    reload_timeout: Duration = Field(
        10.0, description="How long nginx may take to serve the new split after the reload."
    )
    reload_settle: Duration = Field(
        0.3,
        description="How long every answer of the state server must already be the new split "
        "before a change counts as applied; nginx's old workers still accept for about 100 ms "
        "after a reload.",
    )

    @field_validator("state_listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        if not _LISTEN.fullmatch(value):
            raise ValueError("must be 'host:port' (e.g. '127.0.0.1:8399') or 'unix:/path/x.sock'")
        return value


@dataclass(frozen=True)
class ServedSplit:
    """What nginx's state server answers: the split and the generation it was loaded with."""

    state: RouterState
    generation: str


def _server_address(instance: Instance) -> str:
    if not _HOST.fullmatch(instance.host):
        raise ValueError(f"instance host {instance.host!r} cannot go into an nginx upstream")
    if not 1 <= instance.port <= 65535:
        raise ValueError(f"instance port {instance.port} is not a TCP port")
    host = f"[{instance.host}]" if ":" in instance.host else instance.host
    return f"{host}:{instance.port}"


def render_upstream_file(
    upstream: str,
    state_listen: str,
    split: RouterState,
    servers: list[tuple[str, str]],
    generation: str,
) -> str:
    """The file deployflow owns: the upstream with ``servers`` (address, parameters) and the state
    server answering ``split`` and ``generation``.

    ``split`` and ``generation`` hold only validated addresses, digits and hex, so the JSON needs
    no escaping inside nginx's single-quoted string (no quote, backslash or ``$``).
    """
    answer = json.dumps(
        {
            "stable": split.stable,
            "canary": split.canary,
            "canary_weight": split.canary_weight,
            "generation": generation,
        },
        sort_keys=True,
    )
    if any(ch in answer for ch in "'\\$"):
        raise ValueError(f"state answer cannot be embedded in nginx config: {answer}")
    lines = "\n".join(f"    server {address} {params};" for address, params in servers)
    return f"""\
# Written by deployflow (nginx router) on every traffic change: do not edit by hand.
{_GENERATION_PREFIX}{generation}
upstream {upstream} {{
{lines}
}}

server {{
    listen {state_listen};
    access_log off;
    location = {STATE_PATH} {{
        default_type application/json;
        return 200 '{answer}\\n';
    }}
}}
"""


def plan_servers(
    stable: Instance | None, canary: Instance | None, canary_weight: int
) -> tuple[RouterState, list[tuple[str, str]]]:
    """The split to report and the upstream's server lines for it (see the module docstring)."""
    if stable is None:
        # Only the initial file: nginx refuses an empty upstream, so one placeholder that is down.
        return RouterState(None, None, 0), [("127.0.0.1:1", "down")]
    servers: list[tuple[str, str]] = []
    if canary is None or canary_weight == 0:
        return RouterState(stable.address, None, 0), [(_server_address(stable), "weight=100")]
    if canary_weight == 100:
        servers.append((_server_address(stable), "down"))
    else:
        servers.append((_server_address(stable), f"weight={100 - canary_weight}"))
    servers.append((_server_address(canary), f"weight={canary_weight}"))
    return RouterState(stable.address, canary.address, canary_weight), servers


def _check_weight(canary: Instance | None, canary_weight: int) -> None:
    if isinstance(canary_weight, bool) or not isinstance(canary_weight, int):
        raise ValueError(f"canary_weight must be an integer 0..100, got {canary_weight!r}")
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary_weight must be between 0 and 100, got {canary_weight}")
    if canary is None and canary_weight > 0:
        raise ValueError(f"canary_weight is {canary_weight} but no canary instance was given")


class NginxRouter:
    """Split traffic between a stable and a canary server of one nginx upstream (``Router``).

    Example:
        router = NginxRouter(Path("/etc/nginx/nginx.conf"), Path("/etc/nginx/deployflow/shop.conf"),
                             state_listen="127.0.0.1:8399", frontend_url="https://shop.example")
        router.set_split(stable_instance, canary_instance, canary_weight=10)
    """

    def __init__(
        self,
        main_config: Path,
        upstream_file: Path,
        *,
        state_listen: str,
        frontend_url: str,
        upstream: str = "deployflow",
        nginx_binary: Path = DEFAULT_NGINX,
        test_command: list[str] | None = None,
        reload_command: list[str] | None = None,
        command_timeout: float = 30.0,
        reload_timeout: float = 10.0,
        reload_settle: float = 0.3,
    ) -> None:
        """Configure the router; nothing is written or reloaded until a method is called.

        Args:
            main_config: nginx's main configuration file.
            upstream_file: The file this router owns, included from the http block.
            state_listen: Listen address of the state server ('host:port' or 'unix:/path').
            frontend_url: The URL users reach through this nginx.
            upstream: Name of the upstream.
            nginx_binary: The nginx program, for the default test and reload commands.
            test_command: argv testing the configuration (default ``nginx -t -q -c main``).
            reload_command: argv reloading nginx (default ``nginx -c main -s reload``).
            command_timeout: Seconds the test or reload command may take.
            reload_timeout: Seconds nginx may take to serve a new generation after the reload.
            reload_settle: Seconds every answer must already be the new generation before a
                change counts as applied (old workers keep accepting briefly after a reload).
        """
        if not re.fullmatch(_UPSTREAM_NAME, upstream):
            raise ValueError(f"upstream {upstream!r} must be 1-64 letters, digits or '_'")
        if not _LISTEN.fullmatch(state_listen):
            raise ValueError(f"state_listen {state_listen!r} must be 'host:port' or 'unix:/path'")
        self.main_config = Path(main_config)
        self.upstream_file = Path(upstream_file)
        self.state_listen = state_listen
        self._frontend_url = frontend_url.rstrip("/")
        self.upstream = upstream
        self.nginx_binary = Path(nginx_binary)
        self.test_command = list(
            test_command or [str(nginx_binary), "-t", "-q", "-c", str(main_config)]
        )
        self.reload_command = list(
            reload_command or [str(nginx_binary), "-c", str(main_config), "-s", "reload"]
        )
        self.command_timeout = command_timeout
        self.reload_timeout = reload_timeout
        self.reload_settle = reload_settle
        self._client: httpx.Client | None = None

    @classmethod
    def from_spec(cls, spec: NginxRouterSpec) -> NginxRouter:
        """The router a spec's ``router`` section of kind ``nginx`` describes."""
        return cls(
            spec.main_config,
            spec.upstream_file,
            state_listen=spec.state_listen,
            frontend_url=spec.frontend_url,
            upstream=spec.upstream,
            nginx_binary=spec.nginx_binary,
            test_command=spec.test_command,
            reload_command=spec.reload_command,
            command_timeout=spec.command_timeout,
            reload_timeout=spec.reload_timeout,
            reload_settle=spec.reload_settle,
        )

    @property
    def frontend_url(self) -> str:
        """The URL users reach through this nginx."""
        return self._frontend_url

    def describe(self) -> str:
        return f"nginx upstream {self.upstream} in {self.upstream_file}"

    def preflight(self) -> None:
        """``nginx -t`` on the configuration as it is, before a deploy changes anything
        (``Preflight``): a configuration nginx rejects would refuse the first split, after the
        new version was started for nothing.

        Raises:
            NginxError: nginx rejects its configuration (nginx's message quoted).
        """
        with self._lock():
            test = self._run("test", self.test_command)
        if not test.ok:
            raise NginxError(
                f"nginx -t rejects the configuration as it is ({self.main_config}), before "
                f"deployflow changed anything: fix it first. nginx said: {_why(test)}"
            )

    def close(self) -> None:
        """Close the state server's client (``Closeable``); a later call opens a new one."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- reading what nginx serves ----------------------------------------------------------

    def _state_client(self) -> httpx.Client:
        # One client per router (building one costs an SSL context); no keep-alive, because a
        # reload retires the worker holding an idle connection.
        if self._client is None:
            limits = httpx.Limits(max_keepalive_connections=0)
            if self.state_listen.startswith("unix:"):
                transport = httpx.HTTPTransport(
                    uds=self.state_listen.removeprefix("unix:"), limits=limits
                )
                self._client = httpx.Client(
                    transport=transport, base_url="http://nginx", timeout=3.0
                )
            else:
                self._client = httpx.Client(
                    base_url=f"http://{self.state_listen}", timeout=3.0, limits=limits
                )
        return self._client

    def served(self) -> ServedSplit:
        """The split and generation the running nginx answers on its state server.

        Raises:
            NginxError: nginx does not answer, or answers something that is not a state.
        """
        try:
            response = self._state_client().get(STATE_PATH)
        except httpx.HTTPError as exc:
            raise NginxError(
                f"nginx state server {self.state_listen} unreachable: {exc or type(exc).__name__}"
            ) from exc
        if response.status_code != 200:
            raise NginxError(
                f"nginx state server {self.state_listen} answered HTTP {response.status_code}; "
                f"is {self.upstream_file} included in the http block of {self.main_config}?"
            )
        try:
            data: Any = response.json()
            served = ServedSplit(
                RouterState(
                    stable=_optional_str(data["stable"]),
                    canary=_optional_str(data["canary"]),
                    canary_weight=int(data["canary_weight"]),
                ),
                generation=str(data["generation"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise NginxError(
                f"nginx state server {self.state_listen} answered no deployflow state: "
                f"{response.text[:200]!r}"
            ) from exc
        return served

    def state(self) -> RouterState:
        """Where traffic goes now, as the running nginx reports it.

        Right after a reload an old worker may still answer with the previous split. When the
        answer is older than the file this router wrote, it asks again for a moment (at most
        ``reload_timeout``, 2 s at most) and then reports what nginx answers, whatever the file
        says.
        """
        served = self.served()
        written = _written_generation(self.upstream_file)
        if written is None or served.generation == written:
            return served.state
        deadline = time.monotonic() + min(self.reload_timeout, 2.0)
        while time.monotonic() < deadline:
            served = self.served()
            if served.generation == written:
                break
            time.sleep(0.02)
        return served.state

    # -- changing the split -----------------------------------------------------------------

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        """Send ``canary_weight`` percent to ``canary`` and the rest to ``stable``.

        Raises:
            ValueError: ``canary_weight`` is not an integer 0..100, or is above 0 without canary.
            NginxError: ``nginx -t`` rejected the change (the previous file stays, traffic is
                untouched), the reload failed, or nginx did not serve the new split in time.
        """
        _check_weight(canary, canary_weight)
        self.apply(*plan_servers(stable, canary, canary_weight))

    def promote(self, instance: Instance) -> None:
        """Make ``instance`` the stable server with all the traffic; the canary leaves."""
        self.apply(*plan_servers(instance, None, 0))

    def write_initial(self) -> None:
        """Write a file with no server taking traffic (for a first start of nginx): nginx refuses
        to start when an included file is missing."""
        split, servers = plan_servers(None, None, 0)
        _write_atomic(
            self.upstream_file,
            render_upstream_file(self.upstream, self.state_listen, split, servers, "initial"),
        )

    def apply(self, split: RouterState, servers: list[tuple[str, str]]) -> None:
        """Write, test, reload, and wait until nginx serves ``split`` (see the module docstring)."""
        generation = uuid.uuid4().hex[:16]
        text = render_upstream_file(self.upstream, self.state_listen, split, servers, generation)
        with self._lock():
            previous = _read_or_none(self.upstream_file)
            _write_atomic(self.upstream_file, text)
            test = self._run("test", self.test_command)
            if not test.ok:
                _restore(self.upstream_file, previous)
                raise NginxError(
                    f"nginx -t rejected the split ({split}); {self.upstream_file} and the traffic "
                    f"are unchanged. nginx said: {_why(test)}"
                )
            reload = self._run("reload", self.reload_command)
            if not reload.ok:
                # nginx keeps its running configuration when a reload fails: put the file back so
                # the file and what nginx serves agree.
                _restore(self.upstream_file, previous)
                raise NginxError(
                    f"nginx reload ({' '.join(self.reload_command)}) failed; {self.upstream_file} "
                    f"is unchanged and nginx serves the previous split: {_why(reload)}"
                )
            self._wait_served(generation)

    def _wait_served(self, generation: str) -> None:
        """Wait until nginx answers ``generation``, and only it, for ``reload_settle`` seconds.

        After a reload nginx starts the new workers, waits about 100 ms, and only then tells the
        old ones to stop accepting: for that moment both answer. Seeing the new generation once
        is therefore not enough; every answer within the settle time must be the new one.
        """
        first_seen: list[float] = []

        def settled() -> bool:
            if self.served().generation != generation:
                first_seen.clear()
                return False
            now = time.monotonic()
            if not first_seen:
                first_seen.append(now)
            return now - first_seen[0] >= self.reload_settle

        try:
            wait_for(
                settled,
                timeout=self.reload_timeout + self.reload_settle,
                interval=0.02,
                what=f"nginx serving generation {generation}",
            )
        except DeadlineExceeded as exc:
            try:
                now = f"it still serves: {self.state()}"
            except NginxError as error:
                now = str(error)
            raise NginxError(
                f"nginx was reloaded but did not serve the new split within "
                f"{self.reload_timeout:g}s; {now}"
            ) from exc

    def _run(self, what: str, argv: list[str]) -> CommandResult:
        try:
            return run_command(argv, timeout=self.command_timeout)
        except OSError as exc:
            raise NginxError(f"cannot run the nginx {what} command {argv[0]!r}: {exc}") from exc

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.upstream_file.with_name(f".{self.upstream_file.name}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _written_generation(path: Path) -> str | None:
    """The generation recorded in the upstream file, None when it cannot be read."""
    try:
        with path.open() as handle:
            for line in itertools.islice(handle, 5):
                if line.startswith(_GENERATION_PREFIX):
                    return line.removeprefix(_GENERATION_PREFIX).strip()
    except OSError:
        return None
    return None


def _optional_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string or null, got {value!r}")
    return value


def _why(result: CommandResult) -> str:
    if result.timed_out:
        return "timed out"
    return f"exit {result.returncode}: {result.stderr_tail(lines=10) or '(no output)'}"


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, text: str | bytes) -> None:
    """Write next to ``path`` and rename over it: nginx never reads half a file. The new file
    keeps the mode of the one it replaces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = text.encode() if isinstance(text, str) else text
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    with contextlib.suppress(FileNotFoundError):
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def _restore(path: Path, previous: bytes | None) -> None:
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        _write_atomic(path, previous)

"""Target backend that runs each version as a local process on a free loopback port.

All state lives in files under ``state_dir`` (``instances/<version>.json``, ``logs/<version>.log``)
so that several ``LocalProcessTarget`` objects sharing one directory (the sandbox's and the deploy
flow's, possibly in different processes) see the same running versions.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from deployflow.polling import DeadlineExceeded, wait_for
from deployflow.processes import (
    INHERITED_ENV,
    ProcessRecord,
    free_port,
    is_running,
    register_child,
    tail,
    terminate,
    write_json_atomic,
)
from deployflow.providers.base import BackendError, Instance
from deployflow.spec_types import VERSION_PATTERN, Argv, Duration, StrictModel

PLACEHOLDERS = ("version", "port", "host", "python")
# What a service process inherits by default: enough to find programs and speak the locale.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A version becomes a file name, so keep it to a conservative character set.
_VERSION = re.compile(VERSION_PATTERN)


class TargetError(BackendError):
    """A version could not be started (it exited, or never became healthy)."""


class LocalProcessTargetSpec(StrictModel):
    """Each version runs as a local process on a free loopback port."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("state_dir", "scrape_targets_file")

    kind: Literal["local-process"] = Field(description="Run each version as a local process.")
    command: Argv = Field(
        description="argv template; {version}, {port}, {host} and {python} are substituted per "
        "argument. No shell is involved."
    )
    state_dir: Path = Field(description="Where pids, ports and logs of running versions live.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables set for the service processes."
    )
    inherit_env: list[str] = Field(
        default_factory=lambda: list(INHERITED_ENV),
        description="Variables passed on from deployflow's own environment; nothing else is "
        "(deployflow's tokens and database URL must never reach a service).",
    )
    health_path: str = Field("/healthz", description="Path that answers 2xx when healthy.")
    start_timeout: Duration = Field(
        30.0, description="How long a new version may take to become healthy, e.g. '30s'."
    )
    scrape_targets_file: Path | None = Field(
        None, description="Prometheus file_sd file the target keeps current (sandbox)."
    )

    @field_validator("health_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, command: list[str]) -> list[str]:
        # Refused at validate, not when the deploy starts the version: the same substitution
        # with every placeholder's name standing in for its value.
        render_command(command, {name: name for name in PLACEHOLDERS})
        return command


def render_command(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Substitute ``{version}``, ``{port}``, ``{host}``, ``{python}`` in each argument.

    Each argument is substituted on its own and the result is run without a shell, so a value
    can never split into extra arguments. Braces that do not form ``{name}`` (JSON, for example)
    are left alone.

    Args:
        template: The argv template.
        values: A value for each name in ``PLACEHOLDERS``.

    Returns:
        The argv list to run.

    Raises:
        ValueError: The template is empty, or names a placeholder that does not exist.
    """
    if isinstance(template, str) or not template:
        raise ValueError("command must be a non-empty argv list like ['{python}', '-m', 'app']")

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"command placeholder {{{name}}} is unknown; allowed: {allowed}")
        return values[name]

    return [_PLACEHOLDER.sub(substitute, arg) for arg in template]


def _check_version(version: str) -> None:
    if not _VERSION.fullmatch(version):
        raise ValueError(
            f"version {version!r} is not allowed: use 1-128 characters from letters, digits and "
            "'.', '_', '+', '-', starting with a letter or digit"
        )


class LocalProcessTarget:
    """Run versions of a service as local processes (implements ``Target``).

    Example:
        target = LocalProcessTarget(
            ["{python}", "-m", "deployflow.sandbox.demo_app", "--version", "{version}",
             "--port", "{port}"],
            state_dir=Path(".sandbox"),
        )
        instance = target.start("v2")
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        state_dir: Path,
        env: Mapping[str, str] | None = None,
        inherit_env: Sequence[str] = INHERITED_ENV,
        health_path: str = "/healthz",
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        host: str = "127.0.0.1",
        scrape_targets_file: Path | None = None,
    ) -> None:
        """Configure the target; nothing starts yet.

        Args:
            command: Argv template; see ``render_command`` for the placeholders.
            state_dir: Directory for instance records and logs, shared by every object that
                manages the same versions.
            env: Environment variables set for the processes.
            inherit_env: Names of variables passed on from this process's environment; a
                service never sees the rest (tokens, database URLs).
            health_path: Path that must answer 2xx before a start counts as done.
            start_timeout: Seconds a version gets to become healthy.
            stop_timeout: Seconds between SIGTERM and SIGKILL.
            host: Loopback address the versions bind to.
            scrape_targets_file: If set, a Prometheus file_sd JSON file kept listing every
                running instance with a ``deployflow_version`` label.
        """
        render_command(command, dict.fromkeys(PLACEHOLDERS, "x"))  # fail early on a bad template
        if not health_path.startswith("/"):
            raise ValueError(f"health_path must start with '/', got {health_path!r}")
        if start_timeout <= 0 or stop_timeout <= 0:
            raise ValueError("start_timeout and stop_timeout must be greater than zero")
        self.command = list(command)
        self.state_dir = Path(state_dir)
        self.env = dict(env or {})
        self.inherit_env = tuple(inherit_env)
        self.health_path = health_path
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.host = host
        self.scrape_targets_file = scrape_targets_file

    @classmethod
    def from_spec(cls, spec: LocalProcessTargetSpec) -> LocalProcessTarget:
        """The target a spec's ``target`` section of kind ``local-process`` describes."""
        return cls(
            spec.command,
            state_dir=spec.state_dir,
            env=spec.env,
            inherit_env=spec.inherit_env,
            health_path=spec.health_path,
            start_timeout=spec.start_timeout,
            scrape_targets_file=spec.scrape_targets_file,
        )

    def describe(self) -> str:
        return f"local processes in {self.state_dir}"

    def health_url(self, instance: Instance) -> str:
        """The health endpoint of ``instance``."""
        return f"{instance.base_url}{self.health_path}"

    # -- files -----------------------------------------------------------------------------

    def _instance_file(self, version: str) -> Path:
        return self.state_dir / "instances" / f"{version}.json"

    def log_file(self, version: str) -> Path:
        """Where the output of ``version`` goes."""
        _check_version(version)
        return self.state_dir / "logs" / f"{version}.log"

    def logs(self, version: str, lines: int = 40) -> str:
        """The last ``lines`` lines of the log of ``version`` (empty if there is none)."""
        try:
            return tail(self.log_file(version), lines=lines)
        except (OSError, ValueError):
            return ""

    def _read_record(self, path: Path) -> tuple[Instance, ProcessRecord] | None:
        try:
            data = json.loads(path.read_text())
            record = ProcessRecord.from_json(data)
            instance = Instance(
                version=str(data["version"]),
                host=str(data["host"]),
                port=int(data["port"]),
                pid=record.pid,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # A torn or hand-edited record cannot name a process we may signal: drop it.
            path.unlink(missing_ok=True)
            return None
        return instance, record

    def _running(self, version: str) -> tuple[Instance, ProcessRecord] | None:
        path = self._instance_file(version)
        found = self._read_record(path)
        if found is None:
            return None
        if not is_running(found[1]):
            path.unlink(missing_ok=True)
            return None
        return found

    def _write_scrape_targets(self) -> None:
        if self.scrape_targets_file is None:
            return
        lock_path = self.state_dir / ".scrape-targets.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        # Listing and writing under one lock: otherwise two targets sharing state_dir (sandbox and
        # deploy flow) could interleave and the later write would drop the other's new version.
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            groups = [
                {"targets": [instance.address], "labels": {"deployflow_version": instance.version}}
                for instance in self.instances()
            ]
            write_json_atomic(self.scrape_targets_file, groups)

    # -- Target protocol -----------------------------------------------------------------------

    def start(self, version: str) -> Instance:
        """Start ``version`` and return once its health endpoint answers 2xx.

        A version that already runs is returned as it is.

        Raises:
            TargetError: The process exited or did not become healthy within ``start_timeout``;
                the message carries the tail of its log.
            ValueError: ``version`` is not usable as a name.
        """
        _check_version(version)
        running = self._running(version)
        if running is not None:
            return running[0]
        # free_port() only finds a port that is free now; another process may take it before the
        # child binds. That race shows as "Address already in use": one retry on a new port.
        for attempt in range(2):
            instance, proc = self._spawn(version)
            outcome = self._wait_healthy(instance, proc)
            if outcome == "healthy":
                return instance
            log_tail = self.logs(version, lines=20)
            self.stop(version)
            if outcome == "exited" and "Address already in use" in log_tail and attempt == 0:
                continue
            if outcome == "exited":
                raise TargetError(
                    f"{version} exited with code {proc.returncode} before becoming healthy; "
                    f"last lines of {self.log_file(version)}:\n{log_tail}"
                )
            break
        raise TargetError(
            f"{version} did not answer {self.health_path} within {self.start_timeout:g}s; "
            f"last lines of {self.log_file(version)}:\n{log_tail}"
        )

    def _spawn(self, version: str) -> tuple[Instance, subprocess.Popen[bytes]]:
        port = free_port(self.host)
        argv = render_command(
            self.command,
            {"version": version, "port": str(port), "host": self.host, "python": sys.executable},
        )
        log_path = self.log_file(version)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        inherited = {name: os.environ[name] for name in self.inherit_env if name in os.environ}
        env = {**inherited, "PYTHONUNBUFFERED": "1", **self.env}
        with log_path.open("wb") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # own process group: stop() takes its children too
                )
            except OSError as exc:
                raise TargetError(f"cannot start {version}: {argv[0]!r}: {exc}") from exc
        register_child(proc)
        record = ProcessRecord.of(proc.pid)
        write_json_atomic(
            self._instance_file(version),
            {**record.to_json(), "port": port, "host": self.host, "version": version},
        )
        # List it for Prometheus now rather than once healthy: service discovery needs seconds to
        # pick up a new target, and the first failed scrapes while it boots cost nothing.
        self._write_scrape_targets()
        return Instance(version=version, host=self.host, port=port, pid=proc.pid), proc

    def _wait_healthy(self, instance: Instance, proc: subprocess.Popen[bytes]) -> str:
        """ "healthy", "exited" or "timeout"."""
        try:
            return wait_for(
                lambda: self._probe(instance, proc),
                timeout=self.start_timeout,
                what=f"{instance.version} healthy at {instance.base_url}{self.health_path}",
            )
        except DeadlineExceeded:
            return "timeout"

    def _probe(self, instance: Instance, proc: subprocess.Popen[bytes]) -> str | None:
        if proc.poll() is not None:
            return "exited"
        response = httpx.get(self.health_url(instance), timeout=1.0)
        return "healthy" if response.is_success else None

    def stop(self, version: str) -> None:
        """Stop ``version`` (SIGTERM to its process group, SIGKILL after ``stop_timeout``).

        Stopping a version that does not run is not an error.
        """
        _check_version(version)
        path = self._instance_file(version)
        found = self._read_record(path)
        if found is not None:
            terminate(found[1], timeout=self.stop_timeout)
        path.unlink(missing_ok=True)
        self._write_scrape_targets()

    def instances(self) -> list[Instance]:
        """The versions running now, by version name; records of dead processes are removed."""
        directory = self.state_dir / "instances"
        if not directory.is_dir():
            return []
        found: list[Instance] = []
        for path in sorted(directory.glob("*.json")):
            running = self._running(path.stem)
            if running is not None:
                found.append(running[0])
        return found

    def stop_all(self) -> None:
        """Stop every version recorded in ``state_dir`` (teardown, or leftovers of a crash)."""
        directory = self.state_dir / "instances"
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.json")):
            found = self._read_record(path)
            if found is not None:
                terminate(found[1], timeout=self.stop_timeout)
            path.unlink(missing_ok=True)
        self._write_scrape_targets()

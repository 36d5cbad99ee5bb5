"""Target and router backends driven by the user's own commands (argv hooks, no shell).

This is how deployflow reaches what it does not speak natively: kubectl, helm, docker, ansible,
ssh for versions; Istio, ALB weighted target groups, Gateway API for traffic. Each hook is an argv
list whose arguments are templated one by one (``{version}``, ``{environment}``, ``{service}``,
and per hook a few more), run without a shell, in its own process group, with a deadline at
which the whole group is killed.

A hook fails clearly: a non-zero exit, a timeout, or output that is not the JSON it must print is
a ``BackendError`` naming the hook, with the tail of its stderr. Values of ``env`` (the hooks'
environment, which may hold secrets) are never logged and are masked in that tail.

Target hooks:

- ``start`` prints the new instance as one JSON object: ``{"host": "10.0.0.5", "port": 8080}`` or
  ``{"url": "http://shop-v2.internal:8080"}``, optionally with ``"id"``. deployflow then waits for
  its health endpoint. A version that ``status`` already lists is not started again.
- ``stop`` stops the version; stopping one that does not run must exit 0.
- ``status`` prints the running versions as a JSON list of such objects, each with ``"version"``.
- ``logs`` (optional, ``{lines}`` too) prints the version's last log lines.

Router hooks: ``set_split`` gets ``{stable}``, ``{canary}`` (``host:port``, empty when there is
none) and ``{weight}`` (the canary's percentage); ``state`` prints
``{"stable": "host:port" | null, "canary": "host:port" | null, "canary_weight": 0..100}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from deployflow.polling import DeadlineExceeded, wait_for
from deployflow.processes import CommandResult, run_command
from deployflow.providers.base import (
    BackendConfigError,
    BackendError,
    BuildContext,
    Instance,
    RouterState,
)
from deployflow.providers.local_process import INHERITED_ENV
from deployflow.spec_types import (
    VERSION_PATTERN,
    Argv,
    Duration,
    HttpUrl,
    StrictModel,
    program_problem,
)

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_VERSION = re.compile(VERSION_PATTERN)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_JSON_SHOWN = 200


class CommandHookError(BackendError):
    """A hook exited non-zero, timed out, or printed something that is not the JSON it owes."""


class CommandHook(StrictModel):
    """One user command: an argv template and a deadline."""

    spec_programs: ClassVar[tuple[str, ...]] = ("argv",)

    argv: Argv = Field(
        description="argv template, run without a shell; a relative program path ('./hooks/x') "
        "is relative to the spec's folder."
    )
    timeout: Duration = Field(
        60.0, description="Deadline, e.g. '60s'; at it the hook's whole process group is killed."
    )


class _HookSettings(StrictModel):
    """What the hooks of one backend share: their environment and working directory."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("working_dir",)

    env: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Environment variables set for the hooks (tokens may go here: they are never "
        "logged, and are masked in error messages).",
    )
    inherit_env: list[str] = Field(
        default_factory=lambda: list(INHERITED_ENV),
        description="Variables passed on from deployflow's own environment (KUBECONFIG, for "
        "example); nothing else is.",
    )
    working_dir: Path | None = Field(
        None, description="Directory the hooks run in; default: deployflow's own."
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


RUN_PLACEHOLDERS = ("environment", "service")
TARGET_PLACEHOLDERS = ("version", *RUN_PLACEHOLDERS)
LOGS_PLACEHOLDERS = (*TARGET_PLACEHOLDERS, "lines")
ROUTER_PLACEHOLDERS = RUN_PLACEHOLDERS
SPLIT_PLACEHOLDERS = (*ROUTER_PLACEHOLDERS, "stable", "canary", "weight")


def _check_template(hook: CommandHook | None, allowed: Sequence[str], field: str) -> None:
    if hook is None:
        return
    for arg in hook.argv:
        for name in _PLACEHOLDER.findall(arg):
            if name not in allowed:
                shown = ", ".join("{" + p + "}" for p in allowed)
                raise ValueError(f"{field}: placeholder {{{name}}} is unknown; allowed: {shown}")


class CommandTargetSpec(_HookSettings):
    """Versions are started, stopped and listed by the user's own commands."""

    kind: Literal["command"] = Field(description="The user's own start/stop/status hooks.")
    start: CommandHook = Field(
        description="Starts {version}; prints one JSON object: host and port, or url (id optional)."
    )
    stop: CommandHook = Field(description="Stops {version}; exit 0 when it does not run.")
    status: CommandHook = Field(
        description="Prints the running versions as a JSON list of objects with version and "
        "host/port or url ({environment} and {service} only)."
    )
    logs: CommandHook | None = Field(
        None, description="Prints the last {lines} log lines of {version} (optional)."
    )
    health_path: str = Field("/healthz", description="Path that answers 2xx when healthy.")
    start_timeout: Duration = Field(
        60.0, description="How long a started version may take to become healthy, e.g. '60s'."
    )

    @field_validator("health_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @model_validator(mode="after")
    def _placeholders(self) -> CommandTargetSpec:
        for field in ("start", "stop"):
            _check_template(getattr(self, field), TARGET_PLACEHOLDERS, field)
        _check_template(self.status, RUN_PLACEHOLDERS, "status")
        _check_template(self.logs, LOGS_PLACEHOLDERS, "logs")
        return self


class CommandRouterSpec(_HookSettings):
    """Traffic is split by the user's own commands (Istio, ALB, Gateway API...)."""

    kind: Literal["command"] = Field(description="The user's own set_split/state hooks.")
    set_split: CommandHook = Field(
        description="Sends {weight} percent to {canary} and the rest to {stable} (host:port; "
        "{canary} is empty at weight 0)."
    )
    state: CommandHook = Field(
        description="Prints the split as JSON: stable, canary (host:port or null), canary_weight."
    )
    frontend_url: HttpUrl = Field(description="URL users reach; smoke requests go through it.")

    @model_validator(mode="after")
    def _placeholders(self) -> CommandRouterSpec:
        _check_template(self.set_split, SPLIT_PLACEHOLDERS, "set_split")
        _check_template(self.state, ROUTER_PLACEHOLDERS, "state")
        return self


@dataclass(frozen=True)
class Hook:
    """A hook ready to run: its name (for messages), argv template and deadline."""

    name: str
    argv: tuple[str, ...]
    timeout: float

    @classmethod
    def of(cls, name: str, spec: CommandHook) -> Hook:
        return cls(name, tuple(spec.argv), spec.timeout)


class HookRunner:
    """Runs hooks with one environment; turns every failure into a ``CommandHookError``.

    Args:
        backend: How messages name the backend ("command target").
        env: Variables set for the hooks (secrets allowed: never shown).
        inherit_env: Names passed on from this process's environment.
        working_dir: Where the hooks run.
    """

    def __init__(
        self,
        backend: str,
        *,
        env: Mapping[str, SecretStr | str] | None = None,
        inherit_env: Sequence[str] = INHERITED_ENV,
        working_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self._env = {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in (env or {}).items()
        }
        self.inherit_env = tuple(inherit_env)
        self.working_dir = working_dir

    def check_programs(self, hooks: Sequence[Hook]) -> None:
        """Refuse hooks whose program cannot run (before anything starts)."""
        for hook in hooks:
            problem = program_problem(hook.argv[0])
            if problem:
                raise BackendConfigError(f"{hook.name}.argv.0: {problem}")

    def render(self, hook: Hook, values: Mapping[str, str]) -> list[str]:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise ValueError(f"{hook.name}: placeholder {{{name}}} has no value here")
            return values[name]

        return [_PLACEHOLDER.sub(substitute, arg) for arg in hook.argv]

    def run(self, hook: Hook, values: Mapping[str, str]) -> CommandResult:
        """Run ``hook``; a non-zero exit or a timeout raises ``CommandHookError``."""
        argv = self.render(hook, values)
        inherited = {name: os.environ[name] for name in self.inherit_env if name in os.environ}
        variables = {f"DEPLOYFLOW_{name.upper()}": value for name, value in values.items()}
        env = {**inherited, **variables, **self._env}
        try:
            result = run_command(argv, timeout=hook.timeout, env=env, cwd=self.working_dir)
        except OSError as exc:
            raise CommandHookError(
                f"{self.backend}: {hook.name} hook cannot run {argv[0]!r}: {exc.strerror or exc}"
            ) from exc
        if result.timed_out:
            raise CommandHookError(
                f"{self.backend}: {hook.name} hook ({self.shown(argv)}) timed out after "
                f"{hook.timeout:g}s and was killed{self._tail(result)}"
            )
        if result.returncode != 0:
            raise CommandHookError(
                f"{self.backend}: {hook.name} hook ({self.shown(argv)}) exited with code "
                f"{result.returncode}{self._tail(result)}"
            )
        return result

    def run_json(self, hook: Hook, values: Mapping[str, str]) -> Any:
        """Run ``hook`` and parse its stdout as one JSON document."""
        result = self.run(hook, values)
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise CommandHookError(
                f"{self.backend}: {hook.name} hook printed no JSON: "
                f"{self.mask(result.stdout.strip()[:MAX_JSON_SHOWN])!r}{self._tail(result)}"
            ) from None

    def shown(self, argv: Sequence[str]) -> str:
        return self.mask(" ".join(argv))

    def mask(self, text: str) -> str:
        """``text`` with every value of ``env`` replaced by ``***``."""
        for value in self._env.values():
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def _tail(self, result: CommandResult) -> str:
        stderr = self.mask(result.stderr.strip())
        if not stderr:
            return ""
        tail = "\n".join(stderr.splitlines()[-15:])[-2000:]
        return f"; stderr:\n{tail}"


def _check_version(version: str) -> None:
    if not _VERSION.fullmatch(version):
        raise ValueError(
            f"version {version!r} is not allowed: use 1-128 characters from letters, digits and "
            "'.', '_', '+', '-', starting with a letter or digit"
        )


def parse_instance(data: Any, version: str | None, what: str) -> tuple[Instance, str]:
    """An ``Instance`` and its base URL from a hook's JSON object.

    Raises:
        ValueError: The object lacks host and port (or url), or holds the wrong types; the
            message says what was expected.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    if version is None:
        found = data.get("version")
        if not isinstance(found, str) or not _VERSION.fullmatch(found):
            raise ValueError(f"{what} needs a 'version' string, got {found!r}")
        version = found
    url = data.get("url")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{what}: 'url' must be an http(s) URL, got {url!r}")
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"{what}: 'url' has no host: {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        return Instance(version, parts.hostname, parts.port or default_port), url.rstrip("/")
    host, port = data.get("host"), data.get("port")
    if not isinstance(host, str) or not host:
        raise ValueError(f"{what} needs 'host' and 'port' (or 'url'); 'host' is {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what}: 'port' must be an integer 1..65535, got {port!r}")
    instance = Instance(version, host, port)
    return instance, instance.base_url


def parse_instance_list(
    data: Any, what: str, *, verb: str = "answer"
) -> list[tuple[Instance, str]]:
    """Instances and their base URLs from a status answer: a JSON list of instance objects.

    Raises:
        ValueError: ``data`` is not a list, or an item is not an instance object.
    """
    if not isinstance(data, list):
        raise ValueError(f"{what} must {verb} a JSON list of instances, got {type(data).__name__}")
    return [parse_instance(item, None, f"{what} item {i}") for i, item in enumerate(data)]


class CommandTarget:
    """Start, stop and list versions through the user's own commands (implements ``Target``).

    Example:
        target = CommandTarget(
            start=Hook("start", ("./deploy.sh", "up", "{version}"), 120.0),
            stop=Hook("stop", ("./deploy.sh", "down", "{version}"), 60.0),
            status=Hook("status", ("./deploy.sh", "list"), 30.0),
            service="shop", environment="staging",
        )
    """

    def __init__(
        self,
        *,
        start: Hook,
        stop: Hook,
        status: Hook,
        logs: Hook | None = None,
        service: str = "",
        environment: str = "",
        env: Mapping[str, SecretStr | str] | None = None,
        inherit_env: Sequence[str] = INHERITED_ENV,
        working_dir: Path | None = None,
        health_path: str = "/healthz",
        start_timeout: float = 60.0,
    ) -> None:
        """Configure the target; nothing runs yet.

        Raises:
            BackendConfigError: A hook's program is missing or not executable.
        """
        self.hooks = {"start": start, "stop": stop, "status": status}
        self.logs_hook = logs
        self.runner = HookRunner(
            "command target", env=env, inherit_env=inherit_env, working_dir=working_dir
        )
        self.runner.check_programs([*self.hooks.values(), *([logs] if logs else [])])
        self.values = {"service": service, "environment": environment}
        self.health_path = health_path
        self.start_timeout = start_timeout
        self._urls: dict[tuple[str, str, int], str] = {}

    @classmethod
    def from_spec(cls, spec: CommandTargetSpec, ctx: BuildContext) -> CommandTarget:
        """The target a spec's ``target`` section of kind ``command`` describes; the run's
        service and environment come from ``ctx``."""
        return cls(
            start=Hook.of("start", spec.start),
            stop=Hook.of("stop", spec.stop),
            status=Hook.of("status", spec.status),
            logs=Hook.of("logs", spec.logs) if spec.logs else None,
            service=ctx.service,
            environment=ctx.environment,
            env=spec.env,
            inherit_env=spec.inherit_env,
            working_dir=spec.working_dir,
            health_path=spec.health_path,
            start_timeout=spec.start_timeout,
        )

    def describe(self) -> str:
        return f"command target (start: {self.runner.shown(self.hooks['start'].argv)})"

    def _values(self, version: str | None = None) -> dict[str, str]:
        return dict(self.values) if version is None else {**self.values, "version": version}

    def _remember(self, instance: Instance, url: str) -> Instance:
        self._urls[(instance.version, instance.host, instance.port)] = url
        return instance

    def health_url(self, instance: Instance) -> str:
        """The health endpoint of ``instance`` (under the URL its hook reported, if any)."""
        base = self._urls.get((instance.version, instance.host, instance.port), instance.base_url)
        return f"{base}{self.health_path}"

    def instances(self) -> list[Instance]:
        """The versions the ``status`` hook lists.

        Raises:
            CommandHookError: The hook failed or printed something else than a list of objects.
        """
        hook = self.hooks["status"]
        data = self.runner.run_json(hook, self._values())
        try:
            listed = parse_instance_list(data, "status hook", verb="print")
        except ValueError as exc:
            raise CommandHookError(f"command target: {exc}") from None
        return [self._remember(instance, url) for instance, url in listed]

    def start(self, version: str) -> Instance:
        """Start ``version`` with the ``start`` hook and wait until it is healthy.

        A version the ``status`` hook lists already is returned as it is.

        Raises:
            CommandHookError: A hook failed, or ``start`` printed no instance.
            BackendError: The instance did not become healthy in ``start_timeout`` (it is then
                stopped); the message carries its log tail when there is a ``logs`` hook.
        """
        _check_version(version)
        running = next((i for i in self.instances() if i.version == version), None)
        if running is not None:
            return running
        data = self.runner.run_json(self.hooks["start"], self._values(version))
        try:
            instance, url = parse_instance(data, version, "start hook output")
        except ValueError as exc:
            raise CommandHookError(f"command target: {exc}") from None
        self._remember(instance, url)
        try:
            wait_for(
                lambda: httpx.get(self.health_url(instance), timeout=2.0).is_success,
                timeout=self.start_timeout,
                what=f"{version} healthy at {self.health_url(instance)}",
            )
        except DeadlineExceeded as exc:
            log_tail = self.logs(version, lines=20)
            # The health failure is the news; a stop failure would bury it.
            with contextlib.suppress(BackendError):
                self.stop(version)
            shown = f"; last log lines:\n{log_tail}" if log_tail else ""
            raise BackendError(f"command target: {exc}; it was stopped{shown}") from exc
        return instance

    def stop(self, version: str) -> None:
        """Stop ``version`` with the ``stop`` hook.

        Raises:
            CommandHookError: The hook exited non-zero or timed out.
        """
        _check_version(version)
        self.runner.run(self.hooks["stop"], self._values(version))

    def logs(self, version: str, lines: int = 40) -> str:
        """The ``logs`` hook's output for ``version``; empty without a hook or when it fails."""
        if self.logs_hook is None:
            return ""
        try:
            _check_version(version)
            result = self.runner.run(
                self.logs_hook, {**self._values(version), "lines": str(int(lines))}
            )
        except (BackendError, ValueError):
            return ""
        return "\n".join(self.runner.mask(result.stdout).splitlines()[-lines:])


class CommandRouter:
    """Split traffic through the user's own commands (implements ``Router``)."""

    def __init__(
        self,
        *,
        set_split: Hook,
        state: Hook,
        frontend_url: str,
        service: str = "",
        environment: str = "",
        env: Mapping[str, SecretStr | str] | None = None,
        inherit_env: Sequence[str] = INHERITED_ENV,
        working_dir: Path | None = None,
    ) -> None:
        """Configure the router; nothing runs yet.

        Raises:
            BackendConfigError: A hook's program is missing or not executable.
        """
        self.set_split_hook = set_split
        self.state_hook = state
        self._frontend_url = frontend_url.rstrip("/")
        self.runner = HookRunner(
            "command router", env=env, inherit_env=inherit_env, working_dir=working_dir
        )
        self.runner.check_programs([set_split, state])
        self.values = {"service": service, "environment": environment}

    @classmethod
    def from_spec(cls, spec: CommandRouterSpec, ctx: BuildContext) -> CommandRouter:
        """The router a spec's ``router`` section of kind ``command`` describes; the run's
        service and environment come from ``ctx``."""
        return cls(
            set_split=Hook.of("set_split", spec.set_split),
            state=Hook.of("state", spec.state),
            frontend_url=spec.frontend_url,
            service=ctx.service,
            environment=ctx.environment,
            env=spec.env,
            inherit_env=spec.inherit_env,
            working_dir=spec.working_dir,
        )

    @property
    def frontend_url(self) -> str:
        return self._frontend_url

    def describe(self) -> str:
        return f"command router (set_split: {self.runner.shown(self.set_split_hook.argv)})"

    def state(self) -> RouterState:
        """The split the ``state`` hook reports.

        Raises:
            CommandHookError: The hook failed or printed something else than a split.
        """
        data = self.runner.run_json(self.state_hook, self.values)
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object, got {type(data).__name__}")
            stable, canary, weight = data["stable"], data["canary"], data["canary_weight"]
            for value in (stable, canary):
                if value is not None and not isinstance(value, str):
                    raise TypeError(f"'host:port' or null, got {value!r}")
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise TypeError(f"canary_weight an integer 0..100, got {weight!r}")
        except (KeyError, TypeError) as exc:
            raise CommandHookError(
                'command router: state hook must print {"stable": ..., "canary": ..., '
                f'"canary_weight": ...}}; expected {exc}'
            ) from None
        return RouterState(stable=stable, canary=canary, canary_weight=weight)

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        """Run the ``set_split`` hook with ``{stable}``, ``{canary}`` and ``{weight}``.

        Raises:
            ValueError: ``canary_weight`` is not an integer 0..100, or is above 0 without canary.
            CommandHookError: The hook exited non-zero or timed out.
        """
        if isinstance(canary_weight, bool) or not isinstance(canary_weight, int):
            raise ValueError(f"canary_weight must be an integer 0..100, got {canary_weight!r}")
        if not 0 <= canary_weight <= 100:
            raise ValueError(f"canary_weight must be between 0 and 100, got {canary_weight}")
        if canary is None and canary_weight > 0:
            raise ValueError(f"canary_weight is {canary_weight} but no canary instance was given")
        on = canary is not None and canary_weight > 0
        values = {
            **self.values,
            "stable": stable.address,
            "canary": canary.address if on and canary is not None else "",
            "weight": str(canary_weight if on else 0),
        }
        self.runner.run(self.set_split_hook, values)

    def promote(self, instance: Instance) -> None:
        """All the traffic to ``instance``: ``set_split`` with it as stable and weight 0."""
        self.set_split(instance, None, 0)

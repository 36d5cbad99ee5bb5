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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from deployflow.polling import DeadlineExceeded, wait_for
from deployflow.processes import INHERITED_ENV
from deployflow.providers.base import BackendError, BuildContext, Instance, RouterState
from deployflow.providers.hooks import (
    LOGS_PLACEHOLDERS,
    ROUTER_PLACEHOLDERS,
    RUN_PLACEHOLDERS,
    SPLIT_PLACEHOLDERS,
    TARGET_PLACEHOLDERS,
    CommandHook,
    CommandHookError,
    Hook,
    HookRunner,
    HookSettings,
    check_template,
    check_version,
    parse_instance,
    parse_instance_list,
)
from deployflow.spec_types import Duration, HttpUrl

__all__ = [  # the hook pieces live in hooks.py; these names stay importable from here
    "CommandHook",
    "CommandHookError",
    "CommandRouter",
    "CommandRouterSpec",
    "CommandTarget",
    "CommandTargetSpec",
    "Hook",
    "HookRunner",
]


class CommandTargetSpec(HookSettings):
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
            check_template(getattr(self, field), TARGET_PLACEHOLDERS, field)
        check_template(self.status, RUN_PLACEHOLDERS, "status")
        check_template(self.logs, LOGS_PLACEHOLDERS, "logs")
        return self


class CommandRouterSpec(HookSettings):
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
        check_template(self.set_split, SPLIT_PLACEHOLDERS, "set_split")
        check_template(self.state, ROUTER_PLACEHOLDERS, "state")
        return self


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
        check_version(version)
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
        check_version(version)
        self.runner.run(self.hooks["stop"], self._values(version))

    def logs(self, version: str, lines: int = 40) -> str:
        """The ``logs`` hook's output for ``version``; empty without a hook or when it fails."""
        if self.logs_hook is None:
            return ""
        try:
            check_version(version)
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

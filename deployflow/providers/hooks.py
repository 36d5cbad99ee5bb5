"""What every backend driven by the user's own commands shares: hooks and their settings.

A hook is an argv template (``{version}``, ``{environment}``, ``{service}`` and a few more per
hook) run without a shell, in its own process group, with a deadline; ``HookRunner`` turns every
way it can fail into a ``CommandHookError`` naming the hook. The command target and router, and
the github-actions target's ``status`` and ``logs`` commands, are built from these pieces, as are
the checks of a spec's templates and the parsing of the instances a hook (or a status URL) lists.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from deployflow.processes import INHERITED_ENV, CommandResult, run_command
from deployflow.providers.base import BackendConfigError, BackendError, Instance
from deployflow.spec_types import VERSION_PATTERN, Argv, Duration, StrictModel, program_problem

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
VERSION = re.compile(VERSION_PATTERN)
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


class HookSettings(StrictModel):
    """What the hooks of one backend share: their environment and working directory."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("working_dir",)

    env: dict[str, str | SecretStr] = Field(
        default_factory=dict,
        description="Environment variables set for the hooks. A variable whose name says it holds "
        "a secret (TOKEN, SECRET, PASSWORD, KEY, CREDENTIAL, AUTH...) is a secret: never logged, "
        "masked in error messages; the others (a region, a namespace) are shown as they are.",
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
    def _env_names(cls, value: dict[str, str | SecretStr]) -> dict[str, str | SecretStr]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return {
            name: SecretStr(v) if isinstance(v, str) and secret_name(name) else v
            for name, v in value.items()
        }


_SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASS\b|KEY|CREDENTIAL|AUTH|PRIVATE|CERT|SESSION|COOKIE|DSN",
    re.IGNORECASE,
)


def secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret."""
    return bool(_SECRET_NAME.search(name))


RUN_PLACEHOLDERS = ("environment", "service")
TARGET_PLACEHOLDERS = ("version", *RUN_PLACEHOLDERS)
LOGS_PLACEHOLDERS = (*TARGET_PLACEHOLDERS, "lines")
ROUTER_PLACEHOLDERS = RUN_PLACEHOLDERS
SPLIT_PLACEHOLDERS = (*ROUTER_PLACEHOLDERS, "stable", "canary", "weight")


def check_placeholders(templates: Sequence[str], allowed: Sequence[str], field: str) -> None:
    """Refuse a ``{name}`` in ``templates`` that is not one of ``allowed``.

    Raises:
        ValueError: Naming ``field``, the unknown placeholder and the allowed ones.
    """
    for template in templates:
        for name in PLACEHOLDER.findall(template):
            if name not in allowed:
                shown = ", ".join("{" + p + "}" for p in allowed)
                raise ValueError(f"{field}: placeholder {{{name}}} is unknown; allowed: {shown}")


def check_template(hook: CommandHook | None, allowed: Sequence[str], field: str) -> None:
    """Refuse a placeholder in ``hook``'s argv that is not one of ``allowed`` (None: no hook)."""
    if hook is not None:
        check_placeholders(hook.argv, allowed, field)


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
        # Only secrets are masked: a region or a namespace in an error message helps, and
        # masking it turned every mention of "staging" into ***.
        self._secrets = [
            value
            for name, value in self._env.items()
            if isinstance((env or {})[name], SecretStr) or secret_name(name)
        ]
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

        return [PLACEHOLDER.sub(substitute, arg) for arg in hook.argv]

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
        """``text`` with every secret value of ``env`` replaced by ``***``."""
        for value in self._secrets:
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def _tail(self, result: CommandResult) -> str:
        stderr = self.mask(result.stderr.strip())
        if not stderr:
            return ""
        tail = "\n".join(stderr.splitlines()[-15:])[-2000:]
        return f"; stderr:\n{tail}"


def check_version(version: str) -> None:
    """Refuse a version that may not reach a hook's argv or a workflow input.

    Raises:
        ValueError: Saying what a version may hold.
    """
    if not VERSION.fullmatch(version):
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
        if not isinstance(found, str) or not VERSION.fullmatch(found):
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

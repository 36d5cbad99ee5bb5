"""The service spec: one YAML file that describes how a service is released.

Loading is strict: unknown keys, bad durations, canary steps that do not end at 100 and shell
strings where argv lists belong are all errors, and ``load_spec`` reports every one of them with its
field path at once. ``${VAR}`` and ``${VAR:-default}`` in string values are read from the
environment before validation, so one spec serves the sandbox (free ports) and a team server.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from deployflow.checks.spec import PreChecksSpec
from deployflow.migrations.spec import MigrationsSpec
from deployflow.spec_types import Argv, Duration, StrictModel

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
_VERSION_RE = re.compile(VERSION_PATTERN)
ENVIRONMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SpecError(ValueError):
    """The spec (or a parameter checked against it) is invalid. ``problems`` lists every one."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def validate_environment(environment: str, field: str = "environment") -> str:
    """Environments name database rows and artifacts: keep them plain."""
    if not re.match(ENVIRONMENT_PATTERN, environment):
        raise SpecError(
            field,
            [(field, f"{environment!r} is not allowed: use 1-64 letters, digits, '.', '_', '-'")],
        )
    return environment


def validate_version(version: str, field: str = "version") -> str:
    """A version goes into argv lists, PromQL label matchers and file names: keep it plain."""
    if not _VERSION_RE.match(version):
        raise SpecError(
            field,
            [
                (
                    field,
                    f"{version!r} is not allowed: use 1-128 letters, digits, '.', '_', '+', '-', "
                    "starting with a letter or digit",
                )
            ],
        )
    return version


class LocalProcessTargetSpec(StrictModel):
    """Each version runs as a local process on a free loopback port."""

    kind: Literal["local-process"] = Field(description="Run each version as a local process.")
    command: Argv = Field(
        description="argv template; {version}, {port}, {host} and {python} are substituted per "
        "argument. No shell is involved."
    )
    state_dir: Path = Field(description="Where pids, ports and logs of running versions live.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for the service processes."
    )
    health_path: str = Field("/healthz", description="Path that answers 2xx when healthy.")
    start_timeout: Duration = Field(
        30.0, description="How long a new version may take to become healthy, e.g. '30s'."
    )
    scrape_targets_file: Path | None = Field(
        None, description="Prometheus file_sd file the target keeps current (sandbox)."
    )


TargetSpec = LocalProcessTargetSpec


class HAProxyRouterSpec(StrictModel):
    """Traffic is split by HAProxy through its runtime API (no reload)."""

    kind: Literal["haproxy"] = Field(description="HAProxy runtime API on its admin socket.")
    admin_socket: Path = Field(description="Path of HAProxy's stats socket at level admin.")
    backend: str = Field("app", description="Backend holding the stable and canary servers.")
    stable_server: str = Field("stable", description="Server slot of the stable version.")
    canary_server: str = Field("canary", description="Server slot of the canary version.")
    frontend_url: str = Field(description="URL users reach; smoke requests go through it.")


RouterSpec = HAProxyRouterSpec


class MetricQueries(StrictModel):
    """PromQL templates. ``{version}`` and ``{window}`` are replaced; nothing else is touched."""

    error_rate: str = Field(description="Fraction of requests that failed, 0..1.")
    p95_latency: str = Field(description="95th percentile latency in seconds.")
    request_count: str = Field(description="Requests served in the window.")

    @field_validator("error_rate", "p95_latency", "request_count")
    @classmethod
    def _has_version(cls, value: str) -> str:
        if "{version}" not in value:
            raise ValueError("the query must select the version with the {version} placeholder")
        return value


class PrometheusMetricsSpec(StrictModel):
    """Metrics come from a Prometheus server's HTTP API."""

    kind: Literal["prometheus"] = Field(description="Prometheus HTTP API.")
    url: str = Field(description="Base URL of the Prometheus server.")
    queries: MetricQueries
    timeout: Duration = Field(5.0, description="Timeout of one query.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


MetricsSpec = PrometheusMetricsSpec


class AnalysisSpec(StrictModel):
    """When a canary is healthy. Defaults follow the release policy: >5% errors or P95 above
    twice the pre-deploy baseline roll back."""

    max_error_rate: float = Field(0.05, ge=0.0, le=1.0, description="Maximum error rate, 0..1.")
    max_p95_ratio: float = Field(
        2.0, gt=1.0, le=100.0, description="Maximum canary P95 as a multiple of the baseline."
    )
    min_requests: int = Field(
        20, ge=1, description="Fewer requests in a window make the measurement inconclusive."
    )
    interval: Duration = Field(30.0, description="Time between measurements.")
    window: Duration = Field(60.0, description="Range each measurement's queries look back over.")
    baseline_window: Duration = Field(
        300.0, description="Range over which the stable P95 baseline is measured before deploy."
    )
    failure_limit: int = Field(0, ge=0, description="Failed measurements tolerated per stage.")
    consecutive_error_limit: int = Field(
        3, ge=0, description="Consecutive failed metric queries tolerated before rolling back."
    )
    max_hold_measurements: int = Field(
        3, ge=0, description="Extra measurements after the window when the last was not healthy."
    )


class CanaryStrategySpec(StrictModel):
    """Shift traffic in steps, observing each one."""

    kind: Literal["canary"] = Field(description="Progressive canary.")
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [5, 25, 50, 100],
        description="Canary traffic percentages, strictly increasing, ending at 100.",
    )
    observe: Duration = Field(600.0, description="How long each stage is observed, e.g. '10m'.")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("at least one step is needed")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must be strictly increasing, got {steps}")
        if steps[-1] != 100:
            raise ValueError(f"the last step must be 100, got {steps[-1]}")
        return steps


class DirectStrategySpec(StrictModel):
    """Switch all traffic at once, then verify (for low-risk changes)."""

    kind: Literal["direct"] = Field(description="All traffic at once.")
    observe: Duration = Field(60.0, description="How long the new version is observed.")


StrategySpec = Annotated[CanaryStrategySpec | DirectStrategySpec, Field(discriminator="kind")]


class SmokeRequest(StrictModel):
    """A request that must answer as expected after the release."""

    name: str = Field(description="Shown in reports.")
    path: str = Field(description="Path requested through the router's frontend.")
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: int = Field(200, ge=100, le=599)
    critical: bool = Field(True, description="A critical path that fails rolls the release back.")
    timeout: Duration = 5.0

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class SlackSpec(StrictModel):
    """Where the announcement is posted. The token comes from a Prefect Secret block or
    ``DEPLOYFLOW_SLACK_TOKEN``; it never lives in the spec."""

    channel: str = Field(description="Channel name or id, e.g. '#deploys'.")
    token_secret_block: str | None = Field(
        None, description="Name of the Prefect Secret block holding the bot token."
    )
    base_url: str | None = Field(
        None, description="Slack Web API base URL (default https://slack.com/api/)."
    )


class NotificationsSpec(StrictModel):
    """Announcements and who is on call."""

    slack: SlackSpec | None = None
    on_call: str | None = Field(None, description="On-call engineer confirmed for the release.")
    dashboard_url: str | None = Field(None, description="Monitoring dashboard for the release.")


class ServiceSpec(StrictModel):
    """Everything deployflow needs to release one service."""

    service: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Service name.")
    target: TargetSpec
    router: RouterSpec
    metrics: MetricsSpec
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    strategy: StrategySpec = Field(default_factory=lambda: CanaryStrategySpec(kind="canary"))
    pre_checks: PreChecksSpec | None = Field(
        None, description="Step 1 gates: tests and coverage, lint, types, build, audit, review."
    )
    migrations: MigrationsSpec | None = Field(
        None, description="Step 2: the service's Alembic migrations and how to judge them."
    )
    smoke: list[SmokeRequest] = Field(default_factory=list)
    notifications: NotificationsSpec = Field(default_factory=NotificationsSpec)


def _interpolate(
    node: Any, path: str, env: Mapping[str, str], problems: list[tuple[str, str]]
) -> Any:
    if isinstance(node, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), env, problems)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_interpolate(v, f"{path}.{i}", env, problems) for i, v in enumerate(node)]
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(
                (
                    path,
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} for a default)",
                )
            )
            return match.group(0)

        return _ENV_REF.sub(replace, node)
    return node


def _loc(loc: tuple[int | str, ...]) -> str:
    # Discriminated unions add the tag to the path ("strategy.canary.steps"); drop it.
    parts = [str(p) for p in loc]
    return ".".join(parts) or "(top level)"


def parse_spec(
    data: Any, source: str = "spec", env: Mapping[str, str] | None = None
) -> ServiceSpec:
    """Validate an already-parsed YAML document. Raises SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [("(top level)", "the spec must be a mapping of keys to values")])
    problems: list[tuple[str, str]] = []
    data = _interpolate(data, "", os.environ if env is None else env, problems)
    try:
        spec = ServiceSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key (check the spelling; see examples/sandbox.yaml)"
            problems.append((_loc(tuple(error["loc"])), message))
        raise SpecError(source, problems) from None
    if problems:
        raise SpecError(source, problems)
    return spec


def load_spec(path: Path | str, env: Mapping[str, str] | None = None) -> ServiceSpec:
    """Read, interpolate and validate a spec file; relative paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [("(file)", f"cannot read the spec: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [("(yaml)", str(exc).replace("\n", " "))]) from None
    spec = parse_spec(data, str(path), env)
    return resolve_paths(spec, path.parent)


def resolve_paths(spec: ServiceSpec, base: Path) -> ServiceSpec:
    """Make the spec's relative paths absolute against ``base`` (the spec file's folder)."""

    def resolve(p: Path | None) -> Path | None:
        if p is None or p.is_absolute():
            return p
        return (base / p).resolve()

    target = spec.target.model_copy(
        update={
            "state_dir": resolve(spec.target.state_dir),
            "scrape_targets_file": resolve(spec.target.scrape_targets_file),
        }
    )
    router = spec.router.model_copy(update={"admin_socket": resolve(spec.router.admin_socket)})
    pre_checks = spec.pre_checks
    if pre_checks is not None:
        pre_checks = pre_checks.model_copy(update={"checkout": resolve(pre_checks.checkout)})
    migrations = spec.migrations
    if migrations is not None:
        migrations = migrations.model_copy(update={"path": resolve(migrations.path)})
    return spec.model_copy(
        update={
            "target": target,
            "router": router,
            "pre_checks": pre_checks,
            "migrations": migrations,
        }
    )

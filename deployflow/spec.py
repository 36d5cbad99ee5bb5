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
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, cast

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from deployflow.checks.spec import PreChecksSpec
from deployflow.concurrency import ConcurrencyMode
from deployflow.migrations.spec import MigrationsSpec
from deployflow.providers.oncall import OnCallSection
from deployflow.providers.registry import Role, kinds, spec_union
from deployflow.risk import RiskSpec
from deployflow.spec_types import (
    ENVIRONMENT_PATTERN,
    VERSION_PATTERN,
    Duration,
    SpecError,
    StrictModel,
    format_duration,
    program_problem,
    validate_environment,
    validate_version,
)

__all__ = [
    "ENVIRONMENT_PATTERN",
    "VERSION_PATTERN",
    "AnalysisSpec",
    "ServiceSpec",
    "SpecError",
    "check_spec_text",
    "load_spec",
    "parse_spec",
    "parse_spec_text",
    "reads_sandbox_variables",
    "spec_from_text",
    "validate_environment",
    "validate_version",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Backend sections: one model per registered kind, told apart by ``kind``. The unions are built
# from the registry at run time; to the type checker a section is a StrictModel, which is all the
# flow needs (it hands sections to ``registry.build``).
if TYPE_CHECKING:
    TargetSpec: TypeAlias = StrictModel
    RouterSpec: TypeAlias = StrictModel
    MetricsSpec: TypeAlias = StrictModel
    NotifierSpec: TypeAlias = StrictModel
    FlagProviderSpec: TypeAlias = StrictModel
    OnCallSpec: TypeAlias = OnCallSection
    AnnotatorSpec: TypeAlias = StrictModel
    LogSourceSpec: TypeAlias = StrictModel
    AlertsSpec: TypeAlias = StrictModel
    DependencySpec: TypeAlias = StrictModel
else:
    TargetSpec = spec_union("target")
    RouterSpec = spec_union("router")
    MetricsSpec = spec_union("metrics")
    OnCallSpec = spec_union("on_call")
    AnnotatorSpec = spec_union("annotator")
    NotifierSpec = spec_union("notifier")
    FlagProviderSpec = spec_union("flags")
    LogSourceSpec = spec_union("logs")
    AlertsSpec = spec_union("alerts")
    DependencySpec = spec_union("dependency")


MIN_WINDOW_SECONDS = 1.0


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
    max_stage_duration: Duration | None = Field(
        None,
        description=(
            "The longest a stage observes to reach a verdict: a canary shown neither healthy nor "
            "harmful when its observe time ends keeps being observed up to this, then "
            "on_inconclusive decides. Default: three times the stage's observe time (30m for "
            "10m stages)."
        ),
    )
    on_inconclusive: Literal["pause", "promote", "rollback"] | None = Field(
        None,
        description=(
            "What a stage shown neither healthy nor harmful by max_stage_duration does: 'pause' "
            "asks a person to promote or roll back (nobody answering within decision_timeout "
            "rolls back), 'promote' goes on when the error rate and P95 estimates are within the "
            "limits (and rolls back otherwise), 'rollback' rolls back. Default: 'pause' in "
            "environments whose name starts with 'prod', 'promote' elsewhere."
        ),
    )
    decision_timeout: Duration = Field(
        1800.0,
        description="How long a stage paused by on_inconclusive waits for a person's answer.",
    )

    @field_validator("window", "baseline_window")
    @classmethod
    def _measurable_window(cls, seconds: float) -> float:
        # A metrics backend's ranges are whole seconds or more (Prometheus scrapes every few);
        # a shorter window holds no sample, and every look would be an error.
        if seconds < MIN_WINDOW_SECONDS:
            raise ValueError(
                f"{format_duration(seconds)} is shorter than the {MIN_WINDOW_SECONDS:g}s a "
                "metrics query can look back over; use '1s' or more (e.g. '60s')"
            )
        return seconds

    probe_rate: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description=(
            "Probe requests per second sent straight to the canary's own address during each "
            "canary stage (the spec's smoke requests, in turn), so a low-traffic service reaches "
            "its verdicts sooner; 0 sends none. They count in the canary's figures when the "
            "service exports its own metrics, and each stage says how many there were."
        ),
    )
    confidence: float = Field(
        0.999,
        ge=0.5,
        le=0.9999,
        description=(
            "Confidence a rollback on a metric needs, per stage: an error rate is above the "
            "maximum only when the lower bound of its interval is, a P95 only when the rank test "
            "agrees; spent over every measurement of the stage."
        ),
    )
    promote_confidence: float = Field(
        0.95,
        ge=0.5,
        le=0.9999,
        description=(
            "Confidence a promotion to all the traffic needs: the upper bound of the error "
            "rate's interval must be below the maximum. A stage that leads to less traffic "
            "needs less, in proportion (5% to 25% needs 80% at 0.95); spent over the "
            "measurements that may promote."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_hold_measurements" in data:
            raise ValueError(
                "max_hold_measurements was replaced by max_stage_duration (the longest a stage "
                "observes to reach a verdict, e.g. '30m') and on_inconclusive (pause, promote "
                "or rollback when it is reached)"
            )
        return data

    def stage_limit(self, observe_seconds: float) -> float:
        """The longest a stage whose observe time is ``observe_seconds`` observes."""
        if self.max_stage_duration is None:
            return 3.0 * observe_seconds
        return max(self.max_stage_duration, observe_seconds)

    def inconclusive_rule(self, environment: str) -> Literal["pause", "promote", "rollback"]:
        """``on_inconclusive`` as it applies in ``environment``: the spec's choice, else a
        person decides in production (users are at stake and somebody is on call) and the
        estimates decide elsewhere (an unattended staging pipeline must not wait for people)."""
        if self.on_inconclusive is not None:
            return self.on_inconclusive
        return "pause" if environment.lower().startswith("prod") else "promote"


DEFAULT_PAUSE_TIMEOUT = 1800.0


class PauseSettings(StrictModel):
    """How long a manual gate waits for a person before the canary is rolled back."""

    timeout: Duration = Field(
        DEFAULT_PAUSE_TIMEOUT,
        description="How long to wait for an approval, e.g. '30m'; then the canary rolls back.",
    )


class PauseStep(StrictModel):
    """A manual gate between two canary stages (as Argo Rollouts' pause step): traffic stays where
    it is until a person approves; nobody approving in time rolls the canary back."""

    pause: PauseSettings = Field(default_factory=PauseSettings)


CanaryStep = Annotated[int, Field(ge=1, le=100)] | PauseStep


def _default_canary_steps() -> list[int | PauseStep]:
    return [5, 25, 50, 100]


class CanaryStrategySpec(StrictModel):
    """Shift traffic in steps, observing each one; ``pause`` steps wait for a person."""

    kind: Literal["canary"] = Field("canary", description="Progressive canary.")
    steps: list[CanaryStep] = Field(
        default_factory=_default_canary_steps,
        description="Canary traffic percentages, strictly increasing, ending at 100; a 'pause' "
        "(or {pause: {timeout: 30m}}) between two of them waits for a person's approval.",
    )
    observe: Duration = Field(600.0, description="How long each stage is observed, e.g. '10m'.")

    @field_validator("steps", mode="before")
    @classmethod
    def _pause_words(cls, steps: Any) -> Any:
        """``pause`` alone is a pause with the default timeout; other words are refused here,
        where the message can say what is allowed."""
        if not isinstance(steps, list):
            return steps
        items: list[Any] = []
        for index, item in enumerate(steps):
            if isinstance(item, str) and item.strip() == "pause":
                items.append({"pause": {}})
            elif isinstance(item, str):
                raise ValueError(
                    f"step {index + 1} is {item!r}: a step is a percentage (1 to 100), 'pause' "
                    "or {pause: {timeout: 30m}}"
                )
            elif isinstance(item, dict):
                items.append(_pause_step(index, item))
            elif isinstance(item, bool):  # YAML's true is not 1%
                raise ValueError(
                    f"step {index + 1} is {str(item).lower()}: a step is a percentage (1 to 100), "
                    "'pause' or {pause: {timeout: 30m}}"
                )
            else:
                items.append(item)
        return items

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int | PauseStep]) -> list[int | PauseStep]:
        _check_pauses(steps)
        _check_steps([s for s in steps if isinstance(s, int)])
        return steps

    @property
    def weights(self) -> list[int]:
        """The traffic percentages, without the pauses."""
        return [s for s in self.steps if isinstance(s, int)]

    @property
    def pauses(self) -> list[tuple[int, float]]:
        """(index of the stage a pause follows, its timeout in seconds), in order."""
        found: list[tuple[int, float]] = []
        stage = -1
        for step in self.steps:
            if isinstance(step, int):
                stage += 1
            else:
                found.append((stage, step.pause.timeout))
        return found


def _pause_step(index: int, item: dict[str, Any]) -> PauseStep:
    """A mapping among the steps is a pause; its problems are named with the step's number (a
    union's errors would list every form it is not)."""
    if "pause" in item and item["pause"] is None:
        item = {**item, "pause": {}}  # `- pause:` with nothing under it
    try:
        return PauseStep.model_validate(item)
    except ValidationError as exc:
        found = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            if e["type"] != "extra_forbidden"
            else f"{'.'.join(str(p) for p in e['loc'])}: unknown key (a pause has only timeout)"
            for e in exc.errors()
        )
        form = "{pause: {timeout: 30m}}"
        raise ValueError(f"step {index + 1} is not a pause ({form}): {found}") from None


def _check_pauses(steps: list[int | PauseStep]) -> None:
    """A pause needs stage figures to judge and a stage left to gate: never first, never last,
    never two in a row."""
    pause = [isinstance(s, PauseStep) for s in steps]
    if pause and pause[0]:
        raise ValueError(
            "a pause cannot be the first step: there are no stage figures to judge yet; put it "
            "after a percentage"
        )
    if pause and pause[-1]:
        raise ValueError(
            "a pause cannot be the last step: nothing is left to gate after 100%; put it before "
            "a later percentage"
        )
    for index, (a, b) in enumerate(itertools.pairwise(pause)):
        if a and b:
            raise ValueError(
                f"steps {index + 1} and {index + 2} are both pauses: one pause between two "
                "percentages is enough (give it a longer timeout)"
            )


def _check_steps(steps: list[int]) -> list[int]:
    """Percentages of a progressive rollout: strictly increasing, ending at 100."""
    if not steps:
        raise ValueError("at least one step is needed")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"steps must be strictly increasing, got {steps}")
    if steps[-1] != 100:
        raise ValueError(f"the last step must be 100, got {steps[-1]}")
    return steps


class DirectStrategySpec(StrictModel):
    """Switch all traffic at once, then verify (for low-risk changes)."""

    kind: Literal["direct"] = Field("direct", description="All traffic at once.")
    observe: Duration = Field(60.0, description="How long the new version is observed.")


class BlueGreenStrategySpec(StrictModel):
    """Start the new version (green) beside the old (blue) with no user traffic, verify it in
    isolation, switch all traffic at once, keep blue warm to switch back (for high-risk changes)."""

    kind: Literal["blue-green"] = Field("blue-green", description="Blue-green switch.")
    observe: Duration = Field(
        60.0, description="How long green is observed in isolation under probe traffic."
    )
    keep_previous: Duration = Field(
        600.0, description="How long blue keeps running after the switch, observed like a stage."
    )
    probe_requests: int = Field(
        50,
        ge=1,
        le=10000,
        description="Probe requests sent straight to green per measurement, over the smoke paths.",
    )


KindName = Literal["canary", "direct", "blue-green"]


class AutoStrategySpec(StrictModel):
    """Choose per release from the measured risk (the spec's ``risk`` section); each kind's
    settings are given here, and an environment can be pinned to one kind."""

    kind: Literal["auto"] = Field("auto", description="Chosen from the risk score.")
    canary: CanaryStrategySpec = Field(default_factory=CanaryStrategySpec)
    direct: DirectStrategySpec = Field(default_factory=DirectStrategySpec)
    blue_green: BlueGreenStrategySpec = Field(default_factory=BlueGreenStrategySpec)
    pin: dict[Annotated[str, Field(pattern=ENVIRONMENT_PATTERN)], KindName] = Field(
        default_factory=dict,
        description="Environment -> strategy kind used there whatever the risk.",
    )


StrategySpec = Annotated[
    CanaryStrategySpec | DirectStrategySpec | BlueGreenStrategySpec | AutoStrategySpec,
    Field(discriminator="kind"),
]


class SmokeRequest(StrictModel):
    """A request that must answer as expected after the release."""

    name: str = Field(description="Shown in reports.")
    path: str = Field(description="Path requested through the router's frontend.")
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: int = Field(200, ge=100, le=599)
    critical: bool = Field(True, description="A critical path that fails rolls the release back.")
    timeout: Duration = 5.0
    attempts: int = Field(
        5,
        ge=1,
        le=100,
        description=(
            "Requests sent; the path fails when more of them fail than the stable version's own "
            "error rate explains (one flaky answer is not a broken path)."
        ),
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class FlagsSpec(StrictModel):
    """Feature flags a release turns on step by step: after a blue-green switch, or after a
    canary's or a direct release's promotion and verification."""

    provider: FlagProviderSpec = Field(
        description="Where the flags live: " + ", ".join(b.kind for b in kinds("flags"))
    )
    release: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]] = Field(
        min_length=1, description="Flags this release turns on, one after the other."
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [5, 25, 50, 100],
        description="Percent of users who get each flag, strictly increasing, ending at 100.",
    )
    observe: Duration = Field(60.0, description="How long each flag step is observed.")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        return _check_steps(steps)


class LogsSpec(StrictModel):
    """The canary's logs as a signal: lines matching an error pattern, counted each interval
    like the metrics; over the threshold fails the measurement, unreadable logs are an Error."""

    source: LogSourceSpec = Field(
        description="Where the version's logs are read, by kind: "
        + ", ".join(b.kind for b in kinds("logs"))
    )
    patterns: list[str] = Field(
        min_length=1,
        description="Regular expressions (Python syntax); a line matching any is an error line.",
    )
    max_per_minute: float | None = Field(
        None, ge=0, description="Most error lines per minute (never less than one minute's)."
    )
    max_per_1k_requests: float | None = Field(
        None,
        ge=0,
        description="Most error lines per 1,000 requests the metrics counted (never less than "
        "1,000 requests' worth); used when the request count is known, else max_per_minute.",
    )
    evidence_lines: int = Field(
        10, ge=1, le=100, description="Matching lines kept as evidence for the incident report."
    )

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            if not pattern:
                raise ValueError(f"pattern {index} is empty (it would match every line)")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {index} {pattern!r} is not a valid regular expression: {exc}"
                ) from None
        return patterns

    @model_validator(mode="after")
    def _threshold(self) -> LogsSpec:
        if self.max_per_minute is None and self.max_per_1k_requests is None:
            raise ValueError("give max_per_minute and/or max_per_1k_requests")
        return self


class NotificationsSpec(StrictModel):
    """Announcements and who is on call."""

    notifiers: list[NotifierSpec] = Field(
        default_factory=list,
        description="Where announcements and rollback alerts go; empty: the run log only.",
    )
    on_call: OnCallSpec | None = Field(
        None,
        description="Who is on call, by kind: "
        + ", ".join(b.kind for b in kinds("on_call"))
        + "; a plain string names one person (static). 'confirm' lists the environments "
        "whose deploys wait for that person to confirm before traffic moves.",
    )
    dashboard_url: str | None = Field(None, description="Monitoring dashboard for the release.")
    dashboards: list[AnnotatorSpec] = Field(
        default_factory=list,
        description="Dashboards that mark each deploy (a region) and its stages (points), by "
        "kind: " + ", ".join(b.kind for b in kinds("annotator")),
    )

    @field_validator("on_call", mode="before")
    @classmethod
    def _name_is_static(cls, value: Any) -> Any:
        # `on_call: "@alice"` (the first form of this key) still means one named person.
        if isinstance(value, str):
            return {"kind": "static", "names": [value]}
        return value


class ServiceSpec(StrictModel):
    """Everything deployflow needs to release one service."""

    service: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Service name.")
    target: TargetSpec = Field(
        description="Where versions run: " + ", ".join(b.kind for b in kinds("target"))
    )
    router: RouterSpec = Field(
        description="What splits traffic: " + ", ".join(b.kind for b in kinds("router"))
    )
    metrics: MetricsSpec = Field(
        description="Where measurements come from: " + ", ".join(b.kind for b in kinds("metrics"))
    )
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    strategy: StrategySpec = Field(default_factory=lambda: CanaryStrategySpec(kind="canary"))
    risk: RiskSpec = Field(
        default_factory=RiskSpec, description="How the risk of a release is measured."
    )
    pre_checks: PreChecksSpec | None = Field(
        None, description="Step 1 gates: tests and coverage, lint, types, build, audit, review."
    )
    migrations: MigrationsSpec | None = Field(
        None, description="Step 2: the service's Alembic migrations and how to judge them."
    )
    smoke: list[SmokeRequest] = Field(default_factory=list)
    flags: FlagsSpec | None = Field(
        None,
        description="Feature flags rolled out after a blue-green switch or after a canary's or "
        "direct release's promotion.",
    )
    notifications: NotificationsSpec = Field(default_factory=NotificationsSpec)
    keep_previous: Duration | None = Field(
        None,
        description=(
            "After a release succeeds (any strategy), the previous version keeps running this "
            "long, e.g. '30m', so that `deployflow rollback` inside the window is one router call "
            "(no start); it is stopped when the window ends, by the next deploy or rollback of "
            "the service or the retire-kept-versions flow, whichever runs first. Absent: it is "
            "stopped as soon as the release succeeds."
        ),
    )
    concurrency: ConcurrencyMode = Field(
        "refuse",
        description=(
            "A deploy started while another deploy of this service to the same environment runs: "
            "'refuse' ends it at once, naming the running one; 'wait' queues it until that one "
            "ends (a Prefect global concurrency limit per service and environment)."
        ),
    )
    logs: LogsSpec | None = Field(
        None, description="The canary's logs as a signal: error patterns and a threshold."
    )
    alerts: AlertsSpec | None = Field(
        None,
        description="Alerts as a signal, by kind: "
        + ", ".join(b.kind for b in kinds("alerts"))
        + "; a matching alert firing before the deploy blocks it, during a stage fails it.",
    )
    dependencies: list[DependencySpec] = Field(
        default_factory=list,
        description="Services this one depends on, by kind: "
        + ", ".join(b.kind for b in kinds("dependency"))
        + "; one down blocks the deploy and fails verification.",
    )

    def for_environment(self, environment: str) -> ServiceSpec:
        """This spec with the rules that depend on the environment settled for ``environment``
        (``analysis.on_inconclusive``), so every step of the deploy reads one answer."""
        rule = self.analysis.inconclusive_rule(environment)
        analysis = self.analysis.model_copy(update={"on_inconclusive": rule})
        return self.model_copy(update={"analysis": analysis})

    @model_validator(mode="after")
    def _probe_has_requests(self) -> ServiceSpec:
        if self.analysis.probe_rate > 0 and not self.smoke:
            raise ValueError(
                "analysis.probe_rate sends the spec's smoke requests to the canary: add at least "
                "one under smoke, or set probe_rate to 0"
            )
        return self

    @model_validator(mode="after")
    def _stage_limit_covers_observe(self) -> ServiceSpec:
        limit = self.analysis.max_stage_duration
        if limit is None:
            return self
        strategy = self.strategy
        canary = strategy if isinstance(strategy, CanaryStrategySpec) else None
        if isinstance(strategy, AutoStrategySpec):
            canary = strategy.canary
        observe = canary.observe if canary is not None else None
        if observe is not None and limit < observe:
            raise ValueError(
                f"analysis.max_stage_duration ({limit:g} s) is shorter than the canary's observe "
                f"time ({observe:g} s): a stage observes at least its observe time, so the "
                "maximum must be at least as long"
            )
        return self

    @field_validator("dependencies")
    @classmethod
    def _unique_dependencies(cls, dependencies: list[Any]) -> list[Any]:
        names = [d.name for d in dependencies]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"dependency names must be unique: {', '.join(twice)} given twice")
        return dependencies


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


# Top-level keys holding backend sections, and the registry role of each.
_BACKEND_SECTIONS: dict[str, Role] = {
    "target": "target",
    "router": "router",
    "metrics": "metrics",
    "notifications": "notifier",
    "flags": "flags",
    "alerts": "alerts",
    "dependencies": "dependency",
}


def _without_kind_tag(loc: tuple[int | str, ...], role: Role) -> tuple[int | str, ...]:
    """A backend section's path as the user wrote it: pydantic puts the union's tag (the kind)
    into the path of a discriminated union ("router.nginx.state_listen"); drop its first
    occurrence after the section name."""
    names = {b.kind for b in kinds(role)}
    for index in range(1, len(loc)):
        if loc[index] in names:
            return (*loc[:index], *loc[index + 1 :])
    return loc


def parse_spec(
    data: Any, source: str = "spec", env: Mapping[str, str] | None = None
) -> ServiceSpec:
    """Validate an already-parsed YAML document. Raises SpecError listing every problem."""
    spec, problems = _validated(data, os.environ if env is None else env)
    if problems or spec is None:
        raise SpecError(source, problems)
    return spec


def _validated(
    data: Any, env: Mapping[str, str], *, unset_variables_later: bool = False
) -> tuple[ServiceSpec | None, list[tuple[str, str]]]:
    """The spec and every problem. With ``unset_variables_later``, a ``${VAR}`` not set here is
    not a problem, nor is the value holding it (the machine that runs the deploy sets it)."""
    if not isinstance(data, dict):
        return None, [("(top level)", "the spec must be a mapping of keys to values")]
    problems: list[tuple[str, str]] = []
    data = _interpolate(data, "", env, problems)
    unset = {path for path, _ in problems} if unset_variables_later else set()
    if unset_variables_later:
        problems = []
    spec: ServiceSpec | None = None
    try:
        spec = ServiceSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            loc = tuple(error["loc"])
            if error["type"] == "extra_forbidden":
                message = "unknown key (check the spelling; see examples/sandbox.yaml)"
            role = _BACKEND_SECTIONS.get(str(loc[0])) if loc else None
            if loc[:2] == ("notifications", "on_call"):
                role = "on_call"
            if loc[:2] == ("notifications", "dashboards"):
                role = "annotator"
            if loc[:2] == ("logs", "source"):
                role = "logs"
            if role:
                loc = _without_kind_tag(loc, role)
            # A wrong kind; a wrong value of another choice in the section (metrics.format)
            # keeps pydantic's message, which lists the allowed values.
            wrong_kind = error["type"] == "union_tag_invalid" or (
                error["type"] == "literal_error" and loc[-1] == "kind"
            )
            if role and wrong_kind:
                known = ", ".join(repr(b.kind) for b in kinds(role))
                given = error["input"].get("kind") if isinstance(error["input"], dict) else None
                given = given if given is not None else error["input"]
                message = f"unknown {role} kind {given!r}; known kinds: {known}"
                loc = (*loc[: -1 if loc[-1] == "kind" else None], "kind")
            where = _loc(loc)
            if not any(where == u or where.startswith(f"{u}.") for u in unset):
                problems.append((where, message))
    return spec, problems


MAX_SPEC_BYTES = 1024 * 1024


class _SpecLoader(yaml.SafeLoader):
    """Safe YAML without anchors and aliases: a spec never needs them, and an alias bomb (a few
    lines expanding to billions of nodes, or a recursive alias) must not hang or crash a load."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _AliasRefused(event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # PyYAML keeps the last of two equal keys silently: a spec that says `steps` twice means
        # one of them by mistake, and which one is not for the loader to guess.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = key_node.value
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> Any:
        # Python refuses to read integers of more than 4300 digits (a ValueError, not YAML's).
        if len(str(node.value)) > MAX_INTEGER_DIGITS:
            raise _NumberTooLong(node.start_mark)
        return super().construct_yaml_int(node)


MAX_INTEGER_DIGITS = 100
_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any) -> None:
        shown = str(key) if len(str(key)) <= 60 else str(key)[:57] + "..."
        self.problem = f"the key {shown!r} appears twice in the same mapping: keep one"
        super().__init__(self.problem)
        self.problem_mark = mark


class _NumberTooLong(yaml.YAMLError):
    problem = f"a number of more than {MAX_INTEGER_DIGITS} digits"

    def __init__(self, mark: Any) -> None:
        super().__init__(self.problem)
        self.problem_mark = mark


class _AliasRefused(yaml.YAMLError):
    problem = "anchors and aliases (&name, *name) are not allowed in a spec: write the values out"

    def __init__(self, mark: Any) -> None:
        super().__init__(self.problem)
        self.problem_mark = mark


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where the YAML is wrong, never what the file holds: PyYAML's own message quotes the
    offending line, and a spec_path pointing at a credentials file must not echo it."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def describe_spec_path(path: Path) -> str:
    """How errors name a spec file: a relative path with the folder it was resolved against (a
    worker's flow run starts in a directory of its own, which the user may not expect)."""
    if path.is_absolute():
        return str(path)
    return f"{path} (resolved against {Path.cwd()})"


def read_spec_text(path: Path, source: str | None = None) -> str:
    """The spec file's text: a regular UTF-8 file of at most ``MAX_SPEC_BYTES``."""
    source = source or describe_spec_path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise SpecError(source, [("(file)", f"cannot read the spec: {exc.strerror}")]) from None
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(source, [("(file)", "not a regular file (a directory, device or pipe)")])
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError(
            source,
            [("(file)", f"{info.st_size} bytes; a spec may have at most {MAX_SPEC_BYTES} bytes")],
        )
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(source, [("(file)", f"cannot read the spec: {exc.strerror}")]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(source, [("(file)", f"a spec may have at most {MAX_SPEC_BYTES} bytes")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            source, [("(file)", f"not UTF-8 text (invalid byte at offset {exc.start})")]
        ) from None


SANDBOX_VARIABLE_PREFIX = "DEPLOYFLOW_SANDBOX_"


def reads_sandbox_variables(text: str) -> bool:
    """Whether a spec's YAML text reads the sandbox's variables (a value holding
    ``${DEPLOYFLOW_SANDBOX_...}``, which ``deployflow sandbox`` exports): the sandbox examples and
    copies of them. Such a spec is deployed to the ``sandbox`` environment unless told otherwise;
    any other spec must be told where it goes. Comments and keys do not count; text that is not a
    YAML document reads nothing."""
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass
    except (yaml.YAMLError, RecursionError):
        return False

    def reads(node: Any) -> bool:
        if isinstance(node, dict):
            return any(reads(v) for v in node.values())
        if isinstance(node, list):
            return any(reads(v) for v in node)
        return isinstance(node, str) and any(
            m.group(1).startswith(SANDBOX_VARIABLE_PREFIX) for m in _ENV_REF.finditer(node)
        )

    return reads(data)


def load_spec(path: Path | str, env: Mapping[str, str] | None = None) -> ServiceSpec:
    """Read, interpolate and validate a spec file; relative paths resolve against its folder.

    Raises:
        SpecError: Every problem, with its field path; never the file's content.
    """
    path = Path(path)
    source = describe_spec_path(path)
    text = read_spec_text(path, source)
    return spec_from_text(text, source, path.parent, env)


def parse_spec_text(
    text: str, source: str = "spec", env: Mapping[str, str] | None = None
) -> ServiceSpec:
    """Parse and validate a spec's YAML text, as ``load_spec`` does for a file, without
    resolving its relative paths or checking its programs (which depend on the machine that runs
    the deploy). A ServiceSpec block is checked with this when it is saved.

    Raises:
        SpecError: Every problem, with its field path; never the text's content.
    """
    return parse_spec(_yaml_document(text, source), source, env)


def _yaml_document(text: str, source: str) -> Any:
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise SpecError(source, [("(text)", f"a spec may have at most {MAX_SPEC_BYTES} bytes")])
    try:
        return yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError(source, [("(yaml)", _yaml_problem(exc))]) from None
    except RecursionError:
        raise SpecError(source, [("(yaml)", "nested too deeply")]) from None


def check_spec_text(text: str, source: str = "spec", env: Mapping[str, str] | None = None) -> None:
    """Check a spec's YAML text that will be deployed from another machine (a ServiceSpec block
    being saved): every problem ``parse_spec_text`` finds, except ``${VAR}`` references not set
    here and the values holding them, which the machine running the deploy resolves and checks.

    Raises:
        SpecError: Every other problem, with its field path.
    """
    data = _yaml_document(text, source)
    _, problems = _validated(data, os.environ if env is None else env, unset_variables_later=True)
    if problems:
        raise SpecError(source, problems)


def spec_from_text(
    text: str, source: str, base: Path, env: Mapping[str, str] | None = None
) -> ServiceSpec:
    """A spec from YAML text whose relative paths resolve against ``base``: the whole check of
    ``load_spec`` (schema, then programs that can be run here).

    Raises:
        SpecError: Every problem, with its field path.
    """
    spec = resolve_paths(parse_spec_text(text, source, env), base)
    problems = program_problems(spec)
    if problems:
        raise SpecError(source, problems)
    return spec


def program_problems(model: StrictModel, prefix: str = "") -> list[tuple[str, str]]:
    """Every program named in a ``spec_programs`` field that cannot be run, with its field path."""
    problems: list[tuple[str, str]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        where = f"{prefix}{name}"
        if name in model.spec_programs and isinstance(value, list) and value:
            problem = program_problem(str(value[0]))
            if problem:
                problems.append((f"{where}.0", problem))
        elif isinstance(value, StrictModel):
            problems.extend(program_problems(value, f"{where}."))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, StrictModel):
                    problems.extend(program_problems(item, f"{where}.{index}."))
    return problems


def resolve_paths(spec: ServiceSpec, base: Path) -> ServiceSpec:
    """Make the spec's relative paths absolute against ``base`` (the spec file's folder).

    Which fields hold such paths is declared by each section's ``spec_relative_paths``, so a new
    backend's paths are resolved without a change here.
    """
    return cast(ServiceSpec, _resolve_model(spec, base))


def _resolve_model(model: StrictModel, base: Path) -> StrictModel:
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name in model.spec_relative_paths and isinstance(value, Path):
            if not value.is_absolute():
                update[name] = (base / value).resolve()
        elif name in model.spec_programs and isinstance(value, list) and value:
            program = str(value[0])
            if "/" in program and "{" not in program and not Path(program).is_absolute():
                # normpath, not resolve(): a venv's python is a symlink that must stay one.
                update[name] = [os.path.normpath(base.resolve() / program), *value[1:]]
        elif isinstance(value, StrictModel):
            update[name] = _resolve_model(value, base)
        elif isinstance(value, list) and any(isinstance(v, StrictModel) for v in value):
            update[name] = [
                _resolve_model(v, base) if isinstance(v, StrictModel) else v for v in value
            ]
    return model.model_copy(update=update) if update else model

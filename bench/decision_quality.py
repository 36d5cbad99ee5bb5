"""How good are canary verdicts? Feed the judge synthetic traffic and count its mistakes.

Run with ``uv run python bench/decision_quality.py`` (``--help`` for the knobs). Each run is one
whole canary rollout driven through the real stage loop (``deployflow.rollout.observe_stage``)
with a fake clock, at the settings a team gets by default: steps 5/25/50/100, stages observed
10 min (up to 30 min, ``max_stage_duration``'s default), a look every 30 s, a 60 s recent
window, a 5 min pre-deploy baseline, the judge's confidences (0.999 to roll back, 0.95 to promote
to all the traffic) and the production rule for a stage not shown healthy or harmful in its time
(``on_inconclusive: pause``: a person is asked; nobody answers here, so such a run is counted as
paused, not rolled back). Every second a simulated service answers ``rps`` requests, split
between stable and canary by the stage's weight; each request fails with its version's error
rate and takes a latency drawn from a heavy-tailed distribution (a lognormal body around 18 ms,
and 4% of requests slowed by a Pareto factor). The metrics the judge sees are the sums over its
query window, as Prometheus would give them: requests, error rate, and the latency histogram on
the demo service's buckets.

Scenarios: healthy canaries with the same noise as stable (0.5% random errors), the same under a
load that slows both versions 1.8x from the second stage on, canaries at 3% errors (below the 5%
policy), 6% and 20% errors, 20% errors from half-way into stage 2, and a P95 regression (every
latency 2.5x). One table per traffic level (``--rps``, default 60, 600 and 6 requests/s in all),
one row per scenario: how often the rollout was rolled back and on what, how often it paused for
a person, how many were stopped at stage 1, the median time to the verdict (from the canary's
first traffic or, for a fault that starts mid-stage, from the fault) and, for promoted runs, the
median time to promote against the stages' observe windows added up.

Goals: no healthy or 3% canary rolled back; every 6% and 2.5x canary stopped by the second stage;
every 20% canary stopped in the first.

``--sandbox`` runs real deploys instead (the deploy flow, on a temporary Prefect server, against
the real sandbox: HAProxy, Prometheus, the demo service at ``--rps``' first value). Every
version, stable included, answers with the demo service's noisy-healthy profile (about 0.5%
random 500s, a heavy latency tail); the regressed ones add 3%, 6% or 20% random 500s or a 2.5x
latency. ``--sandbox-runs`` deploys of each scenario run interleaved; ``--cpu-load`` keeps a
busy-loop process running beside them. Beside the sandbox's traffic a probe sends 20 requests/s
and records which version answered each, which gives the breach-to-safe time of a rollback: from
the canary's first answer (it is bad from its first request) to its last, and from the verdict to
the canary's last answer. Stages there are short (``--sandbox-observe``, a look every
``--sandbox-interval``, up to ``--sandbox-max-stage``) so that dozens of deploys fit in an hour,
the environment is not production (a stage not shown healthy or harmful in its time goes on when
its estimates are within the limits), and the judge's confidences are the defaults.
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deployflow.analysis import MetricSample, Thresholds, Verdict
from deployflow.rollout import exposure_after, observe_stage
from deployflow.sandbox.demo_app import LATENCY_BUCKETS
from deployflow.stats import Histogram

BOUNDS = (*LATENCY_BUCKETS, math.inf)
HEALTHY_ERROR_RATE = 0.005


@dataclass(frozen=True)
class Scenario:
    name: str
    canary_error_rate: float
    canary_latency_factor: float = 1.0
    load_factor: float = 1.0  # both versions slow down this much from the second stage on
    regressed: bool = False
    # (stage index, fraction of its observe time) the canary's errors start; healthy before.
    fault_from: tuple[int, float] | None = None


SCENARIOS = (
    Scenario("healthy", HEALTHY_ERROR_RATE),
    Scenario("healthy, load slows both 1.8x", HEALTHY_ERROR_RATE, load_factor=1.8),
    Scenario("3% errors", 0.03),
    Scenario("6% errors", 0.06, regressed=True),
    Scenario("20% errors", 0.20, regressed=True),
    Scenario("20% errors from half-way into stage 2", 0.20, regressed=True, fault_from=(1, 0.5)),
    Scenario("P95 2.5x", HEALTHY_ERROR_RATE, canary_latency_factor=2.5, regressed=True),
)


def _latency_sample(rng: random.Random, size: int) -> list[float]:
    """Latencies of a healthy version: lognormal around 18 ms, 4% slowed by Pareto(1.5)."""
    out = []
    for _ in range(size):
        latency = 0.018 * math.exp(rng.gauss(0.0, 0.3))
        if rng.random() < 0.04:
            latency *= 1.0 + rng.paretovariate(1.5)
        out.append(latency)
    out.sort()
    return out


class LatencyModel:
    """Bucket probabilities of the healthy latency scaled by a factor."""

    def __init__(self, rng: random.Random) -> None:
        self._sorted = np.array(_latency_sample(rng, 200_000))
        self._cache: dict[float, np.ndarray[Any, Any]] = {}

    def probabilities(self, factor: float) -> np.ndarray[Any, Any]:
        if factor not in self._cache:
            n = len(self._sorted)
            cumulative = [
                1.0 if math.isinf(b) else np.searchsorted(self._sorted, b / factor) / n
                for b in BOUNDS
            ]
            self._cache[factor] = np.diff(np.array([0.0, *cumulative]))
        return self._cache[factor]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Counts:
    """One version's traffic, second by second, as running totals (index i: seconds 1..i)."""

    requests: list[np.ndarray[Any, Any]] = field(default_factory=lambda: [np.zeros(1)])
    errors: list[np.ndarray[Any, Any]] = field(default_factory=lambda: [np.zeros(1)])
    buckets: list[np.ndarray[Any, Any]] = field(
        default_factory=lambda: [np.zeros((1, len(BOUNDS)))]
    )
    _joined: tuple[Any, Any, Any] | None = None

    def extend(self, requests: Any, errors: Any, buckets: Any) -> None:
        self.requests.append(self.requests[-1][-1] + np.cumsum(requests))
        self.errors.append(self.errors[-1][-1] + np.cumsum(errors))
        self.buckets.append(self.buckets[-1][-1] + np.cumsum(buckets, axis=0))
        self._joined = None

    def joined(self) -> tuple[Any, Any, Any]:
        if self._joined is None:
            self._joined = (
                np.concatenate(self.requests),
                np.concatenate(self.errors),
                np.concatenate(self.buckets),
            )
        return self._joined


@dataclass
class SimulatedService:
    """Stable and canary answering ``rps`` requests a second, split by the canary weight."""

    rng: np.random.Generator
    scenario: Scenario
    model: LatencyModel
    rps: float
    clock: FakeClock
    weight: int = 0
    slowed: bool = False
    fault_starts_at: float | None = None
    generated_until: int = 0
    counts: dict[str, Counts] = field(
        default_factory=lambda: {"stable": Counts(), "canary": Counts()}
    )

    def _generate(self, version: str, ends: np.ndarray[Any, Any]) -> None:
        share = self.weight / 100.0 if version == "canary" else 1.0 - self.weight / 100.0
        mean = self.rps * share
        whole = math.floor(mean)
        requests = whole + (self.rng.random(len(ends)) < mean - whole)
        canary = version == "canary"
        if canary and self.scenario.fault_from is not None:
            faulty = (
                ends > self.fault_starts_at
                if self.fault_starts_at is not None
                else np.zeros(len(ends), bool)
            )
            rate = np.where(faulty, self.scenario.canary_error_rate, HEALTHY_ERROR_RATE)
        else:
            rate = np.full(
                len(ends), self.scenario.canary_error_rate if canary else HEALTHY_ERROR_RATE
            )
        factor = (self.scenario.canary_latency_factor if canary else 1.0) * (
            self.scenario.load_factor if self.slowed else 1.0
        )
        errors = self.rng.binomial(requests, rate)
        buckets = self.rng.multinomial(requests, self.model.probabilities(factor))
        self.counts[version].extend(requests, errors, buckets)

    def advance(self) -> None:
        until = math.floor(self.clock.now + 1e-9)
        if until <= self.generated_until:
            return
        ends = np.arange(self.generated_until + 1, until + 1, dtype=float)
        self._generate("stable", ends)
        self._generate("canary", ends)
        self.generated_until = until

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        self.advance()
        now = self.generated_until
        since = max(0, math.floor(self.clock.now - window_seconds + 1e-9))
        cum_requests, cum_errors, cum_buckets = self.counts[version].joined()
        requests = float(cum_requests[now] - cum_requests[since])
        if requests == 0:
            return MetricSample(None, None, 0.0)
        errors = float(cum_errors[now] - cum_errors[since])
        counts = cum_buckets[now] - cum_buckets[since]
        histogram = Histogram(BOUNDS, tuple(float(c) for c in counts))
        cumulative = tuple(
            (bound, float(total)) for bound, total in zip(BOUNDS, np.cumsum(counts), strict=True)
        )
        return MetricSample(
            errors / requests, histogram.quantile(0.95), requests, buckets=cumulative
        )


@dataclass(frozen=True)
class RunResult:
    outcome: str  # "promoted", "rolled back" or "paused"
    cause: str  # the metric of the rollback reason; "" otherwise
    stage: int  # index of the stage that ended the run; -1 when promoted
    seconds: float  # from the canary's first traffic (or the fault) to the verdict


def one_rollout(
    seed: int, scenario: Scenario, model: LatencyModel, rps: float, args: argparse.Namespace
) -> RunResult:
    clock = FakeClock()
    service = SimulatedService(np.random.default_rng(seed), scenario, model, rps, clock)
    thresholds = Thresholds(
        min_requests=args.min_requests,
        confidence=args.confidence,
        promote_confidence=args.promote_confidence,
        on_inconclusive=args.on_inconclusive,
    )
    clock.sleep(args.baseline_window)  # stable alone before the deploy
    baseline = service.sample("stable", args.baseline_window).p95_seconds
    started = clock.now
    for index, weight in enumerate(args.steps):
        service.advance()
        service.weight = weight
        service.slowed = index >= 1
        if scenario.fault_from is not None and scenario.fault_from[0] == index:
            service.fault_starts_at = clock.now + scenario.fault_from[1] * args.observe
            started = service.fault_starts_at  # time to act counts from the fault
        result = observe_stage(
            service,
            version="canary",
            control_version="stable",
            index=index,
            weight=weight,
            baseline_p95_seconds=baseline,
            thresholds=thresholds,
            observe_seconds=args.observe,
            interval_seconds=args.interval,
            window_seconds=args.window,
            max_seconds=args.max_stage or 3 * args.observe,
            exposure=exposure_after(args.steps, index),
            clock=clock,
            sleep=clock.sleep,
        )
        if result.verdict is Verdict.PAUSE:
            return RunResult("paused", "", index, clock.now - started)
        if result.verdict is not Verdict.PROMOTE:
            cause = result.reason.metric if result.reason else "no verdict"
            return RunResult("rolled back", cause, index, clock.now - started)
    return RunResult("promoted", "", -1, clock.now - started)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table(args: argparse.Namespace, rps: float, model: LatencyModel) -> list[str]:
    lines = [
        "| scenario | runs | rolled back | on error rate | on P95 | inconclusive | paused "
        "(a person asked) | stopped at stage 1 | median time to roll back | median time to "
        "promote |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, scenario in enumerate(SCENARIOS):
        results = [
            one_rollout(args.seed + 100_000 * number + i, scenario, model, rps, args)
            for i in range(args.runs)
        ]
        back = [r for r in results if r.outcome == "rolled back"]
        paused = [r for r in results if r.outcome == "paused"]
        promoted = [r for r in results if r.outcome == "promoted"]
        causes = Counter(r.cause for r in back)
        to_back = "n/a" if not back else _minutes(_median([r.seconds for r in back]))
        to_promote = "n/a" if not promoted else _minutes(_median([r.seconds for r in promoted]))
        first = sum(1 for r in [*back, *paused] if r.stage == 0)
        lines.append(
            f"| {scenario.name} | {len(results)} | {len(back)} ({len(back) / len(results):.0%}) "
            f"| {causes['error_rate']} | {causes['p95_latency']} | {causes['inconclusive']} "
            f"| {len(paused)} | {first} | {to_back} | {to_promote} |"
        )
    return lines


# -- sandbox mode: real deploys ------------------------------------------------------------------

PROBE_RPS = 20.0


@dataclass(frozen=True)
class SandboxScenario:
    name: str
    prefix: str  # versions of this scenario are named prefix + run number
    fault: dict[str, float]
    regressed: bool


def sandbox_scenarios() -> dict[str, SandboxScenario]:
    from deployflow.sandbox.demo_app import NOISY_HEALTHY

    return {
        "healthy": SandboxScenario("healthy (noisy)", "h", dict(NOISY_HEALTHY), False),
        "3%": SandboxScenario(
            "3% errors", "t", {**NOISY_HEALTHY, "random_error_rate": 0.03}, False
        ),
        "6%": SandboxScenario("6% errors", "e", {**NOISY_HEALTHY, "random_error_rate": 0.06}, True),
        "20%": SandboxScenario(
            "20% errors", "x", {**NOISY_HEALTHY, "random_error_rate": 0.2}, True
        ),
        "p95": SandboxScenario("P95 2.5x", "p", {**NOISY_HEALTHY, "latency_factor": 2.5}, True),
    }


class VersionProbe:
    """Send ``PROBE_RPS`` requests/s through the frontend; remember (sent at, version) of each
    answer (the demo service names itself in every body, errors included)."""

    def __init__(self, base_url: str) -> None:
        import threading

        self.base_url = base_url
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        period = 1.0 / PROBE_RPS
        with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
            next_send = time.time()
            while not self._stop.wait(max(0.0, next_send - time.time())):
                sent = time.time()
                next_send = max(next_send + period, sent)
                try:
                    version = client.get("/api/items").json().get("version")
                except (httpx.HTTPError, ValueError, AttributeError):
                    continue
                if version:
                    self.answers.append((sent, str(version)))

    def __enter__(self) -> VersionProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass(frozen=True)
class SandboxRun:
    scenario: str
    status: str
    cause: str
    stage: int | None
    detect_seconds: float | None  # the failing stage's start to its verdict
    breach_to_safe: float | None  # the canary's first answer to its last (probe)
    verdict_to_safe: float | None  # the verdict to the canary's last answer (probe)
    promote_seconds: float | None = (
        None  # a promoted run: its first stage's start to its last's end
    )


def _sandbox_run(
    name: str, version: str, spec_path: str, probe: VersionProbe, started: float
) -> SandboxRun:
    from datetime import datetime

    from deployments.run import run_deploy

    outcome = run_deploy(spec_path, version, "bench", "canary", False)
    status = outcome["status"]
    rollback = outcome.get("rollback") or {}
    stages = outcome.get("stages") or []
    answered = [sent for sent, v in list(probe.answers) if v == version and sent >= started]
    if status != "rolled_back":
        cause = "promoted" if status == "succeeded" else f"{status}: {outcome.get('message')}"
        promote = None
        if status == "succeeded" and stages:
            first = datetime.fromisoformat(stages[0]["started_at"]).timestamp()
            promote = datetime.fromisoformat(stages[-1]["finished_at"]).timestamp() - first
        return SandboxRun(name, status, cause, None, None, None, None, promote)
    trigger = rollback.get("trigger") or rollback
    stage = trigger.get("stage")
    detect = verdict_to_safe = breach_to_safe = None
    if stages:
        last = stages[-1]
        begun = datetime.fromisoformat(last["started_at"]).timestamp()
        verdict_at = datetime.fromisoformat(last["finished_at"]).timestamp()
        detect = verdict_at - begun
        if answered:
            # Negative: the canary's last answer went out before the verdict (restored at once).
            verdict_to_safe = max(0.0, max(answered) - verdict_at)
            breach_to_safe = max(answered) - min(answered)
    return SandboxRun(
        name,
        status,
        str(trigger.get("metric", "?")),
        stage,
        detect,
        breach_to_safe,
        verdict_to_safe,
    )


def _busy_loop() -> subprocess.Popen[bytes]:
    """A process that keeps one core busy until it is stopped."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


@dataclass(frozen=True)
class Planned:
    """One deploy of the sandbox plan."""

    label: str  # the table row
    scenario: SandboxScenario
    version: str
    interval: float
    cpu_load: bool
    round: int


def sandbox_plan(args: argparse.Namespace) -> list[Planned]:
    """Rounds of one deploy per scenario (and per variant), so slow drifts of the machine's load
    spread over every row."""
    known = sandbox_scenarios()
    counts = {key: args.sandbox_runs for key in args.sandbox_scenarios}
    for item in args.sandbox_counts or []:
        key, _, count = item.partition("=")
        if key not in known or not count.isdigit():
            raise SystemExit(
                f"--sandbox-counts: {item!r} is not SCENARIO=RUNS ({', '.join(known)})"
            )
        counts[key] = int(count)
    loaded = [known[key] for key in args.cpu_load_scenarios] if args.cpu_load else []
    plan: list[Planned] = []
    rounds = max([*counts.values(), args.sandbox_runs if loaded else 0, args.breach_runs or 0])
    for run in range(1, rounds + 1):
        wanted = [known[key] for key, count in counts.items() if run <= count]
        for scenario in wanted:
            plan.append(
                Planned(
                    scenario.name,
                    scenario,
                    f"{scenario.prefix}{run}",
                    args.sandbox_interval,
                    False,
                    run,
                )
            )
        for scenario in loaded if run <= args.sandbox_runs else []:
            plan.append(
                Planned(
                    f"{scenario.name}, CPU load",
                    scenario,
                    f"{scenario.prefix}{run}-load",
                    args.sandbox_interval,
                    True,
                    run,
                )
            )
        if args.breach_interval is not None and run <= (args.breach_runs or args.sandbox_runs):
            scenario = known["20%"]
            plan.append(
                Planned(
                    f"{scenario.name}, interval {args.breach_interval:g} s",
                    scenario,
                    f"{scenario.prefix}{run}-fast",
                    args.breach_interval,
                    False,
                    run,
                )
            )
    return plan


def sandbox_table(args: argparse.Namespace) -> int:
    import json
    import os
    import tempfile
    from pathlib import Path

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    from deployflow.polling import wait_for
    from deployflow.providers import registry
    from deployflow.providers.base import BuildContext
    from deployflow.sandbox.demo_app import NOISY_HEALTHY
    from deployflow.sandbox.supervisor import Sandbox
    from deployflow.spec import load_spec

    plan = sandbox_plan(args)
    faults: dict[str, dict[str, float]] = {"v1": dict(NOISY_HEALTHY)}
    faults.update({p.version: p.scenario.fault for p in plan})
    # A promoted canary that is not healthy (a 3% one may be: it is below the 5% policy) would
    # be the next runs' stable: a healthy version is released after it, untimed, so every run
    # is judged against a healthy stable.
    faults.update({f"{p.version}-reset": dict(NOISY_HEALTHY) for p in plan})
    example = Path(__file__).resolve().parents[1] / "examples" / "sandbox.yaml"
    text = example.read_text()
    steps_line = "steps: [5, 25, 50, 100]"
    if steps_line not in text:
        print(f"{example} no longer holds {steps_line!r}", file=sys.stderr)
        return 1
    # Beside the example, so its relative paths (pre-checks) still hold.
    spec_path = example.parent / ".bench-decision-quality.yaml"
    spec_path.write_text(
        text.replace(steps_line, f"steps: [{', '.join(str(s) for s in args.steps)}]")
    )
    settings = {
        "DEPLOYFLOW_DEMO_FAULTS": json.dumps(faults),
        "DEPLOYFLOW_OBSERVE": f"{args.sandbox_observe:g}s",
        "DEPLOYFLOW_INTERVAL": f"{args.sandbox_interval:g}s",
        "DEPLOYFLOW_WINDOW": f"{args.sandbox_window:g}s",
        "DEPLOYFLOW_MAX_STAGE": f"{args.sandbox_max_stage:g}s",
    }
    rps = args.rps[0]
    print(
        f"{len(plan)} deploys on the sandbox ({rps:g} requests/s, probe {PROBE_RPS:g}/s); steps "
        f"{args.steps}; observe {args.sandbox_observe:g} s, up to {args.sandbox_max_stage:g} s; "
        f"interval {args.sandbox_interval:g} s, window {args.sandbox_window:g} s; the judge's "
        "default confidences; environment 'bench' (on_inconclusive: promote within the limits); "
        f"CPU load: one busy-loop process; load average now {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    runs: list[tuple[str, SandboxRun]] = []
    loads: list[float] = []  # the 1-minute load average after each deploy
    began = time.perf_counter()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="deployflow-dq-") as tmp,
            # A shared machine can take minutes to start a Prefect server.
            prefect_test_harness(server_startup_timeout=600),
            Sandbox(Path(tmp) / "sandbox", env=settings, rps=rps) as sb,
        ):
            os.environ.update(sb.env_vars())
            os.environ.update(settings)
            os.environ["DEPLOYFLOW_DATA_DIR"] = str(Path(tmp) / "data")
            spec = load_spec(spec_path)
            metrics = registry.build("metrics", spec.metrics, BuildContext())
            sb.wait_for_metrics("v1", timeout=60)
            wait_for(
                lambda: metrics.p95("v1", spec.analysis.baseline_window).value,
                timeout=60,
                interval=0.5,
                what="a P95 baseline for v1",
            )
            print(f"sandbox up after {time.perf_counter() - began:.0f} s", flush=True)
            with VersionProbe(sb.frontend_url) as probe:
                for planned in plan:
                    os.environ["DEPLOYFLOW_INTERVAL"] = f"{planned.interval:g}s"
                    load = _busy_loop() if planned.cpu_load else None
                    try:
                        result = _sandbox_run(
                            planned.label, planned.version, str(spec_path), probe, time.time()
                        )
                    finally:
                        if load is not None:
                            load.terminate()
                            load.wait(timeout=10)
                    runs.append((planned.label, result))
                    loads.append(os.getloadavg()[0])
                    print(f"  {planned.version} (load {loads[-1]:.1f}): {result}", flush=True)
                    if result.status == "succeeded" and planned.scenario.fault != NOISY_HEALTHY:
                        reset = f"{planned.version}-reset"
                        again = _sandbox_run("reset", reset, str(spec_path), probe, time.time())
                        print(f"  {reset} (a healthy stable again, not counted): {again}")
                    following = plan[len(runs)] if len(runs) < len(plan) else None
                    if following is None or following.round != planned.round:
                        # A round is complete: the table so far, in case the run is cut short.
                        labels = list(dict.fromkeys(label for label, _ in runs))
                        table_so_far = sandbox_lines(labels, [r for _, r in runs])
                        print("\n".join(table_so_far), flush=True)
    finally:
        spec_path.unlink(missing_ok=True)
    print(f"\n{time.perf_counter() - began:.0f} s", end="")
    if loads:
        print(
            f"; load average after each deploy: median {_median(loads):.1f}, "
            f"{min(loads):.1f} to {max(loads):.1f}",
            end="",
        )
    print("\n")
    labels = list(dict.fromkeys(p.label for p in plan))
    print("\n".join(sandbox_lines(labels, [r for _, r in runs])))
    return 0


def _seconds(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    return f"{_median(known):.1f} s (max {max(known):.1f} s)"


def sandbox_lines(labels: list[str], runs: list[SandboxRun]) -> list[str]:
    lines = [
        "| scenario | runs | rolled back | on error rate | on P95 | inconclusive | other | "
        "at stage 1 | median s to the verdict | breach-to-safe | verdict-to-safe | "
        "time to promote |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        mine = [r for r in runs if r.scenario == label]
        back = [r for r in mine if r.status == "rolled_back"]
        causes = Counter(r.cause for r in back)
        other = len(mine) - len(back) - sum(1 for r in mine if r.status == "succeeded")
        other += sum(
            n for c, n in causes.items() if c not in ("error_rate", "p95_latency", "inconclusive")
        )
        first = sum(1 for r in back if r.stage == 0)
        detect = [r.detect_seconds for r in back if r.detect_seconds is not None]
        lines.append(
            f"| {label} | {len(mine)} | {len(back)} ({len(back) / max(len(mine), 1):.0%}) "
            f"| {causes['error_rate']} | {causes['p95_latency']} | {causes['inconclusive']} "
            f"| {other} | {first} | {'n/a' if not detect else f'{_median(detect):.0f} s'} | "
            f"{_seconds([r.breach_to_safe for r in back])} | "
            f"{_seconds([r.verdict_to_safe for r in back])} | "
            f"{_seconds([r.promote_seconds for r in mine])} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="rollouts per scenario")
    parser.add_argument(
        "--rps", type=float, nargs="+", default=[60.0, 600.0, 6.0],
        help="requests per second in all, one table each (sandbox: the first)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 25, 50, 100])
    parser.add_argument("--observe", type=float, default=600.0, help="seconds per stage")
    parser.add_argument("--max-stage", type=float, help="a stage's maximum (3x observe)")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0, help="trailing window")
    parser.add_argument("--baseline-window", type=float, default=300.0)
    parser.add_argument("--min-requests", type=int, default=20)
    parser.add_argument("--confidence", type=float, default=0.999)
    parser.add_argument("--promote-confidence", type=float, default=0.95)
    parser.add_argument(
        "--on-inconclusive", choices=["pause", "promote", "rollback"], default="pause",
        help="the rule at a stage's maximum duration (pause: production's default)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sandbox", action="store_true", help="real deploys on the sandbox instead of simulation"
    )
    parser.add_argument("--sandbox-runs", type=int, default=5, help="deploys per scenario")
    parser.add_argument(
        "--sandbox-counts",
        nargs="+",
        metavar="SCENARIO=RUNS",
        help="(sandbox) deploys of a scenario other than --sandbox-runs, e.g. healthy=30 3%%=10",
    )
    parser.add_argument("--breach-runs", type=int, help="(sandbox) deploys at --breach-interval")
    parser.add_argument("--sandbox-observe", type=float, default=6.0)
    parser.add_argument("--sandbox-interval", type=float, default=2.0)
    parser.add_argument("--sandbox-window", type=float, default=6.0)
    parser.add_argument("--sandbox-max-stage", type=float, default=60.0)
    parser.add_argument(
        "--sandbox-scenarios",
        nargs="+",
        default=["healthy", "3%", "6%", "20%", "p95"],
        choices=["healthy", "3%", "6%", "20%", "p95"],
    )
    parser.add_argument(
        "--cpu-load",
        action="store_true",
        help="(sandbox) also run --cpu-load-scenarios with a busy-loop process beside the deploy",
    )
    parser.add_argument(
        "--cpu-load-scenarios",
        nargs="+",
        default=["healthy", "6%"],
        choices=["healthy", "3%", "6%", "20%", "p95"],
    )
    parser.add_argument(
        "--breach-interval",
        type=float,
        help="(sandbox) also deploy 20%% canaries at this interval, for breach-to-safe",
    )
    args = parser.parse_args(argv)
    if args.sandbox:
        return sandbox_table(args)

    model = LatencyModel(random.Random(args.seed))
    max_stage = args.max_stage or 3 * args.observe
    print(
        f"{args.runs} rollouts per scenario; steps {args.steps}; observe {args.observe:g} s, up "
        f"to {max_stage:g} s; interval {args.interval:g} s, window {args.window:g} s; "
        f"confidence {args.confidence:g} (rollback) / {args.promote_confidence:g} (promotion to "
        f"all the traffic, less for less); on_inconclusive {args.on_inconclusive}; the stages' "
        f"observe windows add up to {_minutes(args.observe * len(args.steps))}"
    )
    for rps in args.rps:
        started = time.perf_counter()
        print(f"\n{rps:g} requests/s in all ({rps * args.steps[0] / 100:g}/s on the canary at "
              f"{args.steps[0]}%):\n")  # fmt: skip
        print("\n".join(table(args, rps, model)), flush=True)
        print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

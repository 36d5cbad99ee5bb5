"""The demo HTTP service the sandbox deploys: one process per version, with injectable faults.

Run it as ``python -m deployflow.sandbox.demo_app --version v2 --port 8081``.

App endpoints (``/``, ``/api/items``, ``/api/checkout``) answer after a base latency of about
15-20 ms, so the P95 of two healthy versions agree closely and the canary analysis (roll back when
canary P95 > 2x stable P95) does not trip on noise. ``DEPLOYFLOW_DEMO_FAULTS`` makes a version
misbehave, e.g. ``{"v2": {"error_rate": 0.2, "latency_ms": 300}}``; ``/healthz`` stays healthy under
faults on purpose, because a bad release often passes its health check. Every injected failure
writes an ``ERROR`` line to the version's output (its log file in the sandbox) and counts in
``deployflow_demo_log_errors_total``; ``log_errors`` makes that fraction of requests log an error
while still answering 200 on time (a fault only the logs, or an alert on that counter, show).

Noise like a real service's, for measuring the canary judge (``bench/decision_quality.py
--sandbox``): ``random_error_rate`` fails requests at random (independently, so a window may see
more or fewer than the rate), ``latency_tail`` gives the latency a lognormal body and slows that
fraction of requests by a Pareto(1.5) factor (a heavy tail, capped at ``TAIL_CAP_SECONDS``), and
``latency_factor`` multiplies the whole latency (a P95 regression). ``NOISY_HEALTHY`` is the
profile the bench gives every version: about 0.5% random 500s and a 4% heavy tail.

Feature flags: with ``--flags FILE`` the app evaluates the flag ``new-checkout`` per request with
OpenFeature (``openfeature-sdk`` and ``openfeature-provider-flagd`` reading the flagd file
in-process), by a stable targeting key (the ``X-User`` header, else one per request). When the flag
is on, ``/api/checkout`` takes the new code path, and ``new_checkout_error_rate`` in the faults
makes that path alone fail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

FAULTS_ENV = "DEPLOYFLOW_DEMO_FAULTS"
APP_PATHS = ("/", "/api/items", "/api/checkout")
BASE_LATENCY_SECONDS = 0.016
JITTER_SECONDS = 0.003
# Fine around the base latency so histogram_quantile(0.95) resolves 15 ms vs 40 ms, coarse beyond.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
_FAULT_KEYS = frozenset(
    {
        "error_rate",
        "latency_ms",
        "new_checkout_error_rate",
        "error_paths",
        "log_errors",
        "random_error_rate",
        "latency_factor",
        "latency_tail",
    }
)
# The slowest a heavy-tail request gets, so one draw cannot hold a server thread for minutes.
TAIL_CAP_SECONDS = 2.0
# Healthy, with the noise of a real service: about 0.5% random 500s and a heavy latency tail.
NOISY_HEALTHY: dict[str, float] = {"random_error_rate": 0.005, "latency_tail": 0.04}
NEW_CHECKOUT_FLAG = "new-checkout"
# Evaluates a boolean flag for a targeting key.
FlagEvaluator = Callable[[str, str], bool]


class FaultConfigError(ValueError):
    """``DEPLOYFLOW_DEMO_FAULTS`` is not valid."""


@dataclass(frozen=True)
class Fault:
    """Misbehaviour injected into one version.

    Attributes:
        error_rate: Fraction (0..1) of app requests that answer 500.
        latency_ms: Extra delay in milliseconds added to every app request.
        new_checkout_error_rate: Fraction of requests on the new checkout path (flag
            ``new-checkout`` on) that answer 500.
        error_paths: The app paths ``error_rate`` applies to; empty: every app path. A fault in
            a page no smoke request covers passes every check sent straight to the version and
            shows only under users' traffic.
        log_errors: Fraction of app requests that log an ERROR line but answer 200 on time.
        random_error_rate: Chance (0..1) that each app request answers 500, independently.
        latency_factor: Multiplies every app request's latency (> 0; 2.5 is a 2.5x P95).
        latency_tail: Fraction (0..1) of app requests slowed by a Pareto(1.5) factor, on a
            lognormal body: a heavy-tailed latency.
    """

    error_rate: float = 0.0
    latency_ms: float = 0.0
    new_checkout_error_rate: float = 0.0
    error_paths: frozenset[str] = frozenset()
    log_errors: float = 0.0
    random_error_rate: float = 0.0
    latency_factor: float = 1.0
    latency_tail: float = 0.0

    def describe(self) -> str:
        """The injected misbehaviour in words, for the startup line (the run log shows it)."""
        changed = [
            f"{field.name} {', '.join(sorted(value)) if isinstance(value, frozenset) else value}"
            for field in fields(self)
            if (value := getattr(self, field.name)) != field.default
        ]
        return f"injected fault: {'; '.join(changed)}" if changed else "no injected fault"


def parse_faults(raw: str | None) -> dict[str, Fault]:
    """Parse the ``DEPLOYFLOW_DEMO_FAULTS`` JSON into a fault per version.

    Args:
        raw: The variable's value; None or blank means no faults.

    Returns:
        A mapping version -> Fault.

    Raises:
        FaultConfigError: The text is not a JSON object of objects with ``error_rate`` (0..1)
            and/or ``latency_ms`` (>= 0); the message names the offending field.
    """
    if raw is None or not raw.strip():
        return {}
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FaultConfigError(f"{FAULTS_ENV} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FaultConfigError(
            f'{FAULTS_ENV} must be a JSON object like {{"v2": {{"error_rate": 0.2}}}}, '
            f"got {type(data).__name__}"
        )
    faults: dict[str, Fault] = {}
    for version, entry in data.items():
        where = f"{FAULTS_ENV}[{version!r}]"
        if not isinstance(entry, dict):
            raise FaultConfigError(
                f"{where} must be an object with 'error_rate' and/or 'latency_ms', "
                f"got {type(entry).__name__}"
            )
        unknown = sorted(set(entry) - _FAULT_KEYS)
        if unknown:
            raise FaultConfigError(
                f"{where} has unknown key(s) {unknown}; allowed: "
                + ", ".join(repr(k) for k in sorted(_FAULT_KEYS))
            )
        values = {
            key: _number(entry.get(key, default), f"{where}.{key}")
            for key, default in (
                ("error_rate", 0.0),
                ("latency_ms", 0.0),
                ("new_checkout_error_rate", 0.0),
                ("log_errors", 0.0),
                ("random_error_rate", 0.0),
                ("latency_factor", 1.0),
                ("latency_tail", 0.0),
            )
        }
        rates = (
            "error_rate",
            "new_checkout_error_rate",
            "log_errors",
            "random_error_rate",
            "latency_tail",
        )
        for name in rates:
            if not 0.0 <= values[name] <= 1.0:
                raise FaultConfigError(
                    f"{where}.{name} must be between 0 and 1, got {values[name]}"
                )
        if values["latency_ms"] < 0:
            raise FaultConfigError(f"{where}.latency_ms must be >= 0, got {values['latency_ms']}")
        if not 0.0 < values["latency_factor"] <= 100.0:
            raise FaultConfigError(
                f"{where}.latency_factor must be above 0 and at most 100, "
                f"got {values['latency_factor']}"
            )
        paths = entry.get("error_paths", [])
        if not isinstance(paths, list) or not all(p in APP_PATHS for p in paths):
            raise FaultConfigError(
                f"{where}.error_paths must be a list of app paths {list(APP_PATHS)}, got {paths!r}"
            )
        faults[str(version)] = Fault(error_paths=frozenset(paths), **values)
    return faults


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultConfigError(f"{where} must be a finite number, got {value!r}")
    return float(value)


class DemoMetrics:
    """The service's Prometheus metrics, in a registry of its own (no process/platform noise)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "deployflow_demo_http_requests",
            "App requests served, by version, status code and path.",
            ("version", "code", "path"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "deployflow_demo_http_request_duration_seconds",
            "App request latency in seconds, by version.",
            ("version",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.log_errors = Counter(
            "deployflow_demo_log_errors",
            "ERROR lines the service logged, by version (what an alert rule on logs watches).",
            ("version",),
            registry=self.registry,
        )


class DemoApp:
    """What one version of the service does with a request; the HTTP plumbing is separate."""

    def __init__(
        self,
        version: str,
        fault: Fault,
        *,
        rng: random.Random | None = None,
        base_latency: float = BASE_LATENCY_SECONDS,
        flags: FlagEvaluator | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.version = version
        self.log = log or _print_line
        self.flags = flags
        self.fault = fault
        self.base_latency = base_latency
        self.metrics = DemoMetrics()
        # Every series exists from the start at 0: a counter that first appears at 1 hides its
        # first increment from rate(), which would make the first errors of a bad canary invisible.
        for path in APP_PATHS:
            for code in ("200", "500"):
                self.metrics.requests.labels(version, code, path)
        self.metrics.duration.labels(version)
        self.metrics.log_errors.labels(version)
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()  # random.Random is not documented as thread-safe
        self._served = 0
        self._served_new = 0

    def new_checkout(self, user: str) -> bool:
        """Whether ``user`` gets the new checkout path (flag ``new-checkout``); off without
        flags or when the flag cannot be evaluated."""
        if self.flags is None:
            return False
        try:
            return self.flags(NEW_CHECKOUT_FLAG, user)
        except Exception:  # a flag that cannot be read must never break checkout
            return False

    def log_error(self, message: str) -> None:
        """One ERROR line in the service's log, counted in its metrics."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.log(f"{stamp} ERROR {self.version} {message}")
        self.metrics.log_errors.labels(self.version).inc()

    def handle_app_request(self, path: str, user: str | None = None) -> tuple[int, dict[str, Any]]:
        """Serve an app endpoint: wait the latency, maybe fail, record metrics. ``user`` is the
        flags' targeting key (one per request when None)."""
        started = time.perf_counter()
        fault = self.fault
        with self._rng_lock:
            rng = self._rng
            if fault.latency_tail > 0.0:
                latency = (self.base_latency + JITTER_SECONDS / 2) * math.exp(rng.gauss(0.0, 0.3))
                if rng.random() < fault.latency_tail:
                    latency = min(latency * (1.0 + rng.paretovariate(1.5)), TAIL_CAP_SECONDS)
            else:
                latency = self.base_latency + rng.uniform(0.0, JITTER_SECONDS)
            randomly_failed = rng.random() < fault.random_error_rate
            # Errors are spread evenly (request n fails when n * rate crosses a whole number), so
            # "20% errors" is 20% in every window, not only on average: demos and tests that
            # expect a rollback at the first stage do not depend on luck.
            n = self._served
            self._served += 1
            failed = int((n + 1) * fault.error_rate) > int(n * fault.error_rate)
            logs_error = int((n + 1) * fault.log_errors) > int(n * fault.log_errors)
        if fault.error_paths and path not in fault.error_paths:
            failed = False
        failed = failed or randomly_failed
        new_path = path == "/api/checkout" and self.new_checkout(user or f"request-{n}")
        if new_path:
            with self._rng_lock:
                rate, m = self.fault.new_checkout_error_rate, self._served_new
                self._served_new += 1
                failed = failed or int((m + 1) * rate) > int(m * rate)
        time.sleep(latency * fault.latency_factor + fault.latency_ms / 1000.0)
        if failed:
            status, body = 500, {"error": "injected fault", "version": self.version}
            self.log_error(f"{path} answered 500: injected fault")
        else:
            if logs_error:
                self.log_error(f"{path}: injected fault (log_errors): order sync failed, retried")
            status, body = 200, {"version": self.version, "path": path}
            if path == "/api/checkout":
                body["checkout"] = "new" if new_path else "old"
        self.metrics.requests.labels(self.version, str(status), path).inc()
        self.metrics.duration.labels(self.version).observe(time.perf_counter() - started)
        return status, body


_OUTPUT_LOCK = threading.Lock()


def _print_line(line: str) -> None:
    # One lock: lines written by the serving threads never interleave.
    with _OUTPUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _handler_class(app: DemoApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "deployflow-demo"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send_json(200, {"status": "ok", "version": app.version})
            elif path == "/metrics":
                self._send(200, generate_latest(app.metrics.registry), CONTENT_TYPE_LATEST)
            elif path in APP_PATHS:
                self._send_json(*app.handle_app_request(path, self.headers.get("X-User")))
            else:
                self._send_json(404, {"error": "not found", "version": app.version})

        def _send_json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # One line per request at 40 rps would drown the log whose tail explains failures.
            pass

    return Handler


def openfeature_flags(path: str, poll_ms: int = 200) -> FlagEvaluator:
    """A flag evaluator backed by OpenFeature with the flagd provider reading ``path`` in-process
    (re-read within ``poll_ms`` of a change, so a kill switch needs no restart)."""
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.evaluation_context import EvaluationContext

    api.set_provider(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=path, deadline_ms=poll_ms
        )
    )
    client = api.get_client()

    def evaluate(flag: str, user: str) -> bool:
        return client.get_boolean_value(flag, False, EvaluationContext(targeting_key=user))

    return evaluate


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo service until SIGTERM or SIGINT; returns the exit code."""
    parser = argparse.ArgumentParser(description="deployflow demo service (one version)")
    parser.add_argument("--version", required=True, help="version this process serves")
    parser.add_argument("--port", required=True, type=int, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--flags", help="flagd flag-definition file evaluated in-process")
    args = parser.parse_args(argv)
    try:
        faults = parse_faults(os.environ.get(FAULTS_ENV))
    except FaultConfigError as exc:
        print(f"demo_app: {exc}", file=sys.stderr, flush=True)
        return 2
    fault = faults.get(args.version, Fault())
    app = DemoApp(args.version, fault, flags=openfeature_flags(args.flags) if args.flags else None)
    server = ThreadingHTTPServer((args.host, args.port), _handler_class(app))
    server.daemon_threads = True

    def _stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it must not run on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(
        f"demo_app {args.version} listening on {args.host}:{args.port} ({fault.describe()})",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

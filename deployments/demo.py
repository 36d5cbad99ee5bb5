"""``deployflow demo``: the whole story on one machine.

Brings up the sandbox (HAProxy, Prometheus, the demo service v1 with traffic), deploys v2 (healthy)
through 5/25/50/100 to success, then v3 (20% errors) which rolls back at the first stage. Exits 0
only when both outcomes happened. Everything the sandbox started is stopped on the way out, also on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from deployflow.polling import wait_for
from deployflow.providers import registry
from deployflow.providers.base import BuildContext, Metrics
from deployflow.sandbox.supervisor import SANDBOX_RPS, Sandbox, SandboxRouter
from deployflow.spec import load_spec
from deployments import endings
from deployments.run import print_outcome, run_deploy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_SPEC = EXAMPLES / "sandbox.yaml"
# The example spec of each sandbox router.
ROUTER_SPECS: dict[SandboxRouter, Path] = {
    "haproxy": EXAMPLE_SPEC,
    "nginx": EXAMPLES / "sandbox-nginx.yaml",
}
FAULTS = {"v3": {"error_rate": 0.2}}
EXPECTED = {"v2": "succeeded", "v3": "rolled_back"}


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def own_tracking(state_dir: Path) -> dict[str, str]:
    """The tracking database of a sandbox or demo: a folder of its own beside its state
    (``<state_dir>/tracking``), so two demos on one machine (two checkouts, or a demo beside the
    tests) never see each other's deploys as running. An explicit ``DEPLOYFLOW_DATABASE_URL`` or
    ``DEPLOYFLOW_DATA_DIR`` is kept: whoever set it chose to share."""
    if os.environ.get("DEPLOYFLOW_DATABASE_URL") or os.environ.get("DEPLOYFLOW_DATA_DIR"):
        return {}
    return {"DEPLOYFLOW_DATA_DIR": str(Path(state_dir).resolve() / "tracking")}


def run_sandbox(
    *,
    state_dir: Path,
    stop_after: float | None = None,
    traffic_max_duration: float | None = None,
    router: SandboxRouter = "haproxy",
    host: str = "127.0.0.1",
) -> int:
    """Keep the sandbox up (v1 live, traffic flowing) until Ctrl-C or SIGTERM.

    Prints the ``export`` lines that make ``examples/sandbox.yaml`` resolve, so deploys can be run
    by hand from another shell (``examples/sandbox-nginx.yaml`` with ``router="nginx"``).
    Traffic flows as long as the sandbox is up; should it ever stop, the sandbox says so on stderr
    (every later deploy would be judged on no data). ``stop_after`` and ``traffic_max_duration``
    (seconds) bound the run and the traffic, for tests.
    """
    import time

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    faults = {"DEPLOYFLOW_DEMO_FAULTS": json.dumps(FAULTS)}
    try:
        with Sandbox(
            state_dir,
            env=faults,
            rps=SANDBOX_RPS,
            router=router,
            traffic_max_duration=traffic_max_duration,
            host=host,
        ) as sandbox:
            spec = ROUTER_SPECS[router].relative_to(EXAMPLES.parent)
            print("# sandbox up: v1 live; in another shell run these, then deploy, e.g.")
            print(f"#   deployflow deploy {spec} --version v2")
            exports = {**sandbox.env_vars(), **faults, **own_tracking(state_dir)}
            for name, value in exports.items():
                print(f"export {name}={shlex.quote(value)}")
            print("# Ctrl-C stops everything", flush=True)
            deadline = None if stop_after is None else time.monotonic() + stop_after
            told = False
            while deadline is None or time.monotonic() < deadline:
                # Ctrl-C and SIGTERM interrupt the sleep with KeyboardInterrupt.
                time.sleep(0.2)
                traffic = sandbox.traffic
                if not told and traffic is not None and traffic.stopped_reason is not None:
                    print(
                        f"# WARNING: sandbox traffic stopped ({traffic.stopped_reason}); deploys "
                        "now see no data and cannot promote. Restart the sandbox.",
                        file=sys.stderr,
                        flush=True,
                    )
                    told = True
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("# sandbox stopped", flush=True)
    return 0


def run_demo(
    *,
    json_output: bool = False,
    state_dir: Path,
    spec_path: Path | None = None,
    router: SandboxRouter = "haproxy",
) -> int:
    """Run the demo; return 0 when v2 succeeded and v3 rolled back.

    ``router`` picks the sandbox's traffic splitter and, unless ``spec_path`` is given, the
    example spec that drives it.
    """
    spec_path = spec_path or ROUTER_SPECS[router]
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    results: dict[str, dict[str, Any]] = {}
    say = (lambda *_: None) if json_output else print
    try:
        say(f"starting the sandbox ({router}) in {state_dir} ...")
        faults = {"DEPLOYFLOW_DEMO_FAULTS": json.dumps(FAULTS)}
        with Sandbox(state_dir, env=faults, rps=SANDBOX_RPS, router=router) as sandbox:
            os.environ.update(sandbox.env_vars())
            os.environ.update(faults)  # the spec passes it on to the versions it starts
            os.environ.update(own_tracking(state_dir))
            spec = load_spec(spec_path)
            sandbox.wait_for_metrics("v1", timeout=60)
            metrics: Metrics = registry.build("metrics", spec.metrics, BuildContext())
            # The canary is judged against v1's P95, so wait until Prometheus can compute it.
            wait_for(
                lambda: metrics.p95("v1", spec.analysis.baseline_window).value,
                timeout=60,
                interval=0.5,
                what="a P95 baseline for v1",
            )
            say(
                f"sandbox up: traffic through {sandbox.frontend_url}, "
                f"Prometheus at {sandbox.prometheus_url}"
            )
            for version in EXPECTED:
                say(f"\ndeploying {version} ...")
                results[version] = run_deploy(str(spec_path), version, "sandbox", "auto", False)
                if not json_output:
                    print_outcome(results[version])
    except KeyboardInterrupt:
        print("\ninterrupted: the sandbox was stopped", file=sys.stderr)
        if json_output:
            endings.emit({"ok": False, "interrupted": True, "deploys": results, "exit_code": 1})
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    ok = all(results.get(v, {}).get("status") == s for v, s in EXPECTED.items())
    if json_output:
        endings.emit({"ok": ok, "deploys": results, "exit_code": 0 if ok else 1})
    else:
        print("\nsummary:")
        for version, expected in EXPECTED.items():
            got = results.get(version, {}).get("status", "not run")
            mark = "ok" if got == expected else "UNEXPECTED"
            print(f"  {version}: {got} (expected {expected}) {mark}")
            if results.get(version, {}).get("ui_url"):
                print(f"      {results[version]['ui_url']}")
        print("sandbox stopped; nothing is left running." if ok else "demo FAILED")
    return 0 if ok else 1

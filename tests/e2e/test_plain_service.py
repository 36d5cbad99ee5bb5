"""A service that exports no metrics, judged on the router's access log alone: behind a real
HAProxy, then a real nginx, deployed with the examples the docs walk through
(examples/plain-haproxy.yaml, examples/plain-nginx.yaml).

The stand-in service (``deployflow.sandbox.plain_app``) has no metrics endpoint; v1 runs behind
the router, put there by hand (deployflow has never seen it: its slot history is empty). At
60 requests/s (two in three to /api/checkout), v2 is promoted over v1 on evidence, then v3, which
fails 15% of /api/checkout, is rolled back; a probe on /api/checkout counts what users got.
The judge keeps its defaults (5% errors, its confidences); stages observe 4 s and at most 30 s.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.slots import SlotHistory
from deployflow.release import outcome_of
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.nginx import LocalNginx
from deployflow.sandbox.traffic import TrafficGenerator
from deployflow.spec import load_spec
from flows.deploy import deploy
from tests.backends import build_target
from tests.e2e.helpers import plain_settings

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).parents[2] / "examples"
FAULTS = json.dumps({"v3": {"/api/checkout": 0.15}})
RPS = 60.0
PATHS = ("/api/checkout", "/api/items", "/api/checkout")


@dataclass(frozen=True)
class Plain:
    """One router with the stand-in service behind it, and the spec that deploys it."""

    spec: Path
    frontend_url: str
    data_dir: Path


@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def plain(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, prefect_server: str
) -> Iterator[Plain]:
    kind = str(request.param)
    state = tmp_path_factory.mktemp(f"plain-{kind}")
    proxy = LocalHAProxy(state / "haproxy", access_log=True) if kind == "haproxy" else None
    server = proxy or LocalNginx(state / "nginx")
    saved = dict(os.environ)
    with server:
        os.environ.update(plain_settings(state, server))
        os.environ["DEPLOYFLOW_PLAIN_FAULTS"] = FAULTS
        os.environ.pop("DEPLOYFLOW_DATABASE_URL", None)
        spec = load_spec(EXAMPLES / f"plain-{kind}.yaml")
        target = build_target(spec)
        assert isinstance(target, LocalProcessTarget)
        try:
            # v1 runs behind the router, put there by hand as before deployflow came.
            v1 = target.start("v1")
            server.router().set_split(v1, None, 0)
            # nginx closes kept-alive connections on reloads; new ones per request.
            with TrafficGenerator(
                server.frontend_url, rps=RPS, paths=PATHS, keep_alive=kind == "haproxy"
            ):
                yield Plain(EXAMPLES / f"plain-{kind}.yaml", server.frontend_url, state / "data")
        finally:
            target.stop_all()
            os.environ.clear()
            os.environ.update(saved)


class CheckoutProbe:
    """A user calling /api/checkout every 50 ms: each answer's send time, version and status."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/api/checkout"
        self.answers: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.05):
                sent = time.time()
                try:
                    response = client.get(self.url, headers={"Connection": "close"})
                    version = str(response.json().get("version"))
                except (httpx.HTTPError, ValueError):
                    continue
                self.answers.append((sent, version, response.status_code))

    def __enter__(self) -> CheckoutProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run(spec: Path, version: str) -> dict:
    state = deploy(environment="sandbox", spec_path=str(spec), version=version, return_state=True)
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), f"the flow crashed: {result!r}"
    return result


def test_a_plain_service_is_promoted_and_its_bad_release_rolled_back(plain: Plain) -> None:
    healthy = run(plain.spec, "v2")
    assert healthy["status"] == "succeeded", healthy["message"]
    weights = [(s["weight"], s["verdict"]) for s in healthy["stages"]]
    assert weights == [(25, "promote"), (50, "promote"), (100, "promote")]
    # Shown below the limit on the access log's figures, against stable in the same window.
    first = healthy["stages"][0]["explanation"]
    assert "below the 5.0% limit" in first, first
    assert "stable " in first, first
    assert "no stable traffic" not in first, first

    with CheckoutProbe(plain.frontend_url) as probe:
        bad = run(plain.spec, "v3")
        ended = time.time()
        # The probe keeps going: 20 more answers after the deploy ended.
        deadline = time.monotonic() + 30
        while sum(1 for sent, _, _ in probe.answers if sent > ended) < 20:
            assert time.monotonic() < deadline, "the probe got no answers after the deploy"
            time.sleep(0.05)
    assert bad["status"] == "rolled_back", bad["message"]
    stage = bad["stages"][-1]
    assert stage["verdict"] == "rollback"
    assert "error rate" in stage["explanation"], stage["explanation"]
    verdict_at = datetime.fromisoformat(stage["finished_at"]).timestamp()
    # When traffic was taken off v3: the slot history's first entry without v3 after the one
    # that put it in the canary slot, written by the run's router as it made the change
    # (stamped when the change began).
    (history,) = (plain.data_dir / "slots").glob("*.jsonl")
    entries = SlotHistory(history).entries()
    last_with_v3 = max(i for i, e in enumerate(entries) if any(s.version == "v3" for s in e.slots))
    back_at = entries[last_with_v3 + 1].at
    restored = back_at + float(bad["rollback"]["restore_seconds"])
    v3_answers = [(sent, status) for sent, version, status in probe.answers if version == "v3"]
    bad_answers = [sent for sent, status in v3_answers if status >= 500]
    assert bad_answers, "the probe never met the bad release: it proves nothing"
    after_switch = [sent for sent in bad_answers if sent > restored]
    assert after_switch == [], "users got v3's failures after the rollback"
    assert [s for s, _ in v3_answers if s > ended] == []
    after_verdict = [sent for sent in bad_answers if sent > verdict_at]
    print(
        f"{plain.spec.name}: {len(v3_answers)} probe answers from v3, {len(bad_answers)} of "
        f"them 500s; after the verdict {len(after_verdict)}; the switch began "
        f"{back_at - verdict_at:+.3f} s from the verdict and took {restored - back_at:.3f} s"
    )

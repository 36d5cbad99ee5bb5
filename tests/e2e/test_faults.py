"""Faults injected at chosen moments around whole deploys on the sandbox, with a probe counting
what users got through the router (``UserProbe``) and the router and tracking database read after
each. The tests run in order on one sandbox whose live version is v1 at every test's start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from deployflow.polling import wait_for
from deployflow.sandbox.supervisor import Sandbox
from deployflow.spec import load_spec
from deployflow.tracking.db import database_url
from deployflow.tracking.ledger import Ledger
from tasks.concurrency import live_deploy_in
from tests.backends import build_router, build_target
from tests.e2e.conftest import EXAMPLE_SPEC
from tests.e2e.helpers import (
    UserProbe,
    deploy_in_its_own_process,
    deploy_in_process,
    pause_outside_a_write,
    takes_traffic,
    two_stage_spec,
)
from tests.integration.prefect.conftest import RestartablePrefectServer

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def router_running_after(sandbox: Sandbox) -> Iterator[None]:
    """HAProxy running again after every test, whatever the test did to it: a test that stops it
    and then fails must not fail the tests after it on the shared sandbox."""
    yield
    if sandbox.haproxy is not None and sandbox.haproxy.pid is None:
        sandbox.haproxy.start()


def sqlite_file(url: str) -> Path:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    assert database, url
    return Path(database)


def serving(version: str) -> bool:
    spec = load_spec(EXAMPLE_SPEC)
    versions = {i.version: i for i in build_target(spec).instances()}
    state = build_router(spec).state()
    return version in versions and (state.stable, state.canary) == (versions[version].address, None)


def test_a_router_restarted_between_two_deploys_never_makes_the_next_a_first_release(
    sandbox: Sandbox,
) -> None:
    """HAProxy restarted from its configuration (both slots point nowhere) with v1 live: the
    next deploy puts v1 back from the tracking database's record before anything else, judges
    v3 (20% errors) against it, and rolls back to it."""
    assert sandbox.haproxy is not None
    with two_stage_spec("faults", "router-restart") as spec_file:
        assert (
            deploy_in_process(spec_file, "v2")["status"] == "succeeded"
        )  # the database now knows v2 is live
        with UserProbe(sandbox.frontend_url) as probe:
            sandbox.haproxy.stop()
            sandbox.haproxy.start()
            assert build_router(load_spec(spec_file)).state().stable is None
            result = deploy_in_process(spec_file, "v3")
            probe.mark()  # the deploy is over: users must be on v2 from here
            wait_answers(probe, 20)
        during, after = probe.before_mark, probe.after_mark

    assert result["status"] == "rolled_back", result["message"]
    assert result["strategy"] == "canary"
    assert "tracking database says v2 is live" in result["reconciled"][0]
    assert result["rollback"]["verified"] is True
    assert serving("v2")
    assert probe.from_version("v3") == 0, after
    print(f"router restart: answers during the deploy {dict(during)}, after it {dict(after)}")


def wait_answers(probe: UserProbe, count: int) -> None:
    wait_for(
        lambda: sum(probe.after_mark.values()) >= count,
        timeout=30,
        interval=0.1,
        what=f"{count} probe answers",
    )


def test_a_deploy_paused_past_its_lease_wakes_up_and_touches_no_traffic(
    sandbox: Sandbox, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP (Ctrl-Z, a frozen VM) with v10's canary taking traffic, past its 4 s lease: the
    next deploy reconciles it and releases v4; SIGCONT while v4's canary is in its first stage.
    The woken deploy finds its lease lost and moves nothing: v4 is judged on its own and
    released."""
    monkeypatch.setenv("DEPLOYFLOW_LEASE_SECONDS", "4")
    log = tmp_path / "paused.log"
    with two_stage_spec("faults", "paused") as spec_file:
        router = build_router(load_spec(spec_file))
        with deploy_in_its_own_process(
            spec_file, "v10", prefect_server, log, {"DEPLOYFLOW_LEASE_SECONDS": "4"}
        ) as paused:
            pause_outside_a_write(paused, sqlite_file(database_url()))
            wait_for(
                lambda: not live_deploy_in(Ledger.for_url(), "demo", "sandbox", None) or None,
                timeout=30,
                interval=0.25,
                what="the paused deploy's lease to lapse",
            )
            woken: list[float] = []

            def wake_when_v4_takes_traffic() -> None:
                target = build_target(load_spec(spec_file))

                def v4_canary() -> bool:
                    state = router.state()
                    v4 = next((i for i in target.instances() if i.version == "v4"), None)
                    return v4 is not None and state.canary == v4.address and state.canary_weight > 0

                wait_for(v4_canary, timeout=180, interval=0.1, what="v4's canary")
                os.killpg(paused.pid, signal.SIGCONT)
                woken.append(time.monotonic())

            waker = threading.Thread(target=wake_when_v4_takes_traffic, daemon=True)
            waker.start()
            result = deploy_in_process(spec_file, "v4")
            waker.join(timeout=10)
            assert woken, "the paused deploy was never woken during v4's deploy"
            returncode = paused.wait(timeout=120)

    text = log.read_text()
    assert result["status"] == "succeeded", result["message"]
    assert any("interrupted deploy of v10 reconciled" in n for n in result["reconciled"])
    assert serving("v4")
    assert "lost its lease" in text, text[-3000:]
    assert returncode == 1, text[-3000:]
    assert "v10" not in {i.version for i in build_target(load_spec(EXAMPLE_SPEC)).instances()}
    print(f"paused deploy woken {time.monotonic() - woken[0]:.1f} s before the check ended")


def test_a_router_killed_mid_stage_is_noticed_at_the_next_look_and_told(
    sandbox: Sandbox,
) -> None:
    """HAProxy killed while v5's canary is in its first stage: the next look fails (not "0
    requests" held look after look), the rollback says loudly that traffic could not be
    restored; HAProxy restarted from its configuration, the next deploy puts the live version
    back first."""
    assert sandbox.haproxy is not None
    haproxy = sandbox.haproxy
    killed: list[float] = []
    with two_stage_spec("faults", "router-killed") as spec_file:
        router = build_router(load_spec(spec_file))
        live = next(
            i.version
            for i in build_target(load_spec(spec_file)).instances()
            if i.address == router.state().stable
        )

        over = threading.Event()  # the deploy ended: a killer still waiting must not kill

        def kill_when_v5_takes_traffic() -> None:
            wait_for(
                lambda: over.is_set() or takes_traffic(spec_file, "v5"),
                timeout=180,
                interval=0.1,
                what="v5's canary",
            )
            if not over.is_set():
                haproxy.stop()
                killed.append(time.monotonic())

        killer = threading.Thread(target=kill_when_v5_takes_traffic, daemon=True)
        killer.start()
        try:
            result = deploy_in_process(spec_file, "v5")
        finally:
            over.set()
        ended = time.monotonic()
        killer.join(timeout=10)
        assert killed, "HAProxy was never killed"

        assert result["status"] == "failed", result["message"]
        assert "ROLLBACK FAILED" in result["message"]
        assert "does not answer" in result["rollback"]["reason"]
        # In words a person can act on, not the socket's errno text.
        assert "HAProxy is not running" in result["rollback"]["error"], result["rollback"]
        assert "Errno" not in result["message"]
        noticed = ended - killed[0]
        # The next look (2 s interval) fails; the rollback's tries and verification follow.
        assert noticed < 60, noticed

        haproxy.start()
        after = deploy_in_process(spec_file, "v6")
    assert after["status"] == "succeeded", after["message"]
    assert f"tracking database says {live} is live" in after["reconciled"][0]
    assert serving("v6")
    print(f"router killed mid-stage: the deploy ended {noticed:.1f} s after the kill")


def test_a_slow_metrics_backend_does_not_stretch_a_bad_canarys_stage(sandbox: Sandbox) -> None:
    """Prometheus answering every query 1.5 s late (under the spec's 3 s timeout), with looks
    every 2 s: each look has 1 s for its queries, so each is an error on schedule, and v3 (20%
    errors) is rolled back after consecutive_error_limit (3) errors, not after looks stretched
    to many seconds each."""
    from urllib.parse import urlsplit

    from tests.e2e.helpers import DelayProxy

    prometheus = urlsplit(sandbox.prometheus_url)
    assert prometheus.hostname is not None
    assert prometheus.port is not None
    with (
        DelayProxy((prometheus.hostname, prometheus.port), 1.5) as slow,
        two_stage_spec("faults", "slow") as spec_file,
    ):
        text = spec_file.read_text()
        assert "  url: ${DEPLOYFLOW_SANDBOX_PROMETHEUS_URL}\n" in text
        spec_file.write_text(
            text.replace("  url: ${DEPLOYFLOW_SANDBOX_PROMETHEUS_URL}\n", f"  url: {slow.url}\n", 1)
        )
        with UserProbe(sandbox.frontend_url) as probe:
            result = deploy_in_process(spec_file, "v3")
            probe.mark()
            wait_answers(probe, 10)

    assert result["status"] == "rolled_back", result["message"]
    [stage] = result["stages"]
    seconds = (
        datetime.fromisoformat(stage["finished_at"]) - datetime.fromisoformat(stage["started_at"])
    ).total_seconds()
    assert "did not answer within 1 s" in result["rollback"]["reason"], result["rollback"]
    assert seconds < 15, seconds  # about four looks 2 s apart, not looks stretched by the queries
    assert probe.from_version("v3") == 0
    print(
        f"slow metrics: v3's stage lasted {seconds:.1f} s; probe answers during the deploy "
        f"{dict(probe.before_mark)}"
    )


def test_the_tracking_database_stopped_mid_stage_puts_traffic_back_and_the_next_deploy_runs(
    sandbox: Sandbox, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL (the tracking database) stopped while v11's canary takes half the traffic:
    the deploy can neither renew its lease nor record its stages, so at its next look past the
    grace (5 s) it puts traffic back on the live version, stops v11, tells people and exits 3
    saying why. PostgreSQL back while the deploy keeps trying to record its outcome: the row
    says rolled back, and the next deploy runs at once, without a hand reset."""
    from deployflow.sandbox.postgres import LocalPostgres

    log = tmp_path / "tracking-stopped.log"
    with LocalPostgres() as pg, two_stage_spec("faults", "tracking-stopped") as spec_file:
        url = pg.create_database("tracking")
        monkeypatch.setenv("DEPLOYFLOW_DATABASE_URL", url)
        spec = load_spec(spec_file)
        router, target = build_router(spec), build_target(spec)
        live = next(i.version for i in target.instances() if i.address == router.state().stable)
        with (
            UserProbe(sandbox.frontend_url) as probe,
            deploy_in_its_own_process(
                spec_file, "v11", prefect_server, log, {"DEPLOYFLOW_DATABASE_URL": url}
            ) as running,
        ):
            before_stop = probe.from_version("v11", after_mark=False)
            pg.halt()
            halted = time.monotonic()
            wait_for(
                lambda: router.state().canary_weight == 0 or None,
                timeout=60,
                interval=0.05,
                what="traffic back on the live version",
            )
            restored = time.monotonic()
            probe.mark()  # the failure is detected and acted on: no answer from v11 from here
            during = probe.from_version("v11", after_mark=False) - before_stop
            pg.resume()  # while the deploy keeps trying to record its outcome
            returncode = running.wait(timeout=120)
            wait_answers(probe, 20)
        text = log.read_text()

        assert returncode == 3, text[-3000:]  # rolled back, and the rollback verified
        assert "v11: rolled_back" in text, text[-3000:]
        assert "the tracking database stopped answering" in text, text[-3000:]
        assert "did not start" not in text, text[-3000:]
        assert probe.from_version("v11") == 0, probe.after_mark
        assert "v11" not in {i.version for i in target.instances()}
        assert serving(live)
        [row] = [r for r in Ledger.for_url(url).past_deploys("demo", "sandbox")]
        assert (row.version, row.status) == ("v11", "rolled_back"), row

        after = deploy_in_process(spec_file, "v12")  # no hand reset: it runs at once
    assert after["status"] == "succeeded", after["message"]
    assert serving("v12")
    print(
        f"tracking database stopped: traffic back on {live} {restored - halted:.1f} s after the "
        f"stop; v11 answered {during} probe requests in its 50% share meanwhile, "
        f"{probe.from_version('v11')} after; the deploy exited {returncode}"
    )


def test_a_full_data_dir_loses_no_report_and_changes_nothing_users_get(
    sandbox: Sandbox, prefect_server: str, tmp_path: Path
) -> None:
    """The data dir (report files, slot history) on a real full filesystem, the tracking
    database elsewhere: v3 (20% errors) is rolled back as on any day and exits 3; its incident
    report is in the tracking database (``deployflow report`` prints it) and in the Prefect
    artifact; the file's failure is one warning."""
    import json
    import subprocess
    import sys

    from tests.e2e.helpers import artifact_markdown
    from tests.full_disk import fill, tmpfs

    tracking = f"sqlite:///{tmp_path / 'tracking.db'}"
    repo_root = Path(__file__).parents[2]
    with (
        tmpfs(tmp_path / "data") as data,
        two_stage_spec("faults", "full-disk") as spec_file,
    ):
        spec = load_spec(spec_file)
        router, target = build_router(spec), build_target(spec)
        live = next(i.version for i in target.instances() if i.address == router.state().stable)
        fill(data)
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_server,
            "DEPLOYFLOW_DATA_DIR": str(data),
            "DEPLOYFLOW_DATABASE_URL": tracking,
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "deployments.cli", *args],
                env=env, cwd=repo_root, capture_output=True, text=True, timeout=300,
            )  # fmt: skip

        with UserProbe(sandbox.frontend_url) as probe:
            done = cli("deploy", str(spec_file), "--version", "v3", "--json")
            probe.mark()
            wait_answers(probe, 10)
        told = cli("report", str(json.loads(done.stdout.splitlines()[-1])["deployment_id"]))
        assert not any(data.joinpath("reports").rglob("report.md"))

    output = done.stdout + done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert done.returncode == 3, output[-3000:]
    assert result["status"] == "rolled_back", result["message"]
    warned = [line for line in output.splitlines() if "could not be written to" in line]
    assert len(warned) == 1, warned
    assert "its file under the data dir: No space left on device" in warned[0]
    assert "kept in the tracking database and the Prefect artifact" in warned[0]
    assert told.returncode == 0, told.stderr
    assert told.stdout.startswith("# Incident"), told.stdout[:300]
    assert "No space left on device" in told.stderr  # its chart could not be cached: said once
    assert "Incident" in artifact_markdown(result["flow_run_id"], "incident-demo")
    assert probe.from_version("v3") == 0
    assert serving(live)
    print(f"full data dir: answers during the deploy {dict(probe.before_mark)}")


@pytest.fixture(scope="module")
def killable_prefect(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RestartablePrefectServer]:
    """A Prefect server of its own, which a test kills (SIGKILL) and starts again."""
    with RestartablePrefectServer(tmp_path_factory.mktemp("prefect-killable")) as server:
        yield server


# The next deploy waits one tracking lease period for the slot the killed server's restart
# orphaned: short here, for the suite.
API_LOST_SETTINGS = {
    "DEPLOYFLOW_OBSERVE": "4s",
    "DEPLOYFLOW_MAX_STAGE": "12s",
    "DEPLOYFLOW_LEASE_SECONDS": "4",
}


def deploy_losing_the_prefect_api(
    server: RestartablePrefectServer, spec_file: Path, version: str, log: Path
) -> tuple[int, float, dict[str, Any]]:
    """`deployflow deploy --json` of ``version`` in its own process against ``server``, which is
    killed once the canary takes traffic and left down: the exit code, the seconds from the kill
    to the exit, and the outcome it printed: its stdout alone, one JSON object (Prefect's own
    messages on stderr may end without a newline, so the two are not read from one file)."""
    out = log.with_suffix(".json")
    with deploy_in_its_own_process(
        spec_file, version, server.api_url, log, API_LOST_SETTINGS, ("--json",), stdout=out
    ) as process:
        server.kill()
        killed = time.monotonic()
        try:
            code = process.wait(timeout=240)
        except subprocess.TimeoutExpired:
            tail = log.read_text()[-6000:]
            raise AssertionError(f"still running 240 s after the kill:\n{tail}") from None
        took = time.monotonic() - killed
    printed = [line for line in out.read_text().splitlines() if line.strip()]
    assert len(printed) == 1, (printed, log.read_text()[-6000:])
    return code, took, json.loads(printed[0])


def test_a_deploy_that_loses_the_prefect_api_mid_canary_decides_moves_traffic_and_records_it(
    sandbox: Sandbox,
    killable_prefect: RestartablePrefectServer,
    tmp_path: Path,
) -> None:
    """The deploy's Prefect server SIGKILLed once its canary takes traffic and kept down until the
    deploy's end: a healthy v7 is still judged, promoted, recorded `succeeded`, exit 0; with the
    server back, the next deploy (a bad v3) releases the slot the dead server orphaned, leaves
    v7's release alone, and, its server killed mid-canary too, is rolled back to v7 (no probe
    answer from v3 after traffic went back), recorded `rolled_back`, exit 3. Each exits within
    ``bound`` seconds of the kill, stages included."""
    bound = 60.0
    ledger = Ledger.for_url()
    with two_stage_spec("faults", "api-lost") as spec_file:
        log = tmp_path / "v7.log"
        code7, took7, v7 = deploy_losing_the_prefect_api(killable_prefect, spec_file, "v7", log)
        text = log.read_text()
        assert v7["status"] == "succeeded", text[-6000:]
        assert code7 == 0
        assert ledger.status_of(v7["deployment_id"]) == "succeeded"
        assert serving("v7")
        assert took7 < bound, text[-6000:]
        assert "the Prefect API does not answer" in text
        assert v7["prefect_api_lost"] is True

        killable_prefect.start()
        router = build_router(load_spec(spec_file))
        restored: list[float] = []
        log = tmp_path / "v3.log"
        with UserProbe(sandbox.frontend_url) as probe:

            def mark_when_traffic_is_back() -> None:
                wait_for(lambda: router.state().canary_weight > 0 or None, timeout=180,
                         interval=0.05, what="v3's canary")  # fmt: skip
                wait_for(lambda: router.state().canary_weight == 0 or None, timeout=240,
                         interval=0.05, what="traffic back on v7")  # fmt: skip
                probe.mark()
                restored.append(time.monotonic())

            watcher = threading.Thread(target=mark_when_traffic_is_back, daemon=True)
            watcher.start()
            code3, took3, v3 = deploy_losing_the_prefect_api(killable_prefect, spec_file, "v3", log)
            watcher.join(timeout=10)
            wait_answers(probe, 20)
        text = log.read_text()
    assert "released the Prefect concurrency limit" in text  # no hand reset
    assert not v3.get("reconciled"), v3["reconciled"]  # v7's release is left alone
    assert v3["status"] == "rolled_back", text[-6000:]
    assert code3 == 3
    assert ledger.status_of(v3["deployment_id"]) == "rolled_back"
    assert v3["rollback"]["verified"] is True
    assert "rollback runs as a plain function" in text
    assert restored, "traffic never went back to v7"
    assert probe.from_version("v3") == 0, probe.after_mark
    assert serving("v7")
    assert took3 < bound, text[-6000:]
    assert not ledger.unfinished("demo", "sandbox")
    print(
        f"Prefect API lost mid-canary: v7 exit 0 {took7:.1f} s after the kill; v3 exit 3 "
        f"{took3:.1f} s after it; probe answers after v3's rollback {dict(probe.after_mark)}"
    )

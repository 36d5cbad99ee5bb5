"""The incident report and the success summary, written from a seeded tracking database with the
in-memory backends: figures for people, the timeline, the breakdown, the log lines around the
trigger, the commits, candidate causes, and a chart that opens as an image."""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine

from deployflow.fakes.backends import Behaviour, InMemoryTarget, ScriptedMetrics
from deployflow.figures import (
    confidence,
    duration,
    measured,
    millis,
    p_value,
    percent,
    requests,
    rough_duration,
)
from deployflow.notify.charts import PNG_SIGNATURE, png_size
from deployflow.notify.evidence import StorySources, commit_time, save_as, tell
from deployflow.notify.report import (
    MAX_SIGNAL_LINES,
    ReportEvidence,
    candidate_causes,
    incident_report,
    kind_of,
    lines_around,
)
from deployflow.providers.base import RequestBreakdown
from deployflow.tracking import repository
from deployflow.tracking.db import session_factory
from deployflow.tracking.ledger import Ledger
from deployflow.tracking.record import DeployRecord

T0 = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)


def measurement(error_rate: float, p95: float, n: float, stable_rate: float = 0.0) -> dict:
    return {
        "outcome": "failed" if error_rate > 0.05 else "successful",
        "error_rate": error_rate,
        "p95_seconds": p95,
        "requests": n,
        "baseline_p95_seconds": 0.02,
        "error": None,
        "breaches": [],
        "note": "",
        "stable": {"error_rate": stable_rate, "p95_seconds": 0.01995879120879121,
                   "requests": 1200.0, "error": None},
    }  # fmt: skip


def seed(
    engine: Engine, *, rolled_back: bool, git_ref: str | None = None, last_looks: list | None = None
) -> int:
    """v3 over v2: one promoted stage at 5%, then 25% where errors trip the rollback (or a
    second promoted stage and success)."""
    with session_factory(engine)() as s, s.begin():
        row = repository.create_deployment(
            s, service="shop", environment="production", version="v3", strategy="canary",
            previous_version="v2", flow_run_id="0b5f3c2e-1111-4222-8333-444455556666",
            git_ref=git_ref, status="running", started_at=T0,
        )  # fmt: skip
        repository.add_stage_result(
            s, row.id, index=0, weight=5, verdict="promote",
            started_at=T0 + timedelta(seconds=5), finished_at=T0 + timedelta(seconds=25),
            measurements=[measurement(0.002, 0.0213, 342.20532319391634)],
        )  # fmt: skip
        bad = rolled_back
        repository.add_stage_result(
            s, row.id, index=1, weight=25, verdict="rollback" if bad else "promote",
            started_at=T0 + timedelta(seconds=25), finished_at=T0 + timedelta(seconds=40),
            measurements=[measurement(0.2 if bad else 0.001, 0.0231, 512.4)],
            reason="error rate canary 20.0% over 512 requests: above 5.00%" if bad else None,
        )  # fmt: skip
        if bad:
            repository.add_incident(
                s, row.id, stage=1, metric="error_rate", value=0.2, threshold=0.05,
                reason="error rate canary 20.0% over 512 requests: above 5.00%",
                evidence={
                    "traffic_at_trigger":
                        "75% stable (127.0.0.1:20001), 25% canary (127.0.0.1:20002)",
                    "router_after": "100% stable (127.0.0.1:20001), canary slot off",
                    "canary_log_tail": "", "problems": [], "verified": True, "error": None,
                    "verification": [{"name": "health", "ok": True, "detail": "HTTP 200"}],
                    "last_measurements": last_looks or [],
                },
            )  # fmt: skip
        repository.update_deployment(
            s, row.id, status="rolled_back" if bad else "succeeded",
            finished_at=T0 + timedelta(seconds=48),
        )  # fmt: skip
        return row.id


def sandbox_backends() -> tuple[ScriptedMetrics, InMemoryTarget]:
    behaviours = {
        "v2": Behaviour(error_rate=0.0, p95_seconds=0.0199587, requests=1200.0),
        "v3": Behaviour(
            error_rate=0.2, p95_seconds=0.0231, requests=512.0, broken_paths=frozenset({"/pay"})
        ),
    }
    metrics = ScriptedMetrics(lambda v: behaviours.get(v, Behaviour(requests=None)))
    target = InMemoryTarget()
    target.log_lines["v3"] = [
        "demo_app v3 listening on 127.0.0.1:20002",
        "2026-11-28T09:57:00.000+00:00 ERROR GET /pay -> 500: too early to matter",
        *[f"2026-11-28T10:00:{s:02d}.000+00:00 ERROR GET /pay -> 500: injected fault"
          for s in range(30, 41, 2)],
        "2026-11-28T10:05:00.000+00:00 ERROR GET /pay -> 500: long after the rollback",
    ]  # fmt: skip
    return metrics, target


def git_repo(path: Path) -> tuple[str, str]:
    def git(*args: str) -> str:
        env = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.test",
               "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.test",
               "GIT_COMMITTER_DATE": "2026-11-28T08:30:00+00:00", "PATH": "/usr/bin:/bin",
               "HOME": str(path)}  # fmt: skip
        return subprocess.run(
            ["git", *args], cwd=path, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "v2: the stable version")
    old = git("rev-parse", "HEAD")
    git("commit", "-q", "--allow-empty", "-m", "pay: new card processor client")
    return old, git("rev-parse", "HEAD")


def test_incident_report_tells_the_rollback_for_people(
    tracking_engine: Engine, tmp_path: Path
) -> None:
    old, new = git_repo(tmp_path)
    deployment_id = seed(tracking_engine, rolled_back=True, git_ref=new)
    deploy = Ledger(tracking_engine).record(deployment_id)
    metrics, target = sandbox_backends()
    sources = StorySources(
        metrics=metrics, target=target, checkout=tmp_path, previous_ref=old,
        window_seconds=6, error_rate_limit=0.05,
    )  # fmt: skip

    report = tell(deploy, sources)

    assert report is not None
    assert report.kind == "incident"
    md = report.markdown
    # Numbers for humans: no raw floats, no Python reprs.
    assert not re.search(r"\d\.\d{5,}", md), md
    assert "RouterState(" not in md
    assert "- **Trigger**: error rate 20.0%, above the 5% limit, at stage 2" in md
    assert "errors 0.20%, P95 21 ms, 342 requests" in md
    assert "25% canary (127.0.0.1:20002)" in md
    # The timeline, in order, with offsets from the start.
    timeline = md.split("## Timeline")[1].split("##")[0]
    expected = ["Deploy of v3", "Stage 1: 5%", "Stage 1 promoted", "Stage 2: 25%",
                "Stage 2 rolled back", "Trigger: error rate 20.0%", "Rollback done"]  # fmt: skip
    positions = [timeline.index(e) for e in expected]
    assert positions == sorted(positions)
    assert "| 10:00:40 | +40 s | Trigger" in timeline
    # Breakdown by endpoint and status code, in whole requests.
    assert "| `/pay` | 500 | 1 |" in md
    assert "| `/` | 500 | 102 |" in md
    # The log lines around the trigger only.
    log = md.split("## Canary log around the trigger")[1]
    assert "injected fault" in log
    assert "too early to matter" not in log
    assert "long after the rollback" not in log
    # The commits released.
    assert "pay: new card processor client" in md
    assert "v2: the stable version" not in md
    # Candidate causes ranked: the new code first, with its evidence.
    causes = md.split("## Candidate causes")[1].split("##")[0]
    assert causes.lstrip().startswith("1. **A defect in v3 that fails requests")
    assert "20.0% of its requests" in causes
    assert "The one commit released" in causes
    # The scripted fake fails "/" at the canary's 20% and "/pay" always: a path of its own.
    assert "2. **The code behind `/pay`**" in causes
    assert "1 of the canary's 103 requests answered 5xx were on `/pay`" in causes
    # The chart: a real PNG, named in the markdown, embedded in the artifact version.
    assert report.chart_png is not None
    assert report.chart_png.startswith(PNG_SIGNATURE)
    assert "](chart.png)" in md
    assert "](data:image/png;base64," in report.embedded()
    # Saved as a file: the chart beside it, linked from it, and it opens as an image.
    written = save_as(report, tmp_path / "out" / "incident.md")
    assert [p.name for p in written] == ["incident.md", "incident-chart.png"]
    assert "](incident-chart.png)" in written[0].read_text()
    with Image.open(written[1]) as image:
        assert image.format == "PNG"
        assert image.size == (800, 500) == png_size(written[1].read_bytes())


def test_success_summary_has_a_short_table_and_the_chart(tracking_engine: Engine) -> None:
    deployment_id = seed(tracking_engine, rolled_back=False)
    metrics, target = sandbox_backends()
    report = tell(
        Ledger(tracking_engine).record(deployment_id),
        StorySources(metrics=metrics, target=target, window_seconds=6),
    )

    assert report is not None
    assert report.kind == "summary"
    assert report.markdown.startswith("# ✅ shop v3 released to production")
    assert "| Strategy | canary, 5% → 25% |" in report.markdown
    assert "| Took | 48 s (10:00:00 to 10:00:48 UTC) |" in report.markdown
    assert "| Canary requests judged | 855 |" in report.markdown
    assert report.chart_png is not None
    with Image.open(io.BytesIO(report.chart_png)) as image:
        assert image.size == (800, 500)


def test_without_metrics_over_time_the_report_says_why_there_is_no_chart(
    tracking_engine: Engine,
) -> None:
    deploy = Ledger(tracking_engine).record(seed(tracking_engine, rolled_back=True))
    report = tell(deploy, StorySources(metrics=None, target=None))

    assert report is not None
    assert report.chart_png is None
    assert "No chart: no metric points over the deploy." in report.markdown
    assert "charts: no metrics backend cannot answer" in report.markdown


def test_unreachable_metrics_are_named_not_raised(tracking_engine: Engine) -> None:
    metrics, target = sandbox_backends()
    metrics.down = True
    deploy = Ledger(tracking_engine).record(seed(tracking_engine, rolled_back=True))
    report = tell(deploy, StorySources(metrics=metrics, target=target))

    assert report is not None
    assert "No chart: metrics backend unreachable" in report.markdown
    assert "not available (metrics backend unreachable)" in report.markdown


def test_dry_runs_and_refused_deploys_get_no_report() -> None:
    base = DeployRecord(1, "shop", "prod", "v3", "v2", "canary", "succeeded")
    assert kind_of(replace(base, dry_run=True)) is None
    assert kind_of(replace(base, status="aborted")) is None
    assert kind_of(base) is None  # nothing released


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (percent(0.2), "20.0%"),
        (percent(0.0012), "0.12%"),
        (percent(0.0), "0%"),
        (percent(None), "n/a"),
        (millis(0.01995879120879121), "20 ms"),
        (millis(0.0042), "4.2 ms"),
        (requests(342.20532319391634), "342 requests"),
        (requests(1.0), "1 request"),
        (duration(42.4), "42 s"),
        (duration(3.25), "3.2 s"),
        (duration(5.0), "5 s"),
        (duration(185), "3 min 5 s"),
        (duration(timedelta(hours=2, minutes=10)), "2 h 10 min"),
        (duration(timedelta(days=3, hours=4)), "3 d 4 h"),
        (requests(30_000.4), "30,000 requests"),
        (millis(0.0204, precise=True), "20.4 ms"),
        (measured(0.0012, 0.0204, 1140.2), "error rate 0.12%, P95 20 ms, 1,140 requests"),
        (measured(None, 0.0204, None, precise=True), "error rate n/a, P95 20.4 ms, requests n/a"),
        (rough_duration(95), "2 min"),
        (rough_duration(5400), "1 h 30 min"),
        (confidence(0.999), "99.9%"),
        (p_value(1e-7), "p<1e-6"),
        (p_value(0.0312), "p=0.031"),
    ],
)
def test_figures_for_people(value: str, text: str) -> None:
    assert value == text


def test_log_without_timestamps_keeps_the_error_lines() -> None:
    log = "listening on :8080\nGET / 200\nERROR: db timeout\nTraceback (most recent call last):"
    assert lines_around(log, T0) == ("ERROR: db timeout", "Traceback (most recent call last):")


def test_commit_time_of_a_ref(tmp_path: Path) -> None:
    _, new = git_repo(tmp_path)
    assert commit_time(tmp_path, new) == datetime(2026, 11, 28, 8, 30, tzinfo=UTC)
    assert commit_time(tmp_path, "no-such-ref") is None
    assert commit_time(tmp_path / "missing", new) is None


def test_failures_spread_over_every_endpoint_point_at_the_whole_version() -> None:
    spread = RequestBreakdown(
        rows=(("/a", "200", 80.0), ("/a", "500", 20.0), ("/b", "200", 40.0), ("/b", "500", 9.0))
    )
    deploy = DeployRecord(1, "shop", "prod", "v3", "v2", "canary", "rolled_back")
    (cause,) = candidate_causes(deploy, ReportEvidence(breakdown=spread))
    assert cause.title.startswith("Requests fail on every endpoint alike")
    assert cause.evidence == (
        "`/a`: 20.0% of 100 requests answered 5xx",
        "`/b`: 18.4% of 49 requests answered 5xx",
    )


def test_the_incident_report_shows_what_the_log_and_alert_signals_saw(
    tracking_engine: Engine,
) -> None:
    many = [f"log: 10:00:{n:02d} ERROR v3 sync failed" for n in range(MAX_SIGNAL_LINES + 5)]
    looks = [
        {**measurement(0.0, 0.02, 500), "evidence": many[:20]},
        {**measurement(0.0, 0.02, 500), "evidence": [*many[10:], "alert: DemoLogErrors"]},
    ]
    deploy = Ledger(tracking_engine).record(
        seed(tracking_engine, rolled_back=True, last_looks=looks)
    )

    md = incident_report(deploy, ReportEvidence(), None).markdown

    seen = md.split("## What the other signals saw")[1].split("```")[1].strip().splitlines()
    # Each line once, in the order seen, the latest MAX_SIGNAL_LINES of them.
    assert seen == [*many, "alert: DemoLogErrors"][-MAX_SIGNAL_LINES:]


def test_an_incident_without_signal_lines_has_no_signal_section(tracking_engine: Engine) -> None:
    deploy = Ledger(tracking_engine).record(seed(tracking_engine, rolled_back=True))

    assert (
        "## What the other signals saw"
        not in incident_report(deploy, ReportEvidence(), None).markdown
    )


def test_a_failed_rollback_reads_in_words_and_keeps_the_raw_error_for_engineers(
    tmp_path: Path, tracking_engine: Engine
) -> None:
    """The restore's error from the real HAProxy client (its admin socket missing): the report
    says it in words, and gives the error as raised (credentials removed) beside it."""
    from deployflow.error_words import detail, in_words
    from deployflow.providers.haproxy import HAProxyRouter
    from deployflow.tracking.models import Incident

    socket_path = tmp_path / "haproxy.sock"
    try:
        HAProxyRouter(socket_path, frontend_url="http://127.0.0.1:9").state()
    except Exception as exc:
        error = exc
    message = f"traffic could not be restored to v2: {in_words(error)}. Bring the router back"
    row_id = seed(tracking_engine, rolled_back=True)
    with session_factory(tracking_engine)() as s, s.begin():
        incident = s.query(Incident).filter_by(deployment_id=row_id).one()
        incident.evidence = {
            **incident.evidence, "verified": False, "error": message,
            "error_detail": detail(error),
        }  # fmt: skip

    md = incident_report(Ledger(tracking_engine).record(row_id), ReportEvidence(), None).markdown

    assert (
        f"**The rollback itself failed**: traffic could not be restored to v2: the router's "
        f"admin socket {socket_path} does not exist: HAProxy is not running"
    ) in md
    raw = md.split("the error as raised (for engineers): `")[1].split("`")[0]
    assert raw.startswith("RouterError: HAProxy admin socket")
    assert "FileNotFoundError: [Errno 2] No such file or directory" in raw

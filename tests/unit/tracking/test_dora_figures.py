"""DORA figures from a seeded tracking database, and the `deployflow stats` / `deployflow report`
commands on it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from deployflow import dora
from deployflow.dora import DeployRecord, figures, parse_since, table_rows
from deployflow.tracking import db, repository
from deployflow.tracking.db import session_factory
from deployments.cli import main

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def add(
    engine: Engine,
    version: str,
    status: str,
    *,
    start_hours_ago: float,
    minutes: float = 10,
    commit_hours_before: float | None = None,
    traffic_after_minutes: float | None = None,
    service: str = "shop",
    environment: str = "production",
    dry_run: bool = False,
    now: datetime = NOW,
) -> int:
    started = now - timedelta(hours=start_hours_ago)
    with session_factory(engine)() as s, s.begin():
        row = repository.create_deployment(
            s, service=service, environment=environment, version=version, strategy="canary",
            dry_run=dry_run, status="running", started_at=started,
            commit_at=None if commit_hours_before is None
            else started - timedelta(hours=commit_hours_before),
        )  # fmt: skip
        if traffic_after_minutes is not None:
            at = started + timedelta(minutes=traffic_after_minutes)
            repository.add_stage_result(
                s, row.id, index=0, weight=5, verdict="promote", started_at=at,
                finished_at=at + timedelta(minutes=1), measurements=[],
            )  # fmt: skip
        repository.update_deployment(
            s, row.id, status=status, finished_at=started + timedelta(minutes=minutes)
        )
        return row.id


def seeded(engine: Engine) -> None:
    # Four releases of shop in production over the last week, one a day apart:
    add(engine, "v1", "succeeded", start_hours_ago=96, commit_hours_before=2)
    add(engine, "v2", "rolled_back", start_hours_ago=72, minutes=8, traffic_after_minutes=2)
    add(engine, "v3", "failed", start_hours_ago=48, minutes=5, traffic_after_minutes=1)
    add(engine, "v4", "succeeded", start_hours_ago=47, minutes=20, commit_hours_before=6)
    # ...not counted: a refused deploy, a dry run, one long ago, another service.
    add(engine, "v5", "aborted", start_hours_ago=24)
    add(engine, "v6", "succeeded", start_hours_ago=12, dry_run=True)
    add(engine, "v0", "succeeded", start_hours_ago=24 * 60)
    add(engine, "a1", "succeeded", start_hours_ago=5, service="cart", commit_hours_before=1)


def test_the_four_figures(tracking_engine: Engine) -> None:
    seeded(tracking_engine)
    with session_factory(tracking_engine)() as s:
        (shop,) = dora.compute(s, NOW - timedelta(days=7), NOW, service="shop")

    assert shop.deployments == 2
    assert shop.deployments_per_day == pytest.approx(2 / 7)
    # Lead time: commit to success, v1 2 h + 10 min, v4 6 h + 20 min; the median of the two.
    assert shop.lead_times == (2 * 3600 + 600, 6 * 3600 + 1200)
    assert shop.lead_time_seconds == pytest.approx((7800 + 22800) / 2)
    # Change failure rate: 2 of 4 released versions (aborted and dry runs released nothing).
    assert (shop.failures, shop.changes) == (2, 4)
    assert shop.change_failure_rate == 0.5
    # Time to restore: v2 from its first traffic (+2 min) to its verified rollback (+8 min);
    # v3 failed outright, from its first traffic (+1 min) to v4 succeeding (1 h + 20 min later).
    assert sorted(shop.restore_times) == [6 * 60, 60 * 60 + 20 * 60 - 60]
    assert shop.unrestored == 0


def test_every_service_then_all_together(tracking_engine: Engine) -> None:
    seeded(tracking_engine)
    with session_factory(tracking_engine)() as s:
        rows = dora.compute(s, NOW - timedelta(days=7), NOW)

    assert [(f.service, f.environment, f.deployments) for f in rows] == [
        ("cart", "production", 1),
        ("shop", "production", 2),
        (None, None, 3),
    ]
    table = table_rows(rows)
    assert table[1]["change failure rate"] == "50.0% (2 of 4)"
    assert table[1]["deployment frequency"] == "2.0 a week (2 in 7 d)"
    assert table[1]["lead time for changes"] == "4 h 15 min (median of 2)"
    assert table[1]["time to restore"] == "42 min 30 s (median of 2)"
    assert table[2]["service"] == "all"


def test_a_failure_not_restored_yet_is_counted_apart() -> None:
    t = NOW - timedelta(hours=1)
    record = DeployRecord("shop", "prod", "v9", "failed", t, t + timedelta(minutes=3))
    f = figures([record], NOW - timedelta(days=1), NOW)
    assert (f.restore_times, f.unrestored, f.time_to_restore_seconds) == ((), 1, None)
    assert "1 not restored" in table_rows([f])[0]["time to restore"]


@pytest.mark.parametrize("text", ["3x", "30", "d", "-1d", "0d", "1.5d", "99999d"])
def test_a_bad_period_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="period"):
        parse_since(text)


def test_periods() -> None:
    assert parse_since("30d") == timedelta(days=30)
    assert parse_since("12h") == timedelta(hours=12)
    assert parse_since("2w") == timedelta(weeks=2)


@pytest.fixture
def migrated_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """A tracking database made by the migrations (as the CLI finds it), used by the CLI."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DEPLOYFLOW_DATABASE_URL", url)
    monkeypatch.setenv("DEPLOYFLOW_DATA_DIR", str(tmp_path / "data"))
    engine = db.make_engine(url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


def test_stats_cli(migrated_db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    add(migrated_db, "v1", "succeeded", start_hours_ago=5, commit_hours_before=1, now=now)

    assert main(["stats", "--since", "3x"]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["stats", "--service", " "]) == 2
    assert "--service" in capsys.readouterr().err

    assert main(["stats", "--since", "2d", "--json"]) == 0
    (figures_json,) = json.loads(capsys.readouterr().out)
    assert figures_json["service"] == "shop"
    assert figures_json["deployments"] == 1
    assert figures_json["lead_time_seconds"] == pytest.approx(3600 + 600)

    assert main(["stats", "--service", "shop"]) == 0
    out = capsys.readouterr().out
    assert "lead time for changes:  1 h 10 min (median of 1)" in out


def test_report_cli(
    migrated_db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment_id = add(migrated_db, "v2", "rolled_back", start_hours_ago=1)
    with session_factory(migrated_db)() as s, s.begin():
        repository.update_deployment(
            s, deployment_id, flow_run_id="6a1f0000-0000-4000-8000-00000000abcd"
        )
        repository.save_report(
            s, deployment_id, kind="incident", markdown="# Incident\n\n![chart](chart.png)\n",
            chart_png=b"\x89PNG\r\n\x1a\nfake",
        )  # fmt: skip

    assert main(["report", "6a1f0000"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# Incident")
    chart = tmp_path / "data" / "reports" / f"shop-{deployment_id}" / "chart.png"
    assert f"]({chart})" in printed
    assert chart.read_bytes().startswith(b"\x89PNG")

    out = tmp_path / "incident.md"
    assert main(["report", "6a1f0000-0000-4000-8000-00000000abcd", "--output", str(out)]) == 0
    assert "](incident-chart.png)" in out.read_text()
    assert (tmp_path / "incident-chart.png").exists()

    assert main(["report", "no-such-run"]) == 1
    assert "no deploy with run id 'no-such-run'" in capsys.readouterr().err
    other = add(migrated_db, "v3", "aborted", start_hours_ago=0.5)
    assert main(["report", str(other)]) == 1
    assert "has no report" in capsys.readouterr().err

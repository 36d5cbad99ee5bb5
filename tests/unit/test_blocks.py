"""Blocks in memory: secrets stay hidden, fields are described, get_client builds the right client.

These are unit tests kept next to the Prefect integration tests because they cover the same
blocks; none of them talks to a server (the GitHub client runs on an ``httpx.MockTransport``).
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from blocks import (
    GitHubCredentialsBlock,
    GrafanaBlock,
    PagerDutyCredentialsBlock,
    SlackNotificationBlock,
    TrackingDatabaseBlock,
)
from deployflow.notify.slack import SlackNotifier
from deployflow.tracking import db

pytestmark = pytest.mark.unit

SLACK_TOKEN = "xoxb-1111-unit-secret-token"
GITHUB_TOKEN = "ghp_unitSecretToken0123456789"
DB_PASSWORD = "pg-unit-s3cret-pw"
PAGERDUTY_TOKEN = "pd-unit-secret-key-9876"
GRAFANA_TOKEN = "glsa_unitSecretGrafanaToken42"


def _renderings(block) -> list[str]:
    return [repr(block), str(block), block.model_dump_json(), repr(block.model_dump())]


@pytest.mark.parametrize(
    ("block", "secret"),
    [
        (SlackNotificationBlock(token=SLACK_TOKEN, channel="#deploys"), SLACK_TOKEN),
        (GitHubCredentialsBlock(token=GITHUB_TOKEN), GITHUB_TOKEN),
        (
            TrackingDatabaseBlock(url=f"postgresql+psycopg://deployflow:{DB_PASSWORD}@db:5432/t"),
            DB_PASSWORD,
        ),
        (PagerDutyCredentialsBlock(token=PAGERDUTY_TOKEN), PAGERDUTY_TOKEN),
        (GrafanaBlock(url="https://grafana.test", token=GRAFANA_TOKEN), GRAFANA_TOKEN),
    ],
    ids=["slack", "github", "tracking", "pagerduty", "grafana"],
)
def test_secret_never_appears_when_a_block_is_shown_or_serialised(block, secret):
    for text in _renderings(block):
        assert secret not in text
    # The value is still there for the code that needs it.
    field = "url" if isinstance(block, TrackingDatabaseBlock) else "token"
    assert secret in getattr(block, field).get_secret_value()


@pytest.mark.parametrize(
    ("cls", "secret_fields"),
    [
        (SlackNotificationBlock, ["token"]),
        (GitHubCredentialsBlock, ["token"]),
        (TrackingDatabaseBlock, ["url"]),
        (PagerDutyCredentialsBlock, ["token"]),
        (GrafanaBlock, ["token"]),
    ],
)
def test_schema_marks_secrets_and_describes_every_field(cls, secret_fields):
    schema = cls.model_json_schema()

    # Prefect stores and shows these fields obfuscated because the schema lists them.
    assert schema["secret_fields"] == secret_fields
    # Field descriptions become the help text of the Prefect UI form.
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{cls.__name__}.{name} has no description"


def test_slack_block_builds_a_notifier_for_its_channel_and_api():
    block = SlackNotificationBlock(
        token=SLACK_TOKEN, channel=" #deploys ", base_url="http://127.0.0.1:9/api/"
    )

    notifier = block.get_client()

    assert isinstance(notifier, SlackNotifier)
    assert notifier.channel == "#deploys"
    assert "http://127.0.0.1:9/api/" in repr(notifier)
    assert SLACK_TOKEN not in repr(notifier)


def test_slack_block_refuses_an_empty_channel_naming_the_field():
    with pytest.raises(ValidationError, match="channel: must be a Slack channel name"):
        SlackNotificationBlock(token=SLACK_TOKEN, channel="  ")


def test_slack_block_requires_a_token():
    with pytest.raises(ValidationError, match="token"):
        SlackNotificationBlock(channel="#deploys")


@pytest.mark.parametrize(
    ("base_url", "expected_url"),
    [
        (None, "https://api.github.com/repos/acme/payments/pulls"),
        ("https://ghe.example/api/v3/", "https://ghe.example/api/v3/repos/acme/payments/pulls"),
    ],
    ids=["github.com", "enterprise"],
)
def test_github_block_client_sends_the_token_to_the_configured_api(base_url, expected_url):
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    options = {} if base_url is None else {"base_url": base_url}
    block = GitHubCredentialsBlock(token=GITHUB_TOKEN, **options)

    with block.get_client(transport=httpx.MockTransport(answer)) as client:
        response = client.get("/repos/acme/payments/pulls")
        shown = repr(client.headers)

    assert response.json() == []
    [request] = seen
    assert str(request.url) == expected_url
    assert request.headers["Authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert GITHUB_TOKEN not in shown


def test_github_block_refuses_a_base_url_that_is_not_http():
    with pytest.raises(ValidationError, match="base_url: must start with http:// or https://"):
        GitHubCredentialsBlock(token=GITHUB_TOKEN, base_url="api.github.com")


def test_tracking_block_refuses_a_bad_url_without_echoing_it():
    bad = f"no-scheme-here-{DB_PASSWORD}"
    with pytest.raises(ValidationError) as caught:
        TrackingDatabaseBlock(url=bad)

    message = str(caught.value)
    assert "url: must be a SQLAlchemy URL" in message
    assert DB_PASSWORD not in message


def test_tracking_block_without_url_uses_the_configured_database_of_the_running_machine(
    monkeypatch, tmp_path
):
    monkeypatch.delenv(db.DATABASE_URL_ENV, raising=False)
    monkeypatch.setenv(db.DATA_DIR_ENV, str(tmp_path))
    block = TrackingDatabaseBlock()
    assert block.resolved_url() == f"sqlite:///{tmp_path / 'deployflow.db'}"

    monkeypatch.setenv(db.DATABASE_URL_ENV, "sqlite:///elsewhere.db")
    assert block.resolved_url() == "sqlite:///elsewhere.db"


def test_tracking_block_client_is_an_engine_migrated_to_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'tracking.db'}"

    engine = TrackingDatabaseBlock(url=url).get_client()
    try:
        assert str(engine.url) == url
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()


def test_pagerduty_block_builds_an_on_call_source_for_the_spec_ids():
    block = PagerDutyCredentialsBlock(token=PAGERDUTY_TOKEN, base_url="http://pd.test/")
    source = block.get_client(["PSCHED1"], ["PPOL1"])
    assert source.base_url == "http://pd.test"
    assert source.describe() == "pagerduty schedules PSCHED1; escalation policies PPOL1"
    assert PAGERDUTY_TOKEN not in repr(source)
    assert block.get_client(["S"], base_url="http://other.test").base_url == "http://other.test"


def test_grafana_block_builds_an_annotator_for_a_dashboard():
    block = GrafanaBlock(url="https://grafana.test/", token=GRAFANA_TOKEN)
    annotator = block.get_client("payments", 3)
    assert (annotator.url, annotator.dashboard_uid, annotator.panel_id) == (
        "https://grafana.test",
        "payments",
        3,
    )
    assert GRAFANA_TOKEN not in repr(annotator)
    assert block.get_client(url="http://127.0.0.1:3000").url == "http://127.0.0.1:3000"
    with pytest.raises(ValidationError, match="must start with http"):
        GrafanaBlock(url="grafana.test", token=GRAFANA_TOKEN)

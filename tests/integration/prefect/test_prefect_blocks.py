"""The blocks against a real Prefect server: registered by the CLI, saved, loaded, used."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client

from blocks import SlackNotificationBlock
from deployflow.fakes.slack_api import FakeSlackAPI
from tests.integration.prefect.conftest import PrefectCLI

pytestmark = pytest.mark.integration

TOKEN = "xoxb-2222-integration-secret-token"
BLOCK_SLUGS = [
    "githubcredentialsblock",
    "grafanablock",
    "pagerdutycredentialsblock",
    "slacknotificationblock",
    "trackingdatabaseblock",
]


@pytest.fixture(scope="module")
def registered(prefect_cli: PrefectCLI) -> str:
    """``prefect block register -m blocks`` run once against the server; yields its output."""
    return prefect_cli("block", "register", "-m", "blocks").stdout


@pytest.fixture
def slack() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(token=TOKEN, channels=["deploys"]) as fake:
        yield fake


def test_block_register_makes_every_block_type_known_to_the_server(registered: str):
    assert "Successfully registered 6 blocks" in registered, registered
    with get_client(sync_client=True) as client:
        for slug in BLOCK_SLUGS:
            block_type = client.read_block_type_by_slug(slug)
            schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
            assert schema is not None, f"{slug} has no schema"
            assert schema.fields["secret_fields"], f"{slug} registered without secret fields"
        # The service spec holds no secret (a spec names blocks for those).
        assert client.read_block_type_by_slug("servicespec").name == "ServiceSpec"


def test_saved_slack_block_keeps_its_secret_hidden_and_posts_for_real(
    registered: str, slack: FakeSlackAPI, capsys
):
    SlackNotificationBlock(token=TOKEN, channel="#deploys", base_url=slack.base_url).save(
        "deploys-integration", overwrite=True
    )

    loaded = SlackNotificationBlock.load("deploys-integration")
    print(loaded)

    assert loaded.token.get_secret_value() == TOKEN
    assert loaded.channel == "#deploys"
    assert TOKEN not in capsys.readouterr().out
    assert TOKEN not in loaded.model_dump_json()
    # The API itself only hands the secret out when asked to.
    with get_client(sync_client=True) as client:
        stored = client.read_block_document_by_name(
            "deploys-integration", "slacknotificationblock", include_secrets=False
        )
    assert stored.data["token"] != TOKEN
    assert TOKEN not in str(stored.data)

    result = loaded.get_client().post("deploying payments 2.4.0")

    assert result.ok, result.error
    [message] = slack.messages
    assert message.channel == "#deploys"
    assert message.text == "deploying payments 2.4.0"


def test_a_spec_names_saved_blocks_and_connect_builds_from_them(
    registered: str, slack: FakeSlackAPI, tmp_path
):
    """The way a run gets its secrets: the spec names blocks, connect loads them (get_client)."""
    from blocks.github import GitHubCredentialsBlock
    from blocks.loader import PrefectBlocks
    from blocks.pagerduty import PagerDutyCredentialsBlock
    from deployflow.backends import connect
    from deployflow.checks.spec import PreChecksSpec
    from deployflow.fakes.pagerduty_api import FakePagerDutyAPI
    from deployflow.providers.base import BuildContext
    from deployflow.spec import parse_spec
    from deployflow.tracking.ledger import Ledger
    from tasks.prechecks import github_token

    SlackNotificationBlock(token=TOKEN, channel="#general", base_url=slack.base_url).save(
        "team-slack", overwrite=True
    )
    GitHubCredentialsBlock(token="ghp-integration-token").save("team-github", overwrite=True)
    pagerduty = FakePagerDutyAPI(token="pd-integration-key").start()
    pagerduty.put_on_call("PSCHED1", "Alice Example")
    PagerDutyCredentialsBlock(token="pd-integration-key", base_url=pagerduty.base_url).save(
        "team-pagerduty", overwrite=True
    )
    spec = parse_spec(
        {
            "service": "shop",
            "target": {"kind": "local-process", "command": ["app"], "state_dir": str(tmp_path)},
            "router": {
                "kind": "haproxy",
                "admin_socket": str(tmp_path / "s"),
                "frontend_url": "http://127.0.0.1:1",
            },
            "metrics": {
                "kind": "prometheus",
                "url": "http://127.0.0.1:1",
                "queries": {k: "{version}" for k in ("error_rate", "p95_latency", "request_count")},
            },
            # The spec's channel overrides the block's: one bot token, a channel per service.
            "notifications": {
                "notifiers": [{"kind": "slack", "block": "team-slack", "channel": "#deploys"}],
                "on_call": {
                    "kind": "pagerduty",
                    "block": "team-pagerduty",
                    "schedule_ids": ["PSCHED1"],
                },
            },
        }
    )
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}")
    backends = connect(spec, ledger, BuildContext(env={}, blocks=PrefectBlocks()))

    [notifier] = backends.notifiers
    assert notifier.post("deploying shop v2").ok
    assert [m.channel for m in slack.messages] == ["#deploys"]
    assert backends.on_call is not None
    roster = backends.on_call.current()
    pagerduty.stop()
    assert roster.summary == "Alice Example <alice@example.com>"

    review = PreChecksSpec.model_validate(
        {"checkout": ".", "review": {"repo": "acme/shop", "credentials_block": "team-github"}}
    )
    token = github_token(review)
    assert token is not None
    assert token.get_secret_value() == "ghp-integration-token"

    # A notifier whose block is missing is left out with a warning naming it: telling people
    # never blocks a deploy (the deploy, the rollback and the report go on without it).
    missing = spec.notifications.notifiers[0].model_copy(update={"block": "no-such-block"})
    warnings: list[str] = []
    without = connect(
        spec.model_copy(update={"notifications": spec.notifications.model_copy(
            update={"notifiers": [missing]})}),
        ledger,
        BuildContext(env={}, blocks=PrefectBlocks()),
        warn=warnings.append,
    )  # fmt: skip
    assert without.notifiers == ()
    [warning] = warnings
    assert "no SlackNotificationBlock named 'no-such-block'" in warning
    assert "the deploy goes on without it" in warning

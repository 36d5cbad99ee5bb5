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
BLOCK_SLUGS = ["githubcredentialsblock", "slacknotificationblock", "trackingdatabaseblock"]


@pytest.fixture(scope="module")
def registered(prefect_cli: PrefectCLI) -> str:
    """``prefect block register -m blocks`` run once against the server; yields its output."""
    return prefect_cli("block", "register", "-m", "blocks").stdout


@pytest.fixture
def slack() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(token=TOKEN, channels=["deploys"]) as fake:
        yield fake


def test_block_register_makes_every_block_type_known_to_the_server(registered: str):
    assert "Successfully registered 3 blocks" in registered, registered
    with get_client(sync_client=True) as client:
        for slug in BLOCK_SLUGS:
            block_type = client.read_block_type_by_slug(slug)
            schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
            assert schema is not None, f"{slug} has no schema"
            assert schema.fields["secret_fields"], f"{slug} registered without secret fields"


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

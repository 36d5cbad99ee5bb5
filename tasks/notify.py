"""Step 4: announce the release, name who is on call, link the dashboard."""

from __future__ import annotations

import os
from typing import Any, cast

from prefect import get_run_logger, task
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from deployflow.notify.slack import SlackNotifier, format_deploy_announcement
from deployflow.spec import ServiceSpec, SlackSpec
from deployflow.strategy import StrategyChoice

TOKEN_ENV = "DEPLOYFLOW_SLACK_TOKEN"


def slack_token(slack: SlackSpec) -> SecretStr | None:
    """The bot token from the named Secret block, else ``DEPLOYFLOW_SLACK_TOKEN``, else None."""
    if slack.token_secret_block:
        block = cast(Secret[str], Secret.load(slack.token_secret_block))
        value = block.get()
        return SecretStr(str(value))
    env = os.environ.get(TOKEN_ENV)
    return SecretStr(env) if env else None


def post_to_slack(spec: ServiceSpec, text: str) -> dict[str, Any]:
    """Post ``text`` when Slack is configured. Never raises: a failed post is reported as data."""
    slack = spec.notifications.slack
    if slack is None:
        return {"channel": "slack", "ok": True, "detail": "not configured: run log only"}
    try:
        token = slack_token(slack)
    except Exception as exc:  # a missing block must not stop a deploy or a rollback
        return {
            "channel": "slack",
            "ok": False,
            "detail": f"token unavailable: {type(exc).__name__}",
        }
    if token is None:
        return {
            "channel": "slack",
            "ok": False,
            "detail": f"no token: set notifications.slack.token_secret_block or {TOKEN_ENV}",
        }
    result = SlackNotifier(token, slack.channel, base_url=slack.base_url).post(text)
    return {
        "channel": "slack",
        "ok": result.ok,
        "detail": result.error or f"posted to {slack.channel}",
    }


@task(name="notify-and-prepare", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def notify_and_prepare(
    spec: ServiceSpec, version: str, environment: str, plan: StrategyChoice
) -> list[dict[str, Any]]:
    """Announce the release in the run log and on Slack (when a token is configured), naming the
    plan, the on-call engineer and the dashboard."""
    logger = get_run_logger()
    n = spec.notifications
    text = format_deploy_announcement(
        spec.service,
        version,
        environment,
        f"{plan.kind}: {plan.rationale}",
        stages=plan.steps,
        on_call=n.on_call,
        dashboard_url=n.dashboard_url,
    )
    logger.info("announcement:\n%s", text)
    if not n.on_call:
        logger.warning("no on-call engineer named in notifications.on_call")
    result = post_to_slack(spec, text)
    (logger.info if result["ok"] else logger.warning)("slack: %s", result["detail"])
    return [result]


@task(name="notify-rollback", cache_policy=NO_CACHE)
def notify_rollback(spec: ServiceSpec, text: str) -> list[dict[str, Any]]:
    """Tell people about a rollback. Never raises: the rollback goes on whatever happens here."""
    logger = get_run_logger()
    logger.warning("rollback notice:\n%s", text)
    try:
        result = post_to_slack(spec, text)
    except Exception as exc:
        result = {"channel": "slack", "ok": False, "detail": f"{type(exc).__name__}"}
    (logger.info if result["ok"] else logger.warning)("slack: %s", result["detail"])
    return [result]

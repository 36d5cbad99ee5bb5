"""Follow-ups that Prefect automations start from deployflow's events.

prefect.yaml's ``after-rollback`` deployment runs ``after_rollback`` whenever a deploy emits
``deployflow.deploy.rolled-back`` (see the automation under its ``triggers``): the event's facts
become the run's parameters, and the run leaves a markdown artifact that tells the on-call
engineer what rolled back, why, and what to do next.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.artifacts import artifact_key


def rollback_followup(
    deploy: str,
    service: str,
    version: str,
    environment: str,
    reason: str,
    run_link: str | None = None,
) -> str:
    """The follow-up's markdown: what rolled back and the next steps."""
    row = deploy.removeprefix("deployflow.deployment.")
    report = f"- [ ] read the incident report: `deployflow report {row}`"
    if run_link:
        report += f", or the run in the Prefect UI: {run_link}"
    return "\n".join(
        [
            f"# {service} {version} was rolled back in {environment}",
            "",
            f"**Why:** {reason or 'the event gave no reason'}",
            "",
            "Traffic is back on the previous version. Next steps:",
            "",
            report,
            "- [ ] read the deploy's Slack thread and its dashboard range",
            f"- [ ] fix forward or revert, then release a version after {version}",
        ]
    )


def run_link(flow_run_id: str | None) -> str | None:
    """The deploy's run in the Prefect UI (``PREFECT_UI_URL``), when both are known."""
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    run = (flow_run_id or "").strip()
    if not base or not run or run == "None":
        return None
    return f"{str(base).rstrip('/')}/runs/flow-run/{run}"


@flow(name="after-rollback", flow_run_name="after rollback of {service} {version}")
def after_rollback(
    deploy: str,
    service: str,
    version: str,
    environment: str,
    reason: str = "",
    run: str | None = None,
) -> str:
    """Follow up on a rolled-back deploy (an automation runs it on each rollback event).

    Args:
        deploy: The event's resource id, ``deployflow.deployment.<tracking row>``.
        service: The service that was rolled back.
        version: The version that was rolled back.
        environment: Where it happened.
        reason: Why (the event's message).
        run: The deploy's flow run id (the event's payload), for its link in the Prefect UI.

    Returns:
        The markdown the artifact holds.
    """
    text = rollback_followup(deploy, service, version, environment, reason, run_link(run))
    get_run_logger().warning("%s %s rolled back in %s: %s", service, version, environment, reason)
    create_markdown_artifact(
        text,
        key=artifact_key("rollback-followup", service),
        description=f"Follow-up of the rollback of {service} {version} in {environment}",
    )
    return text

"""The ``retire-kept-versions`` flow: stop the previous versions that releases kept warm
(the spec's ``keep_previous``) once their window has ended, without waiting for the service's next
deploy or rollback (which do it too). prefect.yaml runs it on a schedule for one service."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from blocks.service_spec import ServiceSpecBlock
from deployflow.spec import ENVIRONMENT_PATTERN, SpecError
from tasks.concurrency import deploy_slot
from tasks.connect import connect_backends, load_service_spec
from tasks.keep import retire_kept_versions


@flow(name="retire-kept-versions", flow_run_name="retire kept versions in {environment}")
def retire_kept(
    environment: Annotated[str, Field(pattern=ENVIRONMENT_PATTERN)],
    service: ServiceSpecBlock | None = None,
    spec_path: str | None = None,
    tracking_block: str | None = None,
) -> list[str]:
    """Stop the versions kept past their ``keep_previous`` window (never one with traffic).

    Holds the service's deploy slot meanwhile, so it never stops a version a deploy or a rollback
    is about to use.

    Args:
        environment: Where.
        service: The service, as a saved ServiceSpec block.
        spec_path: Path of the service spec YAML, when no block is chosen.
        tracking_block: Name of the deployflow tracking database block.

    Returns:
        What was stopped, a line each.
    """
    loaded = load_service_spec(spec_path, "retire", service)
    if isinstance(loaded, SpecError):
        raise loaded
    backends = connect_backends(loaded, tracking_block, environment)
    try:
        with deploy_slot(loaded.service, environment, "wait", get_run_logger()):
            return retire_kept_versions(
                backends.ledger,
                backends.router,
                backends.target,
                service=loaded.service,
                environment=environment,
            )
    finally:
        backends.close()

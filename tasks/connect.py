"""Before the nine steps: read the spec once and build the run's backends once."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.loader import PrefectBlocks, load_block
from blocks.service_spec import ServiceSpecBlock
from blocks.tracking import TrackingDatabaseBlock
from deployflow.backends import Backends, connect
from deployflow.providers.base import BuildContext
from deployflow.spec import (
    ServiceSpec,
    SpecError,
    describe_spec_path,
    load_spec,
    validate_version,
)
from deployflow.tracking.ledger import Ledger
from tasks.audiences import prefect_audiences, warn
from tasks.retry_policy import QUICK_CALL, retried


@task(name="load-spec", cache_policy=NO_CACHE)
def load_service_spec(
    spec_path: str | None, version: str, service: ServiceSpecBlock | None = None
) -> ServiceSpec | SpecError:
    """Read and validate the service spec and the version; every problem is named.

    The spec is the ServiceSpec block chosen in the form (``service``) when there is one, else the
    file at ``spec_path`` (relative to the flow run's working directory). Bad input is an answer,
    not a crash of the task: the SpecError is returned, for the flow to end the run with it.
    """
    try:
        return _load_service_spec(spec_path, version, service)
    except SpecError as exc:
        return exc


def _load_service_spec(
    spec_path: str | None, version: str, service: ServiceSpecBlock | None
) -> ServiceSpec:
    validate_version(version)
    logger = get_run_logger()
    if service is not None:
        spec = service.get_spec()
        if spec_path:
            logger.info("spec_path %s not read: the ServiceSpec block was chosen", spec_path)
        logger.info("spec from %s: service %s", service.describe(), spec.service)
        return spec
    if not spec_path:
        raise SpecError(
            "parameters",
            [("service", "choose a saved ServiceSpec block, or give spec_path (a spec file)")],
        )
    spec = load_spec(spec_path)
    logger.info("spec %s: service %s", describe_spec_path(Path(spec_path)), spec.service)
    return spec


def tracking_ledger(tracking_block: str | None) -> Ledger:
    """The tracking database: the named block, else ``DEPLOYFLOW_DATABASE_URL``, else the local
    SQLite file of the machine running the flow."""
    if tracking_block:
        block = load_block(TrackingDatabaseBlock, tracking_block)
        return Ledger.for_url(block.resolved_url())
    return Ledger.for_url()


@task(name="connect", cache_policy=NO_CACHE, **retried(QUICK_CALL, retries=1))
def connect_backends(
    spec: ServiceSpec, tracking_block: str | None, environment: str = ""
) -> Backends:
    """Build the target, router, metrics, notifiers and tracking ledger the spec names.

    Secrets come from saved blocks (or the documented environment fallbacks) and stay inside the
    backends; what is logged is each backend's description. ``environment`` is the run's (the
    command target templates it into its hooks).
    """
    ctx = BuildContext(blocks=PrefectBlocks(), service=spec.service, environment=environment)
    backends = connect(spec, tracking_ledger(tracking_block), ctx, warn=warn)
    backends = backends.telling(prefect_audiences())
    logger = get_run_logger()
    unused: list[str] = []
    for role, description in backends.model_dump().items():
        if not description:  # a role the spec does not fill
            unused.append(role)
        elif isinstance(description, list):
            logger.info("%s: %s", role, "; ".join(description))
        else:
            logger.info("%s: %s", role, description)
    if unused:
        logger.info("not configured: %s", ", ".join(unused))
    return backends

"""Serve the deploy flow from this process, for people without a work pool.

``python -m deployments.serve`` registers a deployment named ``deploy`` (flow ``deploy``) with the
configured Prefect API and runs its flow runs here, in this checkout, until interrupted. With a
work pool, use ``prefect deploy`` and ``prefect.yaml`` instead.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from flows.deploy import deploy

DEPLOYMENT_NAME = "deploy"
# No service and no spec path: the form's sender picks the service (a saved ServiceSpec block)
# or names a spec file; a run with neither ends at once, naming the two.
DEFAULT_PARAMETERS = {"strategy": "auto", "dry_run": False}


def main() -> None:
    """Serve the ``deploy`` flow as the deployment ``deploy`` until interrupted.

    Uses the same defaults as ``prefect.yaml``, so both ways of running offer the same form in the
    Prefect UI. Relative spec paths resolve against the directory this is started from.
    """
    # ``prefect.serve`` of a deployment, not ``deploy.serve()``: a flow served by object runs in a
    # subprocess that receives the flow pickled by value, without the module globals its
    # annotations name, so Prefect 3.9 refused every run's parameters ("DeployModel is not fully
    # defined"). A served deployment starts each run as ``python -m prefect.engine``, which imports
    # flows/deploy.py from its entrypoint the way a worker does.
    deployment = deploy.to_deployment(
        name=DEPLOYMENT_NAME,
        description=(
            "Release one version of a service with checks, canary analysis and automatic "
            "rollback (served from a local process)."
        ),
        tags=["deployflow", "release", "served"],
        parameters=DEFAULT_PARAMETERS,
    )
    # Called outside an event loop, to_deployment returns the deployment (its type says either).
    assert isinstance(deployment, RunnerDeployment)
    serve(deployment)


if __name__ == "__main__":
    main()

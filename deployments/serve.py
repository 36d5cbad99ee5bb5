"""Serve the deploy flow from this process, for people without a work pool.

``python -m deployments.serve`` registers a deployment named ``deploy`` (flow ``deploy``) with the
configured Prefect API and runs its flow runs here, in this checkout, until interrupted. With a
work pool, use ``prefect deploy`` and ``prefect.yaml`` instead.
"""

from __future__ import annotations

from flows.deploy import deploy

DEPLOYMENT_NAME = "deploy"
DEFAULT_PARAMETERS = {
    "spec_path": "examples/sandbox.yaml",
    "environment": "sandbox",
    "strategy": "auto",
    "dry_run": False,
}


def main() -> None:
    """Serve the ``deploy`` flow as the deployment ``deploy`` until interrupted.

    Uses the same defaults as ``prefect.yaml``, so both ways of running offer the same form in the
    Prefect UI. Relative spec paths resolve against the directory this is started from.
    """
    deploy.serve(
        name=DEPLOYMENT_NAME,
        description=(
            "Release one version of a service with checks, canary analysis and automatic "
            "rollback (served from a local process)."
        ),
        tags=["deployflow", "release", "served"],
        parameters=DEFAULT_PARAMETERS,
    )


if __name__ == "__main__":
    main()

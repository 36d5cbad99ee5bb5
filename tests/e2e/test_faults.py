"""Faults injected at chosen moments around whole deploys on the sandbox, with a probe counting
what users got through the router (``UserProbe``) and the router and tracking database read after
each. The tests run in order on one sandbox whose live version is v1 at every test's start.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployflow.release import outcome_of
from deployflow.sandbox.supervisor import Sandbox
from deployflow.spec import load_spec
from flows.deploy import deploy
from tests.backends import build_router, build_target
from tests.e2e.conftest import EXAMPLE_SPEC
from tests.e2e.helpers import UserProbe

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def faults_spec(name: str, extra: str = "") -> Iterator[Path]:
    """The example spec with two stages and no step-1 gates (tested elsewhere); written beside
    it so its relative paths still hold."""
    text = EXAMPLE_SPEC.read_text()
    text = text.replace("steps: [5, 25, 50, 100]", "steps: [50, 100]")
    text = re.sub(r"\npre_checks:\n(?:  .*\n|#.*\n)+", "\n", text)
    assert "steps: [50, 100]" in text
    assert "\npre_checks:" not in text
    path = EXAMPLE_SPEC.parent / f".test-faults-{name}.yaml"
    path.write_text(text + extra)
    try:
        yield path
    finally:
        path.unlink()


def run(spec_file: Path, version: str) -> dict:
    state = deploy(spec_path=str(spec_file), version=version, return_state=True)
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), f"the flow crashed: {result!r}"
    return result


def serving(version: str) -> bool:
    spec = load_spec(EXAMPLE_SPEC)
    versions = {i.version: i for i in build_target(spec).instances()}
    state = build_router(spec).state()
    return version in versions and (state.stable, state.canary) == (versions[version].address, None)


def test_a_router_restarted_between_two_deploys_never_makes_the_next_a_first_release(
    sandbox: Sandbox,
) -> None:
    """HAProxy restarted from its configuration (both slots point nowhere) with v1 live: the
    next deploy puts v1 back from the tracking database's record before anything else, judges
    v3 (20% errors) against it, and rolls back to it."""
    assert sandbox.haproxy is not None
    with faults_spec("router-restart") as spec_file:
        assert run(spec_file, "v2")["status"] == "succeeded"  # the database now knows v2 is live
        with UserProbe(sandbox.frontend_url) as probe:
            sandbox.haproxy.stop()
            sandbox.haproxy.start()
            assert build_router(load_spec(spec_file)).state().stable is None
            result = run(spec_file, "v3")
            probe.mark()  # the deploy is over: users must be on v2 from here
            wait_answers(probe, 20)
        during, after = probe.before_mark, probe.after_mark

    assert result["status"] == "rolled_back", result["message"]
    assert result["strategy"] == "canary"
    assert "tracking database says v2 is live" in result["reconciled"][0]
    assert result["rollback"]["verified"] is True
    assert serving("v2")
    assert probe.from_version("v3") == 0, after
    print(f"router restart: answers during the deploy {dict(during)}, after it {dict(after)}")


def wait_answers(probe: UserProbe, count: int) -> None:
    from deployflow.polling import wait_for

    wait_for(
        lambda: sum(probe.after_mark.values()) >= count,
        timeout=30,
        interval=0.1,
        what=f"{count} probe answers",
    )

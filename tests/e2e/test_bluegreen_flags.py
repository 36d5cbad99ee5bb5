"""Blue-green, feature flags and the risk-based choice through the deploy flow on the sandbox.

In order on one sandbox (v1 live, HAProxy, Prometheus, traffic at 100 requests/s):

1. bg2 by blue-green with the flag ``new-checkout`` released at 50% then 100%: bg2's new checkout
   path fails, so the flag is killed at 50% while bg2 itself is switched to, kept and promoted;
2. bg3 (errors under the probe traffic) fails in isolation: no user request ever reaches it;
3. bg4 (the page no smoke request covers fails) passes isolation, fails under users' traffic after
   the switch and is switched back in one router call (measured);
4. ``--strategy auto`` dry runs on a crafted service repository: a docs-only change goes direct,
   a normal change canary, an unsafe migration blue-green.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployflow.flags.flagd_file import FlagdFileProvider
from deployflow.providers.haproxy import HAProxyRouter
from deployflow.release import outcome_of
from deployflow.sandbox.demo_app import NEW_CHECKOUT_FLAG
from deployflow.sandbox.supervisor import Sandbox
from deployflow.spec import load_spec
from deployflow.tracking import db, repository
from deployflow.tracking.ledger import Ledger
from flows.deploy import deploy
from tests.backends import build_router, build_target
from tests.e2e.conftest import EXAMPLE_SPEC

pytestmark = pytest.mark.e2e

FAULTS = json.dumps(
    {
        "bg2": {"new_checkout_error_rate": 1.0},
        "bg3": {"error_rate": 0.3},
        # "/" is in the users' traffic but in no smoke request, so no probe of isolation sees it.
        "bg4": {"error_rate": 1.0, "error_paths": ["/"]},
    }
)
STRATEGY = """strategy:
  kind: canary
  steps: [5, 25, 50, 100]
  observe: ${DEPLOYFLOW_OBSERVE:-6s}
"""
BLUE_GREEN = """strategy:
  kind: blue-green
  observe: 4s
  keep_previous: 4s
  probe_requests: 40
"""
COMMAND_END = '"--host", "{host}"]'
WITH_FLAGS = '"--host", "{host}", "--flags", "${DEPLOYFLOW_SANDBOX_FLAGS_FILE}"]'
FLAGS = """flags:
  provider: {kind: flagd-file, path: "${DEPLOYFLOW_SANDBOX_FLAGS_FILE}"}
  release: [new-checkout]
  steps: [50, 100]
  observe: 4s
"""
# Every gate of the example spec, which the crafted repository does not have.
PRE_CHECKS = re.compile(r"^# Step 1 gates.*?(?=^smoke:)", re.S | re.M)


@pytest.fixture(autouse=True)
def faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYFLOW_DEMO_FAULTS", FAULTS)


@contextlib.contextmanager
def variant(name: str, *replacements: tuple[str | re.Pattern[str], str]) -> Iterator[Path]:
    """The example spec with pieces replaced, beside it so its relative paths still hold."""
    text = EXAMPLE_SPEC.read_text()
    for old, new in replacements:
        if isinstance(old, re.Pattern):
            text, count = old.subn(new, text)
        else:
            count = text.count(old)
            text = text.replace(old, new)
        assert count == 1, f"{old!r} is not in the example spec once"
    path = EXAMPLE_SPEC.parent / f".test-{name}.yaml"
    path.write_text(text)
    try:
        yield path
    finally:
        path.unlink()


def blue_green(name: str, *more: tuple[str | re.Pattern[str], str]):
    return variant(name, (STRATEGY, BLUE_GREEN), (PRE_CHECKS, ""), *more)


def run(spec_file: Path, version: str, **parameters: object) -> dict:
    parameters.setdefault("environment", "sandbox")
    state = deploy(spec_path=str(spec_file), version=version, return_state=True, **parameters)
    data = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(data, dict), f"the flow crashed: {data!r}"
    return data


def sessions_of_slot(sandbox: Sandbox, slot: str) -> int:
    """Requests (sessions) HAProxy has sent to a server slot of the backend since it started:
    the users' traffic, which never includes the probes sent straight to a version."""
    router = sandbox.router()
    assert isinstance(router, HAProxyRouter)
    rows = csv.DictReader(io.StringIO(router.command("show stat").lstrip("# ")))
    (row,) = [r for r in rows if r["pxname"] == "app" and r["svname"] == slot]
    return int(row["stot"])


def serving_only(sandbox: Sandbox, version: str) -> None:
    spec = load_spec(EXAMPLE_SPEC)
    versions = {i.version: i for i in build_target(spec).instances()}
    assert set(versions) == {version}
    state = build_router(spec).state()
    assert (state.stable, state.canary_weight) == (versions[version].address, 0)
    answers = [httpx.get(sandbox.frontend_url + "/api/checkout").json() for _ in range(6)]
    assert {a["version"] for a in answers} == {version}


def test_blue_green_switches_once_and_a_failing_flag_is_killed_while_the_version_stays(
    sandbox: Sandbox,
) -> None:
    flags = FlagdFileProvider(sandbox.flags_file)
    with blue_green("bg-flags", (COMMAND_END, WITH_FLAGS), ("smoke:\n", FLAGS + "smoke:\n")) as f:
        result = run(f, "bg2")

    assert result["status"] == "succeeded", result["message"]
    assert result["strategy"] == "blue-green"
    # A fixed kind: the risk is not measured.
    assert result["strategy_rationale"]["factors"] == []
    assert 0 < result["switch_seconds"] < 1.0
    # Isolation (0% of users), the flag's 50% step (killed), bg2 without the flag, blue kept warm.
    assert [(s["weight"], s["verdict"]) for s in result["stages"]] == [
        (0, "promote"), (100, "rollback"), (100, "promote"), (100, "promote"),
    ]  # fmt: skip
    # The new checkout path alone fails: about a sixth of all requests at 50% of users.
    assert result["stages"][1]["values"]["error_rate"] > 0.05
    assert result["stages"][2]["values"]["error_rate"] < 0.05
    assert [(c["percent"], c["reason"].split(":")[0]) for c in result["flag_changes"]] == [
        (50, "step"),
        (0, "kill switch at 50%"),
    ]
    assert flags.rollout(NEW_CHECKOUT_FLAG) == 0
    assert "new-checkout turned off by the kill switch" in result["message"]
    serving_only(sandbox, "bg2")
    # bg2 reads the flag file: with the flag killed, checkout takes the old path for everyone.
    answers = [httpx.get(sandbox.frontend_url + "/api/checkout").json() for _ in range(6)]
    assert {a["checkout"] for a in answers} == {"old"}


def test_green_failing_in_isolation_never_gets_a_user_request(sandbox: Sandbox) -> None:
    before = sessions_of_slot(sandbox, "canary")
    with blue_green("bg-isolation") as spec_file:
        result = run(spec_file, "bg3")

    assert result["status"] == "rolled_back", result["message"]
    assert result["switch_seconds"] is None
    trigger = result["rollback"]
    assert (trigger["stage"], trigger["weight"]) == (0, 0)
    assert [s["weight"] for s in result["stages"]] in ([], [0])
    # HAProxy's own counter: not one request went to the slot green would have had.
    assert sessions_of_slot(sandbox, "canary") == before
    serving_only(sandbox, "bg2")


def test_green_failing_under_users_after_the_switch_is_switched_back_in_one_step(
    sandbox: Sandbox,
) -> None:
    before = sessions_of_slot(sandbox, "canary")
    with blue_green("bg-switch-back") as spec_file:
        result = run(spec_file, "bg4")

    assert result["status"] == "rolled_back", result["message"]
    assert result["switch_seconds"] is not None
    assert result["stages"][0]["verdict"] == "promote"  # isolation saw nothing wrong
    rollback = result["rollback"]
    assert rollback["verified"] is True
    assert rollback["weight"] == 100
    # The switch back: one router call, confirmed by reading HAProxy back.
    assert 0 < rollback["restore_seconds"] < 1.0
    assert sessions_of_slot(sandbox, "canary") > before  # users did reach bg4 after the switch
    serving_only(sandbox, "bg2")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str], parent: str | None = None) -> str:
    if parent is not None:
        git(repo, "checkout", "-q", "--detach", parent)
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


DROP_COLUMN = '''"""drop users.age"""
import sqlalchemy as sa
from alembic import op

revision = "0042"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_column("users", "age")


def downgrade() -> None:
    op.add_column("users", sa.Column("age", sa.Integer(), nullable=True))
'''


def test_auto_chooses_each_strategy_from_the_measured_risk(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    repo = tmp_path / "service"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.test")
    git(repo, "config", "user.name", "t")
    deployed = commit(repo, "v1", {"README.md": "demo\n", "app/main.py": "x = 1\n"})
    docs = commit(repo, "docs", {"README.md": "demo\n\nHow to run it.\n"}, parent=deployed)
    code = {f"app/module_{i}.py": "value = 1\n" * 30 for i in range(12)}
    normal = commit(repo, "feature", {**code, "uv.lock": "pinned\n"}, parent=deployed)
    unsafe = commit(
        repo, "drop a column", {"migrations/versions/0042_drop.py": DROP_COLUMN}, parent=deployed
    )  # checked out last: the migration check reads the working tree
    # What the ledger says runs in environment "auto": the deployed commit, a clean history.
    url = db.database_url()
    Ledger.for_url(url)  # creates and migrates the tracking database if no deploy did yet
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            repository.create_deployment(
                s, service="demo", environment="auto", version="v1", strategy="direct",
                git_ref=deployed, status="succeeded",
            )  # fmt: skip
            s.commit()
    finally:
        engine.dispose()
    auto = """strategy:
  kind: auto
  canary: {steps: [5, 25, 50, 100], observe: 4s}
risk:
  # The crafted repository has no gates: skipped pre-checks are not what this test weighs.
  weights: {prechecks_skipped: 0}
"""
    # One gate (the spec needs one): the crafted service "builds" by existing.
    checkout = f"pre_checks:\n  checkout: {repo}\n  build:\n    command: ['true']\n"
    migrations = f"migrations:\n  path: {repo / 'migrations'}\n  rules: {{drop-column: warning}}\n"

    def choose(name: str, ref: str, *more: tuple[str | re.Pattern[str], str]) -> dict:
        with variant(name, (STRATEGY, auto), (PRE_CHECKS, checkout), *more) as spec_file:
            result = run(spec_file, f"auto-{name}", environment="auto", dry_run=True, git_ref=ref)
        assert result["status"] == "succeeded", result["message"]
        return result

    direct = choose("docs", docs)
    assert direct["strategy"] == "direct"
    assert direct["strategy_rationale"]["explanation"].startswith("direct: risk low")
    canary = choose("code", normal)
    assert canary["strategy"] == "canary"
    assert "dependency lock files changed: uv.lock" in canary["strategy_rationale"]["explanation"]
    green = choose("unsafe", unsafe, ("smoke:\n", migrations + "smoke:\n"))
    assert green["strategy"] == "blue-green"
    explanation = green["strategy_rationale"]["explanation"]
    assert explanation.startswith("blue-green: risk high (score "), explanation
    assert "unsafe migration: 0042 drop-column" in explanation
    factors = {f["name"]: f for f in green["strategy_rationale"]["factors"]}
    assert factors["migrations"]["floor"] == "high"
    assert factors["lines_changed"]["contribution"] > 0

"""What a release may do with the schema: refuse a side-by-side release, settle the schema after a
rollback, tell whether a version runs with what the releases since it applied."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployflow.migrations.spec import MigrationsSpec
from deployflow.schema import (
    RevisionClass,
    SchemaChangeRecord,
    SchemaRange,
    after_rollback,
    can_run_with_schema,
    traffic_split_refusal,
)

pytestmark = pytest.mark.unit

EXPAND = RevisionClass("r_add", "runs", "reversible")
CONTRACT = RevisionClass("r_drop", "breaks", "reversible", ("drops a column",))
UNREAD = RevisionClass("r_unread", "unknown", "unknown (the revision could not be read)")
ONE_WAY = RevisionClass("r_data", "breaks", "irreversible", ("renames a column",))


def _range(*revisions: RevisionClass, staging_ok: bool | None = True) -> SchemaRange:
    return SchemaRange("r0", revisions[-1].revision, revisions, staging_ok)


def test_a_canary_or_blue_green_over_a_contract_change_is_refused_saying_what_to_do() -> None:
    for strategy in ("canary", "blue-green"):
        refusal = traffic_split_refusal(_range(EXPAND, CONTRACT), strategy)
        assert refusal is not None
        assert "r_drop (drops a column)" in refusal
        assert "Split expand and contract" in refusal
        assert "before anything started or any traffic moved" in refusal
    # A revision nobody read fully: whether the old version runs is not known, so refused too.
    refusal = traffic_split_refusal(_range(EXPAND, UNREAD), "canary")
    assert refusal is not None
    assert "r_unread" in refusal
    assert traffic_split_refusal(_range(EXPAND), "canary") is None
    assert traffic_split_refusal(_range(EXPAND, CONTRACT), "direct") is None


def _settle(schema: SchemaRange, **overrides):
    kwargs = dict(
        applied_from="r0", applied_to=schema.to_revision, old_version="v1", traffic_back=True,
        downgrade_allowed=True, downgrade_command="alembic downgrade r0",
    )  # fmt: skip
    return after_rollback(schema, **{**kwargs, **overrides})


def test_an_expand_only_range_stays_applied() -> None:
    decision = _settle(_range(EXPAND))
    assert decision.action == "keep"
    assert "v1 runs with" in decision.message
    assert "r_add" in decision.message


def test_a_reversible_range_tested_on_staging_is_downgraded_only_once_traffic_is_back() -> None:
    decision = _settle(_range(EXPAND, CONTRACT))
    assert (decision.action, decision.downgrade_to) == ("downgrade", "r0")
    # Traffic not back on the old version: never a downgrade, the command is given instead.
    decision = _settle(_range(EXPAND, CONTRACT), traffic_back=False)
    assert decision.action == "leave"
    assert "alembic downgrade r0" in decision.message
    assert "not back on v1" in decision.message


@pytest.mark.parametrize(
    ("schema", "overrides", "why"),
    [
        (_range(EXPAND, CONTRACT), {"downgrade_allowed": False}, "does not allow a downgrade"),
        (_range(EXPAND, ONE_WAY), {}, "r_data not known to be reversible"),
        (_range(EXPAND, CONTRACT, staging_ok=None), {}, "not shown to pass on staging"),
        (_range(EXPAND, UNREAD), {}, "r_unread"),
    ],
)
def test_anything_else_is_left_with_the_exact_state_and_the_command(schema, overrides, why) -> None:
    decision = _settle(schema, **overrides)
    assert decision.action == "leave"
    assert why in decision.message
    assert f"the database is at {schema.to_revision} (it was at r0" in decision.message
    assert "`alembic downgrade r0`" in decision.message


def _change(version: str, schema: SchemaRange, status: str = "applied") -> SchemaChangeRecord:
    return SchemaChangeRecord(1, version, None, schema.from_revision, schema.to_revision, status,
                              schema)  # fmt: skip


def test_can_a_version_run_with_what_the_releases_since_it_applied() -> None:
    v2 = _change("v2", _range(EXPAND))
    v3 = _change("v3", SchemaRange("r_add", "r_drop", (CONTRACT,), True))
    assert can_run_with_schema("v1", [v2]).ok is True
    verdict = can_run_with_schema("v1", [v2, v3])
    assert verdict.ok is False
    assert "r_drop (applied by v3): drops a column" in verdict.reason
    # v2 runs with what v3 applied? No: v3's contract change came after v2.
    assert can_run_with_schema("v2", [v2, v3]).ok is False
    # A range downgraded after its rollback is no longer in place.
    assert can_run_with_schema("v2", [v2, _change("v3", v3.schema, "downgraded")]).ok is True
    assert can_run_with_schema("v3", [v2, v3]).ok is True
    unread = _change("v4", SchemaRange("r_drop", "r_unread", (UNREAD,), None))
    assert can_run_with_schema("v3", [v2, v3, unread]).ok is None


def test_the_apply_section_needs_the_database_and_a_revision_placeholder(tmp_path) -> None:
    with pytest.raises(ValidationError, match=r"needs migrations\.database_url"):
        MigrationsSpec(path=tmp_path, apply={})
    with pytest.raises(ValidationError, match=r"\{revision\}"):
        MigrationsSpec(path=tmp_path, database_url="sqlite://", apply={"command": ["up"]})
    spec = MigrationsSpec(
        path=tmp_path, database_url="sqlite://",
        apply={"command": ["flask", "db", "upgrade", "{revision}"]},
    )  # fmt: skip
    assert spec.apply is not None
    assert not spec.apply.downgrade_on_rollback


def test_people_are_told_what_became_of_the_schema_with_the_command() -> None:
    from deployflow.audiences.threads import ChatThreads
    from deployflow.fakes.backends import RecordingNotifier
    from deployflow.notify.story import log_line
    from deployflow.story import SchemaSettled

    decision = _settle(_range(EXPAND, ONE_WAY))
    notifier = RecordingNotifier()
    event = SchemaSettled("left", decision.message)
    ChatThreads([notifier]).hear(event, None)
    [told] = notifier.messages
    assert told.startswith(":warning: schema left: the schema was left as it is")
    assert "`alembic downgrade r0`" in told
    level, line = log_line(event, None) or (0, "")
    assert level == 30  # a warning in the run log
    assert "alembic downgrade r0" in line

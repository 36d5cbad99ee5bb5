"""What a notifier without threads hears of a rollback: the notice when traffic is back, then the
check of the stable version (healthy, or an alarm naming the failed checks)."""

from __future__ import annotations

import pytest

from deployflow.audiences.threads import ChatThreads
from deployflow.fakes.backends import RecordingNotifier
from deployflow.release import Trigger
from deployflow.story import Deploy, Recorder, RollbackVerified, RolledBack, Started

pytestmark = pytest.mark.unit

TRIGGER = Trigger(0, 5, "error_rate", 0.2, 0.05, "long statistics", requests=60)


def told(ok: bool) -> list[str]:
    notifier = RecordingNotifier()
    story = Recorder([ChatThreads([notifier])])
    story.record(Started(Deploy("shop", "v2", "production", deployment_id=7)))
    story.record(RolledBack(TRIGGER, "v1"))
    story.record(RollbackVerified("v1", ok, () if ok else ("smoke: checkout",)))
    return notifier.messages


def test_a_healthy_restore_is_told_then_its_check() -> None:
    notice, verified = told(ok=True)
    assert notice.startswith(":rewind: shop v2 rolled back to v1: error rate 20.0% over 60")
    assert "> All traffic is on v1; checking it and gathering the evidence" in notice
    assert verified == ":white_check_mark: v1 verified healthy after the rollback"


def test_a_stable_version_that_fails_its_checks_is_an_alarm_to_everyone() -> None:
    notice, alarm = told(ok=False)
    assert notice.startswith(":rewind: shop v2 rolled back to v1")
    assert alarm == (
        ":warning: v1 is *NOT* healthy after the rollback (smoke: checkout failed): investigate now"
    )

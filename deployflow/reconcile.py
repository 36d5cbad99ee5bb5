"""Put traffic back in a known-good shape after a deploy that was interrupted mid-way.

The deploy flow writes its stage and canary weight to the tracking database before it acts, so
when a run dies (Ctrl-C, a killed worker, a crashed machine) the next run of the same service
finds an unfinished row and calls ``reconcile`` before doing anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deployflow.error_words import in_words
from deployflow.providers.base import Instance, Router, Target
from deployflow.release import find_stable

Action = Literal["ignore", "close", "block", "reconcile"]


def decide_unfinished(*, dry_run: bool, alive: bool, ended: bool = False) -> Action:
    """What to do about an unfinished deploy row found by a new run of the same service.

    A live dry run is ignored and a dead one only closed: dry runs never move traffic. A live real
    deploy blocks the new run; a dead one is reconciled before anything else happens. A deploy that
    ended without confirming traffic was restored (its rollback failed) is reconciled too.
    """
    if ended:
        return "reconcile"
    if dry_run:
        return "ignore" if alive else "close"
    return "block" if alive else "reconcile"


@dataclass(frozen=True)
class ReconcileResult:
    """What was found and done. ``promoted``: the router serves the interrupted version as its
    stable version with all the traffic (nothing was changed)."""

    restored_traffic: bool
    stopped: tuple[str, ...]
    message: str
    promoted: bool = False


# The verdict a stage that passed records (``deployflow.analysis.Verdict.PROMOTE``).
PASSED = "promote"


@dataclass(frozen=True)
class RecordedRollout:
    """What a deploy's row holds of its rollout: each recorded stage's weight and verdict, in
    order, and the weight the deploy wrote before its last router call (the promotion writes 100
    before the router is told; so does a canary's last stage, which a router serving the version
    as stable alone tells apart)."""

    stages: tuple[tuple[int, str], ...]
    weight: int

    @property
    def promotion_recorded(self) -> bool:
        """Every recorded stage passed (one at least) and all the traffic was written."""
        return (
            bool(self.stages)
            and all(verdict == PASSED for _, verdict in self.stages)
            and self.weight == 100
        )


def closing_of_interrupted(
    version: str, result: ReconcileResult, rollout: RecordedRollout | None
) -> tuple[str, str]:
    """The status and summary a dead deploy's row is closed with, after ``reconcile``.

    A deploy that died after its promotion (it lost its tracking database, then its process
    ended) released its version: when the router serves it as stable with all the traffic and
    the row shows every stage passed and the promotion written, the row is closed as what
    happened, ``succeeded``, saying who recorded it. With any of that evidence missing it is
    ``failed`` as interrupted, as before: a success is never claimed on a guess.
    """
    if result.promoted and rollout is not None and rollout.promotion_recorded:
        weights = ", ".join(f"{weight}%" for weight, _ in rollout.stages)
        return "succeeded", (
            f"{version} passed every recorded stage ({weights}) and was promoted; the router "
            "serves it as the stable version with all the traffic. Recorded as succeeded by the "
            "reconciler of the next deploy: the deploy could not record its outcome (what it did "
            "after the promotion, verification included, is not in this record)"
        )
    return "failed", f"interrupted; {result.message}"


def reconcile(router: Router, target: Target, interrupted_version: str) -> ReconcileResult:
    """Send all traffic to the stable version and stop the interrupted canary.

    If the interrupted version had already been promoted to the stable slot, it keeps serving (it
    passed every canary stage); only post-deploy verification is missing, which the message says,
    and ``promoted`` says whether it has all the traffic (``closing_of_interrupted`` weighs that
    with what the row recorded).
    """
    stable = find_stable(router, target)
    state = router.state()
    if stable is not None and stable.version == interrupted_version:
        return ReconcileResult(
            False,
            (),
            f"{interrupted_version} had been promoted before the interruption and keeps serving; "
            "its post-deploy verification never ran",
            promoted=state.canary is None or state.canary_weight == 0,
        )
    restored = False
    if stable is not None and (state.canary is not None or state.canary_weight > 0):
        router.set_split(stable, None, 0)
        restored = True
    stopped: list[str] = []
    running = {i.version for i in target.instances()}
    if interrupted_version in running and (stable is None or stable.version != interrupted_version):
        if stable is None and state.canary_weight > 0:
            # Nothing else can serve: stopping it would take the service down.
            return ReconcileResult(
                False,
                (),
                f"{interrupted_version} is the only version serving and was left running",
            )
        target.stop(interrupted_version)
        stopped.append(interrupted_version)
    where = f"all traffic on {stable.version}" if stable else "no stable version found"
    return ReconcileResult(
        restored,
        tuple(stopped),
        f"interrupted deploy of {interrupted_version} reconciled: {where}"
        + (f", stopped {', '.join(stopped)}" if stopped else ""),
    )


@dataclass(frozen=True)
class AbandonResult:
    """What stopping a release midway did. ``restored``: traffic is known to be on stable (or
    nothing else could serve)."""

    restored: bool
    message: str


def abandon_release(
    router: Router, target: Target, stable: Instance | None, version: str
) -> AbandonResult:
    """A run is being stopped with ``version`` possibly taking traffic: all traffic back to
    ``stable`` and ``version`` stopped, best effort; never raises.

    Without a stable version the new one is the only thing that can serve, so it keeps running.
    """
    if stable is None:
        return AbandonResult(True, f"{version} was the first release and keeps serving")
    try:
        router.set_split(stable, None, 0)
    except Exception as exc:
        return AbandonResult(
            False,
            f"traffic could not be restored to {stable.version} ({in_words(exc)}); {version} keeps "
            "running "
            "and the next deploy reconciles it",
        )
    stopped = ""
    try:
        target.stop(version)
        stopped = f", stopped {version}"
    except Exception as exc:
        stopped = f"; {version} could not be stopped ({in_words(exc)})"
    return AbandonResult(True, f"all traffic back on {stable.version}{stopped}")


class LiveVersionLost(RuntimeError):
    """The router serves no stable version, the tracking database says one is live, and it could
    not be put back: the deploy refuses to go on (it would otherwise be an unguarded "first
    release"). The message says what to do."""


@dataclass(frozen=True)
class RestoreResult:
    """The live version as the tracking database knows it, put back in the router's stable slot
    (``instance``), and what was done, in words."""

    instance: Instance | None
    started: bool
    message: str


def restore_recorded_live(
    router: Router, target: Target, live_version: str | None, *, dry_run: bool = False
) -> RestoreResult | None:
    """Before anything else: a router whose stable slot serves no running version (HAProxy
    restarted from its configuration, which points both slots nowhere) while the tracking
    database says ``live_version`` is live gets that version back in its stable slot: re-pointed
    when it still runs, started through the target first when it does not. None when there is
    nothing to restore: the router serves a stable version, or the database has never seen a
    live one (a real first release).

    A dry run changes nothing: it says what a real deploy would do, and plans against the live
    version when it runs.

    Raises:
        LiveVersionLost: It could not be started or the router refused; nothing else may go on.
    """
    if live_version is None or find_stable(router, target) is not None:
        return None
    running = next((i for i in target.instances() if i.version == live_version), None)
    lost = (
        f"the router serves no stable version, but the tracking database says {live_version} is "
        "live"
    )
    if dry_run:
        return RestoreResult(
            running,
            False,
            f"{lost}: a real deploy puts it back in the stable slot"
            + (" (it still runs)" if running else " (starting it: it does not run)")
            + " before anything else",
        )
    started = running is None
    if running is None:
        try:
            running = target.start(live_version)
        except Exception as exc:
            raise LiveVersionLost(
                f"{lost} and it could not be started ({in_words(exc)}); nothing was changed. Start "
                f"{live_version} and point the router's stable slot at it, or deploy "
                f"{live_version} first, then deploy again"
            ) from exc
    try:
        router.set_split(running, None, 0)
    except Exception as exc:
        raise LiveVersionLost(
            f"{lost} and the router refused to serve it ({in_words(exc)})"
            + (f"; {live_version} was started" if started else "")
            + f". Check the router, point its stable slot at {live_version} "
            f"({running.address}), then deploy again"
        ) from exc
    how = "started it and pointed" if started else "pointed"
    return RestoreResult(
        running,
        started,
        f"{lost}: {how} the router's stable slot at {live_version} ({running.address}) with all "
        "the traffic before anything else",
    )

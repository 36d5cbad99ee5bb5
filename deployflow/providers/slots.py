"""Which version sat in which router slot, and at which address, over time.

A router's own records name a slot or an address, never a version: HAProxy's Prometheus exporter
labels its series by server (``stable``, ``canary``), and an access log line carries the address
of the server that answered. Only deployflow knows which version it put there, and a promotion
changes it: the stable slot is re-pointed at the canary's address. ``SlotHistory`` keeps that
knowledge as an append-only file of entries, one per change, so a window that spans a promotion,
and the pre-deploy baseline that an earlier deploy set up, are attributed right:

- ``RecordingRouter`` wraps the run's router: every ``set_split`` and ``promote`` that succeeds
  appends what it set (with the version of each ``Instance``), stamped with the time the change
  began; every ``state()`` read that disagrees with the last entry (the first deploy of a service
  that already runs, a change made by hand) appends what the router reports, each address named
  by the version the target runs there.
- ``version_of(address, t)`` is the version the latest entry at or before ``t`` that names the
  address put there; before the first entry, the first entry holds (the history starts with
  what was already running).
- ``slots_of(version, start, end)`` is when ``version`` sat in which slot, for queries that
  select by slot (``{slot}``).

Recording is best effort: a history file that cannot be written is logged, and the entry is
kept in memory for the run, because the traffic change it records already happened.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployflow.providers.base import Instance, Router, RouterState, Target

logger = logging.getLogger(__name__)

STABLE = "stable"
CANARY = "canary"
# Entries read from a history file: a service deploying ten times a day writes about fifty a
# day; the newest ones are all any window or baseline needs.
MAX_ENTRIES = 5000


@dataclass(frozen=True)
class SlotAssignment:
    """One slot pointing at ``address``, where the target runs ``version`` (None: unknown)."""

    slot: str
    address: str
    version: str | None


@dataclass(frozen=True)
class SlotEntry:
    """What the router's slots held from ``at`` (Unix seconds) until the next entry.

    ``how`` is ``set`` (deployflow changed the router) or ``observed`` (the router reported a
    state the history did not have)."""

    at: float
    slots: tuple[SlotAssignment, ...]
    how: str = "set"

    def to_json(self) -> str:
        return json.dumps(
            {
                "at": round(self.at, 3),
                "how": self.how,
                "slots": [
                    {"slot": s.slot, "address": s.address, "version": s.version} for s in self.slots
                ],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SlotEntry:
        """Raises ValueError (or KeyError, TypeError) for a line that is not an entry."""
        data = json.loads(text)
        slots = tuple(
            SlotAssignment(
                str(s["slot"]),
                str(s["address"]),
                None if s.get("version") is None else str(s["version"]),
            )
            for s in data["slots"]
        )
        return cls(float(data["at"]), slots, str(data.get("how", "set")))

    def same_routing(self, other: SlotEntry) -> bool:
        return set(self.slots) == set(other.slots)


@dataclass(frozen=True)
class SlotSpan:
    """``version`` sat in ``slot`` from ``start`` to ``end`` (Unix seconds)."""

    slot: str
    start: float
    end: float


class SlotIndex:
    """Lookups over a fixed list of entries (oldest first)."""

    def __init__(self, entries: list[SlotEntry]) -> None:
        self.entries = entries
        self._by_address: dict[str, tuple[list[float], list[str | None]]] = {}
        for entry in entries:
            for slot in entry.slots:
                times, versions = self._by_address.setdefault(slot.address, ([], []))
                times.append(entry.at)
                versions.append(slot.version)

    def version_of(self, address: str, at: float) -> str | None:
        """The version at ``address`` at time ``at``: what the latest entry at or before ``at``
        that names the address says; before that, what the first entry says. None when no
        entry names it then."""
        found = self._by_address.get(address)
        if found is None:
            return None
        times, versions = found
        position = bisect.bisect_right(times, at) - 1
        if position >= 0:
            return versions[position]
        first = self.entries[0]
        return next((s.version for s in first.slots if s.address == address), None)

    def addresses_of(self, version: str) -> set[str]:
        """Every address the history ever put ``version`` at."""
        return {s.address for e in self.entries for s in e.slots if s.version == version}

    def slots_of(self, version: str, start: float, end: float) -> list[SlotSpan]:
        """When ``version`` sat in which slot between ``start`` and ``end``, oldest first;
        before the first entry the first entry holds. Empty when it sat in none."""
        entries = self.entries
        spans: list[SlotSpan] = []
        for i, entry in enumerate(entries):
            begin = -math.inf if i == 0 else entry.at
            until = entries[i + 1].at if i + 1 < len(entries) else math.inf
            lo, hi = max(begin, start), min(until, end)
            if lo >= hi:
                continue
            for slot in entry.slots:
                if slot.version != version:
                    continue
                if spans and spans[-1].slot == slot.slot and spans[-1].end == lo:
                    spans[-1] = SlotSpan(slot.slot, spans[-1].start, hi)
                else:
                    spans.append(SlotSpan(slot.slot, lo, hi))
        return spans


class SlotHistory:
    """The slot history of one service, in a JSON-lines file (None: in memory only, for tests).

    Args:
        path: The history file; its folder is created on the first write.
        clock: Unix time now (tests pass their own).
    """

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._loaded: list[SlotEntry] = []
        self._unsaved: list[SlotEntry] = []
        self._stamp: tuple[int, int, int] | None = None
        self._index: SlotIndex | None = None

    def describe(self) -> str:
        return f"slot history {self.path}" if self.path is not None else "slot history in memory"

    # -- reading ---------------------------------------------------------------------------------

    def entries(self) -> list[SlotEntry]:
        """Every entry, oldest first: the file's (re-read when it changed) and this process's
        entries the file could not take."""
        self._refresh()
        if not self._unsaved:
            return self._loaded
        return sorted([*self._loaded, *self._unsaved], key=lambda e: e.at)

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            info = self.path.stat()
        except OSError:
            return  # no history yet (or none readable): what this process knows stands
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp == self._stamp:
            return
        loaded: list[SlotEntry] = []
        try:
            with self.path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        loaded.append(SlotEntry.from_json(line))
                    except (ValueError, KeyError, TypeError):
                        logger.warning("%s: a line that is not a slot entry was skipped", self.path)
        except OSError as exc:
            logger.warning("slot history %s cannot be read: %s", self.path, exc.strerror)
            return
        loaded.sort(key=lambda e: e.at)
        self._loaded = loaded[-MAX_ENTRIES:]
        self._stamp = stamp
        saved = {(e.at, e.slots) for e in self._loaded}
        self._unsaved = [e for e in self._unsaved if (e.at, e.slots) not in saved]

    def latest(self) -> SlotEntry | None:
        found = self.entries()
        return found[-1] if found else None

    def index(self) -> SlotIndex:
        """The history as it stands now, for lookups (re-built only when it changed)."""
        entries = self.entries()
        if self._index is None or self._index.entries is not entries:
            self._index = SlotIndex(entries)
        return self._index

    def version_of(self, address: str, at: float) -> str | None:
        """See ``SlotIndex.version_of``."""
        return self.index().version_of(address, at)

    def slots_of(self, version: str, start: float, end: float) -> list[SlotSpan]:
        """See ``SlotIndex.slots_of``."""
        return self.index().slots_of(version, start, end)

    # -- writing ---------------------------------------------------------------------------------

    def record(self, entry: SlotEntry) -> None:
        """Append ``entry``; a file that cannot be written keeps it in memory (and logs why)."""
        self._refresh()
        if self.path is None:
            self._unsaved.append(entry)
            self._index = None
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One write of one line with O_APPEND: two runs appending never interleave a line.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (entry.to_json() + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning(
                "slot history %s cannot be written (%s): kept in memory for this run",
                self.path,
                exc.strerror,
            )
            self._unsaved.append(entry)
        self._index = None

    def record_slots(
        self, at: float, slots: Iterable[tuple[str, Instance | None]], how: str = "set"
    ) -> SlotEntry:
        """Record what each named slot points at now (None: nothing, left out)."""
        entry = SlotEntry(
            at,
            tuple(
                SlotAssignment(name, instance.address, instance.version)
                for name, instance in slots
                if instance is not None
            ),
            how,
        )
        self.record(entry)
        return entry

    def observe(
        self,
        state: RouterState,
        running: Callable[[], Iterable[Instance]],
        names: tuple[str, str],
        at: float | None = None,
    ) -> SlotEntry | None:
        """Record what the router reports, when the latest entry says otherwise; each address
        named by the version ``running()`` has there (asked only then: a command target's
        status hook is not run at every look). Returns the entry recorded, if any."""
        reported = {
            (name, address)
            for name, address in zip(names, (state.stable, state.canary), strict=True)
            if address is not None
        }
        latest = self.latest()
        if not reported or (
            latest is not None and reported == {(s.slot, s.address) for s in latest.slots}
        ):
            return None
        versions: Mapping[str, str] = {i.address: i.version for i in running()}
        slots = tuple(
            SlotAssignment(name, address, versions.get(address))
            for name, address in zip(names, (state.stable, state.canary), strict=True)
            if address is not None
        )
        entry = SlotEntry(self._clock() if at is None else at, slots, "observed")
        self.record(entry)
        return entry


class RecordingRouter:
    """A ``Router`` that writes every change it makes, and every state it reads that the
    history lacks, to a ``SlotHistory``. Everything else is the wrapped router's.

    Args:
        router: The run's router.
        history: Where the changes go.
        target: The run's target, whose instances name the addresses a read state reports.
    """

    def __init__(
        self,
        router: Router,
        history: SlotHistory,
        target: Target | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.router = router
        self.history = history
        self.target = target
        self._clock = clock
        # The router's own slot names (HAProxy's server names) where it has them.
        self.names: tuple[str, str] = (
            str(getattr(router, "stable_server", STABLE)),
            str(getattr(router, "canary_server", CANARY)),
        )

    def __getattr__(self, name: str) -> Any:
        # Optional contracts (preflight, close) and a router's own attributes pass through.
        return getattr(self.router, name)

    @property
    def frontend_url(self) -> str:
        return self.router.frontend_url

    def describe(self) -> str:
        return self.router.describe()

    def state(self) -> RouterState:
        state = self.router.state()
        try:
            target = self.target
            self.history.observe(
                state,
                lambda: target.instances() if target is not None else [],
                self.names,
                self._clock(),
            )
        except Exception:  # bookkeeping must never fail a read the deploy relies on
            logger.exception("recording the router state in %s failed", self.history.describe())
        return state

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        began = self._clock()
        self.router.set_split(stable, canary, canary_weight)
        in_canary = canary if canary is not None and canary_weight > 0 else None
        self._record(began, ((self.names[0], stable), (self.names[1], in_canary)))

    def promote(self, instance: Instance) -> None:
        began = self._clock()
        self.router.promote(instance)
        self._record(began, ((self.names[0], instance), (self.names[1], None)))

    def _record(self, at: float, slots: tuple[tuple[str, Instance | None], ...]) -> None:
        try:
            self.history.record_slots(at, slots)
        except Exception:  # the traffic change happened; its record is best effort
            logger.exception("recording a router change in %s failed", self.history.describe())


def recording_changes(router: Router, metrics: object, target: Target | None) -> Router:
    """``router``, recording its changes (and the states it reads) in the slot history of
    ``metrics`` when those metrics name versions through slots or addresses (the access log,
    ``{slot}`` queries); else ``router`` itself."""
    history = getattr(metrics, "slot_history", None)
    if isinstance(history, SlotHistory):
        return RecordingRouter(router, history, target)
    return router


def default_history_path(data_dir: Path, service: str) -> Path:
    """Where a service's slot history lives unless the spec says: ``<data dir>/slots/``."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in service) or "service"
    return data_dir / "slots" / f"{safe}.jsonl"

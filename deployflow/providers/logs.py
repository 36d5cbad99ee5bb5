"""Log sources: where the logs of one version are read, a few new lines at a time.

Three kinds, one contract (``LogSource.read(version, cursor)``):

- ``file``: glob patterns with ``{version}`` (``/var/log/shop/{version}/*.log``); the cursor holds
  a byte offset per file, so each read returns only what was appended since (a file that shrank
  was rotated or truncated and is read from its start).
- ``command``: an argv run without a shell (``journalctl -u shop --since @{since} -o cat``,
  ``kubectl logs deploy/shop-{version} --since=60s``), with ``{version}``, ``{since}`` (Unix
  seconds of the previous read) and ``{since_iso}``. Its output is taken as the tail of an
  append-only log: lines already seen at the end of the previous output are not counted twice.
- ``target``: the run's target's own ``logs`` hook (the local processes' log files, the command
  target's ``logs`` hook), read the same way. ``Target.logs`` never fails, so this kind cannot
  tell "no logs" from "no access": prefer ``file`` or ``command`` where that matters.

Failing to read is data (``LogRead.error``), never an exception: the analysis counts it as an
Error measurement, which never promotes.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from deployflow.processes import run_command
from deployflow.providers.base import BackendConfigError, BuildContext, LogRead, Target
from deployflow.spec_types import Argv, Duration, StrictModel, validate_version

# At most this much of a log is read per file and look: a canary writing faster than this is
# judged on what was read (its matching lines are already far above any sane threshold).
MAX_READ_BYTES = 4 * 1024 * 1024
# Lines of a command's or target's previous output kept to find where the new output starts.
OVERLAP_LINES = 2000


def new_lines(previous: tuple[str, ...], current: list[str]) -> list[str]:
    """The lines of ``current`` that follow what ``previous`` (the last output) ended with.

    Both are tails of one append-only log: ``current`` starts somewhere inside ``previous`` (or
    after it). The longest prefix of ``current`` that is a suffix of ``previous`` was seen
    already; without one, everything in ``current`` is new.
    """
    longest = min(len(previous), len(current))
    for k in range(longest, 0, -1):
        if current[k - 1] == previous[-1] and current[:k] == list(previous[-k:]):
            return current[k:]
    return current


class FileLogSourceSpec(StrictModel):
    """Log files of the version, by glob."""

    kind: Literal["file"] = Field(description="Log files matched by glob patterns.")
    paths: list[str] = Field(
        min_length=1,
        description="Glob patterns of the version's log files; '{version}' is replaced, e.g. "
        "/var/log/shop/{version}.log",
    )

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not os.path.isabs(path):
                raise ValueError(f"{path!r} must be an absolute path")
        return paths


class CommandLogSourceSpec(StrictModel):
    """A command that prints the version's recent log lines."""

    spec_programs: ClassVar[tuple[str, ...]] = ("argv",)

    kind: Literal["command"] = Field(description="A command printing log lines.")
    argv: Argv = Field(
        description="Run without a shell; '{version}', '{since}' (Unix seconds of the previous "
        "read) and '{since_iso}' are replaced, e.g. ['journalctl', '-u', 'shop', '--since', "
        "'@{since}', '-o', 'cat'] or ['kubectl', 'logs', 'deploy/shop-{version}', "
        "'--since=2m']."
    )
    timeout: Duration = Field(10.0, description="How long one run may take.")


class TargetLogSourceSpec(StrictModel):
    """The run's target's own logs (its ``logs`` hook)."""

    kind: Literal["target"] = Field(description="The target's logs.")
    lines: int = Field(
        1000, ge=10, le=OVERLAP_LINES, description="Lines of the tail read at each look."
    )


def _template(argv: list[str], version: str, since: float) -> list[str]:
    validate_version(version)
    iso = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        a.replace("{version}", version)
        .replace("{since_iso}", iso)
        .replace("{since}", str(int(since)))
        for a in argv
    ]


@dataclass(frozen=True)
class _TailCursor:
    """Where a tail-reading source stopped: the time of the read and the output's last lines."""

    at: float
    seen: tuple[str, ...] = ()


class FileLogSource:
    """The ``file`` log source."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = list(paths)

    @classmethod
    def from_spec(cls, spec: FileLogSourceSpec) -> FileLogSource:
        return cls(spec.paths)

    def describe(self) -> str:
        return "log files " + ", ".join(self.paths)

    def _files(self, version: str) -> list[str]:
        validate_version(version)
        found: set[str] = set()
        for pattern in self.paths:
            found.update(glob.glob(pattern.replace("{version}", glob.escape(version))))
        return sorted(f for f in found if os.path.isfile(f))

    def read(self, version: str, cursor: object | None) -> LogRead:
        files = self._files(version)
        if not files:
            shown = ", ".join(p.replace("{version}", version) for p in self.paths)
            # A file that appears later is read from its start.
            start: object = {} if cursor is None else cursor
            return LogRead(cursor=start, error=f"no log file of {version} matches {shown}")
        offsets: dict[str, int] = dict(cursor) if isinstance(cursor, dict) else {}
        lines: list[str] = []
        ends: dict[str, int] = {}
        try:
            for path in files:
                size = os.path.getsize(path)
                if cursor is None:
                    ends[path] = size
                    continue
                start = offsets.get(path, 0)
                if start > size:  # rotated or truncated: read the new file from its start
                    start = 0
                with open(path, "rb") as handle:
                    handle.seek(start)
                    data = handle.read(min(size - start, MAX_READ_BYTES))
                # Only whole lines: a line being written is read whole next time.
                complete = data.rfind(b"\n") + 1
                ends[path] = start + complete
                text = data[:complete].decode("utf-8", errors="replace")
                lines.extend(text.splitlines())
        except OSError as exc:
            return LogRead(cursor=cursor, error=f"cannot read {exc.filename}: {exc.strerror}")
        return LogRead(tuple(lines), {**offsets, **ends})


class CommandLogSource:
    """The ``command`` log source."""

    def __init__(self, argv: list[str], timeout: float = 10.0) -> None:
        self.argv = list(argv)
        self.timeout = timeout

    @classmethod
    def from_spec(cls, spec: CommandLogSourceSpec) -> CommandLogSource:
        return cls(spec.argv, spec.timeout)

    def describe(self) -> str:
        return "log command " + " ".join(self.argv)

    def read(self, version: str, cursor: object | None) -> LogRead:
        now = time.time()
        first = not isinstance(cursor, _TailCursor)
        previous = cursor if isinstance(cursor, _TailCursor) else _TailCursor(now)
        # A second of overlap: tools like journalctl take whole seconds; the overlap with the
        # previous output's tail is not counted twice. The first read only learns that tail.
        argv = _template(self.argv, version, previous.at - 1.0)
        cursor = previous
        try:
            result = run_command(argv, timeout=self.timeout)
        except OSError as exc:
            return LogRead(cursor=cursor, error=f"{argv[0]} cannot run: {exc.strerror}")
        if result.timed_out:
            return LogRead(cursor=cursor, error=f"{argv[0]} timed out after {self.timeout:g} s")
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-3:]
            return LogRead(
                cursor=cursor,
                error=f"{argv[0]} exited {result.returncode}: {' / '.join(tail) or 'no stderr'}",
            )
        output = result.stdout.splitlines()
        fresh = [] if first else new_lines(previous.seen, output)
        return LogRead(tuple(fresh), _TailCursor(now, tuple(output[-OVERLAP_LINES:])))


class TargetLogSource:
    """The ``target`` log source: the run's target's ``logs``."""

    def __init__(self, target: Target, lines: int = 1000) -> None:
        self.target = target
        self.lines = lines

    @classmethod
    def from_spec(cls, spec: TargetLogSourceSpec, ctx: BuildContext) -> TargetLogSource:
        if ctx.target is None:
            raise BackendConfigError("logs.source: kind 'target' needs the run's target")
        return cls(ctx.target, spec.lines)

    def describe(self) -> str:
        return f"logs of {self.target.describe()}"

    def read(self, version: str, cursor: object | None) -> LogRead:
        output = self.target.logs(version, lines=self.lines).splitlines()
        seen = cursor.seen if isinstance(cursor, _TailCursor) else ()
        fresh = [] if cursor is None else new_lines(seen, output)
        return LogRead(tuple(fresh), _TailCursor(time.time(), tuple(output)))

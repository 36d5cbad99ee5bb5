"""The release applies its migrations (``migrations.apply``): upgrade before the new version takes
traffic, downgrade after a rollback when the schema decision says so.

Either the team's own command (``apply.command`` / ``apply.downgrade_command``, ``{revision}``
replaced) or Alembic driven in the service's interpreter (``staging_script`` in ``migrate``
mode, the database URL handed over on stdin). The database's revision is read before and after
through ``migrations.database_url`` either way, so what is recorded is what the database says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from deployflow.migrations.graph import alembic_ini, application_sys_path, project_root
from deployflow.migrations.spec import MigrationsSpec
from deployflow.migrations.staging import (
    read_deployed_revision,
    run_script,
    safe_url,
    script_request,
)
from deployflow.schema import MigrationRun

_OUTPUT_TAIL = 2000


def interpreter(settings: MigrationsSpec) -> str:
    """The service's interpreter (``migrations.python``), else deployflow's own."""
    if not settings.python:
        return sys.executable
    from deployflow.migrations.check import resolve_interpreter

    root = project_root(settings.path)
    ini = alembic_ini(settings.path)
    search = [root, *([ini.parent.resolve()] if ini else [])]
    return resolve_interpreter(settings.python, "migrations.python", search) or sys.executable


def undo_command(settings: MigrationsSpec, revision: str | None) -> str:
    """The command a person runs to bring the target database back to ``revision``."""
    target = revision or "base"
    apply = settings.apply
    if apply is not None and apply.downgrade_command:
        return " ".join(part.replace("{revision}", target) for part in apply.downgrade_command)
    ini = alembic_ini(settings.path)
    where = f"-c {ini.resolve()} " if ini else ""
    return f"{interpreter(settings)} -m alembic {where}downgrade {target}"


def migrate(settings: MigrationsSpec, destination: str, *, upgrade: bool) -> MigrationRun:
    """Upgrade (or downgrade) the target database to ``destination``.

    Raises:
        ValueError: the spec has no ``migrations.apply`` or no ``database_url``.
    """
    apply = settings.apply
    if apply is None or settings.database_url is None:
        raise ValueError("migrations.apply and migrations.database_url are needed")
    url = settings.database_url.get_secret_value()
    command = apply.command if upgrade else apply.downgrade_command
    started = time.perf_counter()
    before = read_deployed_revision(url)
    if command:
        argv = [part.replace("{revision}", destination) for part in command]
        shown = " ".join(argv)
        ok, detail = _run_command(argv, project_root(settings.path), apply.timeout)
    else:
        python = interpreter(settings)
        verb = "upgrade" if upgrade else "downgrade"
        shown = f"alembic {verb} {destination} (in {python}, on {safe_url(url)})"
        root = project_root(settings.path)
        request = script_request(
            settings.path, url, None, destination, settings.lock_timeout,
            application_sys_path(settings.path, root, settings.sys_path, "migrations.sys_path"),
        )  # fmt: skip
        request.update(mode="migrate", destination=destination, upgrade=upgrade)
        leg = run_script(python, request, root, apply.timeout)
        ok = bool(leg.get("ok"))
        detail = str(leg.get("error") or ("" if ok else "no answer")) + (
            f" at revision {leg['failed_revision']}" if leg.get("failed_revision") else ""
        )
    try:
        after = read_deployed_revision(url)
    except Exception as exc:  # the command ran; what it left is unknown, and said so
        return MigrationRun(
            False, before, None, f"{detail}; the revision after could not be read: "
            f"{type(exc).__name__}", time.perf_counter() - started, shown,
        )  # fmt: skip
    if ok and after != (None if destination == "base" else destination):
        ok, detail = False, f"the database is at {after}, not {destination}"
    return MigrationRun(ok, before, after, detail, time.perf_counter() - started, shown)


def _run_command(argv: list[str], cwd: Path, timeout: float) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"{argv[0]} took more than {timeout:g}s: stopped"
    except OSError as exc:
        return False, f"{argv[0]} could not start: {exc}"
    tail = (done.stdout + done.stderr).strip()[-_OUTPUT_TAIL:]
    if done.returncode != 0:
        return False, f"{argv[0]} exited {done.returncode}: {tail.splitlines()[-1] if tail else ''}"
    return True, ""

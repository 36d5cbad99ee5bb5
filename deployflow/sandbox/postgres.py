"""A throwaway PostgreSQL server from the Debian package, on a free loopback port.

Used by the tests (tracking database, staging migration round trips) and by anyone who wants a
scratch staging database. ``initdb`` refuses to run as root, so when we are root the server runs as
the ``postgres`` system user that the Debian package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from deployflow.polling import wait_for
from deployflow.processes import free_port


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).resolve().parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package "
        "'postgresql' (make test does this)"
    )


class LocalPostgres:
    """Start ``initdb`` + ``pg_ctl`` on a free port; ``stop()`` removes everything.

    Example:
        with LocalPostgres() as pg:
            engine = create_engine(pg.url("mydb"))
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        clients: str | None = None,
        command_prefix: Sequence[str] = (),
    ) -> None:
        """Prepare; ``start`` (or ``with``) runs it.

        Args:
            base_dir: Where its temporary directory goes.
            host: The address it listens on besides loopback, and its URLs name.
            clients: A network (``10.0.0.0/24``) whose clients it trusts besides loopback.
            command_prefix: Put before each PostgreSQL command, e.g. ``ip netns exec NAME`` to
                run the server in a network namespace (tests/e2e/test_several_machines.py).
        """
        self.bin = _bin_dir()
        self.host = host
        self.clients = clients
        self.command_prefix = list(command_prefix)
        self.port = free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix="deployflow-pg-", dir=base_dir))
        self.data_dir = self._tmp / "data"
        self.socket_dir = self._tmp / "socket"
        self.user = "postgres"
        self._as_root = os.geteuid() == 0
        self._started = False

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        cmd = [*self.command_prefix, *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> LocalPostgres:
        self.socket_dir.mkdir(parents=True)
        if self._as_root:
            shutil.chown(self._tmp, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
            "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        if self.clients is not None:
            with (self.data_dir / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.clients} trust\n")
        self._pg_ctl_start()
        self._started = True
        wait_for(
            lambda: self._run("pg_isready", "-h", self.host, "-p", str(self.port)),
            timeout=30,
            what="postgres ready",
        )
        return self

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL (psycopg 3 driver)."""
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, name)
        return self.url(name)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """The URL through its Unix socket (from any network namespace of this machine)."""
        return (
            f"postgresql+psycopg://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"
        )

    def halt(self) -> None:
        """Stop the server and keep its data (a tracking database that stops answering);
        ``resume`` starts it again on the same port."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start again a server ``halt`` stopped, with its data, on the same port."""
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        listen = ",".join(dict.fromkeys(["127.0.0.1", self.host]))
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={listen} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-o", options, "-l",
            str(self._tmp / "postgres.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        if self._started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            self._started = False
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

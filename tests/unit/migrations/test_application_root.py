"""Where the application is importable from while revisions are read, and no network then."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from deployflow.migrations import (
    MigrationInputError,
    MigrationsSpec,
    capture_script,
    check_migrations,
)
from deployflow.migrations.graph import application_sys_path, project_root

pytestmark = pytest.mark.unit

PROJECTS = Path(__file__).resolve().parents[2] / "fixtures" / "migrations" / "projects"
REVISIONS = PROJECTS.parent / "revisions"


def test_the_flask_migrate_layout_reads_the_application_from_the_checkout_root() -> None:
    # alembic.ini sits in migrations/, the application beside it: the checkout root is the
    # folder with requirements.txt, not migrations/ (where `import shop` fails).
    alembic_dir = PROJECTS / "flask_layout" / "migrations"
    assert project_root(alembic_dir) == (PROJECTS / "flask_layout").resolve()
    report = check_migrations(alembic_dir, from_rev=None)
    assert [(r.revision, r.unreadable) for r in report.revisions] == [
        ("fl_a", None),
        ("fl_b", None),
    ]
    assert report.revisions[0].operations[0]["table"] == "orders"
    assert report.read_with["sys_path"] == str((PROJECTS / "flask_layout").resolve())


def test_a_package_directory_is_never_put_on_sys_path() -> None:
    # alembic.ini inside the package shop/, which holds an http.py: shop/ on sys.path would make
    # `from http import HTTPStatus` (in shop/models.py) find shop/http.py.
    alembic_dir = PROJECTS / "package_layout" / "shop" / "migrations"
    root = project_root(alembic_dir)
    assert root == (PROJECTS / "package_layout").resolve()
    assert application_sys_path(alembic_dir, root, None, "migrations.sys_path") == [str(root)]
    report = check_migrations(alembic_dir, from_rev=None)
    [revision] = report.revisions
    assert revision.unreadable is None
    # Configured by hand, a package directory is refused, naming the setting and the way out.
    spec = MigrationsSpec(path=alembic_dir, sys_path=["shop"])
    with pytest.raises(MigrationInputError, match="package directory") as excinfo:
        check_migrations(alembic_dir, from_rev=None, settings=spec)
    assert excinfo.value.argument == "migrations.sys_path"
    assert str(root) in str(excinfo.value)


def test_without_a_checkout_marker_the_folder_of_the_alembic_directory_is_the_root(
    tmp_path,
) -> None:
    alembic_dir = tmp_path / "service" / "alembic"
    (alembic_dir / "versions").mkdir(parents=True)
    assert project_root(alembic_dir) == (tmp_path / "service").resolve()
    (tmp_path / "service" / "__init__.py").write_text("")
    assert project_root(alembic_dir) == tmp_path.resolve()


def test_a_revision_reaching_the_network_is_refused_and_reported(assemble, monkeypatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setenv("DEPLOYFLOW_TEST_PORT", str(port))
        report = check_migrations(assemble(REVISIONS / "reaches_network.py"), from_rev="base0001")
        [revision] = report.revisions
        assert f"127.0.0.1:{port}" in (revision.unreadable or "")
        assert "revision-unreadable" in [f.rule_id for f in revision.findings if f.counts]
        assert revision.compatibility == "unknown"
        assert report.exit_code == 1
        # Nothing reached the listener: the connection was refused before it left.
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()
        # The guard covered the capture's thread only: this one still connects.
        socket.create_connection(("127.0.0.1", port), 2).close()
        listener.settimeout(2)
        listener.accept()[0].close()


def test_other_threads_keep_their_network_while_a_revision_is_read(assemble) -> None:
    # A Prefect worker thread running the pre-checks beside step 2 is not the revision's.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        connected = threading.Event()

        def other() -> None:
            socket.create_connection(("127.0.0.1", port), 2).close()
            connected.set()

        thread = threading.Thread(target=other)
        report = check_migrations(assemble(REVISIONS / "prints.py"), from_rev="base0001")
        thread.start()
        thread.join(5)
        assert connected.is_set()
        assert report.revisions[0].unreadable is None


def test_lookups_of_address_literals_pass_and_name_lookups_and_sends_are_refused() -> None:
    # A metrics client made at import time looks up 127.0.0.1 (no DNS query): not refused; a
    # host name would query DNS, and a datagram would leave: refused, each recorded.
    attempts: list[str] = []
    with capture_script.network_refused(attempts):
        socket.getaddrinfo("127.0.0.1", 8125)
        with pytest.raises(capture_script.NetworkRefused):
            socket.getaddrinfo("cache.internal.example", 6379)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            pytest.raises(capture_script.NetworkRefused),
        ):
            udp.sendto(b"deploys:1|c", ("127.0.0.1", 8125))
    assert attempts == ["look up cache.internal.example:6379", "send to 127.0.0.1:8125"]
    socket.getaddrinfo("localhost", 80)  # outside the guard nothing is refused

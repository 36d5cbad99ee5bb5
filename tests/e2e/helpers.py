"""What the e2e tests share beyond their fixtures."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def plain_settings(state: Path, proxy: Any) -> dict[str, str]:
    """The environment examples/plain-*.yaml (and specs written like them) read, for a
    ``LocalHAProxy`` or ``LocalNginx`` ``proxy`` with its access log and the service's state
    under ``state``: a look every 2 s over 20 s, stages observed 4 s and at most 30 s."""
    from deployflow.sandbox.haproxy import LocalHAProxy

    found = {
        "SHOP_STATE_DIR": str(state / "apps"),
        "SHOP_FRONTEND_URL": proxy.frontend_url,
        "SHOP_ACCESS_LOG": str(proxy.access_log),
        "SHOP_INTERVAL": "2s",
        "SHOP_WINDOW": "20s",
        "DEPLOYFLOW_OBSERVE": "4s",
        "DEPLOYFLOW_MAX_STAGE": "30s",
        "DEPLOYFLOW_DATA_DIR": str(state / "data"),
    }
    if isinstance(proxy, LocalHAProxy):
        found["SHOP_HAPROXY_SOCKET"] = str(proxy.admin_socket)
    else:
        found["SHOP_NGINX_CONFIG"] = str(proxy.config_file)
        found["SHOP_NGINX_UPSTREAM_FILE"] = str(proxy.upstream_file)
        found["SHOP_NGINX_STATE_LISTEN"] = proxy.state_listen
    return found


def rolled_back_for_its_errors(
    metric: str, value: float | None, threshold: float | None, reason: str, seen: float | None
) -> None:
    """A rollback of the sandbox's v3 (20% of its requests fail) at the seed's 5% first stage,
    for its errors: ``metric``, ``value``, ``threshold`` and ``reason`` are the trigger's (or the
    incident row's), ``seen`` the stage's last measured error rate.

    At 5% of the sandbox's ~100 requests/s a 6 s window holds about 30 canary requests, where
    20% errors sit at the edge of what the judge's 99.9% can show above the 5% limit. So the
    stage either shows the harm (metric ``error_rate``, its figure above the limit) or runs out
    of time unproven, and the sandbox's on_inconclusive rule rolls it back because its estimate
    is above the limit (metric ``inconclusive``). A promotion, or a rollback for anything else,
    fails both."""
    if metric == "error_rate":
        assert threshold == 0.05, (metric, value, threshold)
        assert value is not None, (metric, value, threshold)
        assert value > threshold, (metric, value, threshold)
        return
    assert metric == "inconclusive", (metric, reason)
    assert "its estimates are not within the limits" in reason, reason
    assert seen is not None, reason
    assert seen > 0.05, (seen, reason)


@contextlib.contextmanager
def two_stage_spec(prefix: str, name: str, extra: str = "") -> Iterator[Path]:
    """The example spec with two stages (50, 100), no step-1 gates (tested elsewhere), and
    ``extra`` sections; written beside it so its relative paths still hold."""
    from tests.e2e.conftest import EXAMPLE_SPEC

    text = EXAMPLE_SPEC.read_text()
    text = text.replace("steps: [5, 25, 50, 100]", "steps: [50, 100]")
    text = re.sub(r"\npre_checks:\n(?:  .*\n|#.*\n)+", "\n", text)
    assert "steps: [50, 100]" in text
    assert "\npre_checks:" not in text
    path = EXAMPLE_SPEC.parent / f".test-{prefix}-{name}.yaml"
    path.write_text(text + extra)
    try:
        yield path
    finally:
        path.unlink()


def deploy_in_process(spec_file: Path, version: str) -> dict[str, Any]:
    """Run the deploy flow in this process; its outcome as a dict (fails when the flow crashed)."""
    from deployflow.release import outcome_of
    from flows.deploy import deploy

    state = deploy(
        environment="sandbox", spec_path=str(spec_file), version=version, return_state=True
    )
    raised = state.result(raise_on_failure=False)
    result = outcome_of(raised)
    assert isinstance(result, dict), f"the flow crashed ({state.message}): {raised!r}"
    return result


def takes_traffic(spec_file: Path, version: str) -> bool:
    """Whether ``version``'s instance is the router's canary with some traffic (not another
    version's canary a test before left behind)."""
    from deployflow.spec import load_spec
    from tests.backends import build_router, build_target

    spec = load_spec(spec_file)
    state = build_router(spec).state()
    if state.canary is None or state.canary_weight <= 0:
        return False
    return any(
        i.version == version and i.address == state.canary for i in build_target(spec).instances()
    )


def _group_stopped(pgid: int) -> bool:
    """Whether every process of group ``pgid`` is stopped (state T in /proc)."""
    members = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                members += 1
                if fields[0] not in ("T", "t"):
                    return False
    return members > 0


def pause_outside_a_write(process: subprocess.Popen[bytes], database: Path) -> None:
    """SIGSTOP ``process``'s group at a moment none of it holds the SQLite ``database``'s write
    lock: a process stopped inside a write keeps every other writer waiting (SQLite's limit,
    not the fault under test), so a pause that lands in one is undone and tried again."""
    import sqlite3

    from deployflow.polling import wait_for

    def paused_outside_a_write() -> bool | None:
        os.killpg(process.pid, signal.SIGSTOP)
        wait_for(lambda: _group_stopped(process.pid), timeout=10, what="the group to stop")
        probe = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:  # "database is locked": stopped inside a write
            os.killpg(process.pid, signal.SIGCONT)
            return None
        finally:
            probe.close()

    wait_for(paused_outside_a_write, timeout=30, interval=0.05, what="a pause outside a write")


@contextlib.contextmanager
def deploy_in_its_own_process(
    spec_file: Path,
    version: str,
    prefect_server: str,
    log: Path,
    settings: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    stdout: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`deployflow deploy SPEC --version VERSION ARGS` in its own process group, yielded once its
    canary takes traffic (a long observe time keeps it there); killed with its group afterwards
    (continued first, in case a test stopped it). Its output goes to ``log``; with ``stdout``,
    its stdout alone goes there (``--json``'s object) and only its stderr to ``log``."""
    from deployflow.polling import wait_for

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "DEPLOYFLOW_OBSERVE": "2m",
        "DEPLOYFLOW_MAX_STAGE": "2m",  # a stage's maximum is at least its observe time
        **(settings or {}),
    }
    repo_root = Path(__file__).parents[2]
    with log.open("w") as out, (stdout or log).open("a") as json_out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", "deploy", str(spec_file), "--version",
             version, *args],
            env=env, cwd=repo_root, stdout=json_out if stdout else out,
            stderr=out if stdout else subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(
                lambda: takes_traffic(spec_file, version),
                timeout=120,
                interval=0.25,
                what=f"the canary {version} to take traffic",
            )
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def artifact_markdown(flow_run_id: str, key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]),
            )
        )
    assert found, f"no artifact {key} on flow run {flow_run_id}"
    return str(found[0].data)


def _version_in_body(response: Any) -> str:
    """The demo app's version, named in its JSON body; "router" for HAProxy's own pages."""
    try:
        return str(response.json().get("version"))
    except ValueError:
        return "router"  # HAProxy's own 503 page: no server


class UserProbe:
    """What users get through the router: a thread sending one request to ``path`` every
    ``interval`` seconds and counting the answers by the version that gave them and by status,
    from a moment the test marks (``mark``) on. The version is ``version_of(response)``; by
    default the body's "version" (the demo app names itself in every body).

    Example:
        with UserProbe(sandbox.frontend_url) as probe:
            ...  # the fault, the deploy
            probe.mark()  # the fault is detected
            ...
        probe.after_mark["v3"]
    """

    def __init__(
        self,
        base_url: str,
        interval: float = 0.1,
        path: str = "/api/items",
        version_of: Callable[[Any], str] | None = None,
    ) -> None:
        import threading
        from collections import Counter

        self.base_url = base_url.rstrip("/")
        self.interval = interval
        self.path = path
        self.version_of = version_of or _version_in_body
        self.before_mark: Counter[str] = Counter()
        self.after_mark: Counter[str] = Counter()
        self._marked = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="user-probe", daemon=True)

    def _answer(self, client: object) -> str:
        import httpx

        assert isinstance(client, httpx.Client)
        try:
            response = client.get(f"{self.base_url}{self.path}")
        except httpx.HTTPError:
            return "no answer"
        return f"{self.version_of(response)} {response.status_code}"

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=5.0) as client:
            while not self._stop.wait(self.interval):
                answer = self._answer(client)
                with self._lock:
                    (self.after_mark if self._marked else self.before_mark)[answer] += 1

    def mark(self) -> None:
        """From now on, answers count in ``after_mark``."""
        with self._lock:
            self._marked = True

    def from_version(self, version: str, *, after_mark: bool = True) -> int:
        counts = self.after_mark if after_mark else self.before_mark
        with self._lock:
            return sum(n for answer, n in counts.items() if answer.split()[0] == version)

    def __enter__(self) -> UserProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class DelayProxy:
    """A TCP proxy on a free loopback port that holds every request (each chunk a client sends)
    ``delay`` seconds before passing it to ``upstream`` (host, port), kept-alive connections
    included: a slow metrics backend that still answers within its client's timeout."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        import socketserver

        from deployflow.processes import free_port

        self.upstream, self.delay = upstream, delay
        self.port = free_port()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._relay(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _relay(self, client: object) -> None:
        import socket
        import threading
        import time

        assert isinstance(client, socket.socket)
        with socket.create_connection(self.upstream, timeout=30) as upstream:

            def pump(src: socket.socket, dst: socket.socket, delay: float = 0.0) -> None:
                try:
                    while data := src.recv(65536):
                        if delay:
                            time.sleep(delay)  # the backend's slowness: what this proxy is for
                        dst.sendall(data)
                except OSError:
                    pass
                finally:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)

            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            pump(client, upstream, self.delay)
            back.join(timeout=30)

    def __enter__(self) -> DelayProxy:
        import threading

        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

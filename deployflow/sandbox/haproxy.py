"""A real HAProxy (Debian package) on a free loopback port, steered through its admin socket.

The backend ``app`` holds two placeholder servers, ``stable`` and ``canary``, both disabled at
first; ``HAProxyRouter`` re-points and weighs them at runtime, so a traffic shift never reloads.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from deployflow.processes import free_port, port_open
from deployflow.providers.access_log import HAPROXY_LOG_FORMAT
from deployflow.providers.haproxy import HAProxyRouter
from deployflow.sandbox.processes import LocalServer, ManagedProcess

# sun_path is 108 bytes on Linux; HAProxy also appends a ".<pid>.tmp" suffix while binding.
_MAX_SOCKET_PATH = 90

BACKEND = "app"
STABLE_SERVER = "stable"
CANARY_SERVER = "canary"
# On the canary slot only: five failed requests in a row mark it down at once. A healthy canary
# at the stable's 0.5% errors does that by chance about once in 3*10^11 requests, a 3% one once in
# 4*10^7; a version that answers 500 to everything after its fifth answer. Its health is checked
# every 3 s (a good check forgives the failed requests before it: checked every 500 ms, a canary
# at 3 requests/s was never taken out), and coming back takes 20 good checks 500 ms apart.
CANARY_GUARD = " observe layer7 error-limit 5 on-error mark-down inter 3s fastinter 500ms rise 20"


class HAProxyError(RuntimeError):
    """HAProxy is missing, rejected its configuration, or did not come up."""


def _binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        raise HAProxyError("haproxy not found: install the Debian package 'haproxy'")
    return found


def render_config(
    admin_socket: Path,
    port: int,
    health_path: str = "/healthz",
    *,
    health_checks: bool = True,
    host: str = "127.0.0.1",
    admin_port: int | None = None,
    access_log: bool = False,
    exporter_port: int | None = None,
) -> str:
    """The HAProxy configuration of the sandbox: one frontend on ``host``, backend ``app`` with
    two health-checked slots; with ``admin_port``, the runtime API on ``host`` over TCP too; with
    ``access_log``, each request logged to HAProxy's standard output in the deployflow format;
    with ``exporter_port``, HAProxy's Prometheus exporter there."""
    tcp_admin = (
        f"\n    stats socket ipv4@{host}:{admin_port} level admin" if admin_port is not None else ""
    )
    checks = (
        f"    option httpchk GET {health_path}\n"
        "    default-server check inter 500ms fall 2 rise 1\n"
        "    # The data-plane guard on the canary slot: five failed requests in a row (5xx or no\n"
        "    # answer) take it out of rotation, by HAProxy itself, within requests; coming back\n"
        "    # takes 20 good checks (over 10 s), so the judge sees it gone at its next look.\n"
        if health_checks
        else "    # No health checks: this HAProxy routes to addresses nothing may listen on.\n"
    )
    guard = CANARY_GUARD if health_checks else ""
    logging = ""
    if access_log:
        # HAProxy logs through syslog; "stdout" is its way without a syslog daemon (containers,
        # here): the process output is the access log. Health checks are not requests.
        logging = f"    log stdout format raw local0\n    log-format {HAPROXY_LOG_FORMAT}\n"
    exporter = ""
    if exporter_port is not None:
        exporter = (
            f"\nfrontend metrics\n    bind 127.0.0.1:{exporter_port}\n"
            "    no log\n"
            "    http-request use-service prometheus-exporter if { path /metrics }\n"
        )
    return f"""\
global
    stats socket {admin_socket} mode 600 level admin{tcp_admin}
    stats timeout 30s
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A fresh server connection per request: after "set server addr" no request may ride an
    # idle connection to the previous address.
    option http-server-close

frontend web
    bind {host}:{port}
{logging}    default_backend {BACKEND}
{exporter}
backend {BACKEND}
    balance roundrobin
    # Health checks keep users off a server that stopped answering: two failed checks half a
    # second apart take it out, one good check puts it back. A slot in maintenance is not checked.
{checks}    # Placeholders, re-pointed at runtime through the admin socket.
    server {STABLE_SERVER} 127.0.0.1:1 weight 100 disabled
    server {CANARY_SERVER} 127.0.0.1:1 weight 0 disabled{guard}
"""


class LocalHAProxy(LocalServer):
    """Run ``haproxy -db`` with the sandbox config in ``state_dir``.

    Example:
        with LocalHAProxy(Path(".sandbox/haproxy")) as haproxy:
            router = haproxy.router()
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        start_timeout: float = 10.0,
        health_checks: bool = True,
        host: str = "127.0.0.1",
        access_log: bool = False,
        exporter: bool = False,
        health_path: str = "/healthz",
    ) -> None:
        """Prepare paths and a port; nothing runs yet.

        Args:
            state_dir: Directory for the config, log, pid record and (if short enough) socket.
            start_timeout: Seconds HAProxy gets to open its socket and port.
            health_checks: Health-check both slots (off only for tests that route to addresses
                nothing listens on).
            host: Address of the frontend; another than loopback also opens the runtime API
                over TCP on it (``admin_address``), for workers on other machines.
            access_log: Log each request in the deployflow format to HAProxy's output
                (``access_log``, the file ``haproxy.log``).
            exporter: Serve HAProxy's Prometheus exporter on ``exporter_url``.
            health_path: The path HAProxy's health checks ask each slot (the service's own: a
                service without ``/healthz`` would be marked down and get no traffic).
        """
        self.state_dir = Path(state_dir).resolve()
        self.start_timeout = start_timeout
        self.health_checks = health_checks
        self.host = host
        self.port = free_port(host)
        self.admin_port = free_port(host) if host != "127.0.0.1" else None
        self.logs_requests = access_log
        self.exporter_port = free_port() if exporter else None
        self.health_path = health_path
        self.config_file = self.state_dir / "haproxy.cfg"
        self._short_dir: Path | None = None
        socket_path = self.state_dir / "haproxy.sock"
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            # A deep state_dir (pytest's tmp_path) would overflow sun_path: use a short directory.
            self._short_dir = Path(tempfile.mkdtemp(prefix="deployflow-haproxy-"))
            socket_path = self._short_dir / "haproxy.sock"
        self.admin_socket = socket_path
        self._process = ManagedProcess(
            "haproxy",
            [_binary(), "-f", str(self.config_file), "-db"],
            log_path=self.state_dir / "haproxy.log",
            record_path=self.state_dir / "haproxy.pid.json",
        )

    @property
    def frontend_url(self) -> str:
        """Base URL of the frontend that clients call."""
        return f"http://{self.host}:{self.port}"

    @property
    def admin_address(self) -> str | None:
        """``host:port`` of the runtime API over TCP (None on loopback: the socket only)."""
        return f"{self.host}:{self.admin_port}" if self.admin_port is not None else None

    @property
    def access_log(self) -> Path:
        """HAProxy's output: its requests in the deployflow format (with ``access_log``)."""
        return self.state_dir / "haproxy.log"

    @property
    def exporter_url(self) -> str:
        """Where HAProxy's Prometheus exporter answers (with ``exporter``)."""
        if self.exporter_port is None:
            raise RuntimeError("this HAProxy was started without its exporter")
        return f"http://127.0.0.1:{self.exporter_port}/metrics"

    def router(self) -> HAProxyRouter:
        """A router bound to this HAProxy's admin socket and slot names."""
        return HAProxyRouter(
            self.admin_socket,
            BACKEND,
            STABLE_SERVER,
            CANARY_SERVER,
            frontend_url=self.frontend_url,
        )

    def start(self) -> LocalHAProxy:
        """Check the config with ``haproxy -c``, start HAProxy, wait for its socket and port.

        Raises:
            HAProxyError: The config is rejected, or HAProxy exits or does not come up; the
                message carries HAProxy's own output.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            render_config(
                self.admin_socket,
                self.port,
                self.health_path,
                health_checks=self.health_checks,
                host=self.host,
                admin_port=self.admin_port,
                access_log=self.logs_requests,
                exporter_port=self.exporter_port,
            )
        )
        check = subprocess.run(
            [_binary(), "-c", "-f", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise HAProxyError(
                f"haproxy rejected {self.config_file}:\n{(check.stdout + check.stderr).strip()}"
            )
        router = self.router()
        self._process.start_and_wait(
            lambda: port_open(self.port, self.host) and router.servers(),
            timeout=self.start_timeout,
            what=f"haproxy admin socket {self.admin_socket} and port {self.port}",
            error=HAProxyError,
        )
        return self

    def stop(self) -> None:
        """Stop HAProxy and remove its socket; safe to call twice."""
        super().stop()
        self.admin_socket.unlink(missing_ok=True)
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)

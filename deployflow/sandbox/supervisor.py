"""The whole local sandbox in one context manager: HAProxy (or nginx), Prometheus, app processes,
traffic.

Everything a deploy needs to find is in files under ``state_dir`` (instance records, the HAProxy
admin socket, the scrape targets file), because the deploy flow builds its own
``LocalProcessTarget`` and ``HAProxyRouter`` from ``env_vars()`` rather than sharing objects:

    state_dir/
        instances/<version>.json  logs/<version>.log   the app processes (LocalProcessTarget)
        prometheus-targets.json                         Prometheus file_sd targets
        haproxy/                                        config, log, pid record, admin socket
        nginx/                                          (router "nginx") config, upstream file, log
        prometheus/                                     config, rules, TSDB, log, pid record
        alertmanager/                                   config, state, log, pid record
        flags.json                                      flagd flag definitions (no flag at start)
        sandbox.json                                    env_vars() of the running sandbox
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from deployflow.flags.flagd_file import SCHEMA as FLAGD_SCHEMA
from deployflow.polling import wait_for
from deployflow.processes import stop_recorded, write_json_atomic
from deployflow.providers.base import Router
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.sandbox.alertmanager import LocalAlertmanager
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.nginx import LocalNginx
from deployflow.sandbox.prometheus import LocalPrometheus
from deployflow.sandbox.traffic import TrafficGenerator

logger = logging.getLogger(__name__)

# The demo service as an argv template for LocalProcessTarget.
DEMO_APP_COMMAND = (
    "{python}", "-m", "deployflow.sandbox.demo_app",
    "--version", "{version}", "--port", "{port}", "--host", "{host}",
)  # fmt: skip

# Requests per second of the sandbox's traffic. The canary judge promotes only on evidence: with
# no errors, showing a canary below a 5% error rate takes about 165 of its requests at the default
# confidence, so a 5% first stage needs about 33 s at 100 requests/s (55 s at 60). More traffic
# costs CPU (about half a core at 100 requests/s for the traffic, HAProxy and two demo apps).
SANDBOX_RPS = 100.0

ENV_PROMETHEUS_URL = "DEPLOYFLOW_SANDBOX_PROMETHEUS_URL"
ENV_ALERTMANAGER_URL = "DEPLOYFLOW_SANDBOX_ALERTMANAGER_URL"
ENV_HAPROXY_SOCKET = "DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET"
# Set when the sandbox listens on another address than loopback (``Sandbox(host=...)``).
ENV_HAPROXY_ADDRESS = "DEPLOYFLOW_SANDBOX_HAPROXY_ADDRESS"
ENV_FRONTEND_URL = "DEPLOYFLOW_SANDBOX_FRONTEND_URL"
ENV_STATE_DIR = "DEPLOYFLOW_SANDBOX_STATE_DIR"
ENV_SCRAPE_TARGETS = "DEPLOYFLOW_SANDBOX_SCRAPE_TARGETS_FILE"
ENV_NGINX_CONFIG = "DEPLOYFLOW_SANDBOX_NGINX_CONFIG"
ENV_NGINX_UPSTREAM_FILE = "DEPLOYFLOW_SANDBOX_NGINX_UPSTREAM_FILE"
ENV_NGINX_STATE_LISTEN = "DEPLOYFLOW_SANDBOX_NGINX_STATE_LISTEN"
ENV_FLAGS_FILE = "DEPLOYFLOW_SANDBOX_FLAGS_FILE"

SandboxRouter = Literal["haproxy", "nginx"]

_HAPROXY_RECORD = Path("haproxy") / "haproxy.pid.json"
_PROMETHEUS_RECORD = Path("prometheus") / "prometheus.pid.json"
_ALERTMANAGER_RECORD = Path("alertmanager") / "alertmanager.pid.json"
_NGINX_RECORD = Path("nginx") / "nginx.pid.json"


def scrape_targets_file(state_dir: Path) -> Path:
    """The file_sd file the sandbox's Prometheus watches."""
    return Path(state_dir).resolve() / "prometheus-targets.json"


def flags_file(state_dir: Path) -> Path:
    """The flagd flag-definition file of the sandbox: versions started with ``--flags`` read it
    in-process, and a spec's ``flags.provider`` (``flagd-file``) writes it."""
    return Path(state_dir).resolve() / "flags.json"


def with_flags(command: Sequence[str], flags: Path) -> list[str]:
    """The demo app's argv template evaluating its feature flags from the flagd file ``flags``."""
    return [*command, "--flags", str(flags)]


def sandbox_target(
    state_dir: Path,
    command: Sequence[str] = DEMO_APP_COMMAND,
    env: Mapping[str, str] | None = None,
    *,
    start_timeout: float = 20.0,
    host: str = "127.0.0.1",
) -> LocalProcessTarget:
    """A ``LocalProcessTarget`` that shares the sandbox's state and scrape targets.

    The deploy flow must build its target this way (or with the same ``state_dir`` and
    ``scrape_targets_file``), otherwise the versions it starts are not scraped.

    Args:
        state_dir: The sandbox's state directory.
        command: Argv template of the service.
        env: Extra environment for the app processes.
        start_timeout: Seconds a version gets to become healthy.
        host: Address the versions bind to and are reached at.
    """
    state_dir = Path(state_dir).resolve()
    return LocalProcessTarget(
        command,
        host=host,
        state_dir=state_dir,
        env=env,
        scrape_targets_file=scrape_targets_file(state_dir),
        start_timeout=start_timeout,
    )


class Sandbox:
    """Start the local sandbox on enter, stop every piece of it on exit (also on errors).

    Example:
        with Sandbox(Path(".sandbox"), DEMO_APP_COMMAND) as sandbox:
            os.environ.update(sandbox.env_vars())
            sandbox.wait_for_metrics("v1", timeout=30)
            ...  # run a deploy against it
    """

    def __init__(
        self,
        state_dir: Path,
        command: Sequence[str] = DEMO_APP_COMMAND,
        initial_version: str = "v1",
        rps: float = 40,
        env: Mapping[str, str] | None = None,
        *,
        traffic_max_duration: float | None = None,
        router: SandboxRouter = "haproxy",
        flags: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure the sandbox; ``__enter__`` (or ``start``) brings it up.

        Args:
            state_dir: Directory holding all sandbox state; created if missing.
            command: Argv template of the service (placeholders ``{version}``, ``{port}``,
                ``{host}``, ``{python}``).
            initial_version: Version started as stable with 100% of the traffic.
            rps: Synthetic requests per second sent to the frontend.
            env: Extra environment for the app processes (e.g. ``DEPLOYFLOW_DEMO_FAULTS``).
            traffic_max_duration: Seconds after which the traffic generator stops by itself
                (default: it runs until the sandbox stops).
            router: What splits the traffic: a real HAProxy (runtime API) or a real nginx
                (upstream file and reload).
            flags: Start ``initial_version`` with ``--flags`` on the sandbox's flagd file (the
                demo app then evaluates ``new-checkout``). Deploys decide for their own versions
                through the spec's ``target.command`` (``${DEPLOYFLOW_SANDBOX_FLAGS_FILE}``).
            host: The address the versions, the router's frontend (and, with HAProxy, its
                runtime API over TCP) and Prometheus listen on: loopback, or this machine's
                address for workers on other machines.
        """
        self.state_dir = Path(state_dir).resolve()
        self.flags_file = flags_file(self.state_dir)
        self.command = with_flags(command, self.flags_file) if flags else list(command)
        self.initial_version = initial_version
        self.rps = rps
        self.env = dict(env or {})
        self.traffic_max_duration = traffic_max_duration
        self.host = host
        self.target = sandbox_target(self.state_dir, self.command, self.env, host=host)
        self.router_kind: SandboxRouter = router
        self.haproxy: LocalHAProxy | None = None
        self.nginx: LocalNginx | None = None
        self.prometheus: LocalPrometheus | None = None
        self.alertmanager: LocalAlertmanager | None = None
        self.traffic: TrafficGenerator | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def kill_leftovers(self) -> None:
        """Stop processes that an earlier, crashed sandbox in ``state_dir`` left running."""
        self.target.stop_all()
        stop_recorded(self.state_dir / _PROMETHEUS_RECORD)
        stop_recorded(self.state_dir / _ALERTMANAGER_RECORD)
        stop_recorded(self.state_dir / _HAPROXY_RECORD)
        stop_recorded(self.state_dir / _NGINX_RECORD)

    def start(self) -> Sandbox:
        """Bring everything up; on any failure, tear down what was started and re-raise."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.kill_leftovers()
            # No flag at start; a version reading the file finds it (and every flag off).
            write_json_atomic(self.flags_file, {"$schema": FLAGD_SCHEMA, "flags": {}})
            if self.router_kind == "nginx":
                self.nginx = LocalNginx(self.state_dir / "nginx").start()
            else:
                self.haproxy = LocalHAProxy(self.state_dir / "haproxy", host=self.host).start()
            # Alertmanager comes up while Prometheus, v1 and the traffic start, so the sandbox
            # starts about as fast as without it; Prometheus queues alerts until it answers.
            self.alertmanager = LocalAlertmanager(self.state_dir / "alertmanager").launch()
            self.prometheus = LocalPrometheus(
                self.state_dir / "prometheus",
                scrape_targets_file(self.state_dir),
                alertmanager=self.alertmanager.address,
                host=self.host,
            ).start()
            stable = self.target.start(self.initial_version)
            self.router().set_split(stable, None, 0)
            self.traffic = TrafficGenerator(
                self.frontend_url,
                rps=self.rps,
                max_duration=self.traffic_max_duration,
                # Each worker waits for its own answers: about 20 requests/s per worker.
                workers=max(4, math.ceil(self.rps / 20)),
            ).start()
            self.alertmanager.wait_ready()
            write_json_atomic(self.state_dir / "sandbox.json", self.env_vars())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop traffic, every recorded app process, Prometheus and HAProxy; safe to call twice.

        Every step runs even if an earlier one fails; the first failure is raised at the end.
        """
        errors: list[Exception] = []
        steps: list[tuple[str, Callable[[], None]]] = [("app processes", self.target.stop_all)]
        if self.traffic is not None:
            steps.insert(0, ("traffic", self.traffic.stop))
        if self.prometheus is not None:
            steps.append(("prometheus", self.prometheus.stop))
        if self.alertmanager is not None:
            steps.append(("alertmanager", self.alertmanager.stop))
        if self.haproxy is not None:
            steps.append(("haproxy", self.haproxy.stop))
        if self.nginx is not None:
            steps.append(("nginx", self.nginx.stop))
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # keep tearing down: a leak is worse than a late error
                logger.exception("sandbox teardown: stopping %s failed", name)
                errors.append(exc)
        (self.state_dir / "sandbox.json").unlink(missing_ok=True)
        if errors:
            raise errors[0]

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        # The body's exception (or KeyboardInterrupt) is the one the caller needs to see; a
        # teardown failure is already logged.
        with contextlib.suppress(Exception):
            self.stop()

    # -- access ----------------------------------------------------------------------------------

    def _require_running(self) -> tuple[LocalHAProxy | LocalNginx, LocalPrometheus]:
        proxy = self.nginx if self.router_kind == "nginx" else self.haproxy
        if proxy is None or self.prometheus is None:
            raise RuntimeError("the sandbox is not running: use it as a context manager")
        return proxy, self.prometheus

    def require_alertmanager(self) -> LocalAlertmanager:
        """The sandbox's Alertmanager (which the Prometheus rules' alerts reach)."""
        if self.alertmanager is None:
            raise RuntimeError("the sandbox is not running: use it as a context manager")
        return self.alertmanager

    def router(self) -> Router:
        """A router on the sandbox's HAProxy (or nginx)."""
        return self._require_running()[0].router()

    @property
    def frontend_url(self) -> str:
        """Base URL that clients (and the traffic generator) call."""
        return self._require_running()[0].frontend_url

    @property
    def prometheus_url(self) -> str:
        """Base URL of the Prometheus HTTP API."""
        return self._require_running()[1].url

    def env_vars(self) -> dict[str, str]:
        """Variables the service spec interpolates (``${DEPLOYFLOW_SANDBOX_...}``)."""
        proxy, prometheus = self._require_running()
        found = {
            ENV_PROMETHEUS_URL: prometheus.url,
            ENV_ALERTMANAGER_URL: self.require_alertmanager().url,
            ENV_FRONTEND_URL: proxy.frontend_url,
            ENV_STATE_DIR: str(self.state_dir),
            ENV_SCRAPE_TARGETS: str(scrape_targets_file(self.state_dir)),
            ENV_FLAGS_FILE: str(self.flags_file),
        }
        if isinstance(proxy, LocalNginx):
            found[ENV_NGINX_CONFIG] = str(proxy.config_file)
            found[ENV_NGINX_UPSTREAM_FILE] = str(proxy.upstream_file)
            found[ENV_NGINX_STATE_LISTEN] = proxy.state_listen
        else:
            found[ENV_HAPROXY_SOCKET] = str(proxy.admin_socket)
            if proxy.admin_address is not None:
                found[ENV_HAPROXY_ADDRESS] = proxy.admin_address
        return found

    def pids(self) -> list[int]:
        """Process ids of everything the sandbox runs now (HAProxy or nginx, Prometheus, apps)."""
        found = [instance.pid for instance in self.target.instances() if instance.pid is not None]
        for server in (self.haproxy, self.nginx, self.prometheus, self.alertmanager):
            if server is not None and server.pid is not None:
                found.append(server.pid)
        return found

    def wait_for_metrics(self, version: str, timeout: float = 30.0) -> float:
        """Wait until Prometheus holds request data for ``version``; return the request count.

        Raises:
            deployflow.polling.DeadlineExceeded: No data within ``timeout`` seconds.
        """
        prometheus = self._require_running()[1]
        # A JSON string literal is also a valid PromQL string literal (same escapes).
        promql = f"sum(deployflow_demo_http_requests_total{{version={json.dumps(version)}}})"

        def probe() -> float | None:
            result = prometheus.query(promql)
            return float(result[0]["value"][1]) if result else None

        return wait_for(probe, timeout=timeout, interval=0.25, what=f"metrics of {version}")

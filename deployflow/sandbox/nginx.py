"""A real nginx (Debian package) on free loopback ports, steered by ``NginxRouter``.

The main configuration (written here, like a site's own ``nginx.conf``) has one frontend that
proxies to the upstream ``deployflow``, and includes the upstream file the router owns. The router
rewrites that file, tests it with ``nginx -t`` and reloads nginx through its pid file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deployflow.processes import free_port, port_open
from deployflow.providers.access_log import NGINX_LOG_FORMAT
from deployflow.providers.nginx import NginxRouter
from deployflow.sandbox.processes import LocalServer, ManagedProcess

UPSTREAM = "deployflow"


class NginxError(RuntimeError):
    """nginx is missing, rejected its configuration, or did not come up."""


def nginx_binary() -> str:
    """The nginx program, or an error saying which Debian package provides it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise NginxError("nginx not found: install the Debian package 'nginx-light' (or 'nginx')")
    return found


def render_main_config(state_dir: Path, port: int, upstream_file: Path) -> str:
    """The sandbox's nginx.conf: foreground, one worker (so weighted round robin is exact), all
    files under ``state_dir``."""
    temp = state_dir / "temp"
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {state_dir / "nginx.pid"};
error_log {state_dir / "error.log"} notice;

events {{
    worker_connections 256;
}}

http {{
    # Every request in the format deployflow's access-log metrics read (metrics.kind access-log).
    log_format deployflow '{NGINX_LOG_FORMAT}';
    access_log {state_dir / "access.log"} deployflow;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    # Answers are small; never buffer to a temp file (workers may run as another user).
    proxy_max_temp_file_size 0;

    include {upstream_file};

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{UPSTREAM};
            # A failing canary must show as failures, never be retried on the stable server.
            proxy_next_upstream off;
            add_header X-Deployflow-Upstream $upstream_addr always;
        }}
    }}
}}
"""


class LocalNginx(LocalServer):
    """Run nginx with the sandbox config in ``state_dir``.

    Example:
        with LocalNginx(Path(".sandbox/nginx")) as nginx:
            router = nginx.router()
    """

    def __init__(self, state_dir: Path, *, start_timeout: float = 10.0) -> None:
        """Prepare paths and two ports (frontend, state server); nothing runs yet."""
        self.state_dir = Path(state_dir).resolve()
        self.start_timeout = start_timeout
        self.port = free_port()
        self.state_port = free_port()
        self.config_file = self.state_dir / "nginx.conf"
        self.upstream_file = self.state_dir / "deployflow-upstream.conf"
        # Each request, in the deployflow format.
        self.access_log = self.state_dir / "access.log"
        self._process = ManagedProcess(
            "nginx",
            [nginx_binary(), "-c", str(self.config_file)],
            log_path=self.state_dir / "nginx.log",
            record_path=self.state_dir / "nginx.pid.json",
        )

    @property
    def frontend_url(self) -> str:
        """Base URL of the frontend that clients call."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_listen(self) -> str:
        """Listen address of the router's state server."""
        return f"127.0.0.1:{self.state_port}"

    def router(self) -> NginxRouter:
        """A router owning this nginx's upstream file."""
        return NginxRouter(
            self.config_file,
            self.upstream_file,
            state_listen=self.state_listen,
            frontend_url=self.frontend_url,
            upstream=UPSTREAM,
            nginx_binary=Path(nginx_binary()),
        )

    def start(self) -> LocalNginx:
        """Write the config and an initial upstream file, test them, start nginx, wait for it.

        Raises:
            NginxError: The config is rejected, or nginx exits or does not come up; the message
                carries nginx's own output.
        """
        (self.state_dir / "temp").mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            render_main_config(self.state_dir, self.port, self.upstream_file)
        )
        router = self.router()
        router.write_initial()
        self._process.start_and_wait(
            lambda: port_open(self.port) and router.served(),
            timeout=self.start_timeout,
            what=f"nginx on port {self.port} and state server {self.state_listen}",
            error=NginxError,
        )
        return self

"""A real Prometheus Alertmanager (Debian package ``prometheus-alertmanager``) on a free loopback
port, receiving the alerts of the sandbox Prometheus's rules.

It routes every alert to a receiver that sends nothing: the sandbox needs what Alertmanager
*knows* (which alerts fire, silenced or not), which its API serves, not pages.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from deployflow.processes import free_port
from deployflow.sandbox.processes import LocalServer, ManagedProcess


class AlertmanagerError(RuntimeError):
    """Alertmanager is missing or did not come up."""


def _binary() -> str:
    for name in ("prometheus-alertmanager", "alertmanager"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise AlertmanagerError(
        "alertmanager not found: install the Debian package 'prometheus-alertmanager'"
    )


def render_config() -> str:
    """One route to a receiver without integrations (JSON is valid YAML)."""
    config: dict[str, Any] = {
        "route": {"receiver": "sandbox", "group_wait": "1s", "group_interval": "5s"},
        "receivers": [{"name": "sandbox"}],
    }
    return json.dumps(config, indent=2) + "\n"


class LocalAlertmanager(LocalServer):
    """Run Alertmanager with its state in ``state_dir``; clustering off (no port 9094).

    ``launch`` starts the process without waiting, so the sandbox can start Prometheus meanwhile;
    ``wait_ready`` then waits for ``/-/ready``. ``start`` does both.
    """

    stop_timeout = 10.0

    def __init__(self, state_dir: Path, *, start_timeout: float = 30.0) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.start_timeout = start_timeout
        self.port = free_port()
        self.config_file = self.state_dir / "alertmanager.yml"
        argv = [
            _binary(),
            f"--config.file={self.config_file}",
            f"--storage.path={self.state_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        self._process = ManagedProcess(
            "alertmanager",
            argv,
            log_path=self.state_dir / "alertmanager.log",
            record_path=self.state_dir / "alertmanager.pid.json",
            env={**os.environ, "GOMAXPROCS": "1"},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as Prometheus's alerting config names it."""
        return f"127.0.0.1:{self.port}"

    def launch(self) -> LocalAlertmanager:
        """Write the config and start the process; do not wait."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(render_config())
        self._process.start()
        return self

    def wait_ready(self) -> LocalAlertmanager:
        """Wait for ``/-/ready``.

        Raises:
            AlertmanagerError: It exited or was not ready in time; the message has its output.
        """
        self._process.wait_until(
            self._ready,
            timeout=self.start_timeout,
            interval=0.1,
            what=f"alertmanager ready at {self.url}",
            error=AlertmanagerError,
        )
        return self

    def start(self) -> LocalAlertmanager:
        return self.launch().wait_ready()

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200

    def post_alert(
        self,
        labels: dict[str, str],
        *,
        summary: str = "",
        lasts: float = 300.0,
        ended: bool = False,
    ) -> None:
        """Send one alert as Prometheus would (tests, demos); ``ended`` resolves it now."""
        now = datetime.now(UTC)
        ends = now if ended else now + timedelta(seconds=lasts)
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": summary} if summary else {},
            "endsAt": ends.isoformat(),
        }
        if not ended:
            alert["startsAt"] = now.isoformat()
        response = httpx.post(f"{self.url}/api/v2/alerts", json=[alert], timeout=5.0)
        response.raise_for_status()

    def active_alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds as active now."""
        response = httpx.get(f"{self.url}/api/v2/alerts", params={"active": "true"}, timeout=5.0)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

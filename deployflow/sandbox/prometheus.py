"""A real Prometheus (Debian package) on a free loopback port, scraping the sandbox's app processes.

Targets come from a file_sd JSON file that ``LocalProcessTarget`` rewrites whenever a version
starts or stops, so a new canary is scraped within about a second without touching Prometheus.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx

from deployflow.processes import free_port, write_json_atomic
from deployflow.sandbox.processes import LocalServer, ManagedProcess

JOB_NAME = "deployflow-demo"

# The sandbox's alert rule: a version that logged ERROR lines in the last 10 seconds. It watches
# the demo app's count of its own error lines (a log-based metric, as teams derive with mtail or
# Loki), so a fault that only shows in the logs also raises an alert.
ALERT_LOG_ERRORS = "DemoLogErrors"


def render_rules() -> str:
    """The sandbox's alerting rules (JSON is valid YAML), evaluated every second."""
    rules: dict[str, Any] = {
        "groups": [
            {
                "name": "deployflow-demo",
                "interval": "1s",
                "rules": [
                    {
                        "alert": ALERT_LOG_ERRORS,
                        "expr": "sum by (version) "
                        "(increase(deployflow_demo_log_errors_total[10s])) > 0",
                        "labels": {"service": "demo", "severity": "page"},
                        "annotations": {"summary": "{{ $labels.version }} logs ERROR lines"},
                    }
                ],
            }
        ]
    }
    return json.dumps(rules, indent=2) + "\n"


class PrometheusError(RuntimeError):
    """Prometheus is missing or did not come up."""


def _binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError("prometheus not found: install the Debian package 'prometheus'")
    return found


def render_config(
    targets_file: Path,
    scrape_interval: str,
    *,
    rules_file: Path | None = None,
    alertmanager: str | None = None,
) -> str:
    """Prometheus configuration: one job whose targets come from ``targets_file``; with
    ``rules_file`` and ``alertmanager`` (``host:port``) its alerts go there.

    JSON is valid YAML, so the config is written as JSON and needs no YAML library.
    """
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": "1s",
        },
        "scrape_configs": [
            {
                "job_name": JOB_NAME,
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }
    if rules_file is not None:
        config["rule_files"] = [str(rules_file)]
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return json.dumps(config, indent=2) + "\n"


class LocalPrometheus(LocalServer):
    """Run Prometheus with the sandbox config, its TSDB in ``state_dir`` (kept after ``stop``).

    Example:
        with LocalPrometheus(Path(".sandbox/prometheus"), Path(".sandbox/targets.json")) as prom:
            httpx.get(f"{prom.url}/api/v1/query", params={"query": "up"})
    """

    stop_timeout = 10.0

    def __init__(
        self,
        state_dir: Path,
        targets_file: Path,
        scrape_interval: str = "1s",
        *,
        start_timeout: float = 30.0,
        alertmanager: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Prepare paths and a port; nothing runs yet.

        Args:
            state_dir: Directory for the config, TSDB, log and pid record.
            targets_file: file_sd JSON file listing the scrape targets (created empty if absent).
            scrape_interval: Scrape interval as Prometheus writes durations ("1s").
            start_timeout: Seconds Prometheus gets to report ready.
            alertmanager: ``host:port`` of an Alertmanager: the sandbox's alert rules are loaded
                and their alerts sent there.
            host: Address of its HTTP API.
        """
        self.alertmanager = alertmanager
        self.state_dir = Path(state_dir).resolve()
        self.targets_file = Path(targets_file).resolve()
        self.scrape_interval = scrape_interval
        self.start_timeout = start_timeout
        self.host = host
        self.port = free_port(host)
        self.config_file = self.state_dir / "prometheus.yml"
        self.rules_file = self.state_dir / "rules.yml"
        argv = [
            _binary(),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.state_dir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            # A sandbox lives minutes: keep the TSDB, query engine and logs small.
            "--storage.tsdb.retention.time=2h",
            "--query.max-concurrency=4",
            "--log.level=warn",
        ]
        # One OS thread for Go code is plenty at this load and leaves the 2 cores to the apps.
        env = {**os.environ, "GOMAXPROCS": "1"}
        self._process = ManagedProcess(
            "prometheus",
            argv,
            log_path=self.state_dir / "prometheus.log",
            record_path=self.state_dir / "prometheus.pid.json",
            env=env,
        )

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalPrometheus:
        """Write the config, start Prometheus and wait for ``/-/ready``.

        Raises:
            PrometheusError: Prometheus exits or is not ready in time; the message carries its
                output.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            write_json_atomic(self.targets_file, [])
        if self.alertmanager is not None:
            self.rules_file.write_text(render_rules())
        self.config_file.write_text(
            render_config(
                self.targets_file,
                self.scrape_interval,
                rules_file=self.rules_file if self.alertmanager is not None else None,
                alertmanager=self.alertmanager,
            )
        )
        self._process.start_and_wait(
            self._ready,
            timeout=self.start_timeout,
            interval=0.1,
            what=f"prometheus ready at {self.url}",
            error=PrometheusError,
        )
        return self

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200

    def query(self, promql: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Run an instant query and return its result vector (``data.result``).

        Raises:
            PrometheusError: The query was rejected.
            httpx.HTTPError: Prometheus could not be reached.
        """
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=timeout)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

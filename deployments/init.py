"""``deployflow init``: a first service spec from a few answers, with what runs already probed.

With a terminal it asks (each question shows its default, Enter keeps it); without one (a script,
CI) it takes flags, and a missing or bad one exits 2 naming the flag. It probes what it can (the
HAProxy backend holding the two slots, the metric names Prometheus holds, then the written spec's
live checks: the router's state, the live version, whether each query returns data) and writes a
commented spec that loads with the spec loader. An existing file is only replaced with --force.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployflow.scaffold import (
    METRICS_KINDS,
    ROUTER_KINDS,
    TARGET_KINDS,
    InitAnswers,
    PrometheusNames,
    parse_all_servers_state,
    render_spec,
    slot_backend,
    suggest_metric_names,
)
from deployflow.spec import SpecError, spec_from_text
from deployments.run import EXIT_BAD_INPUT, EXIT_OK

# The spec field each flag writes, to name the flag when the loader refuses a value.
FIELD_FLAGS: dict[str, str] = {
    "service": "--service",
    "target.command": "--command",
    "target.state_dir": "--state-dir",
    "target.health_path": "--health-path",
    "smoke": "--health-path",
    "target.start": "--start",
    "target.stop": "--stop",
    "target.status": "--status",
    "target.repository": "--repository",
    "target.start.workflow": "--start-workflow",
    "target.stop.workflow": "--stop-workflow",
    "target.status_url": "--status-url",
    "target.instance": "--instance-url",
    "router.admin_socket": "--haproxy-socket",
    "router.backend": "--haproxy-backend",
    "router.frontend_url": "--frontend-url",
    "router.main_config": "--nginx-config",
    "router.upstream_file": "--nginx-upstream-file",
    "router.state_listen": "--nginx-state-listen",
    "metrics.url": "--prometheus-url",
    "metrics.path": "--access-log",
    "metrics.queries": "--requests-metric/--duration-metric/--version-label",
}


class InitError(Exception):
    """A flag or answer that cannot make a spec; the message names it."""


def add_parser(sub: Any) -> None:
    """The ``init`` subcommand and its flags (one per question)."""
    p = sub.add_parser(
        "init",
        help="write a first service spec: asks with a terminal, or takes flags; probes what runs",
    )
    p.add_argument("--output", "-o", default="deployflow.yaml", help="file to write")
    p.add_argument("--force", action="store_true", help="replace the file if it exists")
    p.add_argument(
        "--no-input",
        action="store_true",
        help="never ask, even with a terminal (missing flags are errors)",
    )
    p.add_argument("--no-probe", action="store_true", help="ask nothing of the running systems")
    p.add_argument("--service", help="the service's name")
    p.add_argument("--target", choices=TARGET_KINDS, help="how its versions start and stop")
    p.add_argument("--command", help="local-process: the argv, {version} {port} {host} substituted")
    p.add_argument("--state-dir", help="local-process: where running versions are recorded")
    p.add_argument("--scrape-targets-file", help="local-process: Prometheus file_sd file")
    p.add_argument("--start", help="command: the start hook's command line")
    p.add_argument("--stop", help="command: the stop hook's command line")
    p.add_argument("--status", help="command: the status hook's command line")
    p.add_argument("--repository", help="github-actions: owner/name")
    p.add_argument("--start-workflow", help="github-actions: the deploy workflow file")
    p.add_argument("--stop-workflow", help="github-actions: the removal workflow file")
    p.add_argument("--status-url", help="github-actions: URL listing the running versions")
    p.add_argument("--instance-url", help="github-actions: where {version} answers")
    p.add_argument("--router", choices=ROUTER_KINDS, help="what splits the traffic")
    p.add_argument("--haproxy-socket", help="haproxy: the admin socket")
    p.add_argument("--haproxy-backend", help="haproxy: the backend holding the two slots")
    p.add_argument("--nginx-config", help="nginx: its main configuration file")
    p.add_argument("--nginx-upstream-file", help="nginx: the upstream file deployflow owns")
    p.add_argument("--nginx-state-listen", help="nginx: host:port of the state server")
    p.add_argument("--frontend-url", help="the URL users reach")
    p.add_argument("--health-path", help="path answering 2xx while healthy (default /healthz)")
    p.add_argument("--metrics", choices=METRICS_KINDS, help="where the metrics come from")
    p.add_argument("--prometheus-url", help="prometheus: its base URL")
    p.add_argument("--access-log", help="access-log: the router's access log file")
    p.add_argument("--requests-metric", help="prometheus: the requests counter")
    p.add_argument("--duration-metric", help="prometheus: the latency histogram (no _bucket)")
    p.add_argument("--version-label", help="prometheus: the label naming the version")
    p.add_argument("--status-label", help="prometheus: the label holding the status code")
    p.set_defaults(func=cmd_init)


Ask = Callable[[str, str, str | None], str]


def _tty_ask(flag: str, question: str, default: str | None) -> str:
    shown = f" [{default}]" if default else ""
    while True:
        try:
            answer = input(f"{question}{shown}: ").strip()
        except EOFError:
            raise InitError(f"{flag}: no answer (input ended)") from None
        if answer:
            return answer
        if default is not None:
            return default
        print(f"  an answer is needed ({flag})")


def _flags_only(flag: str, question: str, default: str | None) -> str:
    if default is None:
        raise InitError(f"{flag}: required without a terminal ({question.lower()})")
    return default


class Questions:
    """The answers so far: a flag given wins; else the terminal is asked (or the default)."""

    def __init__(self, args: argparse.Namespace, ask: Ask) -> None:
        self.args = args
        self.ask = ask

    def get(self, flag: str, question: str, default: str | None = None) -> str:
        given = getattr(self.args, flag.removeprefix("--").replace("-", "_"))
        if given is not None:
            return str(given)
        return self.ask(flag, question, default)

    def choice(self, flag: str, question: str, choices: tuple[str, ...], default: str) -> str:
        answer = self.get(flag, f"{question} ({'/'.join(choices)})", default)
        if answer not in choices:
            raise InitError(f"{flag}: {answer!r} is not one of {', '.join(choices)}")
        return answer

    def argv(self, flag: str, question: str, default: str | None = None) -> list[str]:
        text = self.get(flag, question, default)
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise InitError(f"{flag}: not a command line ({exc})") from None
        if not argv:
            raise InitError(f"{flag}: give a command")
        return argv


def _probe_haproxy(socket: str, backend: str | None, found: list[str]) -> str | None:
    """The backend holding the ``stable`` and ``canary`` servers (when ``backend`` is not given
    and exactly one does), noting what HAProxy said in ``found``."""
    from deployflow.providers.haproxy import HAProxyRouter

    router = HAProxyRouter(Path(socket), frontend_url="http://unused", timeout=3.0)
    try:
        servers = parse_all_servers_state(router.command("show servers state"))
    except Exception as exc:  # a probe informs; it never stops init
        found.append(f"haproxy {socket}: not asked ({str(exc).splitlines()[0][:200]})")
        return None
    chosen = backend or slot_backend(servers, "stable", "canary")
    listing = "; ".join(f"{b}: {', '.join(s)}" for b, s in sorted(servers.items()))
    found.append(f"haproxy {socket}: backends {listing or 'none'}")
    if chosen is None:
        found.append("no single backend holds servers 'stable' and 'canary': add them (see docs)")
    return chosen


def _known_metrics(url: str, found: list[str]) -> list[str]:
    import httpx

    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v1/label/__name__/values", timeout=5.0)
        names = response.json()["data"]
    except Exception as exc:
        found.append(f"prometheus {url}: not asked ({type(exc).__name__})")
        return []
    if names:
        found.append(f"prometheus {url}: {len(names)} metric names")
    else:
        found.append(f"prometheus {url}: holds no metric yet (nothing scraped?): default names")
    return [str(n) for n in names]


def gather(args: argparse.Namespace, ask: Ask) -> InitAnswers:
    """The answers, from flags and (with ``ask``) a person; the probes fill in defaults.

    Raises:
        InitError: An answer that cannot make a spec (the message names its flag).
    """
    q = Questions(args, ask)
    probe = not args.no_probe
    found: list[str] = []
    service = q.get("--service", "Service name")
    target = q.choice("--target", "How versions start and stop", TARGET_KINDS, "local-process")
    extra: dict[str, Any] = {}
    if target == "local-process":
        extra["command"] = q.argv(
            "--command", "Command starting one version ({version}, {port}, {host} substituted)"
        )
        extra["state_dir"] = q.get(
            "--state-dir", "Where running versions are recorded", f".deployflow/{service}"
        )
        extra["scrape_targets_file"] = args.scrape_targets_file
    elif target == "command":
        extra["start"] = q.argv("--start", "Start hook (prints host and port of {version})")
        extra["stop"] = q.argv("--stop", "Stop hook ({version})")
        extra["status"] = q.argv("--status", "Status hook (prints the running versions)")
    else:
        extra["repository"] = q.get("--repository", "GitHub repository (owner/name)")
        extra["start_workflow"] = q.get("--start-workflow", "Deploy workflow file", "deploy.yml")
        extra["stop_workflow"] = q.get("--stop-workflow", "Removal workflow file", "undeploy.yml")
        extra["status_url"] = q.get("--status-url", "URL listing the running versions (JSON)")
        extra["instance_url"] = q.get("--instance-url", "Where a version answers", "")
    router = q.choice("--router", "What splits the traffic", ROUTER_KINDS, "haproxy")
    if router == "haproxy":
        socket = q.get("--haproxy-socket", "HAProxy admin socket")
        backend = _probe_haproxy(socket, args.haproxy_backend, found) if probe else None
        extra["haproxy_socket"] = socket
        extra["haproxy_backend"] = q.get(
            "--haproxy-backend", "HAProxy backend holding the slots", backend or "app"
        )
    else:
        extra["nginx_config"] = q.get("--nginx-config", "nginx main configuration file")
        extra["nginx_upstream_file"] = q.get(
            "--nginx-upstream-file", "Upstream file deployflow owns (included in http {})"
        )
        extra["nginx_state_listen"] = q.get(
            "--nginx-state-listen", "State server address", "127.0.0.1:8399"
        )
    frontend = q.get("--frontend-url", "URL users reach")
    health = q.get("--health-path", "Health path", "/healthz")
    metrics_kind = q.choice("--metrics", "Where the metrics come from", METRICS_KINDS, "prometheus")
    if metrics_kind == "access-log":
        return InitAnswers(
            service=service,
            target=target,  # type: ignore[arg-type]
            router=router,  # type: ignore[arg-type]
            frontend_url=frontend,
            metrics=PrometheusNames(url=""),
            metrics_kind="access-log",
            access_log=q.get("--access-log", f"The {router} access log file (deployflow format)"),
            health_path=health,
            probed=found,
            **extra,
        )
    url = q.get("--prometheus-url", "Prometheus URL", "http://127.0.0.1:9090")
    known = _known_metrics(url, found) if probe else []
    requests_guess, duration_guess = suggest_metric_names(known)
    names = PrometheusNames(
        url=url,
        requests_metric=q.get(
            "--requests-metric", "Requests counter", requests_guess or "http_requests_total"
        ),
        duration_metric=q.get(
            "--duration-metric",
            "Latency histogram (without _bucket)",
            duration_guess or "http_request_duration_seconds",
        ),
        version_label=q.get("--version-label", "Label naming the version", "version"),
        status_label=q.get("--status-label", "Label holding the status code", "code"),
    )
    return InitAnswers(
        service=service,
        target=target,  # type: ignore[arg-type]
        router=router,  # type: ignore[arg-type]
        frontend_url=frontend,
        metrics=names,
        health_path=health,
        probed=found,
        **extra,
    )


def _flag_of(path: str) -> str:
    for field_path, flag in sorted(FIELD_FLAGS.items(), key=lambda kv: -len(kv[0])):
        if path == field_path or path.startswith(field_path + "."):
            return f"{flag} ({path})"
    return path


def cmd_init(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.is_dir():
        return _bad(f"--output: {output} is a directory; give a file name")
    if output.exists() and not args.force:
        return _bad(f"--output: {output} exists; give --force to replace it")
    interactive = not args.no_input and sys.stdin.isatty()
    try:
        answers = gather(args, _tty_ask if interactive else _flags_only)
        text = render_spec(answers)
        spec = spec_from_text(text, str(output), output.resolve().parent)
    except InitError as exc:
        return _bad(str(exc))
    except SpecError as exc:
        for path, message in exc.problems:
            print(f"deployflow: error: {_flag_of(path)}: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    live_lines: list[str] = []
    if not args.no_probe:
        from deployflow.live import check_spec_live
        from deployments.validate import live_context

        report = check_spec_live(spec, live_context(spec.service, ""))
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        live_lines = [f"live checks at {stamp}:", *(f"  {line}" for line in report.lines())]
        text = render_spec(
            InitAnswers(**{**answers.__dict__, "probed": answers.probed + live_lines})
        )
        live_lines.append(report.headline())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    what = f"{answers.target}, {answers.router}, {answers.metrics_kind}"
    print(f"wrote {output} (service {spec.service}: {what})")
    for line in answers.probed + live_lines:
        print(f"  {line}")
    print(f"next: deployflow validate {output} --live")
    return EXIT_OK


def _bad(message: str) -> int:
    print(f"deployflow: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


__all__ = ["add_parser", "cmd_init", "gather"]

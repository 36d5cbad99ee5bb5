"""A first service spec written from a few answers (``deployflow init``): pure text generation,
and the small probes that fill in what can be read from the systems already running.

The text is YAML with a comment on each choice, so the file explains itself to the next reader;
``render_spec`` never decides anything a probe or a person did not say. Every value is written as
a JSON scalar (valid YAML), so no answer can change the document's structure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

TargetKind = Literal["local-process", "command", "github-actions"]
RouterKind = Literal["haproxy", "nginx"]
MetricsKind = Literal["prometheus", "access-log"]

TARGET_KINDS: tuple[TargetKind, ...] = ("local-process", "command", "github-actions")
ROUTER_KINDS: tuple[RouterKind, ...] = ("haproxy", "nginx")
METRICS_KINDS: tuple[MetricsKind, ...] = ("prometheus", "access-log")


@dataclass(frozen=True)
class PrometheusNames:
    """Where the service's request metrics are and how they are labelled (the conventional
    ``http_requests_total`` counter and ``http_request_duration_seconds`` histogram by default)."""

    url: str
    requests_metric: str = "http_requests_total"
    duration_metric: str = "http_request_duration_seconds"
    version_label: str = "version"
    status_label: str = "code"
    path_label: str = "path"


@dataclass(frozen=True)
class InitAnswers:
    """Everything ``render_spec`` needs; each field is one question of ``deployflow init``."""

    service: str
    target: TargetKind
    router: RouterKind
    frontend_url: str
    metrics: PrometheusNames
    health_path: str = "/healthz"
    # Where the metrics come from: Prometheus (``metrics``), or the router's access log (a
    # service that exports none).
    metrics_kind: MetricsKind = "prometheus"
    access_log: str = ""
    # local-process
    command: Sequence[str] = ()
    state_dir: str = ""
    scrape_targets_file: str | None = None
    # command hooks
    start: Sequence[str] = ()
    stop: Sequence[str] = ()
    status: Sequence[str] = ()
    # github-actions
    repository: str = ""
    start_workflow: str = "deploy.yml"
    stop_workflow: str = "undeploy.yml"
    status_url: str = ""
    instance_url: str = ""
    # haproxy
    haproxy_socket: str = ""
    haproxy_backend: str = "app"
    stable_server: str = "stable"
    canary_server: str = "canary"
    # nginx
    nginx_config: str = ""
    nginx_upstream_file: str = ""
    nginx_state_listen: str = "127.0.0.1:8399"
    # What the probes found, written as comments at the top.
    probed: list[str] = field(default_factory=list)


def _s(value: str) -> str:
    """A YAML scalar that stays a string whatever it holds: single-quoted (PromQL's double
    quotes stay readable), or a JSON string when it holds a line break or a control character."""
    if any(ord(c) < 32 for c in value):
        return json.dumps(value)
    return "'" + value.replace("'", "''") + "'"


def _argv(argv: Sequence[str]) -> str:
    return "[" + ", ".join(_s(a) for a in argv) + "]"


def _selector(label: str, extra: str = "") -> str:
    return "{" + f'{label}="{{version}}"' + extra + "}"


def prometheus_queries(names: PrometheusNames) -> dict[str, str]:
    """The five PromQL templates for a counter of requests labelled by status code and a latency
    histogram, both labelled by version."""
    req, dur = names.requests_metric, names.duration_metric
    sel = _selector(names.version_label)
    errors = _selector(names.version_label, f',{names.status_label}=~"5.."')
    return {
        "error_rate": f"(sum(rate({req}{errors}[{{window}}])) or vector(0)) "
        f"/ sum(rate({req}{sel}[{{window}}]))",
        "p95_latency": "histogram_quantile(0.95, sum by (le) "
        f"(rate({dur}_bucket{sel}[{{window}}])))",
        "request_count": f"sum(increase({req}{sel}[{{window}}]))",
        "latency_buckets": f"sum by (le) (increase({dur}_bucket{sel}[{{window}}]))",
        "requests_by_endpoint": f"sum by ({names.path_label}, {names.status_label}) "
        f"(increase({req}{sel}[{{window}}]))",
    }


def _target(a: InitAnswers) -> list[str]:
    health = f"  health_path: {_s(a.health_path)}  # answers 2xx while a version is healthy"
    if a.target == "local-process":
        lines = [
            "# Each version runs as a local process on a free loopback port: {version}, {port},",
            "# {host} and {python} are substituted in each argument (no shell).",
            "target:",
            "  kind: local-process",
            f"  command: {_argv(a.command)}",
            f"  state_dir: {_s(a.state_dir)}  # pids, ports and logs of the running versions",
            health,
        ]
        if a.scrape_targets_file:
            lines.append(
                f"  scrape_targets_file: {_s(a.scrape_targets_file)}"
                "  # Prometheus file_sd: each process labelled with its version"
            )
        return lines
    if a.target == "command":
        return [
            "# Your own commands start, stop and list the versions (kubectl, helm, ssh...):",
            '# start prints {"host": .., "port": ..} (or {"url": ..}); status prints a JSON list',
            '# of {"version": .., "host": .., "port": ..}; stop succeeds when nothing runs.',
            "target:",
            "  kind: command",
            f"  start: {{argv: {_argv(a.start)}, timeout: 120s}}",
            f"  stop: {{argv: {_argv(a.stop)}, timeout: 120s}}",
            f"  status: {{argv: {_argv(a.status)}, timeout: 30s}}",
            health,
        ]
    lines = [
        "# GitHub Actions workflows (workflow_dispatch) deploy and remove a version; the token",
        "# comes from a GitHub block (block: NAME) or GITHUB_TOKEN where the flow runs.",
        "target:",
        "  kind: github-actions",
        f"  repository: {_s(a.repository)}",
        f'  start: {{workflow: {_s(a.start_workflow)}, inputs: {{version: "{{version}}"}}}}',
        f'  stop: {{workflow: {_s(a.stop_workflow)}, inputs: {{version: "{{version}}"}}}}',
        f"  status_url: {_s(a.status_url)}  # the running versions as a JSON list",
    ]
    if a.instance_url:
        lines.append(f"  instance: {{url: {_s(a.instance_url)}}}")
    return [*lines, health]


def _router(a: InitAnswers) -> list[str]:
    if a.router == "haproxy":
        return [
            "# HAProxy splits the traffic through its runtime API (no reload): the backend holds",
            "# two servers, the stable slot and the canary slot, which deployflow re-points and",
            "# weighs.",
            "router:",
            "  kind: haproxy",
            f"  admin_socket: {_s(a.haproxy_socket)}  # stats socket ... level admin",
            f"  backend: {_s(a.haproxy_backend)}",
            f"  stable_server: {_s(a.stable_server)}",
            f"  canary_server: {_s(a.canary_server)}",
            f"  frontend_url: {_s(a.frontend_url)}  # what users reach; smoke requests go here",
        ]
    return [
        "# nginx splits the traffic: deployflow owns the upstream file (included from the http",
        "# block), tests it with nginx -t and reloads nginx.",
        "router:",
        "  kind: nginx",
        f"  main_config: {_s(a.nginx_config)}",
        f"  upstream_file: {_s(a.nginx_upstream_file)}  # written by deployflow: not by hand",
        "  upstream: deployflow  # the site proxies to it: proxy_pass http://deployflow;",
        f"  state_listen: {_s(a.nginx_state_listen)}  # keep it on loopback",
        f"  frontend_url: {_s(a.frontend_url)}  # what users reach; smoke requests go here",
    ]


def _access_log(a: InitAnswers) -> list[str]:
    from deployflow.providers.access_log import HAPROXY_LOG_FORMAT, NGINX_LOG_FORMAT

    if a.router == "nginx":
        how = [
            "# nginx writes one line per request in deployflow's format; in its http block:",
            f"#   log_format deployflow '{NGINX_LOG_FORMAT}';",
            f"#   access_log {a.access_log} deployflow;",
        ]
    else:
        how = [
            "# HAProxy logs one line per request in deployflow's format (frontend: `log-format",
            f"# {HAPROXY_LOG_FORMAT}`), written to this file by rsyslog (or from its stdout).",
        ]
    return [
        "# Per-version figures from the router's own access log, for a service that exports no",
        "# metrics: each line's server address is mapped to the version deployflow put there.",
        *how,
        "metrics:",
        "  kind: access-log",
        f"  path: {_s(a.access_log)}",
        f"  format: {a.router}",
    ]


def _metrics(a: InitAnswers) -> list[str]:
    if a.metrics_kind == "access-log":
        return _access_log(a)
    queries = prometheus_queries(a.metrics)
    lines = [
        "# Per-version figures from Prometheus; {version} and {window} are filled in per query.",
        "# `deployflow validate --live` runs each one for the live version.",
        "metrics:",
        "  kind: prometheus",
        f"  url: {_s(a.metrics.url)}",
        "  queries:",
        "    # Failed requests over all requests, 0..1 (with `or vector(0)`: 0, not empty, when",
        "    # there are no errors).",
        f"    error_rate: {_s(queries['error_rate'])}",
        "    # 95th percentile latency in seconds.",
        f"    p95_latency: {_s(queries['p95_latency'])}",
        f"    request_count: {_s(queries['request_count'])}",
        "    # The canary's latency histogram compared with the stable's (rank test).",
        f"    latency_buckets: {_s(queries['latency_buckets'])}",
        "    # The incident report's breakdown by endpoint and status.",
        f"    requests_by_endpoint: {_s(queries['requests_by_endpoint'])}",
    ]
    return lines


def render_spec(a: InitAnswers) -> str:
    """The spec ``a`` describes, commented, as YAML text (it loads with ``load_spec``)."""
    lines = [
        f"# Service spec of {a.service}, written by `deployflow init`. Check it against what runs",
        "# with `deployflow validate THIS_FILE --live`; every key is in docs/reference/spec.md.",
    ]
    if a.probed:
        lines.append("#")
        lines.append("# What init found when it wrote this file:")
        # One comment line per line of a probe's answer: a line break must not end the comment.
        lines += [f"#   {line}" for p in a.probed for line in p.splitlines() or [""]]
    lines += [f"service: {_s(a.service)}", ""]
    lines += [*_target(a), "", *_router(a), "", *_metrics(a), ""]
    lines += [
        "# When a canary is healthy: its error rate at most max_error_rate, its P95 at most",
        "# max_p95_ratio times the stable's. A stage ends on evidence (docs/concepts/judge.md).",
        "analysis:",
        "  max_error_rate: 0.05",
        "  max_p95_ratio: 2.0",
        "  window: 60s",
        "  baseline_window: 5m",
        "",
        "# Size the first step and observe time for your traffic: docs/concepts/judge.md,",
        "# 'Evidence costs requests'. `deployflow deploy THIS_FILE --version V --dry-run` tells",
        "# what today's traffic buys each stage.",
        "strategy:",
        "  kind: canary",
        "  steps: [5, 25, 50, 100]",
        "  observe: 5m",
        "",
        "smoke:",
        "  - name: health through the router",
        f"    path: {_s(a.health_path)}",
        "",
    ]
    return "\n".join(lines)


# -- probes ------------------------------------------------------------------------------------


def suggest_metric_names(known: Sequence[str]) -> tuple[str | None, str | None]:
    """From the metric names a Prometheus holds, the requests counter and the latency histogram
    of a service when each is unambiguous (one ``*http_requests_total`` and one
    ``*http_request_duration_seconds_bucket``), else None."""
    requests = [n for n in known if n.endswith("http_requests_total")]
    durations = [
        n.removesuffix("_bucket")
        for n in known
        if n.endswith("http_request_duration_seconds_bucket")
    ]
    return (
        requests[0] if len(requests) == 1 else None,
        durations[0] if len(durations) == 1 else None,
    )


def slot_backend(servers_by_backend: dict[str, list[str]], stable: str, canary: str) -> str | None:
    """The one backend that holds both slots, if exactly one does."""
    holding = [b for b, servers in servers_by_backend.items() if {stable, canary} <= set(servers)]
    return holding[0] if len(holding) == 1 else None


def parse_all_servers_state(answer: str) -> dict[str, list[str]]:
    """Server names by backend from ``show servers state`` (all backends)."""
    lines = [line for line in answer.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("# ")), None)
    if header is None:
        raise ValueError(f"not a 'show servers state' answer: {answer.strip()[:200]!r}")
    columns = header[2:].split()
    be, srv = columns.index("be_name"), columns.index("srv_name")
    found: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("#") or line.strip().isdigit():
            continue
        fields = line.split()
        if len(fields) > max(be, srv):
            found.setdefault(fields[be], []).append(fields[srv])
    return found

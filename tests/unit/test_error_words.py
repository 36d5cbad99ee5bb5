"""Failures in words (``deployflow.error_words``), from the exceptions the real clients raise:
each is produced by actually connecting to a closed port, a missing socket, a socket nobody
answers on, never by writing the error by hand."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

from deployflow.error_words import detail, in_words, redact
from deployflow.processes import free_port
from deployflow.providers.haproxy import HAProxyRouter, RouterError
from deployflow.providers.prometheus import MetricQueries, PrometheusMetrics

pytestmark = pytest.mark.unit

QUERIES = MetricQueries(
    error_rate='sum(rate(errors{version="{version}"}[{window}]))',
    p95_latency='histogram_quantile(0.95, rate(latency{version="{version}"}[{window}]))',
    request_count='sum(increase(requests{version="{version}"}[{window}]))',
)


def raised(call: object) -> BaseException:
    assert callable(call)
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("it did not raise")


@contextlib.contextmanager
def silent_tcp() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@contextlib.contextmanager
def silent_unix(path: Path) -> Iterator[Path]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(8)
        yield path


def router(**where: object) -> HAProxyRouter:
    return HAProxyRouter(frontend_url="http://127.0.0.1:9", timeout=0.2, **where)  # type: ignore[arg-type]


def test_a_missing_admin_socket_is_named_with_what_to_look_at(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.sock"
    error = raised(router(admin_socket=path).state)
    assert isinstance(error, RouterError)
    words = in_words(error)
    assert words == (
        f"the router's admin socket {path} does not exist: HAProxy is not running, or its "
        "stats socket is elsewhere (router.admin_socket)"
    )
    assert "Errno" not in words
    assert "[Errno 2]" in detail(error)  # the raw error stays for engineers
    assert "FileNotFoundError" in detail(error)


def test_an_admin_socket_nobody_listens_on_refused_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
        left.bind(str(path))  # bound, never listening: what a dead HAProxy leaves behind
        error = raised(router(admin_socket=path).state)
    assert in_words(error) == (
        f"the router's admin socket {path} refused the connection: is HAProxy running?"
    )
    assert "Connection refused" in detail(error)


def test_a_runtime_api_over_tcp_on_a_closed_port_refused_the_connection() -> None:
    address = f"127.0.0.1:{free_port()}"
    error = raised(router(admin_socket=None, admin_address=address).state)
    assert in_words(error) == (
        f"HAProxy's runtime API at {address} refused the connection: is HAProxy running?"
    )


def test_an_admin_socket_that_never_answers_says_how_long_it_was_waited_for(
    tmp_path: Path,
) -> None:
    with silent_unix(tmp_path / "haproxy.sock") as path:
        error = raised(router(admin_socket=path).state)
    assert in_words(error) == (
        f"the router's admin socket {path} did not answer within 0.2 s: is HAProxy "
        "overloaded, or paused?"
    )


def test_a_router_error_that_lost_its_cause_still_reads_in_words(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "haproxy.sock"
    error = pickle.loads(pickle.dumps(raised(router(admin_socket=path).state)))
    assert error.__cause__ is None
    assert in_words(error).startswith(f"the router's admin socket {path} does not exist")


def test_haproxy_refusing_a_command_keeps_its_own_words() -> None:
    error = RouterError("HAProxy refused 'set server app/canary weight 5': No such server.")
    assert in_words(error) == str(error)


def test_an_http_service_on_a_closed_port_refused_the_connection() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    error = raised(lambda: httpx.get(url, timeout=1))
    assert isinstance(error, httpx.ConnectError)
    assert in_words(error) == f"{url} refused the connection: is it running, and on that port?"
    assert in_words(error, service="Slack") == (
        "Slack refused the connection: is it running, and on that port?"
    )


def test_an_http_service_that_never_answers_says_the_time_waited() -> None:
    with silent_tcp() as port:
        error = raised(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.1))
    assert isinstance(error, httpx.ReadTimeout)
    assert in_words(error) == f"http://127.0.0.1:{port}/healthz did not answer within 0.1 s"


def test_prometheus_on_a_closed_port_is_named_without_its_password() -> None:
    port = free_port()
    metrics = PrometheusMetrics(f"http://deployflow:s3cret@127.0.0.1:{port}", QUERIES, timeout=1)
    sample = metrics.sample("v2", 60)
    assert sample.error == (
        f"Prometheus at http://***@127.0.0.1:{port} refused the connection: is it running, "
        "and on that port?"
    )


def test_a_slow_prometheus_did_not_answer_within_its_timeout() -> None:
    with silent_tcp() as port:
        url = f"http://127.0.0.1:{port}"
        error = raised(lambda: requests.get(f"{url}/api/v1/query", timeout=0.1))
    assert isinstance(error, requests.Timeout)
    assert in_words(error, service=f"Prometheus at {url}", timeout=2) == (
        f"Prometheus at {url} did not answer within 2 s"
    )


def test_credentials_in_urls_never_reach_the_words_or_the_detail() -> None:
    url = f"http://alice:hunter2@127.0.0.1:{free_port()}/hook?token=t0ken&x=1"
    error = raised(lambda: httpx.get(url, timeout=1))
    for text in (in_words(error), detail(error)):
        assert "hunter2" not in text
        assert "t0ken" not in text
    assert redact("postgresql+psycopg://u:pw@db:5432/x ?password=pw") == (
        "postgresql+psycopg://***@db:5432/x ?password=***"
    )


def test_anything_else_keeps_its_message() -> None:
    assert in_words(ValueError("canary_weight must be 0..100, got 140")) == (
        "canary_weight must be 0..100, got 140"
    )
    assert in_words(RuntimeError()) == "RuntimeError"


def test_a_timeout_names_the_limit_of_the_phase_that_ran_out() -> None:
    with silent_tcp() as port:
        timeouts = httpx.Timeout(connect=5.0, read=0.1, write=5.0, pool=5.0)
        error = raised(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=timeouts))
    assert isinstance(error, httpx.ReadTimeout)
    assert in_words(error).endswith("did not answer within 0.1 s")

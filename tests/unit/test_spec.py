from __future__ import annotations

from pathlib import Path

import pytest

from deployflow.spec import SpecError, load_spec, parse_spec, validate_version
from deployflow.spec_types import format_duration, parse_duration
from tests.samples import EXAMPLE, SANDBOX_ENV, example, problems

pytestmark = pytest.mark.unit


def test_example_spec_loads_with_defaults_and_env() -> None:
    spec = load_spec(EXAMPLE, SANDBOX_ENV)
    assert spec.service == "demo"
    assert spec.strategy.kind == "canary"
    assert spec.strategy.steps == [5, 25, 50, 100]
    assert spec.analysis.max_error_rate == 0.05
    assert spec.analysis.min_requests == 10  # "${DEPLOYFLOW_MIN_REQUESTS:-10}"
    assert spec.router.admin_socket == Path("/tmp/sandbox/haproxy.sock")
    assert spec.metrics.url == "http://127.0.0.1:9090"


def test_defaults_follow_release_policy() -> None:
    data = example()
    del data["analysis"], data["strategy"]
    spec = parse_spec(data, env=SANDBOX_ENV)
    assert spec.analysis.max_error_rate == 0.05
    assert spec.analysis.max_p95_ratio == 2.0
    assert spec.strategy.kind == "canary"
    assert spec.strategy.steps == [5, 25, 50, 100]
    assert spec.strategy.observe == 600.0


def test_every_problem_is_listed_with_its_path() -> None:
    data = example()
    data["analysis"]["max_error_rate"] = 1.5
    data["strategy"]["steps"] = [5, 50, 25]
    data["strategy"]["observe"] = "10"
    data["target"]["command"] = "python -m app"
    data["colour"] = "blue"
    found = problems(data)
    assert "analysis.max_error_rate" in found
    assert "strictly increasing" in found["strategy.canary.steps"]
    assert "not a duration" in found["strategy.canary.observe"]
    assert "argv" in found["target.command"]
    assert "unknown key" in found["colour"]
    assert len(found) == 5


def test_steps_must_end_at_100() -> None:
    data = example()
    data["strategy"]["steps"] = [5, 25, 50]
    assert "last step must be 100" in problems(data)["strategy.canary.steps"]


def test_missing_environment_variable_is_named() -> None:
    found = problems(example(), env={})
    assert "DEPLOYFLOW_SANDBOX_STATE_DIR" in found["target.state_dir"]


def test_queries_must_select_the_version() -> None:
    data = example()
    data["metrics"]["queries"]["error_rate"] = "sum(rate(x[1m]))"
    assert "{version}" in problems(data)["metrics.queries.error_rate"]


def test_unreadable_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: [unclosed\n")
    with pytest.raises(SpecError, match="yaml"):
        load_spec(bad)


@pytest.mark.parametrize("version", ["v2", "1.4.0", "2026.11.27-rc1", "abc_1+build"])
def test_plain_versions_are_accepted(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize("version", ["", "-rm", 'v1"}or vector(1)', "a b", "x" * 200, "../etc"])
def test_versions_that_could_escape_are_refused(version: str) -> None:
    with pytest.raises(SpecError, match="not allowed"):
        validate_version(version)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), ("250ms", 0.25), ("1.5s", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10", 10, "0s", "10 minutes", "", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration_round_trips() -> None:
    for text in ["30s", "10m", "1h", "250ms", "1.5s"]:
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("value", ["v2\n", "v2\r\n", " v2", "v2 "])
def test_a_version_or_environment_with_a_trailing_newline_or_space_is_refused(value):
    from deployflow.spec import SpecError, validate_environment, validate_version

    with pytest.raises(SpecError, match="is not allowed"):
        validate_version(value)
    with pytest.raises(SpecError, match="is not allowed"):
        validate_environment(value)


def test_haproxy_is_reached_by_its_socket_path_or_by_tcp_never_both_or_neither() -> None:
    data = example()
    data["router"]["admin_address"] = "10.0.0.4:9999"
    found = problems(data)
    assert any("one of admin_socket" in p for p in found.values()), found
    del data["router"]["admin_socket"]
    spec = parse_spec(data, env=SANDBOX_ENV)
    assert (spec.router.admin_socket, spec.router.admin_address) == (None, "10.0.0.4:9999")
    data["router"]["admin_address"] = "no port"
    assert "router.admin_address" in problems(data)
    del data["router"]["admin_address"]
    assert any("one of admin_socket" in p for p in problems(data).values())

"""Bad spec files: every one is a SpecError naming what is wrong, quickly, never a traceback,
never the file's content."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployflow.spec import MAX_SPEC_BYTES, SpecError, load_spec, parse_spec, parse_spec_text
from deployflow.spec_types import MAX_PROBLEMS_SHOWN, parse_duration

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "examples" / "sandbox.yaml"
# `make test` runs a few hundred cases; a nightly run sets DEPLOYFLOW_FUZZ_EXAMPLES=10000.
FUZZ = settings(
    max_examples=int(os.environ.get("DEPLOYFLOW_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as error:
        load_spec(path)
    return error.value.problems


def test_a_file_that_is_not_utf8_is_named_as_such(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"service: caf\xe9\n")
    assert problems_of(spec) == [("(file)", "not UTF-8 text (invalid byte at offset 12)")]


@pytest.mark.parametrize("kind", ["directory", "device", "fifo"])
def test_only_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    path = {"directory": tmp_path, "device": Path("/dev/zero"), "fifo": tmp_path / "pipe"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    [(field, message)] = problems_of(path)
    assert field == "(file)"
    assert "not a regular file" in message


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text("#" * (MAX_SPEC_BYTES + 1))
    [(_, message)] = problems_of(spec)
    assert f"at most {MAX_SPEC_BYTES} bytes" in message


@pytest.mark.parametrize(
    "document",
    [
        # "billion laughs": nine levels of nine aliases each.
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n"
            for i in range(8)
        ),
        "a: &a [*a]\n",  # recursive
    ],
)
def test_anchors_and_aliases_are_refused(tmp_path: Path, document: str) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(document)
    [(field, message)] = problems_of(spec)
    assert field == "(yaml)"
    assert "anchors and aliases" in message


def test_a_yaml_error_says_where_not_what(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_secret_access_key: AKIASECRETVALUE: x\n")
    [(field, message)] = problems_of(credentials)
    assert field == "(yaml)"
    assert message.startswith("line 2, column ")
    assert "AKIASECRETVALUE" not in message


def test_a_spec_with_hundreds_of_problems_gets_a_short_message() -> None:
    data = {"service": "x", **{f"unknown_{i}": i for i in range(500)}}
    with pytest.raises(SpecError) as error:
        parse_spec(data)
    assert len(str(error.value)) < 10_000
    assert error.value.problems[-1] == ("...", f"and {500 + 3 - MAX_PROBLEMS_SHOWN} more")


@pytest.mark.parametrize(
    "value", ["9" * 400 + "s", "\uff11\uff10s", "1e9h", "200h", "nan s", "-1s"]
)
def test_absurd_durations_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_spec_or_a_spec_error(tmp_path: Path, raw: bytes) -> None:
    spec = tmp_path / "fuzz.yaml"
    spec.write_bytes(raw)
    with contextlib.suppress(SpecError):
        load_spec(spec, env={})


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
example = yaml.safe_load(EXAMPLE.read_text())


@FUZZ
@given(
    st.sampled_from(sorted(example)),
    st.one_of(yaml_values, st.dictionaries(st.sampled_from(["kind", "url", "steps"]), yaml_values)),
)
def test_any_value_in_any_section_gives_a_spec_or_a_spec_error(section: str, value) -> None:
    data = {**example, section: value}
    try:
        parse_spec(data, env={"DEPLOYFLOW_SANDBOX_STATE_DIR": "/tmp/s"})
    except SpecError as error:
        message = str(error)
    else:
        message = ""
    assert len(message) < 10_000


SANDBOX_ENV = {
    "DEPLOYFLOW_SANDBOX_STATE_DIR": "/tmp",
    "DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET": "/tmp/haproxy.sock",
    "DEPLOYFLOW_SANDBOX_FRONTEND_URL": "http://127.0.0.1:1",
    "DEPLOYFLOW_SANDBOX_PROMETHEUS_URL": "http://127.0.0.1:2",
}


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("min_requests: ${DEPLOYFLOW_MIN_REQUESTS:-10}", "min_requests: " + "9" * 5000,
         "(yaml)", "line 44, column 17: a number of more than 100 digits"),
        ("steps: [5, 25, 50, 100]", "steps: [true, 50, 100]",
         "strategy.canary.steps", "step 1 is true: a step is a percentage (1 to 100)"),
        ("window: ${DEPLOYFLOW_WINDOW:-6s}", "window: 0.1ms",
         "analysis.window", "0.1ms is shorter than the 1s a metrics query can look back over"),
        ('"--host", "{host}"', '"--host", "{hostname}"',
         "target.command", "command placeholder {hostname} is unknown; allowed: {version}"),
        ("service: demo\n", "service: demo\nservice: shop\n",
         "(yaml)", "the key 'service' appears twice in the same mapping: keep one"),
    ],
    ids=["5000-digit-integer", "true-as-a-step", "0.1ms-window", "unknown-placeholder",
         "duplicate-key"],
)  # fmt: skip
def test_a_spec_that_would_fail_later_is_refused_at_validate_naming_the_field(
    old: str, new: str, field: str, message: str
) -> None:
    text = EXAMPLE.read_text()
    assert old in text
    with pytest.raises(SpecError) as error:
        parse_spec_text(text.replace(old, new, 1), env=SANDBOX_ENV)
    [(where, problem)] = error.value.problems
    assert where == field
    assert message in problem

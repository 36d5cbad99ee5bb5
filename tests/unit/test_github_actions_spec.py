"""The github-actions target's spec section: bad input is refused with the field named."""

from __future__ import annotations

import httpx
import pytest

from deployflow.providers.github_actions import _next_link, _rate_limit_wait
from deployflow.spec import SpecError, parse_spec
from tests import samples


def spec_data(**target: object) -> dict:
    section: dict = {
        "kind": "github-actions",
        "repository": "acme/shop",
        "start": {"workflow": "deploy.yml", "inputs": {"version": "{version}"}},
        "stop": {"workflow": "undeploy.yml", "inputs": {"version": "{version}"}},
        "status_url": "https://shop.internal/versions",
    }
    section.update(target)
    return samples.spec_data(target=section)


def problems(**target: object) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as error:
        parse_spec(spec_data(**target))
    return error.value.problems


def test_a_complete_section_parses_with_durations_and_defaults() -> None:
    spec = parse_spec(
        spec_data(
            start={"workflow": "deploy.yml", "timeout": "20m",
                   "inputs": {"version": "{version}", "environment": "{environment}"}},
            instance={"url": "https://{version}.shop.internal"},
            error_patterns=["ERROR", r"exit code [1-9]"],
            correlation_input="deploy_id",
        )
    )  # fmt: skip
    target = spec.target
    assert target.kind == "github-actions"
    assert target.start.timeout == 1200.0
    assert target.ref == "main"
    assert target.poll_interval == 5.0


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"repository": "shop"}, "target.repository", "must be 'owner/name'"),
        ({"status": {"argv": ["./status.sh"]}}, "target", "exactly one status source"),
        ({"status_url": None}, "target", "exactly one status source"),
        ({"error_patterns": ["("]}, "target.error_patterns", "is not a regular expression"),
        ({"start": {"workflow": "deploy.yml", "inputs": {"v": "{tag}"}}}, "target.start.inputs",
         "v: placeholder {tag} is unknown"),
        ({"instance": {"url": "http://{host}:80"}}, "target.instance", "url: placeholder {host}"),
        ({"start": {"workflow": "../x.yml"}}, "target.start.workflow", "a workflow file name"),
        ({"instance": {"host": "shop-{version}"}}, "target.instance", "port: required"),
        ({"correlation_input": "version"}, "target", "'version' is the correlation_input"),
        ({"token": "ghp_x"}, "target.token", "unknown key"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(changes: dict, path: str, message: str) -> None:
    found = problems(**changes)
    assert any(p == path and message in m for p, m in found), found


def test_rate_limit_answers_are_told_apart_from_permission_refusals() -> None:
    def answer(status: int, headers: dict[str, str], text: str = "{}") -> httpx.Response:
        return httpx.Response(status, headers=headers, text=text)

    assert _rate_limit_wait(answer(429, {"Retry-After": "7"})) == 7.0
    assert _rate_limit_wait(answer(403, {"Retry-After": "2"})) == 2.0
    assert _rate_limit_wait(answer(403, {}, '{"message": "Resource not accessible"}')) is None
    assert _rate_limit_wait(answer(403, {}, '{"message": "secondary rate limit"}')) == 60.0
    assert _rate_limit_wait(answer(200, {"Retry-After": "2"})) is None


def test_the_next_page_comes_from_the_link_header() -> None:
    link = (
        '<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; '
        'rel="last"'
    )
    assert _next_link(httpx.Response(200, headers={"Link": link})) == (
        "https://api.github.com/x?page=2"
    )
    assert _next_link(httpx.Response(200)) is None

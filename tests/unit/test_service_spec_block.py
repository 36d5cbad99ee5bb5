"""The ServiceSpec block: validated like a spec file when saved, resolved where the
deploy runs; relative spec paths in errors say what they were resolved against."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prefect.blocks.core import Block

from blocks.service_spec import ServiceSpecBlock
from deployflow.spec import SpecError, load_spec
from flows.deploy import deploy
from tests.samples import EXAMPLE

SANDBOX_VARIABLES = {
    "DEPLOYFLOW_SANDBOX_FRONTEND_URL": "http://127.0.0.1:18080",
    "DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET": "haproxy.sock",
    "DEPLOYFLOW_SANDBOX_PROMETHEUS_URL": "http://127.0.0.1:19090",
    "DEPLOYFLOW_SANDBOX_STATE_DIR": "state",
}


def test_a_spec_whose_variables_the_worker_sets_saves_and_resolves_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in SANDBOX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    block = ServiceSpecBlock(spec=EXAMPLE.read_text(), base_dir=str(tmp_path))  # saved here

    for name, value in SANDBOX_VARIABLES.items():  # on the worker
        monkeypatch.setenv(name, value)
    spec = block.get_spec()

    assert spec.router.admin_socket == tmp_path / "haproxy.sock"
    from_file = load_spec(EXAMPLE)
    assert (spec.service, spec.strategy, spec.analysis) == (
        from_file.service,
        from_file.strategy,
        from_file.analysis,
    )


def test_a_variable_unset_on_the_worker_fails_the_load_naming_the_block_and_field(
    monkeypatch: pytest.MonkeyPatch,
):
    for name in SANDBOX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    block = ServiceSpecBlock(spec=EXAMPLE.read_text())

    with pytest.raises(SpecError) as unset:
        block.get_spec()

    assert unset.value.source.startswith("ServiceSpec block '(unsaved)' (relative paths resolved")
    assert tuple(
        p for p, m in unset.value.problems if "DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET" in m
    ) == ("router.admin_socket",)


def test_an_invalid_spec_cannot_be_saved_and_every_field_is_named(
    monkeypatch: pytest.MonkeyPatch,
):
    text = EXAMPLE.read_text().replace("steps: [5, 25, 50, 100]", "steps: [50, 20]")
    text += "\nsurprise: 1\n"
    sent: list[str] = []
    monkeypatch.setattr(Block, "_save_sync", lambda self, **kw: sent.append(kw["name"]))

    with pytest.raises(SpecError) as refused:
        ServiceSpecBlock(spec=text).save("shop")

    assert sent == []  # refused before anything reached the server
    message = str(refused.value)
    assert "steps must be strictly increasing" in message
    assert "surprise: unknown key" in message
    ServiceSpecBlock(spec=EXAMPLE.read_text()).save("shop")
    assert sent == ["shop"]


def test_a_block_saved_elsewhere_with_a_bad_spec_loads_and_its_use_names_the_field():
    """The Prefect UI saves the fields as they are: loading must not fail resolving the flow's
    parameters (a 60-line ParameterTypeError), the deploy's spec check names the field."""
    block = ServiceSpecBlock.model_validate({"spec": "service: shop\nsurprise: 1\n"})

    with pytest.raises(SpecError) as refused:
        block.get_spec()

    assert "surprise: unknown key" in str(refused.value)


def test_yaml_that_does_not_parse_is_refused_without_echoing_it():
    with pytest.raises(SpecError, match=r"\(yaml\): line 1, column") as refused:
        ServiceSpecBlock(spec="service: [unclosed-secret-ish").check()
    assert "unclosed-secret-ish" not in str(refused.value)


def test_a_relative_spec_path_in_an_error_says_what_it_was_resolved_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SpecError) as missing:
        load_spec("examples/sandbox.yaml")

    assert missing.value.source == f"examples/sandbox.yaml (resolved against {os.getcwd()})"
    assert "cannot read the spec" in str(missing.value)


def test_the_form_offers_saved_services_and_needs_only_a_version():
    schema = deploy.parameters.model_dump()

    assert schema["required"] == ["version"]
    service = schema["properties"]["service"]
    assert {"$ref": "#/definitions/ServiceSpecBlock"} in service["anyOf"]
    # A block type in the schema: the Prefect UI lists the saved blocks of that type.
    assert schema["definitions"]["ServiceSpecBlock"]["block_type_slug"] == "servicespec"
    # Nor is an environment proposed: a team's service deployed from the form is never
    # recorded as the demo's sandbox (a run without one ends at once, saying so).
    assert schema["properties"]["environment"].get("default") is None

"""The command target and router's spec sections: hooks that cannot run, unknown placeholders and
secrets are refused or kept hidden before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployflow.providers import registry
from deployflow.providers.base import BackendConfigError, BuildContext, Instance
from deployflow.providers.command import (
    CommandRouter,
    CommandTarget,
    Hook,
    parse_instance,
)
from deployflow.spec import SpecError, load_spec, parse_spec
from deployments.cli import main
from tests.samples import spec_data

pytestmark = pytest.mark.unit

HOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "command_hooks"


def command_target(**changes: object) -> dict:
    return {
        "kind": "command",
        "start": {"argv": [str(HOOKS / "start.sh"), "{version}"], "timeout": "2m"},
        "stop": {"argv": [str(HOOKS / "stop.sh"), "{version}"]},
        "status": {"argv": [str(HOOKS / "status.sh")]},
        "env": {"KUBE_TOKEN": "tok-never-shown"},
        **changes,
    }


def write_spec(folder: Path, target: dict) -> Path:
    path = folder / "service.yaml"
    path.write_text(yaml.safe_dump(spec_data(target=target)))
    return path


def test_a_hook_that_is_not_executable_is_a_spec_error_naming_it_and_validate_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "up.sh").write_text("#!/bin/sh\necho '{}'\n")  # no chmod +x
    spec = write_spec(
        tmp_path,
        command_target(start={"argv": ["./hooks/up.sh", "{version}"]}, stop={"argv": ["nope-x"]}),
    )
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    found = dict(error.value.problems)
    assert found["target.start.argv.0"] == f"{hooks / 'up.sh'} is not executable (chmod +x it)"
    assert found["target.stop.argv.0"] == "program 'nope-x' is not found on PATH"
    assert main(["validate", str(spec)]) == 2
    assert "target.start.argv.0" in capsys.readouterr().err


def test_a_relative_hook_is_relative_to_the_spec_folder(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "up.sh").write_text("#!/bin/sh\n")
    (hooks / "up.sh").chmod(0o755)
    spec = load_spec(write_spec(tmp_path, command_target(start={"argv": ["hooks/up.sh"]})))
    assert spec.target.start.argv == [str(hooks / "up.sh")]  # type: ignore[union-attr]


def test_the_built_target_refuses_a_hook_that_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(BackendConfigError, match=r"start\.argv\.0: .*does not exist"):
        CommandTarget(
            start=Hook("start", (str(tmp_path / "missing.sh"),), 1.0),
            stop=Hook("stop", ("true",), 1.0),
            status=Hook("status", ("true",), 1.0),
        )


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        (
            command_target(stop={"argv": ["kubectl", "delete", "deploy/{app}"]}),
            "target",
            "stop: placeholder {app} is unknown; allowed: {version}, {environment}, {service}",
        ),
        (
            command_target(status={"argv": ["kubectl", "get", "deploy/shop-{version}"]}),
            "target",
            "status: placeholder {version} is unknown; allowed: {environment}, {service}",
        ),
        (command_target(start={"argv": "deploy.sh up"}), "target.start.argv", "argv lists"),
        (command_target(start={"argv": ["x"], "timeout": "60"}), "target.start.timeout", "30s"),
        (command_target(env={"BAD-NAME": "x"}), "target.env", "not an environment variable"),
        (command_target(restart={"argv": ["x"]}), "target.restart", "unknown key"),
    ],
)
def test_bad_command_target_settings_name_the_field(section, field, message) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(spec_data(target=section))
    found = dict(error.value.problems)
    assert field in found, error.value.problems
    assert message in found[field]


def test_the_run_s_service_and_environment_reach_the_hooks_and_secrets_stay_hidden() -> None:
    spec = parse_spec(spec_data(target=command_target()))
    ctx = BuildContext(env={}, service="shop", environment="staging")
    target = registry.build("target", spec.target, ctx)
    assert isinstance(target, CommandTarget)
    assert target.values == {"service": "shop", "environment": "staging"}
    assert "tok-never-shown" not in repr(spec)
    assert "tok-never-shown" not in target.describe()
    assert target.runner.mask("Bearer tok-never-shown") == "Bearer ***"


def test_a_command_router_section_builds_the_router() -> None:
    router_section = {
        "kind": "command",
        "set_split": {"argv": ["true", "{stable}", "{canary}", "{weight}"]},
        "state": {"argv": ["true"]},
        "frontend_url": "https://shop.example/",
    }
    spec = parse_spec(spec_data(router=router_section))
    router = registry.build("router", spec.router, BuildContext(env={}))
    assert isinstance(router, CommandRouter)
    assert router.frontend_url == "https://shop.example"
    with pytest.raises(SpecError, match=r"state: placeholder \{weight\} is unknown"):
        parse_spec(spec_data(router={**router_section, "state": {"argv": ["x", "{weight}"]}}))


@pytest.mark.parametrize(
    ("printed", "instance", "url"),
    [
        (
            {"host": "10.0.0.5", "port": 8080},
            Instance("v2", "10.0.0.5", 8080),
            "http://10.0.0.5:8080",
        ),
        (
            {"url": "https://shop-v2.internal/", "id": "deploy/shop-v2"},
            Instance("v2", "shop-v2.internal", 443),
            "https://shop-v2.internal",
        ),
    ],
)
def test_a_start_hook_may_print_host_and_port_or_a_url(printed, instance, url) -> None:
    assert parse_instance(printed, "v2", "start hook output") == (instance, url)


@pytest.mark.parametrize(
    ("printed", "message"),
    [
        ([], "must be a JSON object"),
        ({"host": "h", "port": "80"}, "'port' must be an integer"),
        ({"host": "h", "port": True}, "'port' must be an integer"),
        ({"url": "ftp://h"}, "'url' must be an http(s) URL"),
        ({"port": 80}, "needs 'host' and 'port'"),
    ],
)
def test_a_start_hook_output_without_an_address_is_refused(printed, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_instance(printed, "v2", "start hook output")


def test_the_command_sandbox_example_is_a_valid_spec_with_runnable_hooks(tmp_path: Path) -> None:
    env = {
        "DEPLOYFLOW_SANDBOX_STATE_DIR": str(tmp_path),
        "DEPLOYFLOW_SANDBOX_NGINX_CONFIG": str(tmp_path / "nginx.conf"),
        "DEPLOYFLOW_SANDBOX_NGINX_UPSTREAM_FILE": str(tmp_path / "up.conf"),
        "DEPLOYFLOW_SANDBOX_NGINX_STATE_LISTEN": "127.0.0.1:8399",
        "DEPLOYFLOW_SANDBOX_FRONTEND_URL": "http://127.0.0.1:8080",
        "DEPLOYFLOW_SANDBOX_PROMETHEUS_URL": "http://127.0.0.1:9090",
    }
    examples = Path(__file__).resolve().parents[2] / "examples"
    spec = load_spec(examples / "sandbox-command.yaml", env=env)
    target = registry.build("target", spec.target, BuildContext(env={}, service="demo"))
    assert isinstance(target, CommandTarget)
    # The venv's python stays the symlink it is (resolving it would leave the venv).
    assert target.hooks["start"].argv[0] == str(examples.parent / ".venv" / "bin" / "python")
    assert target.runner.working_dir == examples


def test_only_secret_env_values_are_masked() -> None:
    # Every env value used to be masked: "staging" in an error message became ***.
    target = command_target()
    target["env"] = {"KUBE_TOKEN": "tok-never-shown", "NAMESPACE": "shop-staging"}
    spec = parse_spec(spec_data(target=target))
    built = registry.build("target", spec.target, BuildContext(env={}, service="shop"))
    assert isinstance(built, CommandTarget)
    text = "namespace shop-staging refused Bearer tok-never-shown"
    assert built.runner.mask(text) == "namespace shop-staging refused Bearer ***"
    assert "tok-never-shown" not in repr(spec)
    assert "shop-staging" in repr(spec)  # a plain value is configuration, shown as it is

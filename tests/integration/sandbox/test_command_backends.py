"""The command target and router: the user's own hooks, run for real.

The target's hooks (tests/fixtures/command_hooks/*.sh) start and stop the demo app; the router's
hook drives the sandbox HAProxy's runtime API. Both pass the shared contract tests, and every way a
hook can fail is an error that names the hook.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from deployflow.polling import wait_for
from deployflow.processes import free_port
from deployflow.providers.base import BackendError, Instance, RouterState
from deployflow.providers.command import CommandHookError, CommandRouter, CommandTarget, Hook
from deployflow.sandbox.haproxy import LocalHAProxy
from tests.contracts import RouterContract, TargetContract

pytestmark = pytest.mark.integration

HOOKS = Path(__file__).resolve().parents[2] / "fixtures" / "command_hooks"


def demo_target(state_dir: Path, **changes: object) -> CommandTarget:
    options: dict = {
        "start": Hook("start", (str(HOOKS / "start.sh"), "{version}"), 20.0),
        "stop": Hook("stop", (str(HOOKS / "stop.sh"), "{version}"), 20.0),
        "status": Hook("status", (str(HOOKS / "status.sh"),), 10.0),
        "logs": Hook("logs", (str(HOOKS / "logs.sh"), "{version}", "{lines}"), 10.0),
        "env": {"HOOK_STATE_DIR": str(state_dir), "HOOK_PYTHON": sys.executable},
        "inherit_env": ["PATH"],
        "start_timeout": 20.0,
    }
    options.update(changes)
    return CommandTarget(**options)


def stop_all(target: CommandTarget) -> None:
    for instance in target.instances():
        target.stop(instance.version)


class TestCommandTarget(TargetContract):
    @pytest.fixture
    def target(self, tmp_path: Path) -> Iterator[CommandTarget]:
        target = demo_target(tmp_path)
        yield target
        stop_all(target)


def test_a_started_version_is_healthy_and_its_logs_come_from_the_logs_hook(
    tmp_path: Path,
) -> None:
    target = demo_target(tmp_path)
    try:
        instance = target.start("v7")
        assert (instance.version, instance.host) == ("v7", "127.0.0.1")
        assert target.instances() == [instance]
        assert target.health_url(instance) == f"http://127.0.0.1:{instance.port}/healthz"
        wait_for(lambda: "v7" in target.logs("v7"), timeout=5, what="the app's log")
    finally:
        stop_all(target)
    assert target.instances() == []


def sh(name: str, script: str, timeout: float = 5.0) -> Hook:
    return Hook(name, ("sh", "-c", script, "hook", "{version}"), timeout)


def quick_target(tmp_path: Path, **hooks: Hook) -> CommandTarget:
    listing = Hook("status", ("sh", "-c", "echo '[]'"), 5.0)
    options: dict = {
        "start": sh("start", 'echo \'{"host": "127.0.0.1", "port": 1}\''),
        "stop": sh("stop", "exit 0"),
        "status": listing,
        "env": {"DEPLOY_TOKEN": SecretStr("tok-s3cret-value")},
        **hooks,
    }
    return CommandTarget(**options)


def test_a_failing_hook_is_named_with_its_stderr_tail_and_secrets_masked(tmp_path: Path) -> None:
    failing = sh("start", 'echo "token $DEPLOY_TOKEN refused for $1" >&2; exit 3')
    target = quick_target(tmp_path, start=failing)
    with pytest.raises(CommandHookError) as error:
        target.start("v2")
    message = str(error.value)
    assert "start hook" in message
    assert "exited with code 3" in message
    assert "token *** refused for v2" in message
    assert "s3cret" not in message


def test_a_hook_that_prints_garbage_is_named_with_what_it_printed(tmp_path: Path) -> None:
    target = quick_target(tmp_path, start=sh("start", "echo 'Deployment created'"))
    with pytest.raises(CommandHookError, match="start hook printed no JSON: 'Deployment created'"):
        target.start("v2")
    no_port = sh("start", 'echo \'{"host": "10.0.0.5"}\'')
    with pytest.raises(CommandHookError, match="'port' must be an integer"):
        quick_target(tmp_path, start=no_port).start("v2")
    listing = Hook("status", ("sh", "-c", "echo '{\"v1\": 1}'"), 5.0)
    with pytest.raises(CommandHookError, match="status hook must print a JSON list"):
        quick_target(tmp_path, status=listing).instances()


def test_a_hook_past_its_deadline_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    slow = sh("stop", f"sleep 30 & echo $! > {pid_file}; wait", timeout=0.5)
    target = quick_target(tmp_path, stop=slow)
    with pytest.raises(CommandHookError, match=r"stop hook .* timed out after 0.5s and was killed"):
        target.stop("v2")
    child = int(pid_file.read_text())
    assert wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), timeout=5)


def _zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "ZX"


def test_an_instance_that_never_becomes_healthy_is_stopped_and_the_error_says_so(
    tmp_path: Path,
) -> None:
    stopped = tmp_path / "stopped"
    port = free_port()  # nothing listens there
    target = quick_target(
        tmp_path,
        start=sh("start", f'echo \'{{"url": "http://127.0.0.1:{port}"}}\''),
        stop=sh("stop", f"touch {stopped}"),
    )
    target.start_timeout = 0.3
    with pytest.raises(BackendError, match=r"v2 healthy at http://127.0.0.1:\d+/healthz.*stopped"):
        target.start("v2")
    assert stopped.exists()


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHAProxy]:
    # The instances below are addresses nothing listens on: health checks would mark them down.
    with LocalHAProxy(
        tmp_path_factory.mktemp("command-router-haproxy"), health_checks=False
    ) as proxy:
        yield proxy


def haproxy_command_router(haproxy: LocalHAProxy) -> CommandRouter:
    hook = str(HOOKS / "haproxy_router.py")
    return CommandRouter(
        set_split=Hook("set_split", (hook, "set-split", "{stable}", "{canary}", "{weight}"), 10),
        state=Hook("state", (hook, "state"), 10.0),
        frontend_url=haproxy.frontend_url,
        env={"HOOK_HAPROXY_SOCKET": str(haproxy.admin_socket)},
        inherit_env=["PATH"],
    )


class TestCommandRouter(RouterContract):
    @pytest.fixture
    def router(self, haproxy: LocalHAProxy) -> CommandRouter:
        return haproxy_command_router(haproxy)

    @pytest.fixture
    def instances(self) -> tuple[Instance, Instance]:
        return Instance("v1", "127.0.0.1", free_port()), Instance("v2", "127.0.0.1", free_port())


def test_the_router_state_is_what_the_hook_reports_from_haproxy(haproxy: LocalHAProxy) -> None:
    router = haproxy_command_router(haproxy)
    stable, canary = Instance("v1", "127.0.0.1", free_port()), Instance("v2", "127.0.0.1", 9)
    router.set_split(stable, canary, 40)
    # The HAProxy backend itself agrees: the hook moved real traffic weights.
    assert haproxy.router().state() == RouterState(stable.address, canary.address, 40)
    assert router.state() == RouterState(stable.address, canary.address, 40)


def test_a_state_hook_that_prints_the_wrong_shape_is_an_error(haproxy: LocalHAProxy) -> None:
    router = CommandRouter(
        set_split=sh("set_split", "exit 0"),
        state=Hook("state", ("sh", "-c", 'echo \'{"stable": "a:1", "canary_weight": 5}\''), 5.0),
        frontend_url="http://127.0.0.1:1",
    )
    with pytest.raises(CommandHookError, match=r"state hook must print .*'canary'"):
        router.state()


def test_hooks_get_version_service_and_environment_as_arguments_and_variables(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "seen"
    script = 'echo "$* $DEPLOYFLOW_SERVICE/$DEPLOYFLOW_ENVIRONMENT" > "$0"'
    argv = ("sh", "-c", script, str(seen), "{service}", "{environment}", "{version}")
    target = CommandTarget(
        start=sh("start", "exit 0"),
        stop=Hook("stop", argv, 5.0),
        status=Hook("status", ("sh", "-c", "echo '[]'"), 5.0),
        service="shop",
        environment="staging",
    )
    target.stop("v2")
    assert seen.read_text() == "shop staging v2 shop/staging\n"

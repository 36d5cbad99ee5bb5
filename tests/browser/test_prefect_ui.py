"""The Prefect UI in a real browser: Playwright driving Debian's chromium (no browser download).

Prefect's UI (the files shipped in the prefect package, served from a thread here) on the session's
Prefect test server, which serves the API only, and ``python -m deployments.serve`` beside it, so
a run started from the form is picked up and run.
The rolled-back run comes first: it needs no runner, which boots meanwhile.
Screenshots of every page are kept in ``test-output/browser/`` (git-ignored).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import prefect
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from prefect import flow
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.polling import wait_for
from deployflow.spec import ServiceSpec, parse_spec
from deployflow.tracking.ledger import Ledger
from deployments.cli import main as cli_main
from flows.deploy import ReleaseRequest, finish, release
from tests.e2e.team_conftest_helpers import api_client, clean_environ
from tests.integration.prefect.conftest import REPO_ROOT, kill_group, start_in_own_group
from tests.samples import nothing_running_spec

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO_ROOT / "test-output" / "browser"
UI_BASE_PLACEHOLDER = "/PREFECT_UI_SERVE_BASE_REPLACE_PLACEHOLDER"
# The UI draws after its scripts load and its API calls answer: slow on a loaded machine.
UI_TIMEOUT_MS = 60_000

# A service whose dry run needs nothing running: its hooks print an empty world.
FORM_SPEC = nothing_running_spec("formdemo")


@dataclass
class UIServer:
    url: str  # the UI's root
    api_url: str
    runner_log: Path

    def deployment_id(self) -> str | None:
        """The served ``deploy/deploy`` deployment's id, once the runner registered it."""
        response = httpx.get(f"{self.api_url}/deployments/name/deploy/deploy", timeout=5)
        return str(response.json()["id"]) if response.status_code == 200 else None


def prefect_ui_files(into: Path) -> Path:
    """Prefect's own UI build (shipped in the prefect package), ready to be served from "/"."""
    shutil.copytree(prefect.__ui_static_path__, into)
    for path in into.rglob("*"):
        if path.suffix in {".html", ".js", ".css"}:
            text = path.read_text(encoding="utf-8")
            if UI_BASE_PLACEHOLDER in text:
                path.write_text(text.replace(UI_BASE_PLACEHOLDER, ""), encoding="utf-8")
    return into


def ui_host(root: Path, api_url: str) -> ThreadingHTTPServer:
    """Serve the UI files and the ``/ui-settings`` answer that points the UI at ``api_url``.

    What ``prefect server start`` does for its dashboard, without a second Prefect server: the
    session's test server (API only) answers the UI's calls (its CORS policy allows any origin).
    """
    settings = json.dumps({
        "api_url": api_url, "csrf_enabled": False, "auth": None, "flags": [],
        "default_ui": "v1", "available_uis": ["v1"], "v1_base_url": "/", "v2_base_url": None,
    }).encode()  # fmt: skip

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/ui-settings":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(settings)))
                self.end_headers()
                self.wfile.write(settings)
                return
            if not (root / path.lstrip("/")).is_file():
                self.path = "/index.html"  # the UI routes pages itself
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="prefect-ui", daemon=True).start()
    return server


@pytest.fixture(scope="module")
def ui_server(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    """Prefect's UI on the session's Prefect server, and ``deployments.serve`` running its runs.

    The runner registers the deployment while the first test works; only the form's test waits.
    """
    tmp = tmp_path_factory.mktemp("prefect-ui")
    runner_env = {
        **clean_environ(),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp / "runner-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "DEPLOYFLOW_DATA_DIR": str(tmp / "data"),
    }
    runner_log = tmp / "runner.log"
    runner = start_in_own_group([sys.executable, "-m", "deployments.serve"], runner_env, runner_log)
    host = ui_host(prefect_ui_files(tmp / "ui"), prefect_server)
    try:
        yield UIServer(f"http://127.0.0.1:{host.server_address[1]}", prefect_server, runner_log)
    finally:
        host.shutdown()
        host.server_close()
        kill_group(runner)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    """One chromium page for the module: Debian's browser, no download by Playwright."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser: Browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def open_tab(page: Page, name: str) -> None:
    """A tab of the flow run page (list items of the UI's tab bar)."""
    page.locator("li.p-tab", has_text=name).click()


def form_field(page: Page, title: str) -> Any:
    """One property of the run form, found by the title the UI shows above it."""
    label = page.locator(".schema-form-property__label", has_text=title)
    return page.locator(".schema-form-property").filter(has=label)


def rollback_spec(**extra: Any) -> ServiceSpec:
    return parse_spec({
        "service": "shop",
        "target": {"kind": "local-process", "command": ["app"], "state_dir": "/nonexistent"},
        "router": {"kind": "haproxy", "admin_socket": "/nonexistent/sock",
                   "frontend_url": "http://frontend.test"},
        "metrics": {"kind": "prometheus", "url": "http://prometheus.test",
                    "queries": {"error_rate": "{version}", "p95_latency": "{version}",
                                "request_count": "{version}"}},
        "analysis": {"interval": "5ms", "window": "1s", "baseline_window": "1s",
                     "min_requests": 10},
        "strategy": {"kind": "canary", "steps": [5, 100], "observe": "10ms"},
        "smoke": [{"name": "checkout", "path": "/api/checkout"}],
        **extra,
    })  # fmt: skip


@flow(name="deploy")
def deploy_on_fakes(spec: ServiceSpec, backends: Backends, request: ReleaseRequest) -> Any:
    """The deploy flow's steps and final state on in-memory backends (the spec is not read)."""
    return finish(release(spec, backends, request), backends)


def rolled_back_run(api_url: str, tmp: Path) -> UUID:
    """A deploy of a v3 that fails its first stage, run here against ``api_url``."""
    service = FakeService()
    service.run_stable("v1")
    service.behave("v3", error_rate=0.2)
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        notifiers=(service.notifier,),
        ledger=Ledger.for_url(f"sqlite:///{tmp / 'tracking.db'}"),
        http_transport=service.transport,
    )
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        state = deploy_on_fakes(
            rollback_spec(), backends, ReleaseRequest("v3", "staging"), return_state=True
        )
    assert (state.type.value, state.name) == ("FAILED", "Failed"), state
    assert state.state_details.flow_run_id is not None
    return state.state_details.flow_run_id


def test_a_rolled_back_run_shows_its_task_runs_rollback_subflow_and_incident(
    ui_server: UIServer, page: Page, tmp_path: Path
):
    run_id = rolled_back_run(ui_server.api_url, tmp_path)

    page.goto(f"{ui_server.url}/runs/flow-run/{run_id}")
    expect(page.get_by_text("outcome:rolled-back").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    shot(page, "3-rolled-back-run")

    open_tab(page, "Task Runs")
    # Each task run is a link named after it (the issue: "No task runs" for a rolled-back run).
    for task_name in ("record-start", "execute", "complete"):
        link = page.get_by_role("link", name=re.compile(rf"^{task_name}-\w+$"))
        expect(link).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("No task runs")).to_have_count(0)
    shot(page, "4-rolled-back-task-runs")

    open_tab(page, "Subflow Runs")
    expect(page.get_by_role("link", name="rollback v3", exact=True)).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    shot(page, "5-rolled-back-subflow-runs")

    open_tab(page, "Artifacts")
    expect(page.get_by_text("incident-shop", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("Incident: shop v3 rolled back")).to_be_visible()
    shot(page, "6-rolled-back-artifacts")


def test_the_deploy_form_shows_its_fields_and_a_run_started_from_it_completes(
    ui_server: UIServer, page: Page, tmp_path: Path
):
    spec = tmp_path / "formdemo.yaml"
    spec.write_text(FORM_SPEC)
    try:
        deployment_id: str = wait_for(
            ui_server.deployment_id, timeout=180, interval=0.5, what="the served deployment"
        )
    except Exception:
        pytest.fail(f"deployments.serve did not register:\n{ui_server.runner_log.read_text()}")

    page.goto(f"{ui_server.url}/deployments/deployment/{deployment_id}/run")
    strategy = form_field(page, "strategy")
    expect(strategy).to_be_visible(timeout=UI_TIMEOUT_MS)
    # Titles and the docstring's words for each parameter.
    for title, words in [
        ("spec_path", "Path of the service spec YAML file"),
        ("version", "The version to release"),
        ("environment", "Where it goes"),
        ("dry_run", "without starting anything"),
    ]:
        expect(form_field(page, title)).to_contain_text(words)
    expect(strategy.locator(".p-select-button__value")).to_have_text("auto")
    # The select opens from the keyboard (a click only focuses it).
    strategy.locator("button.p-select-button__control").focus()
    page.keyboard.press("Space")
    options = page.locator(".p-select-option")
    expect(options).to_have_count(4)
    assert [t.strip() for t in options.all_inner_texts()] == [
        "auto", "canary", "direct", "blue-green",
    ]  # fmt: skip
    shot(page, "1-deploy-form-strategy")
    page.keyboard.press("Escape")

    # Each input is checked to have taken before the form is sent: on a loaded machine the form
    # re-renders slowly and a click sent too early submits what was there before.
    # The deployment proposes no spec (issue 22): the field starts at None; a person picks str.
    form_field(page, "spec_path").get_by_text("str", exact=True).click()
    spec_input = form_field(page, "spec_path").locator("textarea")
    spec_input.fill(str(spec))
    expect(spec_input).to_have_value(str(spec), timeout=UI_TIMEOUT_MS)
    version_input = form_field(page, "version").locator("textarea")
    version_input.fill("v7")
    expect(version_input).to_have_value("v7", timeout=UI_TIMEOUT_MS)
    # Nor an environment (issue 24): a run without one is refused, so the person names it.
    form_field(page, "environment").get_by_text("str", exact=True).click()
    environment_input = form_field(page, "environment").locator("textarea")
    environment_input.fill("sandbox")
    expect(environment_input).to_have_value("sandbox", timeout=UI_TIMEOUT_MS)
    dry_run = form_field(page, "dry_run").get_by_role("switch")
    dry_run.click()
    expect(dry_run).to_be_checked(timeout=UI_TIMEOUT_MS)
    submit = page.get_by_role("button", name="Submit")
    expect(submit).to_be_enabled(timeout=UI_TIMEOUT_MS)
    # What the UI's calls to the API answered, to say why a submission did not take.
    api_failures: list[str] = []
    page.on(
        "response",
        lambda r: (
            api_failures.append(f"{r.status} {r.request.method} {r.url}")
            if r.url.startswith(ui_server.api_url) and r.status >= 500
            else None
        ),
    )
    page.on(
        "requestfailed",
        lambda r: (
            api_failures.append(f"failed {r.method} {r.url}: {r.failure}")
            if r.url.startswith(ui_server.api_url)
            else None
        ),
    )
    submit.click()

    with api_client(ui_server.api_url) as client:

        def started_run() -> Any:
            # The session's server is shared: this form's run is the one with this spec path.
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            return next((r for r in runs if r.parameters.get("spec_path") == str(spec)), None)

        def run_or_server_error() -> Any:
            # Playwright's sync API hands the page's events to the handlers above only while it
            # is called: a short wait on the page lets them through between two polls.
            page.wait_for_timeout(250)
            return started_run() or ("server error" if api_failures else None)

        # Prefect's server answers 503 ("Service Unavailable", which it documents as retryable)
        # when its SQLite database is busy: a deferred transaction cannot wait for the lock. Its
        # Python client retries those; its UI shows "Something went wrong" and a person sends
        # the form again. Up to three times here: a server that refuses every one fails the test.
        refused: list[str] = []
        for _attempt in range(3):
            run = wait_for(run_or_server_error, timeout=90, interval=0.5, what="the form's run")
            if run != "server error":
                break
            shot(page, "x-form-server-error")
            refused += api_failures
            api_failures.clear()
            if len(refused) < 3:
                submit.click()
        else:
            pytest.fail(f"the server refused the form three times: {refused}")
        assert not isinstance(run, str)
        assert run.parameters["dry_run"] is True
        assert run.parameters["spec_path"] == str(spec)
        assert run.parameters["environment"] == "sandbox"

        def final() -> Any:
            current = client.read_flow_run(run.id)
            return current if current.state and current.state.is_final() else None

        try:
            done = wait_for(final, timeout=180, interval=1, what="the form's run to finish")
        except Exception:
            pytest.fail(f"the run did not finish; runner log:\n{ui_server.runner_log.read_text()}")
    assert done.state.type.value == "COMPLETED", (done.state, ui_server.runner_log.read_text())
    assert done.state.name == "Completed"
    assert "outcome:dry-run" in done.tags

    page.goto(f"{ui_server.url}/runs/flow-run/{run.id}")
    expect(page.get_by_text("outcome:dry-run").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    shot(page, "2-form-run-completed")


def test_a_rolled_back_deploy_is_found_by_the_runs_pages_failed_state_filter(
    ui_server: UIServer, page: Page, tmp_path: Path
):
    run_id = rolled_back_run(ui_server.api_url, tmp_path)
    with api_client(ui_server.api_url) as client:
        name = client.read_flow_run(run_id).name

    page.goto(f"{ui_server.url}/runs")
    states = page.locator(".state-name-select").first
    expect(states).to_be_visible(timeout=UI_TIMEOUT_MS)
    # The select opens from the keyboard (a click only focuses it).
    states.locator("button, input").first.focus()
    page.keyboard.press("Space")
    failed = page.locator(".p-select-option", has_text=re.compile(r"^\s*Failed\s*$")).first
    try:
        expect(failed).to_be_visible(timeout=UI_TIMEOUT_MS)
    except AssertionError:
        shot(page, "x-state-filter")
        raise AssertionError(states.evaluate("e => e.outerHTML")) from None
    failed.click()
    page.keyboard.press("Escape")
    # The filter took: the page asks the API for runs named Failed, and lists this one.
    expect(page).to_have_url(re.compile(r"state=Failed"), timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("link", name=name).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("outcome:rolled-back").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    shot(page, "7-runs-filtered-failed")


def paused_canary_spec() -> ServiceSpec:
    return rollback_spec(
        strategy={"kind": "canary", "steps": [25, {"pause": {"timeout": "5m"}}, 100],
                  "observe": "10ms"}
    )  # fmt: skip


def test_a_gates_form_opens_from_the_deploy_run(ui_server: UIServer, page: Page, tmp_path: Path):
    service = FakeService()
    service.run_stable("v1")
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}"),
        http_transport=service.transport,
    )
    ended: dict[str, Any] = {}

    def run_deploy() -> None:
        with temporary_settings(updates={PREFECT_API_URL: ui_server.api_url}):
            ended["state"] = deploy_on_fakes(
                paused_canary_spec(), backends, ReleaseRequest("v2", "ui-gate"), return_state=True
            )

    deploying = threading.Thread(target=run_deploy, name="paused-deploy", daemon=True)
    deploying.start()
    with api_client(ui_server.api_url) as client:

        def paused_deploy_run() -> Any:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["deploy"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
            return runs[0] if runs else None

        run = wait_for(paused_deploy_run, timeout=120, interval=0.5, what="the paused deploy run")

    # The deploy run itself shows Paused; its Resume button opens the stage's approval form.
    page.goto(f"{ui_server.url}/runs/flow-run/{run.id}")
    expect(page.get_by_text("Paused").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.get_by_role("button", name="Resume").click()
    modal = page.locator(".p-modal")
    expect(modal.get_by_text("Resume Flow Run")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(modal).to_contain_text("Canary v2 paused after stage 1 (25% of traffic).")
    expect(modal).to_contain_text("Stage 1 · 25% canary · promoted")
    expect(modal.get_by_role("switch")).to_be_visible()  # approved
    expect(modal.get_by_role("textbox")).to_be_visible()  # name
    shot(page, "8-gate-form-from-the-deploy-run")
    page.keyboard.press("Escape")

    # Answered from the command line, as a person without the UI would.
    assert cli_main(["approve", str(run.id), "--as", "Alice Example"]) == 0
    deploying.join(timeout=120)
    assert ended["state"].is_completed(), ended["state"].message

    page.goto(f"{ui_server.url}/runs/flow-run/{run.id}")
    open_tab(page, "Artifacts")
    expect(page.get_by_text("deploy-gates", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    shot(page, "9-gate-answers-artifact")

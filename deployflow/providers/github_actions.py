"""A target whose versions are deployed and removed by GitHub Actions workflows.

The seed's "trigger deployment pipeline": ``start(version)`` dispatches the ``start`` workflow
(``workflow_dispatch`` with templated inputs such as the version and environment), finds the run
that dispatch created, follows it to completion, and then waits for the version's health endpoint
at the address the spec gives (``instance``), or, without one, at the address the status source
lists for it. ``stop(version)`` does the same with the ``stop`` workflow. What runs now is asked
of a status source the user owns (a URL answering JSON, or a command), because a workflow run
says what was deployed once, not what still runs.

Finding the run: the dispatch endpoint answers 204 without the run's id. When the workflow
declares a correlation input (``correlation_input``), deployflow sends a fresh id in it and the
run whose title (the workflow's ``run-name``) contains that id is the one; without it, the oldest
``workflow_dispatch`` run of that workflow that did not exist before the dispatch is taken, which
two concurrent dispatches of the same workflow can confuse.

A run that fails, is cancelled or times out is a ``BackendError`` with the run's URL, the failing
job and step, and the job log lines that match ``error_patterns`` (or the log's tail); the job's
plain-text log is used, or, when it cannot be downloaded, its folder of the run's zip archive.
A run still unfinished at the workflow's ``timeout`` is cancelled and is an error too. A run that
succeeds while a line of its jobs' logs matches ``error_patterns`` fails the step as well (a
deploy script that prints ERROR and exits 0 did not deploy cleanly), with the matching lines; so
does one whose logs cannot be read to check (fail safe). A ``start`` failed that way is followed
by the ``stop`` workflow, so a half-deployed version is not left listed as running. Each of these
is a ``FinalBackendError``: the deploy does not retry it (another run would end the same way).

GitHub's answers become clear errors: 401 names where the token came from, 403 says what
permission is missing, 404 names the workflow and repository, 422 quotes GitHub's reason with
the inputs sent. A rate limit (403/429 with ``Retry-After`` or an exhausted quota) is waited out
and retried while the deadline allows. The token is a ``SecretStr``, sent only to the GitHub API
(httpx drops it when a log download redirects to another host), and never logged.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import ssl
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from deployflow.polling import DeadlineExceeded, wait_for
from deployflow.processes import INHERITED_ENV
from deployflow.providers.base import (
    BackendConfigError,
    BackendError,
    BuildContext,
    FinalBackendError,
    Instance,
)
from deployflow.providers.hooks import (
    LOGS_PLACEHOLDERS,
    PLACEHOLDER,
    RUN_PLACEHOLDERS,
    TARGET_PLACEHOLDERS,
    CommandHook,
    Hook,
    HookRunner,
    HookSettings,
    check_placeholders,
    check_template,
    check_version,
    parse_instance,
    parse_instance_list,
)
from deployflow.spec_types import Duration, HttpUrl, StrictModel

GITHUB_API_URL = "https://api.github.com"
GITHUB_BLOCK_TYPE = "github"
TOKEN_ENV = "GITHUB_TOKEN"
BACKEND = "github-actions target"

FAILED_CONCLUSIONS = frozenset({"failure", "cancelled", "timed_out", "startup_failure"})
MAX_FAILING_JOBS_SHOWN = 3
MAX_LOG_LINES_SHOWN = 20
MAX_LOG_LINE_CHARS = 300
MAX_ARCHIVE_MEMBER_BYTES = 5_000_000
# How far the GitHub clock may be behind ours when we ask for runs created after a dispatch.
CLOCK_SKEW = timedelta(minutes=5)
# How long a dispatched run may take to be listed.
RUN_APPEARS_WITHIN = 120.0
# GitHub asks for at least a minute when a secondary rate limit says nothing more precise.
DEFAULT_RATE_LIMIT_WAIT = 60.0

_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_WORKFLOW = re.compile(r"^[A-Za-z0-9_.-]+$")
_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# GitHub prefixes each job log line with an ISO timestamp.
_LOG_TIMESTAMP = re.compile(r"^\ufeff?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z ")


class WorkflowSpec(StrictModel):
    """One workflow run by ``workflow_dispatch``."""

    workflow: str = Field(
        description="The workflow's file name under .github/workflows (e.g. 'deploy.yml') or "
        "its numeric id."
    )
    ref: str | None = Field(
        None, min_length=1, description="Branch or tag to run it on; default: the target's ref."
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="workflow_dispatch inputs, templated with {version}, {environment}, "
        "{service}; the workflow must declare each one.",
    )
    timeout: Duration = Field(
        1800.0,
        description="How long finding and finishing the run may take, e.g. '30m'; an unfinished "
        "run is then cancelled.",
    )

    @field_validator("workflow")
    @classmethod
    def _workflow_name(cls, value: str) -> str:
        if not _WORKFLOW.fullmatch(value):
            raise ValueError("a workflow file name like 'deploy.yml' or a numeric workflow id")
        return value

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 10:
            raise ValueError("GitHub accepts at most 10 workflow_dispatch inputs")
        for name in value:
            if not _INPUT_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a workflow input name")
        for name, template in value.items():
            check_placeholders([template], TARGET_PLACEHOLDERS, name)
        return value


class InstanceAddressSpec(StrictModel):
    """Where a deployed version answers: a URL, or a host and port (templated)."""

    url: str | None = Field(
        None,
        description="e.g. 'https://{version}.shop.internal' ({version}, {environment}, {service}).",
    )
    host: str | None = Field(None, min_length=1, description="e.g. 'shop-{version}.internal'.")
    port: int | None = Field(None, ge=1, le=65535, description="Port, with host.")

    @model_validator(mode="after")
    def _url_or_host_port(self) -> InstanceAddressSpec:
        if (self.url is None) == (self.host is None):
            raise ValueError("give either url, or host and port")
        if self.host is not None and self.port is None:
            raise ValueError("port: required with host")
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("url: must be an http:// or https:// URL")
            if self.port is not None:
                raise ValueError("port: give it inside url")
        check_placeholders([self.url or ""], TARGET_PLACEHOLDERS, "url")
        check_placeholders([self.host or ""], TARGET_PLACEHOLDERS, "host")
        return self


class GitHubActionsTargetSpec(HookSettings):
    """Versions are deployed and removed by GitHub Actions workflows (workflow_dispatch).

    The token comes from a GitHub block saved in Prefect (``block``), or, as the documented
    fallback, from ``GITHUB_TOKEN`` where the flow runs; never from the spec. ``env``,
    ``inherit_env`` and ``working_dir`` apply to the ``status`` and ``logs`` commands.
    """

    kind: Literal["github-actions"] = Field(description="GitHub Actions workflow_dispatch.")
    repository: str = Field(description="owner/name of the repository holding the workflows.")
    block: str | None = Field(
        None,
        min_length=1,
        description="Name of the deployflow GitHub block holding the token (and the API URL); "
        "without it GITHUB_TOKEN is used.",
    )
    base_url: HttpUrl | None = Field(
        None,
        description="GitHub REST API root; default the block's, or https://api.github.com "
        "(https://<host>/api/v3 for GitHub Enterprise Server).",
    )
    ref: str = Field("main", min_length=1, description="Branch or tag the workflows run on.")
    start: WorkflowSpec = Field(description="Deploys {version}.")
    stop: WorkflowSpec = Field(
        description="Removes {version}; it must succeed when the version does not run."
    )
    correlation_input: str | None = Field(
        None,
        description="A workflow input that receives a fresh id per dispatch; put it in the "
        "workflow's run-name so deployflow finds exactly the run it started.",
    )
    instance: InstanceAddressSpec | None = Field(
        None,
        description="Where a deployed version answers; default: where the status source lists it.",
    )
    status_url: HttpUrl | None = Field(
        None,
        description="URL answering the running versions as a JSON list of objects with version "
        "and host/port or url.",
    )
    status: CommandHook | None = Field(
        None, description="Command printing that JSON list instead ({environment}, {service})."
    )
    logs: CommandHook | None = Field(
        None, description="Command printing the last {lines} log lines of {version} (optional)."
    )
    error_patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions for the jobs' log lines: a matching line fails even a "
        "successful run; a failed run's error shows the matching lines (default: the log's tail).",
    )
    poll_interval: Duration = Field(5.0, description="How often the run is polled, e.g. '5s'.")
    health_path: str = Field("/healthz", description="Path that answers 2xx when healthy.")
    start_timeout: Duration = Field(
        120.0, description="How long a deployed version may take to become healthy, e.g. '2m'."
    )

    @field_validator("repository")
    @classmethod
    def _owner_name(cls, value: str) -> str:
        if not _REPOSITORY.fullmatch(value):
            raise ValueError("must be 'owner/name', e.g. 'acme/shop'")
        return value

    @field_validator("correlation_input")
    @classmethod
    def _input_name(cls, value: str | None) -> str | None:
        if value is not None and not _INPUT_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a workflow input name")
        return value

    @field_validator("error_patterns")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"{index}: {pattern!r} is not a regular expression: {exc}"
                ) from None
        return value

    @field_validator("health_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GitHubActionsTargetSpec:
        if (self.status_url is None) == (self.status is None):
            raise ValueError("give exactly one status source: status_url or status (a command)")
        for name in ("start", "stop"):
            workflow: WorkflowSpec = getattr(self, name)
            if self.correlation_input is not None and self.correlation_input in workflow.inputs:
                raise ValueError(
                    f"{name}.inputs: {self.correlation_input!r} is the correlation_input; "
                    "deployflow fills it"
                )
        check_template(self.status, RUN_PLACEHOLDERS, "status")
        check_template(self.logs, LOGS_PLACEHOLDERS, "logs")
        return self


class WorkflowLogError(FinalBackendError):
    """A run that GitHub calls successful logged lines matching ``error_patterns`` (or its logs
    could not be read to check them)."""


@dataclass(frozen=True)
class Workflow:
    """A workflow ready to dispatch: which one, on which ref, its input templates, its deadline."""

    name: str  # what it does for deployflow: "start" or "stop"
    workflow: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 1800.0
    ref: str | None = None

    @classmethod
    def of(cls, name: str, spec: WorkflowSpec) -> Workflow:
        return cls(name, spec.workflow, dict(spec.inputs), spec.timeout, spec.ref)


@dataclass(frozen=True)
class WorkflowRun:
    """A finished run, as GitHub reported it."""

    id: int
    url: str
    status: str
    conclusion: str | None


def _render(template: str, values: Mapping[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _github_message(response: httpx.Response) -> str:
    """GitHub's reason from an error answer: ``message`` plus any ``errors`` details."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if not isinstance(data, dict):
        return str(data)[:200]
    message = str(data.get("message", "")).strip()
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        details = "; ".join(
            str(e.get("message") or e) if isinstance(e, dict) else str(e) for e in errors
        )
        message = f"{message} ({details})" if message else details
    return message[:500] or response.reason_phrase


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object GitHub answered, or a ``BackendError`` saying it answered something else."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BackendError(
            f"{BACKEND}: GitHub answered {what} with something else than a JSON object: "
            f"{response.text[:200]!r}"
        )
    return data


def _next_link(response: httpx.Response) -> str | None:
    """The ``rel="next"`` URL of GitHub's ``Link`` header, if any."""
    url = response.links.get("next", {}).get("url")
    return str(url) if url else None


class GitHubActionsTarget:
    """Deploy and remove versions with GitHub Actions workflows (implements ``Target``).

    Args:
        repository: ``owner/name``.
        token: Token allowed to run the workflows (``actions: write``).
        token_source: Where the token came from, for error messages (never the token).
        start: The workflow that deploys a version.
        stop: The workflow that removes one; it must succeed when the version does not run.
        status_url: URL answering the running versions as a JSON list (or ``status``).
        status: A command printing that list (or ``status_url``).
        instance_address: ``("url", template)`` or ``("host", template, port)``; None takes the
            address the status source lists after the run.
        base_url: REST API root (GitHub Enterprise Server, or a fake in tests).
        ref: Default branch or tag the workflows run on.
        correlation_input: Input that receives a fresh id per dispatch (see the module doc).
        error_patterns: Regexes searched in the jobs' logs: a matching line fails a successful
            run too; a failed run's error shows the lines that match.
        poll_interval: Seconds between polls of a run.
        transport: httpx transport for the GitHub API; None is the network.
        sleep: How to wait out a rate limit (tests record instead of sleeping).

    Example:
        target = GitHubActionsTarget(
            repository="acme/shop",
            token=SecretStr(os.environ["GITHUB_TOKEN"]), token_source="GITHUB_TOKEN",
            start=Workflow("start", "deploy.yml", {"version": "{version}"}),
            stop=Workflow("stop", "undeploy.yml", {"version": "{version}"}),
            status_url="https://shop.internal/deployments",
        )
    """

    def __init__(
        self,
        *,
        repository: str,
        token: SecretStr,
        token_source: str,
        start: Workflow,
        stop: Workflow,
        status_url: str | None = None,
        status: Hook | None = None,
        logs: Hook | None = None,
        instance_address: tuple[str, ...] | tuple[str, str, int] | None = None,
        base_url: str = GITHUB_API_URL,
        ref: str = "main",
        correlation_input: str | None = None,
        error_patterns: Sequence[str] = (),
        poll_interval: float = 5.0,
        health_path: str = "/healthz",
        start_timeout: float = 120.0,
        service: str = "",
        environment: str = "",
        env: Mapping[str, SecretStr | str] | None = None,
        inherit_env: Sequence[str] = INHERITED_ENV,
        working_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        request_timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Configure the target; nothing is requested yet.

        Raises:
            BackendConfigError: No status source, or a command's program cannot run.
        """
        if (status_url is None) == (status is None):
            raise BackendConfigError("target: give exactly one of status_url and status")
        if not token.get_secret_value().strip():
            raise BackendConfigError(f"target: the GitHub token from {token_source} is empty")
        self.repository = repository
        self.token_source = token_source
        self.workflows = {"start": start, "stop": stop}
        self.status_url = status_url
        self.status_hook = status
        self.logs_hook = logs
        self.instance_address = instance_address
        self.base_url = base_url.rstrip("/")
        self.ref = ref
        self.correlation_input = correlation_input
        self.error_patterns = [re.compile(p) for p in error_patterns]
        self.poll_interval = poll_interval
        self.health_path = health_path
        self.start_timeout = start_timeout
        self.values = {"service": service, "environment": environment}
        self.runner = HookRunner(BACKEND, env=env, inherit_env=inherit_env, working_dir=working_dir)
        self.runner.check_programs([h for h in (status, logs) if h is not None])
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {token.get_secret_value()}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "deployflow",
            },
            timeout=request_timeout,
            transport=transport,
            verify=_tls_context(),
        )
        # The service's own endpoints (status, health) get a client without the token.
        self._plain = httpx.Client(timeout=10.0, verify=_tls_context())
        self._urls: dict[tuple[str, str, int], str] = {}

    @classmethod
    def from_spec(cls, spec: GitHubActionsTargetSpec, ctx: BuildContext) -> GitHubActionsTarget:
        """The target a spec's ``kind: github-actions`` section describes.

        Raises:
            BackendConfigError: No token (neither a block nor ``GITHUB_TOKEN``), or the block
                cannot be loaded.
        """
        base_url = spec.base_url
        if spec.block is not None:
            block = ctx.load_block(GITHUB_BLOCK_TYPE, spec.block, "target.block")
            token: SecretStr = block.token
            token_source = f"the GitHub block {spec.block!r}"
            base_url = base_url or block.base_url
        else:
            value = ctx.env.get(TOKEN_ENV, "").strip()
            if not value:
                raise BackendConfigError(
                    "target: the github-actions target has no token: save a GitHub block and "
                    f"name it in 'block', or set {TOKEN_ENV} where the flow runs"
                )
            token, token_source = SecretStr(value), TOKEN_ENV
        address: tuple[str, ...] | tuple[str, str, int] | None = None
        if spec.instance is not None:
            if spec.instance.url is not None:
                address = ("url", spec.instance.url)
            elif spec.instance.host is not None and spec.instance.port is not None:
                address = ("host", spec.instance.host, spec.instance.port)
        return cls(
            repository=spec.repository,
            token=token,
            token_source=token_source,
            start=Workflow.of("start", spec.start),
            stop=Workflow.of("stop", spec.stop),
            status_url=spec.status_url,
            status=Hook.of("status", spec.status) if spec.status else None,
            logs=Hook.of("logs", spec.logs) if spec.logs else None,
            instance_address=address,
            base_url=base_url or GITHUB_API_URL,
            ref=spec.ref,
            correlation_input=spec.correlation_input,
            error_patterns=spec.error_patterns,
            poll_interval=spec.poll_interval,
            health_path=spec.health_path,
            start_timeout=spec.start_timeout,
            service=ctx.service,
            environment=ctx.environment,
            env=spec.env,
            inherit_env=spec.inherit_env,
            working_dir=spec.working_dir,
        )

    def describe(self) -> str:
        start, stop = self.workflows["start"].workflow, self.workflows["stop"].workflow
        return f"github-actions target ({self.repository}: {start} / {stop})"

    def __repr__(self) -> str:
        return f"GitHubActionsTarget(repository={self.repository!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._client.close()
        self._plain.close()

    # ------------------------------------------------------------------------------ Target

    def health_url(self, instance: Instance) -> str:
        """The health endpoint of ``instance`` (under the URL it was reported at, if any)."""
        base = self._urls.get((instance.version, instance.host, instance.port), instance.base_url)
        return f"{base}{self.health_path}"

    def instances(self) -> list[Instance]:
        """The versions the status source lists.

        Raises:
            BackendError: The source cannot be read or does not answer a list of instances.
        """
        what = f"status URL {self.status_url}" if self.status_url else "status command"
        if self.status_url is not None:
            try:
                # Not the API client: the GitHub token must not travel there.
                response = self._plain.get(self.status_url)
                response.raise_for_status()
                data = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise BackendError(f"{BACKEND}: cannot read the {what}: {exc}") from None
        elif self.status_hook is not None:
            data = self.runner.run_json(self.status_hook, self.values)
        else:  # the spec requires one of the two; a hand-built target may lack both
            raise BackendError(f"{BACKEND}: neither a status URL nor a status command is set")
        try:
            listed = parse_instance_list(data, f"the {what}")
        except ValueError as exc:
            raise BackendError(f"{BACKEND}: {exc}") from None
        return [self._remember(instance, url) for instance, url in listed]

    def start(self, version: str) -> Instance:
        """Run the ``start`` workflow for ``version``, then wait until it is healthy.

        A version the status source lists already is returned as it is.

        Raises:
            BackendError: GitHub refused the dispatch, the run failed or did not finish in time
                (the message has the run URL, failing job and log lines), or the version never
                became healthy (it is then stopped with the ``stop`` workflow).
        """
        check_version(version)
        running = next((i for i in self.instances() if i.version == version), None)
        if running is not None:
            return running
        try:
            run = self.run_workflow(self.workflows["start"], version)
        except WorkflowLogError as exc:
            # The run "succeeded": the version may be deployed. Remove it, or the next attempt
            # would find it listed and take it as started.
            try:
                self.stop(version)
            except BackendError as stop_error:
                raise FinalBackendError(
                    f"{exc}\n  removing {version} failed too: {stop_error}"
                ) from exc
            raise FinalBackendError(
                f"{exc}\n  {version} was removed with the stop workflow"
            ) from exc
        instance = self._address(version, run)
        try:
            wait_for(
                lambda: self._plain.get(self.health_url(instance), timeout=2.0).is_success,
                timeout=self.start_timeout,
                interval=min(self.poll_interval, 1.0),
                what=f"{version} healthy at {self.health_url(instance)}",
            )
        except DeadlineExceeded as exc:
            log_tail = self.logs(version, lines=20)
            with contextlib.suppress(BackendError):
                self.stop(version)
            shown = f"; last log lines:\n{log_tail}" if log_tail else ""
            raise BackendError(
                f"{BACKEND}: run {run.url} succeeded but {exc}; it was stopped{shown}"
            ) from exc
        return instance

    def stop(self, version: str) -> None:
        """Run the ``stop`` workflow for ``version`` and wait for it to succeed.

        It is dispatched even when the status source does not list the version, so a lagging
        status never leaves a version running; the workflow must therefore succeed when there is
        nothing to remove.

        Raises:
            BackendError: GitHub refused the dispatch, or the run failed or did not finish.
        """
        check_version(version)
        self.run_workflow(self.workflows["stop"], version)

    def logs(self, version: str, lines: int = 40) -> str:
        """The ``logs`` command's output for ``version``; empty without one or when it fails.

        The deploy run's own log is not the service's log, so it is never returned here.
        """
        if self.logs_hook is None:
            return ""
        try:
            check_version(version)
            result = self.runner.run(
                self.logs_hook, {**self.values, "version": version, "lines": str(int(lines))}
            )
        except (BackendError, ValueError):
            return ""
        return "\n".join(self.runner.mask(result.stdout).splitlines()[-lines:])

    # ---------------------------------------------------------------------------- workflow runs

    def run_workflow(self, workflow: Workflow, version: str) -> WorkflowRun:
        """Dispatch ``workflow`` for ``version``, find its run and follow it to success.

        Raises:
            BackendError: See ``start``.
        """
        deadline = time.monotonic() + workflow.timeout
        values = {**self.values, "version": version}
        inputs = {name: _render(value, values) for name, value in workflow.inputs.items()}
        correlation = None
        known: set[int] = set()
        if self.correlation_input is not None:
            correlation = f"deployflow-{uuid.uuid4().hex[:16]}"
            inputs[self.correlation_input] = correlation
        dispatched_at = datetime.now(UTC)
        if correlation is None:
            known = {run["id"] for run in self._dispatch_runs(workflow, dispatched_at, deadline)}
        ref = workflow.ref or self.ref
        what = f"workflow {workflow.workflow!r} of {self.repository}"
        response = self._request(
            "POST",
            f"/repos/{self.repository}/actions/workflows/{workflow.workflow}/dispatches",
            deadline=deadline,
            what=what,
            json={"ref": ref, "inputs": inputs},
        )
        if response.status_code == 422:
            sent = ", ".join(sorted(inputs)) or "none"
            raise BackendError(
                f"{BACKEND}: GitHub refused to dispatch {what} on ref {ref!r} (422): "
                f"{_github_message(response)}; inputs sent: {sent}"
            )
        if response.status_code >= 500:
            raise BackendError(
                f"{BACKEND}: GitHub answered HTTP {response.status_code} for {what} "
                f"({_github_message(response)}); the dispatch may still have started a run: "
                f"look at the workflow's runs before retrying"
            )
        self._raise_for_status(response, what)
        run = self._find_run(workflow, dispatched_at, correlation, known, deadline)
        return self._follow(workflow, run, version, deadline)

    def _dispatch_runs(
        self, workflow: Workflow, since: datetime, deadline: float
    ) -> list[dict[str, Any]]:
        """The workflow's ``workflow_dispatch`` runs created since ``since`` (minus clock skew),
        every page."""
        created = (since - CLOCK_SKEW).strftime("%Y-%m-%dT%H:%M:%SZ")
        what = f"runs of workflow {workflow.workflow!r} of {self.repository}"
        url: str | None = f"/repos/{self.repository}/actions/workflows/{workflow.workflow}/runs"
        params: dict[str, str] | None = {
            "event": "workflow_dispatch",
            "created": f">={created}",
            "per_page": "100",
        }
        runs: list[dict[str, Any]] = []
        while url is not None:
            response = self._request("GET", url, deadline=deadline, what=what, params=params)
            self._raise_for_status(response, what)
            page = _json_object(response, what).get("workflow_runs", [])
            runs.extend(r for r in page if isinstance(r, dict) and isinstance(r.get("id"), int))
            url, params = _next_link(response), None  # the next link carries the query
        return runs

    def _find_run(
        self,
        workflow: Workflow,
        since: datetime,
        correlation: str | None,
        known: set[int],
        deadline: float,
    ) -> dict[str, Any]:
        # A dispatched run is listed within seconds (queued if no runner is free); waiting the
        # whole workflow timeout for one that never shows up would only delay the error.
        find_deadline = min(deadline, time.monotonic() + RUN_APPEARS_WITHIN)
        while True:
            runs = self._dispatch_runs(workflow, since, deadline)
            if correlation is not None:
                mine = [r for r in runs if correlation in str(r.get("display_title", ""))]
            else:
                mine = [r for r in runs if r["id"] not in known]
            if mine:
                return min(mine, key=lambda r: int(r["id"]))
            if not self._pause(find_deadline):
                hint = (
                    f" whose title contains {correlation!r} (put ${{{{ inputs."
                    f"{self.correlation_input} }}}} in the workflow's run-name)"
                    if correlation
                    else ""
                )
                raise BackendError(
                    f"{BACKEND}: workflow {workflow.workflow!r} of {self.repository} was "
                    f"dispatched but no run{hint} appeared within "
                    f"{min(workflow.timeout, RUN_APPEARS_WITHIN):g}s"
                )

    def _follow(
        self, workflow: Workflow, run: dict[str, Any], version: str, deadline: float
    ) -> WorkflowRun:
        run_id = int(run["id"])
        what = f"run {run_id} of workflow {workflow.workflow!r}"
        while run.get("status") != "completed":
            if not self._pause(deadline):
                url = run.get("html_url", run_id)
                cancelled = self._cancel(run_id)
                raise FinalBackendError(
                    f"{BACKEND}: {workflow.name} of {version}: run {url} did not complete within "
                    f"{workflow.timeout:g}s (status {run.get('status')}); {cancelled}"
                )
            response = self._request(
                "GET", f"/repos/{self.repository}/actions/runs/{run_id}", deadline=deadline,
                what=what,
            )  # fmt: skip
            self._raise_for_status(response, what)
            run = _json_object(response, what)
        finished = WorkflowRun(
            run_id, str(run.get("html_url", run_id)), "completed", run.get("conclusion")
        )
        if finished.conclusion != "success":
            raise FinalBackendError(self._failure_report(workflow, finished, version, deadline))
        if self.error_patterns:
            problem = self._errors_logged(workflow, finished, version, deadline)
            if problem is not None:
                raise WorkflowLogError(problem)
        return finished

    def _errors_logged(
        self, workflow: Workflow, run: WorkflowRun, version: str, deadline: float
    ) -> str | None:
        """Why a successful run fails the step anyway: its jobs' log lines that match
        ``error_patterns``, or logs that cannot be read to check them; None when clean."""
        head = (
            f"{BACKEND}: {workflow.name} of {version}: workflow {workflow.workflow!r} run "
            f"{run.url} succeeded"
        )
        deadline = max(deadline, time.monotonic() + 30.0)
        try:
            jobs = self._jobs(run.id, deadline)
        except BackendError as exc:
            return f"{head}, but its jobs cannot be read to check error_patterns: {exc}"
        lines: list[str] = []
        for job in jobs:
            if job.get("conclusion") == "skipped":
                continue  # an `if:` that did not hold: the job has no log
            try:
                log = self._job_log_lines(run.id, job, deadline)
            except BackendError as exc:
                return (
                    f"{head}, but the log of job {job.get('name')!r} cannot be read to check "
                    f"error_patterns: {exc}"
                )
            matching = self._matching(log)
            if matching:
                lines.append(f"  job {job.get('name')!r}: {job.get('html_url', job.get('id'))}")
                lines.extend(f"    {line}" for line in self._shown_matches(matching))
        if not lines:
            return None
        return "\n".join([f"{head}, but its log matches error_patterns:", *lines])

    def _cancel(self, run_id: int) -> str:
        try:
            response = self._client.post(f"/repos/{self.repository}/actions/runs/{run_id}/cancel")
        except httpx.HTTPError as exc:
            return f"cancelling it failed: {exc}"
        if response.status_code == 202:
            return "it was cancelled"
        return f"cancelling it failed (HTTP {response.status_code}: {_github_message(response)})"

    def _failure_report(
        self, workflow: Workflow, run: WorkflowRun, version: str, deadline: float
    ) -> str:
        lines = [
            f"{BACKEND}: {workflow.name} of {version}: workflow {workflow.workflow!r} run "
            f"{run.url} ended with conclusion {run.conclusion}"
        ]
        # The report must come out even past the deadline: a little extra time for the logs.
        deadline = max(deadline, time.monotonic() + 30.0)
        try:
            jobs = self._jobs(run.id, deadline)
        except BackendError as exc:
            lines.append(f"  (jobs unavailable: {exc})")
            return "\n".join(lines)
        failing = [j for j in jobs if j.get("conclusion") in FAILED_CONCLUSIONS]
        for job in failing[:MAX_FAILING_JOBS_SHOWN]:
            steps = [
                s.get("name")
                for s in job.get("steps") or []
                if isinstance(s, dict) and s.get("conclusion") in FAILED_CONCLUSIONS
            ]
            step = f", step {steps[0]!r}" if steps else ""
            lines.append(
                f"  failing job {job.get('name')!r} ({job.get('conclusion')}{step}): "
                f"{job.get('html_url', job.get('id'))}"
            )
            lines.extend(f"    {line}" for line in self._log_evidence(run.id, job, deadline))
        if len(failing) > MAX_FAILING_JOBS_SHOWN:
            lines.append(f"  ... and {len(failing) - MAX_FAILING_JOBS_SHOWN} more failing jobs")
        return "\n".join(lines)

    def _jobs(self, run_id: int, deadline: float) -> list[dict[str, Any]]:
        what = f"jobs of run {run_id}"
        url: str | None = f"/repos/{self.repository}/actions/runs/{run_id}/jobs"
        params: dict[str, str] | None = {"filter": "latest", "per_page": "100"}
        jobs: list[dict[str, Any]] = []
        while url is not None:
            response = self._request("GET", url, deadline=deadline, what=what, params=params)
            self._raise_for_status(response, what)
            page = _json_object(response, what).get("jobs", [])
            jobs.extend(j for j in page if isinstance(j, dict) and isinstance(j.get("id"), int))
            url, params = _next_link(response), None
        return jobs

    def _log_evidence(self, run_id: int, job: Mapping[str, Any], deadline: float) -> list[str]:
        """The job log's lines that match an error pattern, or its tail when none does."""
        try:
            lines = self._job_log_lines(run_id, job, deadline)
        except BackendError as exc:
            return [f"(log unavailable: {exc})"]
        matching = self._matching(lines)
        if matching:
            return self._shown_matches(matching)
        label = "no line matches error_patterns; log tail:" if self.error_patterns else ""
        return [label or "log tail:", *(_clip(line) for line in lines[-10:])]

    def _matching(self, lines: Sequence[str]) -> list[str]:
        return [line for line in lines if any(p.search(line) for p in self.error_patterns)]

    @staticmethod
    def _shown_matches(matching: Sequence[str]) -> list[str]:
        label = "matching log lines:"
        if len(matching) > MAX_LOG_LINES_SHOWN:
            label = f"matching log lines (first {MAX_LOG_LINES_SHOWN} of {len(matching)}):"
        return [label, *(_clip(line) for line in matching[:MAX_LOG_LINES_SHOWN])]

    def _job_log_lines(self, run_id: int, job: Mapping[str, Any], deadline: float) -> list[str]:
        """A job's non-blank log lines without GitHub's timestamps: its own log, or its folder of
        the run's archive when that cannot be downloaded.

        Raises:
            BackendError: Neither can be read (the message has both reasons).
        """
        try:
            text = self._job_log(int(job["id"]), deadline)
        except BackendError as job_error:
            try:
                text = self._job_log_from_run_archive(run_id, str(job.get("name", "")), deadline)
            except BackendError as exc:
                raise BackendError(f"{job_error}; {exc}") from None
        lines = [_LOG_TIMESTAMP.sub("", line) for line in text.splitlines()]
        return [line for line in lines if line.strip()]

    def _job_log(self, job_id: int, deadline: float) -> str:
        """A job's plain-text log. GitHub answers 302 to a short-lived download URL on another
        host; httpx does not send the Authorization header across origins."""
        what = f"log of job {job_id}"
        response = self._request(
            "GET", f"/repos/{self.repository}/actions/jobs/{job_id}/logs",
            deadline=deadline, what=what, follow_redirects=True,
        )  # fmt: skip
        self._raise_for_status(response, what)
        return response.text

    def _job_log_from_run_archive(self, run_id: int, job_name: str, deadline: float) -> str:
        """A job's log out of the run's log archive (a zip, one folder of step logs per job),
        for when the job's own log cannot be downloaded."""
        what = f"log archive of run {run_id}"
        response = self._request(
            "GET", f"/repos/{self.repository}/actions/runs/{run_id}/logs",
            deadline=deadline, what=what, follow_redirects=True,
        )  # fmt: skip
        self._raise_for_status(response, what)
        try:
            with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                names = sorted(
                    (n for n in archive.namelist() if n.startswith(f"{job_name}/")),
                    key=_step_order,
                )
                if not names:
                    raise BackendError(f"{what} has no folder for job {job_name!r}")
                return "\n".join(
                    archive.read(n)[:MAX_ARCHIVE_MEMBER_BYTES].decode("utf-8", "replace")
                    for n in names
                )
        except zipfile.BadZipFile as exc:
            raise BackendError(f"{what} is not a zip archive: {exc}") from None

    # ------------------------------------------------------------------------------- HTTP

    def _pause(self, deadline: float) -> bool:
        """Wait one poll interval; False when the deadline has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(self.poll_interval, left))
        return True

    def _request(
        self,
        method: str,
        url: str,
        *,
        deadline: float,
        what: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """One API call; rate limits (and server errors of reads) are waited out while the
        deadline allows.

        Raises:
            BackendError: GitHub cannot be reached, or keeps refusing past the deadline.
        """
        while True:
            try:
                response = self._client.request(
                    method, url, json=json, params=params, follow_redirects=follow_redirects
                )
            except httpx.HTTPError as exc:
                raise BackendError(
                    f"{BACKEND}: cannot reach the GitHub API at {self.base_url} ({what}): {exc}"
                ) from None
            wait = _rate_limit_wait(response)
            if wait is None and method == "GET" and response.status_code in (500, 502, 503, 504):
                # Only reads: a dispatch GitHub failed to answer may still have started a run.
                wait = self.poll_interval
            if wait is None:
                return response
            if time.monotonic() + wait > deadline:
                kind = "rate limited" if response.status_code in (403, 429) else "failing"
                raise BackendError(
                    f"{BACKEND}: GitHub is {kind} (HTTP {response.status_code}, "
                    f"{_github_message(response)}) and asks to wait {wait:g}s, past the deadline "
                    f"of {what}"
                )
            self._sleep(wait)

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 400:
            return
        message = _github_message(response)
        if status == 401:
            raise BackendError(
                f"{BACKEND}: GitHub rejected the token from {self.token_source} (401: {message}); "
                "check that it is valid and not expired"
            )
        if status == 403:
            raise BackendError(
                f"{BACKEND}: the token from {self.token_source} may not access {what} (403: "
                f"{message}); it needs the 'actions: write' permission on {self.repository}"
            )
        if status == 404:
            raise BackendError(
                f"{BACKEND}: {what} not found (404): check the repository and workflow file name "
                f"(and that the token from {self.token_source} can see the repository)"
            )
        raise BackendError(f"{BACKEND}: GitHub answered HTTP {status} for {what}: {message}")

    # ----------------------------------------------------------------------------- addresses

    def _remember(self, instance: Instance, url: str) -> Instance:
        self._urls[(instance.version, instance.host, instance.port)] = url
        return instance

    def _address(self, version: str, run: WorkflowRun) -> Instance:
        values = {**self.values, "version": version}
        if self.instance_address is None:
            listed = next((i for i in self.instances() if i.version == version), None)
            if listed is None:
                raise BackendError(
                    f"{BACKEND}: run {run.url} succeeded but the status source does not list "
                    f"{version}, and the spec gives no instance address"
                )
            return listed
        if self.instance_address[0] == "url":
            data: dict[str, Any] = {"url": _render(str(self.instance_address[1]), values)}
        else:
            _, host, port = self.instance_address
            data = {"host": _render(str(host), values), "port": port}
        try:
            instance, url = parse_instance(data, version, "instance")
        except ValueError as exc:
            raise BackendError(f"{BACKEND}: {exc}") from None
        return self._remember(instance, url)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One CA bundle load per process: loading it takes a tenth of a second each time."""
    return httpx.create_ssl_context()


def _rate_limit_wait(response: httpx.Response) -> float | None:
    """Seconds GitHub asks us to wait, when ``response`` is a rate limit; else None."""
    if response.status_code not in (403, 429):
        return None
    retry_after = response.headers.get("Retry-After")
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(retry_after))
    if response.headers.get("X-RateLimit-Remaining") == "0":
        with contextlib.suppress(ValueError):
            # At least a second: our clock may run ahead of GitHub's reset time.
            return max(1.0, float(response.headers["X-RateLimit-Reset"]) - time.time())
    if response.status_code == 429 or "secondary rate limit" in response.text.lower():
        return DEFAULT_RATE_LIMIT_WAIT
    return None


def _step_order(name: str) -> tuple[int, str]:
    """Step logs are named ``<job>/<step number>_<step name>.txt``: order them by number."""
    number, _, _ = name.partition("/")[2].partition("_")
    return (int(number) if number.isdigit() else 0, name)


def _clip(line: str) -> str:
    return line if len(line) <= MAX_LOG_LINE_CHARS else line[: MAX_LOG_LINE_CHARS - 3] + "..."

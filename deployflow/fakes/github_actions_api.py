"""A local fake of the GitHub Actions REST endpoints the github-actions target uses.

It answers as GitHub documents them:

- ``POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches``: 204 and a new run;
  422 for an unknown ref, an input the workflow does not declare, or a required one missing;
- ``GET /repos/{owner}/{repo}/actions/workflows/{workflow}/runs``: newest first, filtered by
  ``event`` and ``created=>=...``, paginated with ``Link`` headers;
- ``GET /repos/{owner}/{repo}/actions/runs/{id}``: the run, whose status moves from ``queued``
  through ``in_progress`` to ``completed`` over successive polls, as scripted;
- ``GET /repos/{owner}/{repo}/actions/runs/{id}/jobs`` and ``POST .../runs/{id}/cancel`` (202);
- ``GET /repos/{owner}/{repo}/actions/jobs/{id}/logs``: a 302 to a plain-text download;
- ``GET /repos/{owner}/{repo}/actions/runs/{id}/logs``: a 302 to a zip of the run's logs, one
  folder per job holding ``<n>_<step>.txt`` files;
- 401 for a wrong token, 404 for an unknown repository or workflow, and injected answers (a
  secondary rate limit with ``Retry-After``, for example).

Each dispatch runs a ``ScriptedRun`` (queued per workflow by the test, or the workflow's default);
a successful run calls the workflow's ``on_success`` with its inputs, which is how a test's fake
deployment learns that a version was deployed. ``FakeDeployedService`` is that deployment: one
loopback server that answers ``/v/{version}/healthz`` for the versions deployed and lists them at
``/versions`` as the target's status source.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from deployflow.fakes.github_api import FakeAnswer
from deployflow.fakes.loopback import LoopbackServer

_REPO = r"/repos/(?P<repo>[^/]+/[^/]+)/actions"
_DISPATCH = re.compile(_REPO + r"/workflows/(?P<workflow>[^/]+)/dispatches$")
_RUNS = re.compile(_REPO + r"/workflows/(?P<workflow>[^/]+)/runs$")
_RUN = re.compile(_REPO + r"/runs/(?P<run>\d+)$")
_JOBS = re.compile(_REPO + r"/runs/(?P<run>\d+)/jobs$")
_CANCEL = re.compile(_REPO + r"/runs/(?P<run>\d+)/cancel$")
_JOB_LOGS = re.compile(_REPO + r"/jobs/(?P<job>\d+)/logs$")
_RUN_LOGS = re.compile(_REPO + r"/runs/(?P<run>\d+)/logs$")
_DOWNLOAD = re.compile(r"^/_downloads/job-logs/(?P<job>\d+)\.txt$")
_ARCHIVE = re.compile(r"^/_downloads/run-logs/(?P<run>\d+)\.zip$")
_RUN_NAME_INPUT = re.compile(r"\$\{\{\s*inputs\.([A-Za-z0-9_-]+)\s*\}\}")

Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class ScriptedRun:
    """How one dispatched run behaves.

    Attributes:
        conclusion: ``success``, ``failure``, ``cancelled`` or ``timed_out``.
        queued_polls: Polls of the run answering ``queued`` before it starts.
        running_polls: Polls answering ``in_progress`` before it completes.
        never_completes: Stay ``in_progress`` until cancelled.
        job: Name of its one job.
        failed_step: Name of the step that fails (when the run does not succeed).
        log: The job's log text; GitHub prefixes each line with a timestamp, so does the fake.
        others_dispatched_after: Runs of other people dispatched right after this one (they make
            it older than the first page of the runs list).
        job_log_gone: The job's own log answers 410 Gone (expired); only the run's archive has
            it.
    """

    conclusion: str = "success"
    queued_polls: int = 1
    running_polls: int = 1
    never_completes: bool = False
    job: str = "deploy"
    failed_step: str = "Deploy"
    log: str = "Deploying\nDone"
    others_dispatched_after: int = 0
    job_log_gone: bool = False


@dataclass
class FakeWorkflow:
    """A workflow file with ``on: workflow_dispatch``."""

    repo: str
    file: str
    id: int
    name: str
    inputs: dict[str, bool]  # input name -> required
    run_name: str | None
    refs: set[str]
    default: ScriptedRun
    on_success: Callable[[dict[str, str]], None] | None
    scripts: list[ScriptedRun] = field(default_factory=list)


@dataclass
class _Run:
    data: dict[str, Any]
    script: ScriptedRun
    workflow: FakeWorkflow
    inputs: dict[str, str]
    polls: int = 0


class FakeGitHubActions:
    """In-memory GitHub Actions answering the github-actions target's endpoints.

    Args:
        token: When set, requests must carry ``Authorization: Bearer <token>``.
        path_prefix: API root path, e.g. ``/api/v3`` to act like GitHub Enterprise Server.
        per_page_max: Largest page returned (100 on GitHub; lower it to test paging).
    """

    def __init__(
        self, *, token: str | None = None, path_prefix: str = "", per_page_max: int = 100
    ) -> None:
        self.token = token
        self.path_prefix = path_prefix.rstrip("/")
        self.per_page_max = per_page_max
        self.requests: list[str] = []  # "METHOD path?query", in arrival order
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.runs: list[_Run] = []
        self._workflows: dict[tuple[str, str], FakeWorkflow] = {}
        self._failures: list[FakeAnswer] = []
        self._lock = threading.RLock()
        self._loop: LoopbackServer | None = None
        self._ids = 1000

    # ----------------------------------------------------------------------------- data setup

    def add_workflow(
        self,
        repo: str,
        file: str,
        *,
        inputs: dict[str, bool] | None = None,
        run_name: str | None = None,
        refs: tuple[str, ...] = ("main",),
        default: ScriptedRun | None = None,
        on_success: Callable[[dict[str, str]], None] | None = None,
    ) -> FakeWorkflow:
        """Declare a dispatchable workflow; ``run_name`` may use ``${{ inputs.x }}``."""
        self._ids += 1
        workflow = FakeWorkflow(
            repo=repo,
            file=file,
            id=self._ids,
            name=file.rsplit(".", 1)[0].capitalize(),
            inputs=dict(inputs or {}),
            run_name=run_name,
            refs=set(refs),
            default=default or ScriptedRun(),
            on_success=on_success,
        )
        self._workflows[(repo, file)] = workflow
        self._workflows[(repo, str(workflow.id))] = workflow
        return workflow

    def script(self, repo: str, file: str, *runs: ScriptedRun) -> None:
        """The next dispatches of ``file`` behave like ``runs``, in order (then the default)."""
        with self._lock:
            self._workflows[(repo, file)].scripts.extend(runs)

    def fail_next(self, answer: FakeAnswer, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``answer`` instead."""
        with self._lock:
            self._failures.extend([answer] * times)

    @staticmethod
    def secondary_rate_limit(retry_after: int = 1) -> FakeAnswer:
        """GitHub's secondary rate limit answer."""
        return FakeAnswer(
            403,
            {
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
                "before you try again.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            },
            {"Retry-After": str(retry_after)},
        )

    # -------------------------------------------------------------------------------- answering

    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """Status, headers and body for one request; the routing both front ends share."""
        parts = urlsplit(url)
        lowered = {name.lower(): value for name, value in headers.items()}
        with self._lock:
            self.requests.append(
                f"{method} {parts.path}" + (f"?{parts.query}" if parts.query else "")
            )
            self.authorizations.append(lowered.get("authorization"))
            canned = self._failures.pop(0) if self._failures else None
            if canned is not None:
                return _json(canned.status, canned.body, canned.headers)
            if match := _DOWNLOAD.match(parts.path):
                # A signed download URL: no token needed, like GitHub's blob storage.
                return self._download(int(match["job"]))
            if match := _ARCHIVE.match(parts.path):
                return self._archive(int(match["run"]))
            if self.token is not None and lowered.get("authorization") not in (
                f"Bearer {self.token}",
                f"token {self.token}",
            ):
                return _json(401, {"message": "Bad credentials"})
            if not parts.path.startswith(self.path_prefix):
                return _not_found()
            path = parts.path[len(self.path_prefix) :]
            query = parse_qs(parts.query)
            if method == "POST" and (match := _DISPATCH.match(path)):
                return self._dispatch(match["repo"], match["workflow"], body)
            if method == "POST" and (match := _CANCEL.match(path)):
                return self._cancel(int(match["run"]))
            if method != "GET":
                return _not_found()
            if match := _RUNS.match(path):
                return self._list_runs(parts.scheme, parts.netloc, parts.path, match, query)
            if match := _RUN.match(path):
                return self._get_run(int(match["run"]))
            if match := _JOBS.match(path):
                run = self._run(int(match["run"]))
                if run is None:
                    return _not_found()
                jobs = [run.data["_job"]]
                return _json(200, {"total_count": len(jobs), "jobs": jobs})
            if match := _RUN_LOGS.match(path):
                if self._run(int(match["run"])) is None:
                    return _not_found()
                netloc = parts.netloc.replace("127.0.0.1", "localhost")
                location = f"{parts.scheme}://{netloc}/_downloads/run-logs/{match['run']}.zip"
                return 302, {"Location": location, "Content-Length": "0"}, b""
            if match := _JOB_LOGS.match(path):
                job_id = int(match["job"])
                run = next((r for r in self.runs if r.data["_job"]["id"] == job_id), None)
                if run is None:
                    return _not_found()
                if run.script.job_log_gone:
                    return _json(410, {"message": "Gone"})
                # GitHub redirects to blob storage on another host; "localhost" is another
                # origin than "127.0.0.1" for the client, so it must not send its token there.
                netloc = parts.netloc.replace("127.0.0.1", "localhost")
                location = f"{parts.scheme}://{netloc}/_downloads/job-logs/{job_id}.txt"
                return 302, {"Location": location, "Content-Length": "0"}, b""
            return _not_found()

    def _workflow(self, repo: str, workflow: str) -> FakeWorkflow | None:
        return self._workflows.get((repo, workflow))

    def _run(self, run_id: int) -> _Run | None:
        return next((r for r in self.runs if r.data["id"] == run_id), None)

    def _dispatch(self, repo: str, file: str, body: bytes) -> Answer:
        workflow = self._workflow(repo, file)
        if workflow is None:
            return _not_found()
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _json(400, {"message": "Problems parsing JSON"})
        ref = request.get("ref")
        if not ref:
            return _invalid('Invalid request.\n\n"ref" wasn\'t supplied.')
        if ref not in workflow.refs:
            return _invalid(f"No ref found for: {ref}")
        inputs = request.get("inputs") or {}
        unexpected = sorted(set(inputs) - set(workflow.inputs))
        if unexpected:
            return _invalid(f"Unexpected inputs provided: {json.dumps(unexpected)}")
        for name, required in workflow.inputs.items():
            if required and name not in inputs:
                return _invalid(f"Required input '{name}' not provided")
        script = workflow.scripts.pop(0) if workflow.scripts else workflow.default
        self._new_run(workflow, ref, {k: str(v) for k, v in inputs.items()}, script)
        for index in range(script.others_dispatched_after):
            other = ScriptedRun(never_completes=True)
            self._new_run(workflow, ref, {"by": f"someone-else-{index}"}, other)
        return 204, {}, b""

    def _new_run(
        self, workflow: FakeWorkflow, ref: str, inputs: dict[str, str], script: ScriptedRun
    ) -> None:
        self._ids += 2
        run_id, job_id = self._ids - 1, self._ids
        title = workflow.name
        if workflow.run_name is not None:
            title = _RUN_NAME_INPUT.sub(lambda m: inputs.get(m.group(1), ""), workflow.run_name)
        html = f"https://github.example/{workflow.repo}/actions/runs/{run_id}"
        data = {
            "id": run_id,
            "name": workflow.name,
            "display_title": title,
            "run_number": len(self.runs) + 1,
            "event": "workflow_dispatch",
            "status": "queued",
            "conclusion": None,
            "workflow_id": workflow.id,
            "head_branch": ref,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "html_url": html,
            "_job": {
                "id": job_id,
                "run_id": run_id,
                "name": script.job,
                "status": "queued",
                "conclusion": None,
                "html_url": f"{html}/job/{job_id}",
                "steps": [],
            },
        }
        self.runs.append(_Run(data=data, script=script, workflow=workflow, inputs=inputs))

    def _list_runs(
        self,
        scheme: str,
        netloc: str,
        full_path: str,
        match: re.Match[str],
        query: dict[str, list[str]],
    ) -> Answer:
        workflow = self._workflow(match["repo"], match["workflow"])
        if workflow is None:
            return _not_found()
        runs = [r.data for r in self.runs if r.workflow is workflow]
        if "event" in query:
            runs = [r for r in runs if r["event"] == query["event"][0]]
        if "created" in query:
            created = query["created"][0]
            if not created.startswith(">="):
                return _invalid(f"unsupported created filter in this fake: {created}")
            runs = [r for r in runs if r["created_at"] >= created[2:]]
        runs.sort(key=lambda r: r["id"], reverse=True)
        per_page = min(int(query.get("per_page", ["30"])[0]), self.per_page_max)
        page = int(query.get("page", ["1"])[0])
        last = max(1, -(-len(runs) // per_page))
        headers: dict[str, str] = {}
        if page < last:
            kept = {k: v[0] for k, v in query.items() if k not in ("page", "per_page")}
            links = []
            for rel, target in (("next", page + 1), ("last", last)):
                text = urlencode({**kept, "per_page": per_page, "page": target})
                links.append(f'<{scheme}://{netloc}{full_path}?{text}>; rel="{rel}"')
            headers["Link"] = ", ".join(links)
        chunk = [_public(r) for r in runs[(page - 1) * per_page : page * per_page]]
        return _json(200, {"total_count": len(runs), "workflow_runs": chunk}, headers)

    def _get_run(self, run_id: int) -> Answer:
        run = self._run(run_id)
        if run is None:
            return _not_found()
        self._advance(run)
        return _json(200, _public(run.data))

    def _advance(self, run: _Run) -> None:
        """One poll's worth of progress."""
        data, script, job = run.data, run.script, run.data["_job"]
        if data["status"] == "completed":
            return
        run.polls += 1
        if run.polls <= script.queued_polls:
            return
        data["status"] = job["status"] = "in_progress"
        job["steps"] = [{"name": "Set up job", "number": 1, "status": "completed",
                         "conclusion": "success"}]  # fmt: skip
        if script.never_completes or run.polls <= script.queued_polls + script.running_polls:
            return
        self._complete(run, script.conclusion)

    def _complete(self, run: _Run, conclusion: str) -> None:
        data, job = run.data, run.data["_job"]
        data["status"] = job["status"] = "completed"
        data["conclusion"] = job["conclusion"] = conclusion
        step_conclusion = "success" if conclusion == "success" else conclusion
        job["steps"] = [
            {"name": "Set up job", "number": 1, "status": "completed", "conclusion": "success"},
            {
                "name": run.script.failed_step if conclusion != "success" else "Deploy",
                "number": 2,
                "status": "completed",
                "conclusion": step_conclusion,
            },
        ]
        if conclusion == "success" and run.workflow.on_success is not None:
            run.workflow.on_success(dict(run.inputs))

    def _cancel(self, run_id: int) -> Answer:
        run = self._run(run_id)
        if run is None:
            return _not_found()
        if run.data["status"] == "completed":
            return _json(409, {"message": "Cannot cancel a workflow run that is completed."})
        self._complete(run, "cancelled")
        return _json(202, {})

    def _download(self, job_id: int) -> Answer:
        run = next((r for r in self.runs if r.data["_job"]["id"] == job_id), None)
        if run is None:
            return _not_found()
        stamp = run.data["created_at"].replace("Z", ".0000000Z")
        text = "".join(f"{stamp} {line}\n" for line in run.script.log.splitlines())
        return 200, {"Content-Type": "text/plain"}, text.encode()

    def _archive(self, run_id: int) -> Answer:
        run = self._run(run_id)
        if run is None:
            return _not_found()
        stamp = run.data["created_at"].replace("Z", ".0000000Z")
        job = run.data["_job"]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for step in job["steps"]:
                text = run.script.log if step["number"] > 1 else "Current runner version"
                body = "".join(f"{stamp} {line}\n" for line in text.splitlines())
                archive.writestr(f"{job['name']}/{step['number']}_{step['name']}.txt", body)
        return 200, {"Content-Type": "application/zip"}, buffer.getvalue()

    # ------------------------------------------------------------------------------ front ends

    def transport(self) -> httpx.MockTransport:
        """An in-process transport answering like the server would."""

        def handle(request: httpx.Request) -> httpx.Response:
            status, headers, body = self.answer(
                request.method, str(request.url), dict(request.headers), request.read()
            )
            return httpx.Response(status, headers=headers, content=body)

        return httpx.MockTransport(handle)

    @property
    def base_url(self) -> str:
        """API root of the running server (including the Enterprise prefix, if any)."""
        if self._loop is None:
            raise RuntimeError("FakeGitHubActions is not serving; use it as a context manager")
        return f"{self._loop.base_url}{self.path_prefix}"

    def __enter__(self) -> FakeGitHubActions:
        self._loop = LoopbackServer.for_handler(
            _handler(self.answer), name="fake-github-actions"
        ).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.stop()
        self._loop = None


class FakeDeployedService:
    """Where the fake workflows "deploy": ``/v/{version}/healthz`` answers 200 for each deployed
    version (503 while ``healthy`` is False), and ``/versions`` lists them as the github-actions
    target's status source expects."""

    def __init__(self) -> None:
        self.deployed: set[str] = set()
        self.healthy = True
        self._lock = threading.Lock()
        self._loop: LoopbackServer | None = None

    def deploy(self, inputs: dict[str, str]) -> None:
        with self._lock:
            self.deployed.add(inputs["version"])

    def remove(self, inputs: dict[str, str]) -> None:
        with self._lock:
            self.deployed.discard(inputs["version"])

    @property
    def base_url(self) -> str:
        if self._loop is None:
            raise RuntimeError("FakeDeployedService is not serving; use it as a context manager")
        return self._loop.base_url

    @property
    def url_template(self) -> str:
        """The instance URL template for the target's spec."""
        return f"{self.base_url}/v/{{version}}"

    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        path = urlsplit(url).path
        with self._lock:
            if path == "/versions":
                listing = [
                    {"version": v, "url": f"{self.base_url}/v/{v}"} for v in sorted(self.deployed)
                ]
                return _json(200, listing)
            match = re.fullmatch(r"/v/([^/]+)/healthz", path)
            if match and match[1] in self.deployed:
                return (200, {}, b"ok") if self.healthy else (503, {}, b"unhealthy")
        return 404, {}, b"not found"

    def __enter__(self) -> FakeDeployedService:
        self._loop = LoopbackServer.for_handler(
            _handler(self.answer), name="fake-deployed-service"
        ).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None:
            self._loop.stop()
        self._loop = None


def _handler(
    answer: Callable[[str, str, dict[str, str], bytes], Answer],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            host = self.headers.get("Host", "127.0.0.1")
            status, headers, payload = answer(
                method, f"http://{host}{self.path}", dict(self.headers), body
            )
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output clean; requests are recorded by the fake

    return Handler


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


def _not_found() -> Answer:
    return _json(404, {"message": "Not Found"})


def _invalid(message: str) -> Answer:
    return _json(422, {"message": message})

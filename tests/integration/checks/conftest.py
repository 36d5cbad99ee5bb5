"""Fixture projects, and local advisory sources so real npm audit and pip-audit runs get a verdict.

The machine's npm registry mirror refuses the bulk advisory POST and its PyPI mirror has no per-
version JSON, so neither tool can reach its public advisory source here. These servers speak the
same protocols on loopback: npm's ``POST /-/npm/v1/security/advisories/bulk`` (given to npm as
``--registry``) and OSV's ``POST /v1/query`` (given to pip-audit as ``--osv-url``). The advisory
records are copies of real published advisories.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from deployflow.fakes.loopback import LoopbackServer

FIXTURES = Path(__file__).parents[2] / "fixtures" / "checks"

# Real advisories (GitHub Advisory Database), trimmed to the fields the tools read.
NPM_ADVISORIES: dict[str, list[dict[str, Any]]] = {
    "lodash": [
        {
            "id": 1106914,
            "url": "https://github.com/advisories/GHSA-35jh-r3h4-6jhm",
            "title": "Command Injection in lodash",
            "severity": "high",
            "vulnerable_versions": "<4.17.21",
            "cwe": ["CWE-77", "CWE-94"],
            "cvss": {"score": 7.2, "vectorString": "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"},
        },
        {
            "id": 1106913,
            "url": "https://github.com/advisories/GHSA-29mw-wpgm-hmr9",
            "title": "Regular Expression Denial of Service (ReDoS) in lodash",
            "severity": "moderate",
            "vulnerable_versions": ">=4.0.0 <4.17.21",
            "cwe": ["CWE-400", "CWE-1333"],
            "cvss": {"score": 5.3, "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"},
        },
    ],
    "minimist": [
        {
            "id": 1097678,
            "url": "https://github.com/advisories/GHSA-xvch-5gv4-984h",
            "title": "Prototype Pollution in minimist",
            "severity": "critical",
            "vulnerable_versions": ">=1.0.0 <1.2.6",
            "cwe": ["CWE-1321"],
            "cvss": {"score": 9.8, "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
        }
    ],
}

OSV_VULNS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("jinja2", "2.10"): [
        {
            "id": "GHSA-462w-v97r-4m45",
            "summary": "Jinja2 sandbox escape via string formatting",
            "aliases": ["CVE-2019-10906", "PYSEC-2019-217"],
            "published": "2019-04-10T14:30:24Z",
            "modified": "2024-09-26T15:30:00Z",
            "affected": [
                {
                    "package": {"name": "jinja2", "ecosystem": "PyPI"},
                    "ranges": [
                        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.10.1"}]}
                    ],
                }
            ],
        }
    ]
}


class AdvisoryServer:
    """Answers npm's bulk advisory endpoint and OSV's query endpoint on a loopback port."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._loop: LoopbackServer | None = None

    @property
    def url(self) -> str:
        assert self._loop is not None
        return self._loop.base_url

    def _answer(self, path: str, body: bytes, encoding: str | None) -> tuple[int, Any]:
        self.requests.append(path)
        if encoding == "gzip":
            body = gzip.decompress(body)
        query = json.loads(body or b"{}")
        if path.endswith("/-/npm/v1/security/advisories/bulk"):
            # npm sends {name: [installed versions]}; answer advisories for the names it asked.
            return 200, {name: NPM_ADVISORIES[name] for name in query if name in NPM_ADVISORIES}
        if path == "/v1/query":
            package = query["package"]["name"]
            vulns = OSV_VULNS.get((package, query["version"]), [])
            return 200, ({"vulns": vulns} if vulns else {})
        return 404, {"error": "Not found"}

    def __enter__(self) -> AdvisoryServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                status, payload = server._answer(
                    self.path, self.rfile.read(length), self.headers.get("Content-Encoding")
                )
                self._send(status, payload)

            def do_GET(self) -> None:
                server.requests.append(self.path)
                self._send(404, {"error": "Not found"})

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._loop = LoopbackServer.for_handler(Handler, name="advisories").start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        self._loop.stop()


@pytest.fixture(scope="session")
def advisories() -> Iterator[AdvisoryServer]:
    """npm and OSV advisory endpoints on loopback, for real audit runs."""
    with AdvisoryServer() as server:
        yield server


@pytest.fixture
def python_project(tmp_path: Path) -> Path:
    """A fresh copy of the Python fixture project (the tools write caches and reports into it)."""
    target = tmp_path / "python_project"
    shutil.copytree(FIXTURES / "python_project", target)
    return target


@pytest.fixture(scope="session")
def ts_project() -> Path:
    """The TypeScript fixture with node_modules installed (``make test`` does it, cached)."""
    project = FIXTURES / "ts_project"
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed; the TypeScript fixture cannot run")
    if not (project / "node_modules" / ".package-lock.json").exists():
        # Same command as `make test`'s cached step, for runs that did not go through make.
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=project,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return project

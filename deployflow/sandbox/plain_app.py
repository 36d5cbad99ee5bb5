"""A plain stand-in service: one process per version, and no metrics endpoint at all.

Run it as ``python -m deployflow.sandbox.plain_app --version v2 --port 8081``. It answers
``/healthz``, ``/api/items`` and ``/api/checkout`` (a few milliseconds each, a small JSON body
naming its version), and nothing else: like most services, it exports no metrics, so a canary of
it is judged on the router's access log (``metrics.kind: access-log``).

``DEPLOYFLOW_PLAIN_FAULTS`` makes a version fail a share of one endpoint's requests, e.g.
``{"v3": {"/api/checkout": 0.15}}``: exactly 15 of every 100 requests to ``/api/checkout``
answer 500, spread evenly (a deterministic share, so a test's figures do not depend on luck).
``/healthz`` always answers: a bad release often passes its health check.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

FAULTS_ENV = "DEPLOYFLOW_PLAIN_FAULTS"
PATHS = ("/healthz", "/api/items", "/api/checkout")
LATENCY_SECONDS = 0.003


def faults_for(version: str, text: str) -> dict[str, float]:
    """The error share per path of ``version`` in a ``DEPLOYFLOW_PLAIN_FAULTS`` value."""
    if not text.strip():
        return {}
    found = json.loads(text).get(version, {})
    if not isinstance(found, dict):
        raise ValueError(f"{FAULTS_ENV}: {version} must map paths to error shares")
    shares = {str(path): float(share) for path, share in found.items()}
    for path, share in shares.items():
        if path not in PATHS or not 0.0 <= share <= 1.0:
            raise ValueError(f"{FAULTS_ENV}: {path}: {share} (paths {PATHS}, shares 0..1)")
    return shares


class _Failures:
    """Which request of a path fails: request ``n`` fails when ``floor(n * share)`` steps up,
    so exactly ``share`` of every run of requests fails, evenly spread."""

    def __init__(self, shares: dict[str, float]) -> None:
        self.shares = shares
        self.counts = dict.fromkeys(shares, 0)
        self.lock = threading.Lock()

    def fails(self, path: str) -> bool:
        share = self.shares.get(path)
        if not share:
            return False
        with self.lock:
            n = self.counts[path] = self.counts[path] + 1
        return math.floor(n * share) > math.floor((n - 1) * share)


def serve(version: str, host: str, port: int, failures: _Failures) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in PATHS:
                self._answer(404, {"error": "not found"})
                return
            if path != "/healthz":
                time.sleep(LATENCY_SECONDS)
            if failures.fails(path):
                self._answer(500, {"error": "injected failure", "version": version})
                return
            self._answer(200, {"version": version, "path": path})

        def _answer(self, status: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # no access log of its own: the router's is the one read

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="plain stand-in service (one version)")
    parser.add_argument("--version", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    failures = _Failures(faults_for(args.version, os.environ.get(FAULTS_ENV, "")))
    server = serve(args.version, args.host, args.port, failures)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"plain_app {args.version} listening on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lifecycle every local fake API server shares: a free loopback port, a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LoopbackServer:
    """Serve ``handler`` (or a ready ``server``) on 127.0.0.1 in a daemon thread.

    Example:
        loop = LoopbackServer(ThreadingHTTPServer(("127.0.0.1", 0), Handler)).start()
        ...  # requests to loop.base_url
        loop.stop()
    """

    def __init__(self, server: ThreadingHTTPServer, *, name: str = "fake-api") -> None:
        self.server = server
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )

    @classmethod
    def for_handler(
        cls, handler: type[BaseHTTPRequestHandler], *, name: str = "fake-api"
    ) -> LoopbackServer:
        return cls(ThreadingHTTPServer(("127.0.0.1", 0), handler), name=name)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()


class ServedFake:
    """``start``/``stop`` and ``with`` for a fake API served by one ``LoopbackServer``.

    A subclass builds its server in ``_serve`` and reads ``self._loop`` while it runs.
    """

    _loop: LoopbackServer | None = None

    def _serve(self) -> LoopbackServer:
        raise NotImplementedError

    def start(self) -> Self:
        """Bind a free loopback port and serve in a daemon thread."""
        self._loop = self._serve().start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

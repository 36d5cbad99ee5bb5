"""Failures of the systems a deploy talks to, in words a person can act on.

A rollback reason, a failed rollback, a flow's state message and the CLI quote these sentences
("the router's admin socket /run/haproxy.sock refused the connection: is HAProxy running?"), not
the client's text ("[Errno 111] Connection refused"). The raw chain stays available to engineers
(``detail``: the log, the incident's evidence). Neither ever shows a password: URLs lose their
``user:password@``, and query parameters that look like secrets are masked.

Known here: HAProxy's runtime API (``RouterError`` from ``deployflow.providers.haproxy``), httpx
(health checks, smoke requests, the notifiers' HTTP APIs), requests (the Prometheus client) and
plain socket errors. Anything else keeps its own message, redacted.
"""

from __future__ import annotations

import errno
import re
import socket
import sys
from collections.abc import Iterator

# How deep a chain of causes is followed (a loop guard too).
MAX_CHAIN = 10
# A sentence longer than this is cut: a message quotes it, and some clients put pages in theirs.
MAX_CHARS = 600

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")
_SECRET_PARAMETER = re.compile(
    r"(?P<key>[?&;\s](?:[A-Za-z_-]*(?:token|secret|password|passwd|pwd|api_?key|auth)"
    r"[A-Za-z_-]*)=)[^&\s'\"]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the credentials of every URL (``user:password@``) and the values of
    secret-looking query parameters (``?token=...``) masked."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", text)
    return _SECRET_PARAMETER.sub(lambda m: f"{m['key']}***", text)


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and its causes (``raise ... from``, else the exception being handled)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < MAX_CHAIN:
        seen.add(id(current))
        yield current
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause


def detail(error: BaseException) -> str:
    """The raw chain for engineers, outermost first, redacted:
    ``RouterError: ... <- ConnectionRefusedError: [Errno 111] Connection refused``."""
    parts = []
    for e in chain(error):
        text = " ".join(str(e).split())
        parts.append(f"{type(e).__name__}: {text}" if text else type(e).__name__)
    return redact(" <- ".join(parts))[: MAX_CHARS * 2]


def in_words(
    error: BaseException | str, *, service: str | None = None, timeout: float | None = None
) -> str:
    """One sentence a person can act on: who did not answer (``service``, e.g. "Prometheus",
    names it beside its URL), how (refused, timed out after ``timeout`` seconds, does not
    exist, closed the connection), and what to look at. Never raises."""
    if isinstance(error, str):
        return _cut(redact(error))
    try:
        sentence = _router(error, timeout) or _http(error, service, timeout)
        if sentence is None:
            sentence = _socket(error, service, timeout)
    except Exception:  # words are a courtesy: never let them break a rollback
        sentence = None
    if sentence is None:
        text = str(error).strip()
        sentence = text or type(error).__name__
    return _cut(redact(sentence))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def _seconds(timeout: float | None) -> str:
    return "its time" if timeout is None else f"{timeout:g} s"


def _os_error(error: BaseException) -> OSError | None:
    """The innermost socket-level error of the chain (what the kernel said)."""
    found = None
    for e in chain(error):
        if isinstance(e, OSError) and type(e).__module__ in ("builtins", "socket"):
            found = e
    return found


def _how(os_error: OSError, timeout: float | None) -> str | None:
    """What the socket error means, as the end of a sentence whose subject is the peer."""
    if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
        return "refused the connection"
    if isinstance(os_error, FileNotFoundError) or os_error.errno == errno.ENOENT:
        return "does not exist"
    if isinstance(os_error, PermissionError):
        return "cannot be opened: permission denied"
    if isinstance(os_error, TimeoutError | socket.timeout):
        return f"did not answer within {_seconds(timeout)}"
    if isinstance(os_error, ConnectionResetError | BrokenPipeError):
        return "closed the connection before answering"
    if isinstance(os_error, socket.gaierror):
        return "has a name that does not resolve"
    if os_error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "cannot be reached on the network"
    return None


def _router(error: BaseException, timeout: float | None) -> str | None:
    """HAProxy's runtime API could not be used."""
    module = sys.modules.get("deployflow.providers.haproxy")
    if module is None or not isinstance(error, module.RouterError):
        return None
    admin = getattr(error, "admin", None)
    os_error = _os_error(error)
    if os_error is None and admin is not None:
        # The cause is lost when the error was pickled (a result store): its text keeps errno.
        number = re.search(r"\[Errno (\d+)\]", str(error))
        if number is not None:
            os_error = OSError(int(number[1]), "")
        elif "timed out" in str(error):
            os_error = TimeoutError()
    if admin is None or os_error is None:
        return None  # HAProxy answered and refused: its own words say what
    timeout = getattr(error, "timeout", None) if timeout is None else timeout
    path = "/" in admin
    where = f"the router's admin socket {admin}" if path else f"HAProxy's runtime API at {admin}"
    how = _how(os_error, timeout)
    if how == "refused the connection":
        return f"{where} refused the connection: is HAProxy running?"
    if how == "does not exist":
        return (
            f"{where} does not exist: HAProxy is not running, or its stats socket is "
            "elsewhere (router.admin_socket)"
        )
    if how == "cannot be opened: permission denied":
        return f"{where} cannot be opened (permission denied): the deploy's user needs access"
    if how is not None and how.startswith("did not answer"):
        return f"{where} {how}: is HAProxy overloaded, or paused?"
    if how == "closed the connection before answering":
        return f"{where} closed the connection before answering: is HAProxy restarting?"
    return f"{where} cannot be used: {os_error.strerror or os_error}"


def _origin(url: object) -> str:
    """scheme://host:port/path of a URL object or string, without its query or credentials."""
    text = redact(str(url))
    return text.split("?", 1)[0]


def _request_url(error: BaseException) -> str | None:
    request = None
    try:
        request = getattr(error, "request", None)  # httpx raises when it has none
    except RuntimeError:
        return None
    url = getattr(request, "url", None)
    return _origin(url) if url else None


def _request_timeout(error: BaseException) -> float | None:
    """The timeout the request had for the phase that timed out (httpx keeps them per phase:
    connect, read, write, pool)."""
    try:
        request = getattr(error, "request", None)
    except RuntimeError:
        return None
    timeouts = getattr(request, "extensions", {}).get("timeout") if request is not None else None
    if not isinstance(timeouts, dict):
        return None
    phase = {
        "ConnectTimeout": "connect",
        "ReadTimeout": "read",
        "WriteTimeout": "write",
        "PoolTimeout": "pool",
    }.get(type(error).__name__)
    value = timeouts.get(phase) if phase is not None else None
    return float(value) if isinstance(value, int | float) else None


def _http(error: BaseException, service: str | None, timeout: float | None) -> str | None:
    """An HTTP client's failure (httpx, requests) about the URL it was asking."""
    httpx = sys.modules.get("httpx")
    requests = sys.modules.get("requests")
    url = _request_url(error)
    who = service or url or "the server"  # a caller that names the service names it whole
    if httpx is not None and isinstance(error, httpx.HTTPError):
        if isinstance(error, httpx.HTTPStatusError):
            code = error.response.status_code
            return f"{who} answered HTTP {code} {error.response.reason_phrase}".rstrip()
        if isinstance(error, httpx.TimeoutException):
            limit = timeout if timeout is not None else _request_timeout(error)
            return f"{who} did not answer within {_seconds(limit)}"
        if isinstance(error, httpx.RemoteProtocolError):
            return f"{who} closed the connection without an answer"
    elif requests is not None and isinstance(error, requests.RequestException):
        if isinstance(error, requests.Timeout):
            return f"{who} did not answer within {_seconds(timeout)}"
    else:
        return None
    os_error = _os_error(error)
    how = _how(os_error, timeout) if os_error is not None else None
    if how is None:
        how = _resolver_failure(error)
    if how == "refused the connection":
        return f"{who} refused the connection: is it running, and on that port?"
    if how is not None:
        return f"{who} {how}"
    return None


def _resolver_failure(error: BaseException) -> str | None:
    """Name resolution failures arrive as text in some clients' chains."""
    text = " ".join(str(e) for e in chain(error))
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "has a name that does not resolve"
    if "timed out" in text:
        return "did not answer in time"
    if "Connection refused" in text:
        return "refused the connection"
    return None


def _socket(error: BaseException, service: str | None, timeout: float | None) -> str | None:
    """A bare socket error (no client around it)."""
    if not isinstance(error, OSError) or type(error).__module__ not in ("builtins", "socket"):
        return None
    how = _how(error, timeout)
    if how is None:
        return None
    return f"{service or 'the server'} {how}"

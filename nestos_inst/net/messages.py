"""Network failures in words a user reads, not Python's exception texts.

`[Errno -2] Name or service not known`, `Connect call failed ('10.0.0.1', 80)` or
`All connection attempts failed` say little to someone installing a machine: say
which host could not be resolved or reached, and why, in the terms curl uses.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Iterator

import httpx

from ..errors import describe


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and the members of exception groups."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)
        for nxt in (cur.__cause__, cur.__context__):
            if nxt is not None:
                todo.append(nxt)


def _where(url: httpx.URL | None) -> tuple[str, str]:
    if url is None:
        return "the server", ""
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.host, f" port {port}"


def network_text(exc: BaseException, url: httpx.URL | None = None) -> str:
    """One clause describing a failed request (the caller names the URL)."""
    if url is None and isinstance(exc, httpx.RequestError):
        try:
            url = exc.request.url
        except RuntimeError:  # no request attached
            url = None
    if isinstance(exc, httpx.TransportError) and str(exc).startswith(("could not ", "timed out")):
        return str(exc)  # already in these words (net/plain.py, net/transport.py)
    host, port = _where(url)
    links = list(_causes(exc))
    for link in links:
        if isinstance(link, socket.gaierror):
            reason = os.strerror(link.errno) if link.errno and link.errno > 0 else None
            reason = reason or _gai_reason(link)
            return f"could not resolve host '{host}': {reason}"
    for link in links:
        if isinstance(link, ssl.SSLCertVerificationError):
            why = link.verify_message or "certificate verify failed"
            return (
                f"could not verify the TLS certificate of {host}: {why} (CERTIFICATE_VERIFY_FAILED)"
            )
        if isinstance(link, ssl.SSLError):
            return f"TLS error with {host}{port}: {link.reason or link.strerror or link}"
    for link in links:
        if isinstance(link, OSError) and link.errno:
            reason = os.strerror(link.errno)
            if link.errno == errno.ECONNREFUSED:
                reason = "connection refused"
            if isinstance(exc, httpx.ConnectError):
                return f"could not connect to {host}{port}: {reason}"
            return reason
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out connecting to {host}{port}"
    if isinstance(exc, httpx.ReadTimeout):
        return f"{host} sent no data within the time allowed (timed out)"
    if isinstance(exc, httpx.WriteTimeout):
        return f"timed out sending the request to {host}"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect to {host}{port}"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    text = describe(exc)
    return text if text != type(exc).__name__ else f"{type(exc).__name__} (connection error)"


def reason(exc: BaseException) -> str | None:
    """Just the operating system's reason (e.g. "connection refused"), if one is known."""
    for link in _causes(exc):
        if isinstance(link, socket.gaierror):
            return _gai_reason(link)
        if isinstance(link, OSError) and link.errno:
            if link.errno == errno.ECONNREFUSED:
                return "connection refused"
            return os.strerror(link.errno)
    text = str(exc)
    if text.startswith("could not connect to ") and ": " in text:
        return text.rsplit(": ", 1)[1]
    return None


def _gai_reason(exc: socket.gaierror) -> str:
    """The resolver's own words, without Python's `[Errno -N]` prefix."""
    if exc.strerror:
        return exc.strerror
    text = str(exc)
    return text.split("] ", 1)[1] if text.startswith("[Errno") and "] " in text else text

"""A real HTTP/1.1 server on 127.0.0.1 in the test process, with fault injection.

Serve bytes or files at paths; per path inject: a fixed status (404...), N transient
failures (503...), dropping the connection after N body bytes (M times), ignoring
Range, strong ETag / Last-Modified, redirects. Every request is recorded.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Entry:
    data: bytes | None = None
    file: Path | None = None
    status: int | None = None  # always answer this status (no body)
    fail_times: int = 0  # answer `fail_status` this many times first
    fail_status: int = 503
    drop_after: int | None = None  # close the connection after this many body bytes...
    drop_times: int = 0  # ...this many times
    ignore_range: bool = False
    etag: str | None = None
    last_modified: float | None = None
    redirect: str | None = None  # Location for a 302
    content_length: bool = True  # False: no Content-Length, close-delimited body
    rate: int | None = None  # bytes per second (a slow mirror), None = as fast as possible
    stall_after: int | None = None  # go silent after this many body bytes...
    stall_seconds: float = 0.0  # ...for this long, then carry on (first response only)

    def size(self) -> int:
        if self.file is not None:
            return self.file.stat().st_size
        return len(self.data or b"")


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Server:
    host: str
    port: int
    entries: dict[str, Entry] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    scheme: str = "http"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/"

    def add(self, path: str, data: bytes | Path | None = None, **kw: object) -> Entry:
        file, blob = (data, None) if isinstance(data, Path) else (None, data)
        entry = Entry(data=blob, file=file, **kw)  # type: ignore[arg-type]
        with self.lock:
            self.entries[path] = entry
        return entry

    def hits(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def _make_handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _finish(self, req: Request, status: int) -> None:
            req.status = status

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            req = Request(path, {k.lower(): v for k, v in self.headers.items()})
            with server.lock:
                server.requests.append(req)
                entry = server.entries.get(path)
                if entry is not None and entry.fail_times > 0:
                    entry.fail_times -= 1
                    fail: int | None = entry.fail_status
                else:
                    fail = None
            if entry is None:
                return self._empty(req, 404)
            if fail is not None:
                return self._empty(req, fail)
            if entry.status is not None:
                return self._empty(req, entry.status)
            if entry.redirect is not None:
                self.send_response(302)
                self.send_header("Location", entry.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                req.status = 302
                return None
            return self._body(req, entry)

        def _empty(self, req: Request, status: int) -> None:
            body = f"{status}\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            req.status = status

        def _validators_match(self, entry: Entry, cond: str) -> bool:
            if entry.etag is not None and cond == entry.etag:
                return True
            return entry.last_modified is not None and cond == email.utils.formatdate(
                entry.last_modified, usegmt=True
            )

        def _body(self, req: Request, entry: Entry) -> None:
            total = entry.size()
            start = 0
            status = 200
            rng = self.headers.get("Range")
            if rng and not entry.ignore_range:
                m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
                cond = self.headers.get("If-Range")
                if m and (cond is None or self._validators_match(entry, cond)):
                    start = int(m.group(1))
                    if start >= total:
                        return self._empty(req, 416)
                    status = 206
            with server.lock:
                drop = entry.drop_after if entry.drop_times > 0 else None
                if drop is not None:
                    entry.drop_times -= 1
            self.send_response(status)
            if entry.content_length:
                self.send_header("Content-Length", str(total - start))
            else:
                self.send_header("Connection", "close")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            self.send_header("Accept-Ranges", "bytes")
            if entry.etag:
                self.send_header("ETag", entry.etag)
            if entry.last_modified is not None:
                self.send_header(
                    "Last-Modified", email.utils.formatdate(entry.last_modified, usegmt=True)
                )
            self.end_headers()
            req.status = status
            limit = total - start if drop is None else min(total - start, drop)
            try:
                self._copy(entry, start, limit)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            if drop is not None or not entry.content_length:
                self.close_connection = True
                self.wfile.flush()

        def _copy(self, entry: Entry, start: int, limit: int) -> None:
            stall = entry.stall_after
            if stall is not None and stall < limit:
                entry.stall_after = None
                self._copy(entry, start, stall)
                self.wfile.flush()
                time.sleep(entry.stall_seconds)
                start, limit = start + stall, limit - stall
            if entry.rate is not None:
                step = max(1, entry.rate // 20)
                for off in range(start, start + limit, step):
                    n = min(step, start + limit - off)
                    if entry.file is not None:
                        with open(entry.file, "rb") as f:
                            f.seek(off)
                            self.wfile.write(f.read(n))
                    else:
                        assert entry.data is not None
                        self.wfile.write(entry.data[off : off + n])
                    time.sleep(n / entry.rate)
                return
            if entry.file is not None:
                with open(entry.file, "rb") as f:
                    f.seek(start)
                    sent = 0
                    while sent < limit:
                        n = self.connection.sendfile(f, start + sent, limit - sent)
                        if n == 0:
                            break
                        sent += n
            else:
                assert entry.data is not None
                self.wfile.write(entry.data[start : start + limit])

    return Handler


class _QuietServer(ThreadingHTTPServer):
    """Clients of fault tests hang up mid-response on purpose; don't print tracebacks.

    socketserver would write them to stderr, where tests assert our own messages.
    """

    errors: list[BaseException]

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            self.errors.append(exc)  # kept for debugging a test, never printed


@contextmanager
def http_server(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    """Start the server on an ephemeral port (HTTPS with `tls`); always shut it down."""
    server = Server("127.0.0.1", 0, scheme="https" if tls is not None else "http")
    httpd = _QuietServer(("127.0.0.1", 0), _make_handler(server))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    httpd.errors = []
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

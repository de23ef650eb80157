"""HTTP GET with upstream's retry rules (docs/compat.md#http-retries) plus resume on a broken body.

Network I/O runs on httpx's *async* client inside one background event-loop thread;
callers get a plain blocking file object (HttpResponse). The loop thread gathers
the body's chunks (as received, never joined: no copy) into batches of about 1 MiB
and hands them over through a small bounded queue, so the socket keeps draining
while the calling thread does the CPU work (GPG feed, hashing, decompression,
writing) — the two overlap on two cores and memory stays bounded (queue depth x
1 MiB). A sync facade keeps every consumer (install, osmet, download)
simple and lets them be composed with ordinary file-like stages. A consumer that
only stores the bytes (download) can instead call move_to(): on plain http:// the
kernel then moves the body from the socket to the file and GPG's pipe (splice/tee,
see net/plain.py for why the socket position is known exactly).

Retries: attempts = fetch_retries + 1 (None = unbounded). Send failures and statuses
408/429/500/502/503/504 are retried with a delay starting at 1 s, doubling, capped at
600 s. Beyond upstream, a body that breaks mid-transfer is resumed with
``Range: bytes=N-`` (and ``If-Range`` when the server gave a strong ETag or a
Last-Modified date); every resume counts against the same attempt budget. A server
that answers a Range request with 200 is re-read from zero, skipping the bytes we
already have.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import select
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from .. import fastpaths
from ..errors import NestosError, describe
from ..io.kernel import Fanout, zero_copy_available
from ..report import say
from .messages import network_text
from .plain import PlainStream
from .retries import parse_retries
from .transport import Router

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

__all__ = ["Budget", "HttpResponse", "fetch", "fetch_bytes", "parse_retries"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SHUTDOWN_WAIT = 5.0  # seconds stop_network() waits for cancelled tasks to end
MAX_DELAY = 600.0
BLOCK = 1 << 20
# A batch is handed to the reader when it reaches BLOCK or is this old (seconds).
FLUSH_INTERVAL = 0.25
QUEUE_DEPTH = 4
# Per-operation timeouts: a stalled connection becomes a (resumable) error instead of
# hanging; upstream's 4 h total would cut off slow but healthy multi-GiB downloads.
# `--fetch-timeout` / NESTOS_INSTALLER_FETCH_TIMEOUT replace the read/connect values.
CONNECT_TIMEOUT = 120.0
READ_TIMEOUT = 300.0
TIMEOUT_ENV = "NESTOS_INSTALLER_FETCH_TIMEOUT"


@dataclass
class _Settings:
    timeout: float | None = None  # seconds; None = the defaults above


_SETTINGS = _Settings()
MAX_REDIRECTS = 10
# While waiting for a response's headers, say so this often (a silent server; a
# third of the read timeout when that is shorter).
WAIT_NOTICE = 10.0

T = TypeVar("T")


def parse_timeout(text: str) -> float:
    """A positive number of seconds (what `--fetch-timeout` accepts)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise ValueError(f"invalid timeout '{text}': expected seconds between 0 and 86400")
    return value


def set_fetch_timeout(seconds: float | None) -> None:
    """How long to wait for a connection or for the next bytes (None = defaults)."""
    _SETTINGS.timeout = seconds


def timeouts() -> httpx.Timeout:
    """The timeouts for new requests: the set value, else the environment's, else 300 s."""
    seconds = _SETTINGS.timeout
    if seconds is None and os.environ.get(TIMEOUT_ENV):
        try:
            seconds = parse_timeout(os.environ[TIMEOUT_ENV])
        except ValueError as exc:
            raise NestosError(f"reading {TIMEOUT_ENV}") from NestosError(str(exc))
    if seconds is None:
        return httpx.Timeout(
            connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=READ_TIMEOUT, pool=None
        )
    return httpx.Timeout(connect=seconds, read=seconds, write=seconds, pool=None)


def _delay_scale() -> float:
    """Tests shrink the real sleeps; the printed delays stay upstream's."""
    try:
        return float(os.environ.get("NESTOS_INSTALLER_RETRY_DELAY_SCALE", "1"))
    except ValueError:
        return 1.0


@dataclass
class Budget:
    """Shared attempt budget and backoff for one logical fetch (open + resumes)."""

    retries: int | None = 0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    scale: float = field(default_factory=_delay_scale)
    used: int = 0
    delay: float = 1.0

    def can_retry(self) -> bool:
        return self.retries is None or self.used < self.retries

    async def backoff(self, url: str, error: str) -> None:
        self.used += 1
        say(f"Error fetching '{url}': {error}")
        say(f"Sleeping {self.delay:g}s and retrying...")
        await self.sleep(self.delay * self.scale)
        self.delay = min(self.delay * 2, MAX_DELAY)


class _Loop:
    """The network event loop: one asyncio loop on one thread owns every socket.

    Started by the first fetch of the process, stopped by stop_network() (the entry
    point calls it when the command ends): the client is closed, the loop stopped and
    its thread joined. See docs/internals-net.md for the concurrency model.
    """

    _lock = threading.Lock()
    _instance: _Loop | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="http", daemon=True)
        self.thread.start()
        self.client: httpx.AsyncClient = self.call(self._make_client())

    @staticmethod
    async def _make_client() -> httpx.AsyncClient:
        # identity: signatures cover the bytes as stored, never a transfer re-encoding.
        # The Router reads the proxy variables itself (trust_env is for auth files).
        return httpx.AsyncClient(
            transport=Router(),
            timeout=timeouts(),
            max_redirects=MAX_REDIRECTS,
            headers={"Accept-Encoding": "identity"},
            trust_env=False,
        )

    @classmethod
    def get(cls) -> _Loop:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Loop()
            return cls._instance

    @classmethod
    def stop(cls) -> None:
        with cls._lock:
            inst, cls._instance = cls._instance, None
        if inst is None:
            return
        with contextlib.suppress(Exception):
            inst.call(inst._shut_down())
        inst.loop.call_soon_threadsafe(inst.loop.stop)
        inst.thread.join()
        # Work may have been scheduled between the shut-down's snapshot of the tasks
        # and the stop (an async generator the garbage collector finalized on another
        # thread has its aclose() scheduled as a task): end it here, on this thread,
        # so no task is left pending ("Task was destroyed but it is pending!").
        leftovers = asyncio.all_tasks(inst.loop)
        if leftovers:
            for task in leftovers:
                task.cancel()
            with contextlib.suppress(Exception):
                inst.loop.run_until_complete(asyncio.wait(leftovers, timeout=SHUTDOWN_WAIT))
        inst.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _shut_down(self) -> None:
        """Cancel what still runs on the loop (a body pump whose response was closed a
        moment ago) and wait for it, bounded, then close the client: a loop stopped
        with pending tasks would have asyncio report them destroyed at exit."""
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT)
        await self.client.aclose()
        # Response streams are async generators: close those still alive now, while
        # the loop runs, rather than from the garbage collector later.
        await asyncio.get_running_loop().shutdown_asyncgens()


def stop_network() -> None:
    """Close every connection and stop the network thread (no-op if never started)."""
    _Loop.stop()


def _status_text(resp: httpx.Response) -> str:
    return f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip()


def _error_text(exc: BaseException) -> str:
    return network_text(exc)


class _End:
    """The end-of-body marker in a response's inbox."""


_EOF = _End()
# What the network thread hands the reader: a batch of body chunks, the error that
# ended the transfer, or the end.
_Item = list[bytes] | BaseException | _End


class HttpResponse(io.RawIOBase):
    """A GET in progress: final URL, status, headers, and the raw body as a file.

    The body is the bytes as served (no Content-Encoding decoding). Reading raises
    NestosError("reading '<url>'") when the transfer fails beyond the retry budget.
    """

    def __init__(
        self, url: str, budget: Budget, on_final: Callable[[str], None] | None = None
    ) -> None:
        super().__init__()
        self.request_url = url
        self._budget = budget
        self._on_final = on_final
        self._loop = _Loop.get()
        self._resp: httpx.Response | None = None
        self._task: asyncio.Task[None] | None = None
        self._body: AsyncIterator[bytes] | None = None
        self._started = False
        self._have_at_last_error = 0
        self._chunks: list[bytes] = []
        self._next = 0
        self._block = b""
        self._off = 0
        self._eof = False
        self.url = url
        self.status = 0
        self.reason = ""
        self.headers: httpx.Headers = httpx.Headers()
        self.length: int | None = None
        self.position = 0
        self.resumes = 0
        self.batches = 0  # hand-overs from the network thread (see FLUSH_INTERVAL)
        self._inbox: _Inbox = _Inbox()
        self._read_timeout: float | None = None

    # ---- opening (runs on the loop) ----
    async def _send(self, headers: dict[str, str]) -> httpx.Response:
        """One logical request, retried per docs/compat.md#http-retries; non-retryable HTTP errors
        raise."""
        client = self._loop.client
        while True:
            try:
                timeout = timeouts()
                self._read_timeout = timeout.read
                req = client.build_request(
                    "GET", self.request_url, headers=headers, timeout=timeout
                )
                resp = await self._patiently(client.send(req, stream=True, follow_redirects=True))
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
                raise NestosError(f"fetching '{self.request_url}'") from NestosError(
                    _error_text(exc)
                )
            except NestosError as exc:
                raise NestosError(f"fetching '{self.request_url}'") from exc
            except httpx.HTTPError as exc:
                if isinstance(exc, httpx.TooManyRedirects) or not self._budget.can_retry():
                    cause = TimedOut if isinstance(exc, httpx.TimeoutException) else NestosError
                    raise NestosError(f"fetching '{self.request_url}'") from cause(_error_text(exc))
                await self._budget.backoff(self.request_url, _error_text(exc))
                continue
            if resp.status_code in RETRY_STATUSES:
                await resp.aclose()
                if not self._budget.can_retry():
                    raise NestosError(f"fetching '{self.request_url}'") from NestosError(
                        _status_text(resp)
                    )
                await self._budget.backoff(self.request_url, _status_text(resp))
                continue
            if resp.status_code >= 400:
                await resp.aclose()
                raise NestosError(f"fetching '{self.request_url}'") from NestosError(
                    _status_text(resp)
                )
            try:
                self._check_final(str(resp.url))
            except NestosError:
                await resp.aclose()
                raise
            return resp

    def _check_final(self, final: str) -> None:
        """The redirect rule: the caller's check of the final URL, or by default no
        silent switch from https:// to http://."""
        if self._on_final is not None:
            try:
                self._on_final(final)
            except NestosError as exc:
                raise NestosError(f"fetching '{self.request_url}'") from exc
            return
        if _scheme(self.request_url) == "https" and _scheme(final) != "https":
            raise NestosError(f"fetching '{self.request_url}'") from NestosError(
                f"redirected to '{final}': refusing to leave HTTPS"
            )

    async def _patiently(self, send: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        """Await the response headers, saying every WAIT_NOTICE seconds that we wait."""
        task = asyncio.ensure_future(send)
        waited = 0.0
        step = min(WAIT_NOTICE, (self._read_timeout or WAIT_NOTICE * 3) / 3)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=step)
                if done:
                    return task.result()
                waited += step
                host = httpx.URL(self.request_url).host
                say(f"Waiting for {host} to answer ({waited:g} s)...")
        finally:
            if not task.done():
                task.cancel()

    async def _open(self) -> None:
        resp = await self._send({})
        self._resp = resp
        self.url = str(resp.url)
        self.status = resp.status_code
        self.reason = resp.reason_phrase
        self.headers = resp.headers
        self.length = _int_header(resp.headers.get("content-length"))
        self._inbox.bind(asyncio.get_running_loop())
        if resp.status_code == 200:
            # The pump starts with the first read, or never when the kernel moves the body.
            self._body = resp.aiter_raw()
        else:
            self._started = True
            await resp.aclose()
            self._inbox.put_nowait(_EOF)

    def open(self) -> HttpResponse:
        self._loop.call(self._open())
        return self

    # ---- body pump (runs on the loop) ----
    def _validator(self) -> str | None:
        etag: str | None = self.headers.get("etag")
        if etag and not etag.startswith("W/"):
            return etag
        modified: str | None = self.headers.get("last-modified")
        return modified

    async def _resume(self, have: int) -> tuple[httpx.Response, int]:
        """Reopen at byte `have`; returns the response and how many bytes to skip."""
        headers = {"Range": f"bytes={have}-"}
        validator = self._validator()
        if validator:
            headers["If-Range"] = validator
        resp = await self._send(headers)
        self.resumes += 1
        if resp.status_code == 206:
            m = re.fullmatch(
                r"bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("content-range", "").strip()
            )
            total = m and m.group(3) != "*" and int(m.group(3))
            if not m or int(m.group(1)) != have or (self.length and total != self.length):
                await resp.aclose()
                raise NestosError(f"reading '{self.url}'") from NestosError(
                    "server answered the resume request with a different byte range"
                )
            return resp, 0
        if resp.status_code == 200:
            same_length = _int_header(resp.headers.get("content-length")) == self.length
            old_tag, new_tag = self.headers.get("etag"), resp.headers.get("etag")
            if not same_length or (old_tag and new_tag and old_tag != new_tag):
                await resp.aclose()
                raise NestosError(f"reading '{self.url}'") from NestosError(
                    "the file changed on the server during the download"
                )
            return resp, have  # Range ignored: start over, dropping what we have
        await resp.aclose()
        raise NestosError(f"reading '{self.url}'") from NestosError(
            f"unexpected reply to a resume request: {_status_text(resp)}"
        )

    async def _pump(self, have: int = 0, error: str | None = None) -> None:
        """Move the body into the inbox from byte `have` on, resuming broken transfers.

        `error` set: the transfer already broke at `have` (on the kernel path) and
        the pump starts with the retry decision and a Range request.
        """
        assert self._resp is not None and self._body is not None
        resp, body = self._resp, self._body
        skip = 0
        pending: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        handed = loop.time()
        try:
            while True:
                if error is not None:
                    await resp.aclose()
                    if pending:
                        await self._inbox.put(pending)
                        pending, size = [], 0
                    if not self._budget.can_retry():
                        raise NestosError(f"reading '{self.url}'") from NestosError(error)
                    if have > self._have_at_last_error:
                        self._budget.delay = 1.0  # progress since the last break: start over
                    self._have_at_last_error = have
                    await self._budget.backoff(self.url, error)
                    resp, skip = await self._resume(have)
                    self._resp, body = resp, resp.aiter_raw()
                    error = None
                try:
                    async for chunk in body:
                        if not chunk:
                            continue
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk = chunk[skip:]
                            skip = 0
                        have += len(chunk)
                        pending.append(chunk)
                        size += len(chunk)
                        now = loop.time()
                        if size >= BLOCK or now - handed >= FLUSH_INTERVAL:
                            # Full batches on a fast link; on a slow one, what came in
                            # the last FLUSH_INTERVAL, so progress keeps its 1 Hz.
                            await self._inbox.put(pending)
                            pending, size, handed = [], 0, now
                    if skip:
                        raise httpx.RemoteProtocolError("body ended before the resume point")
                    if self.length is not None and have < self.length:
                        raise httpx.RemoteProtocolError(
                            f"body ended after {have} of {self.length} bytes"
                        )
                    break
                except httpx.TransportError as exc:
                    error = _error_text(exc)
            if pending:
                await self._inbox.put(pending)
            await self._inbox.put(_EOF)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._inbox.put_nowait(exc)
        finally:
            await resp.aclose()

    async def _start_pump(self, have: int, error: str | None) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump(have, error))

    def _ensure_pump(self, have: int = 0, error: str | None = None) -> None:
        if not self._started:
            self._started = True
            self._loop.call(self._start_pump(have, error))

    # ---- kernel path (caller's thread) ----
    async def _first_chunk(self) -> tuple[bytes, str | None]:
        """The first non-empty body chunk, or the transfer error that came instead."""
        assert self._body is not None
        try:
            async for chunk in self._body:
                if chunk:
                    return chunk, None
        except httpx.TransportError as exc:
            return b"", _error_text(exc)
        return b"", None

    def move_to(
        self,
        fd: int,
        taps: Sequence[int],
        first: Callable[[bytes], None],
        moved: Callable[[int], None],
    ) -> bool:
        """Copy the whole body to `fd`, and to the pipes `taps`, inside the kernel.

        Only plain http:// with a Content-Length qualifies, and only before any read.
        The first chunk has already left the socket: `first(chunk)` must handle it;
        `moved(n)` follows every `n` bytes the kernel moved. Returns True when the
        body is complete; False when the caller must read the rest with read1()
        (fast path unavailable, or the transfer broke and is being resumed per
        docs/compat.md#http-retries).
        """
        if (
            self._started
            or self.length is None
            or not zero_copy_available()
            or not fastpaths.enabled("splice")
        ):
            return False
        self._started = True
        chunk, error = self._loop.call(self._first_chunk())
        have = len(chunk)
        if chunk:
            self.position += have
            first(chunk)
        if error is None and have >= self.length:
            self._loop.call(self._close_resp())
            self._eof = True
            return True
        assert self._resp is not None
        stream = self._resp.extensions.get("network_stream")
        if (
            error is not None
            or not chunk
            or not isinstance(stream, PlainStream)
            or stream.body_bytes_read() != have
        ):
            # Not ours to move (TLS, bytes still buffered) or already broken: the pump
            # carries on with the same body iterator, or resumes after the error.
            self._started = False
            self._ensure_pump(have, error)
            return False
        error = self._splice(stream, fd, taps, have, moved)
        if error is None:
            self._loop.call(self._close_resp())
            self._eof = True
            return True
        self._started = False
        self._ensure_pump(self.position, error)
        return False

    def _splice(
        self,
        stream: PlainStream,
        fd: int,
        taps: Sequence[int],
        have: int,
        moved: Callable[[int], None],
    ) -> str | None:
        """Socket -> pipes -> fd until the body is in; the break's text, if it broke."""
        assert self.length is not None
        sock = stream.sock.fileno()
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        read = self._read_timeout
        timeout_ms = int(read * 1000) if read is not None else -1
        with Fanout(taps, fd) as fan:
            while have < self.length:
                try:
                    n = os.splice(sock, fan.inlet, min(self.length - have, fan.size), flags=flags)
                except BlockingIOError:
                    if not poller.poll(timeout_ms):
                        return "timed out"
                    continue
                except OSError as exc:
                    return describe(exc)
                if n == 0:
                    return _short_body(have, self.length)
                fan.push(n)
                have += n
                self.position += n
                moved(n)
        return None

    async def _close_resp(self) -> None:
        if self._resp is not None:
            await self._resp.aclose()

    # ---- consumer side (caller's thread) ----
    def readable(self) -> bool:
        return True

    def _next_block(self) -> bool:
        if self._next >= len(self._chunks):
            self._ensure_pump(self.position)
            item = self._inbox.get()
            if isinstance(item, _End):
                self._eof = True
                return False
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            self._chunks, self._next = item, 0
            self.batches += 1
        self._block, self._off = self._chunks[self._next], 0
        self._next += 1
        return True

    def read1(self, size: int = -1) -> bytes:
        """Up to `size` bytes of one received chunk, without copying it when whole."""
        if size < 0:
            size = 1 << 62
        if self._off >= len(self._block) and (self._eof or size == 0 or not self._next_block()):
            return b""
        block, off = self._block, self._off
        out = block if off == 0 and size >= len(block) else block[off : off + size]
        self._off = off + len(out)
        self.position += len(out)
        return out

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes of what has arrived (waits only when nothing has)."""
        if size is None or size < 0:
            return self.readall()
        out = self.read1(size)
        if not out or len(out) >= size:
            return out
        parts = [out]
        got = len(out)
        while got < size and (self._off < len(self._block) or self._next < len(self._chunks)):
            part = self.read1(size - got)
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def readinto(self, b: Buffer, /) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(BLOCK):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if self.closed:
            return
        task = self._task
        if task is not None and not task.done():

            def cancel() -> None:
                task.cancel()

            self._loop.loop.call_soon_threadsafe(cancel)
        elif task is None and self._resp is not None:
            # The pump never ran (kernel path, or nothing read): close the response here.
            with contextlib.suppress(Exception):
                self._loop.call(self._close_resp())
        self._inbox.close()
        super().close()


class _Inbox:
    """Bounded hand-over from the loop (async put) to the caller's thread (blocking get)."""

    def __init__(self) -> None:
        self._items: list[_Item] = []
        self._cond = threading.Condition()
        self._space: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._space = asyncio.Event()

    async def put(self, item: _Item) -> None:
        assert self._space is not None
        while True:
            with self._cond:
                if self._closed:
                    return
                if len(self._items) < QUEUE_DEPTH:
                    self._items.append(item)
                    self._cond.notify()
                    return
                self._space.clear()
            await self._space.wait()

    def put_nowait(self, item: _Item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def get(self) -> _Item:
        with self._cond:
            while not self._items:
                self._cond.wait()
            item = self._items.pop(0)
            full = len(self._items) == QUEUE_DEPTH - 1
        if full and self._loop is not None and self._space is not None:
            self._loop.call_soon_threadsafe(self._space.set)
        return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
        if self._loop is not None and self._space is not None:
            self._loop.call_soon_threadsafe(self._space.set)


def _scheme(url: str) -> str:
    try:
        return httpx.URL(url).scheme.lower()
    except (httpx.InvalidURL, ValueError):
        return ""


class TimedOut(NestosError):
    """The cause of a fetch that failed because the server stayed silent."""


def _short_body(have: int, length: int) -> str:
    """The words httpx's own path uses for the same break (kernel path or not)."""
    return (
        "peer closed connection without sending complete message body "
        f"(received {have} bytes, expected {length})"
    )


def _int_header(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def fetch(
    url: str,
    *,
    retries: int | None = 0,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    on_final: Callable[[str], None] | None = None,
) -> HttpResponse:
    """Start a GET (retrying per docs/compat.md#http-retries) and return once headers are in.

    Raises NestosError("fetching '<url>'") when the server refuses. The caller checks
    `.status` (only 200 carries a body) and must close() the response. `on_final`
    checks the URL a redirect chain ended at (raising NestosError to refuse it); by
    default an https:// URL must end at https://.
    """
    budget = Budget(retries=retries)
    if sleep is not None:
        budget.sleep = sleep
    return HttpResponse(url, budget, on_final).open()


def fetch_bytes(
    url: str,
    *,
    retries: int | None = 0,
    limit: int = 64 << 20,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    on_final: Callable[[str], None] | None = None,
) -> tuple[HttpResponse, bytes]:
    """A small document (stream JSON, signature) in memory; refuses more than `limit`."""
    resp = fetch(url, retries=retries, sleep=sleep, on_final=on_final)
    try:
        if resp.length is not None and resp.length > limit:
            raise NestosError(f"reading '{resp.url}'") from NestosError(
                f"response too large ({resp.length} bytes, limit {limit})"
            )
        parts: list[bytes] = []
        total = 0
        while chunk := resp.read(BLOCK):
            total += len(chunk)
            if total > limit:
                raise NestosError(f"reading '{resp.url}'") from NestosError(
                    f"response larger than {limit} bytes"
                )
            parts.append(chunk)
        return resp, b"".join(parts)
    finally:
        resp.close()

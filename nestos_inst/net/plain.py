"""An httpcore network backend for plain http:// that owns its sockets outright.

httpx's default backend (anyio on asyncio transports) reads ahead into private
queues, so nobody can tell which body bytes are still in the kernel. This backend
does exactly one recv() per read httpcore asks for and counts the response's bytes.
Once every byte read from the socket has been handed to the caller, the rest of
the body can be moved by the kernel (splice/tee, net/http.py) without ever
entering Python. net/transport.py routes plain http:// without a proxy here, through a public
httpcore connection pool; proxied and https:// requests keep httpx's transports.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

# Response heads larger than this are left to the normal path (no fast path).
HEAD_SCAN_LIMIT = 64 << 10


class PlainStream(httpcore.AsyncNetworkStream):
    """A connected non-blocking TCP socket with per-response byte accounting."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._head = bytearray()
        self._head_len: int | None = None  # -1: unknown (too large, not a plain 200)
        self._read = 0  # bytes read since the last request was written

    def body_bytes_read(self) -> int | None:
        """Body bytes taken from the socket for the current 200 response, if known."""
        if self._head_len is None or self._head_len < 0:
            return None
        return self._read - self._head_len

    def _note(self, data: bytes) -> None:
        self._read += len(data)
        if self._head_len is not None:
            return
        self._head += data[: HEAD_SCAN_LIMIT - len(self._head)]
        end = self._head.find(b"\r\n\r\n")
        if end >= 0:
            status = self._head[:12]
            plain_200 = status[:7] == b"HTTP/1." and status[8:12] == b" 200"
            self._head_len = end + 4 if plain_200 else -1
            self._head = bytearray()
        elif len(self._head) >= HEAD_SCAN_LIMIT:
            self._head_len = -1
            self._head = bytearray()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            try:
                data = self.sock.recv(max_bytes)
            except BlockingIOError:
                loop = asyncio.get_running_loop()
                async with asyncio.timeout(timeout):
                    data = await loop.sock_recv(self.sock, max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc
        self._note(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._head = bytearray()
        self._head_len = None
        self._read = 0
        if not buffer:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(self.sock, buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self.sock.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # Only mounted for http:// without proxies: TLS never starts on these sockets.
        raise httpcore.ConnectError("TLS is not supported on the plain-HTTP transport")

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self.sock
        if info == "ssl_object":
            return None
        if info == "client_addr":
            return self.sock.getsockname()
        if info == "server_addr":
            return self.sock.getpeername()
        if info == "is_readable":
            return _readable(self.sock)
        return None


def _readable(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server."""
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _connect_text(exc: OSError, host: str, port: int) -> str:
    """Words for a failed connect (httpcore's pool drops the exception's cause, so
    the text must say it all; net/messages.py passes texts in this form through)."""
    if isinstance(exc, socket.gaierror):
        text = str(exc)
        reason = text.split("] ", 1)[1] if text.startswith("[Errno") and "] " in text else text
        return f"could not resolve host '{host}': {reason}"
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ECONNREFUSED:
        reason = "connection refused"
    return f"could not connect to {host} port {port}: {reason}"


class PlainBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                for family, kind, proto, _, addr in infos:
                    sock = socket.socket(family, kind, proto)
                    try:
                        sock.setblocking(False)
                        for option in socket_options or ():
                            sock.setsockopt(*option)
                        if local_address:
                            sock.bind((local_address, 0))
                        await loop.sock_connect(sock, addr)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    except OSError as exc:
                        sock.close()
                        last = exc
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return PlainStream(sock)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host} port {port}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(_connect_text(exc, host, port)) from exc
        if last is None:
            raise httpcore.ConnectError(f"could not resolve host '{host}': no address")
        raise httpcore.ConnectError(_connect_text(last, host, port)) from last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not supported here")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

"""The mirror of the end-to-end tests: Debian's nginx on 127.0.0.1, and a fault proxy.

Guests reach them only through QEMU's guestfwd (tests/e2e/vm.py `user_net`): the
guest asks http://10.0.2.100/, QEMU relays the connection to 127.0.0.1:PORT here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """`n` distinct ports that were free on 127.0.0.1 a moment ago (nginx binds them
    right after). All sockets stay bound until every port is picked, so the kernel
    cannot hand out the same port twice."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Hit:
    port: int
    method: str
    path: str
    status: int
    bytes_sent: int


class Nginx:
    """nginx serving `root` on one or more 127.0.0.1 ports, with its config, logs and
    temp files in `workdir`. Stopped (by its own PID) on `stop()` / context exit."""

    def __init__(self, root: Path, workdir: Path, *, ports: int = 1) -> None:
        self.root = root
        self.workdir = workdir
        self.ports = free_ports(ports)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports[0]

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        listens = "\n".join(f"    listen 127.0.0.1:{p};" for p in self.ports)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = w / "nginx.conf"
        conf.write_text(
            f"""{user}worker_processes 1;
daemon off;
error_log {w}/error.log info;
pid {w}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  log_format e2e '$server_port $request_method $uri $status $body_bytes_sent';
  access_log {w}/access.log e2e;
  client_body_temp_path {w}/body;
  proxy_temp_path {w}/proxy;
  fastcgi_temp_path {w}/fastcgi;
  uwsgi_temp_path {w}/uwsgi;
  scgi_temp_path {w}/scgi;
  types {{ application/json json; }}
  default_type application/octet-stream;
  sendfile on;
  keepalive_timeout 5;
  server {{
{listens}
    root {self.root};
    location / {{ }}
    # The same files from a slow mirror (128 KiB/s), for a download that lasts.
    location /slow/ {{ alias {self.root}/; limit_rate 128k; }}
  }}
}}
"""
        )
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(w)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited: {err}")
            try:
                for p in self.ports:
                    socket.create_connection(("127.0.0.1", p), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGQUIT: graceful stop of master and workers (same process group).
            os.kill(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def hits(self) -> list[Hit]:
        log = self.workdir / "access.log"
        out: list[Hit] = []
        if not log.exists():
            return out
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                out.append(Hit(int(parts[0]), parts[1], parts[2], int(parts[3]), int(parts[4])))
        return out


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of the mirror that, once, cuts the response to
    a GET of `drop_path` after `drop_after` bytes (headers included), as a flaky
    network or a restarting mirror would. Every other connection passes unchanged."""

    def __init__(self, upstream: int, drop_path: str, drop_after: int) -> None:
        self.upstream = upstream
        self.drop_path = drop_path
        self.drop_after = drop_after
        self.dropped = 0
        self.requests: list[str] = []
        self.ranged: list[str] = []  # requests that carried a Range header
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close does not)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        """Relay one connection. HTTP clients keep connections alive, so every request
        line in the client's stream is seen (not only the first); once a full GET of
        `drop_path` (no Range header) went upstream, the response stream is cut after
        `drop_after` more bytes."""
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        armed = threading.Event()

        def requests() -> None:
            buf = b""
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    buf += data
                    while b"\r\n\r\n" in buf:
                        head, buf = buf.split(b"\r\n\r\n", 1)
                        self._request(head, armed)
                    # Forwarded only once seen: armed before the mirror can answer
                    # (else a loaded host relays the whole body before the cut is set).
                    up.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    up.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        reader = threading.Thread(target=requests, daemon=True)
        reader.start()
        sent = 0
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    break
                if armed.is_set():
                    if sent + len(data) >= self.drop_after:
                        client.sendall(data[: self.drop_after - sent])
                        break
                    sent += len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, up):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _request(self, head: bytes, armed: threading.Event) -> None:
        line = head.split(b"\r\n", 1)[0].decode(errors="replace").lstrip()
        fields = line.split()
        with self._lock:
            self.requests.append(line)
            ranged = b"\r\nrange:" in head.lower()
            if ranged:
                self.ranged.append(line)
            first = fields[:2] == ["GET", self.drop_path] and not self.dropped
            if first and not ranged:
                self.dropped += 1
                armed.set()

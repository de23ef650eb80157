"""nginx on 127.0.0.1 serving a directory, with its own config and logs in a temp dir.

The benchmarks that install from a URL need a server that is not the bottleneck and
whose log tells whether any request failed: Debian's nginx-light, started here in the
foreground (daemon off) and stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Nginx:
    port: int
    root: Path
    log: Path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def statuses(self) -> list[int]:
        """The status of every logged request, in order."""
        out = []
        for line in self.log.read_text().splitlines():
            parts = line.split('"')
            if len(parts) > 2 and parts[2].split():
                out.append(int(parts[2].split()[0]))
        return out

    def failed(self) -> int:
        return sum(1 for s in self.statuses() if s >= 400)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def nginx(root: Path, work: Path) -> Iterator[Nginx]:
    """Serve `root` (files may be symlinks into the cache) until the block ends."""
    tmp = work / "nginx-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = work / "nginx.conf"
    log = work / "access.log"
    temps = "".join(
        f"  {kind}_temp_path {tmp}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        # root: the cache directory is 0700 (bench/images.py), workers must read it.
        f"user root;\nworker_processes 2;\npid {work}/nginx.pid;\n"
        f"error_log {work}/error.log;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log {log};\n  sendfile on;\n  tcp_nopush on;\n{temps}"
        "  default_type application/octet-stream;\n  keepalive_timeout 30;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n"
    )
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(work), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(work / 'error.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start")
            time.sleep(0.05)
        yield Nginx(port, root, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

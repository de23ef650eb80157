"""A real forward proxy (Debian's tinyproxy) on 127.0.0.1, with its own config and log."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROXY_VARS = (
    *("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"),
    *("all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"),
)


@dataclass
class Proxy:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines tinyproxy logged ("GET http://…", "CONNECT 127.0.0.1:…")."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [
            line.split("): ", 1)[1].strip()
            for line in text.splitlines()
            if "Request (file descriptor" in line and "): " in line
        ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def tinyproxy(directory: Path) -> Iterator[Proxy]:
    """tinyproxy in the foreground; stopped (by its own pid) when the block ends."""
    for _ in range(5):
        port = _free_port()
        log = directory / "tinyproxy.log"
        conf = directory / "tinyproxy.conf"
        conf.write_text(
            f'Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile "{log}"\n'
            "LogLevel Info\nMaxClients 50\nAllow 127.0.0.1\n"
        )
        proc = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.02)
            else:
                continue  # port taken meanwhile, or too slow: try another
            yield Proxy(port, log)
            return
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    raise RuntimeError("tinyproxy did not start")

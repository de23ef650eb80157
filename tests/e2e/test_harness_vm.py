"""The VM harness itself: an interrupted or stopped `run_qemu` leaves no QEMU behind.

A real QEMU (no disk, no network: SeaBIOS finds nothing to boot and waits), started
through `run_qemu` in a child Python process, which then gets SIGINT as from Ctrl-C.
Each QEMU carries a unique `-name`, so the check looks only at this test's processes.
No VM boots an OS, so this takes seconds; it is not a scenario of the report.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.vm import REPO

pytestmark = [pytest.mark.e2e]

CHILD = """
import signal, sys
from pathlib import Path
from tests.e2e.vm import run_qemu
# Ctrl-C must raise KeyboardInterrupt here even when the test runs in a background job
# (where SIGINT is inherited as ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    run_qemu(["-nic", "none", "-name", sys.argv[2]], workdir=Path(sys.argv[1]),
             timeout=600, memory=64)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("returned", flush=True)
"""


def _pids_named(marker: str) -> list[int]:
    """PIDs of processes whose command line holds `marker` (this test's QEMU)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in argv and any(a.endswith(b"qemu-system-x86_64") for a in argv):
            out.append(int(d.name))
    return out


def _wait_for(cond: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def marker() -> str:
    return f"nestos-e2e-leak-{uuid.uuid4().hex[:12]}"


def test_interrupted_run_leaves_no_qemu(tmp_path: Path, marker: str) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("missing qemu-system-x86_64 (make e2e-deps)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), marker],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for(lambda: bool(_pids_named(marker)), 60), "QEMU did not start"
        assert child.poll() is None
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        assert "interrupted" in out, (out, err)
        assert child.returncode == 130
        # Gone when run_qemu returns, not some time later.
        assert _pids_named(marker) == [], "QEMU outlived the interrupted run_qemu"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pid in _pids_named(marker):  # only this test's QEMU, by its unique name
            os.kill(pid, signal.SIGKILL)


def test_stop_on_ends_qemu(tmp_path: Path, marker: str) -> None:
    """`stop_on` (a console line) ends the VM: QEMU is gone when run_qemu returns."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("missing qemu-system-x86_64 (make e2e-deps)")
    from tests.e2e.vm import run_qemu

    try:
        # SeaBIOS prints its banner on the serial console of a diskless VM.
        b = run_qemu(["-nic", "none", "-name", marker], workdir=tmp_path, timeout=300,
                     stop_on="SeaBIOS", memory=64)  # fmt: skip
        assert "SeaBIOS" in b.marks, b.log[-2000:]
        assert not b.timed_out
        assert _pids_named(marker) == []
    finally:
        for pid in _pids_named(marker):
            os.kill(pid, signal.SIGKILL)


def _get(port: int, path: str, extra: str = "") -> bytes:
    """One HTTP/1.1 GET over a raw socket; everything the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                break
            if not data:
                break
            out += data
    return out


def test_fault_proxy_cuts_once_then_serves_ranges(tmp_path: Path) -> None:
    """The resume scenario's proxy on the host (no VM): the first full GET is cut at the
    given byte count, every time (it is armed before the mirror sees the request, so a
    fast mirror cannot outrun it); the Range request that follows is served whole."""
    if shutil.which("nginx") is None:
        pytest.skip("missing nginx (make e2e-deps)")
    from tests.e2e.mirror import FaultProxy, Nginx

    root = tmp_path / "www"
    root.mkdir()
    body = os.urandom(1 << 20)
    (root / "img").write_bytes(body)
    root.chmod(0o755)
    (root / "img").chmod(0o644)
    with Nginx(root, tmp_path / "nginx") as web:
        for _ in range(2):
            with FaultProxy(web.port, "/img", 256 * 1024) as proxy:
                first = _get(proxy.port, "/img")
                assert len(first) == 256 * 1024, len(first)  # headers + part of the body
                head, _, part = first.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                assert body.startswith(part)
                rest = _get(proxy.port, "/img", f"Range: bytes={len(part)}-\r\n")
                head2, _, tail = rest.partition(b"\r\n\r\n")
                assert head2.startswith(b"HTTP/1.1 206"), head2
                assert part + tail == body
                assert proxy.dropped == 1
                assert len(proxy.ranged) == 1

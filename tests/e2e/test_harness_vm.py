"""The VM harness itself: an interrupted, stopped or killed `run_qemu` leaves no QEMU
behind.

A real QEMU (no disk, no network: SeaBIOS finds nothing to boot and waits), started
through `run_qemu` in a child Python process (or a child pytest run), which then gets
SIGINT as from Ctrl-C, SIGTERM or SIGKILL.
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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.e2e.vm import REPO
from tests.helpers.cli import default_signal_actions

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


# A plain Python process (no conftest): SIGTERM keeps its default action, so the
# process dies on the spot without unwinding, as it would on SIGKILL.
BARE_CHILD = """
import signal, sys
from pathlib import Path
from tests.e2e.vm import run_qemu
signal.signal(signal.SIGTERM, signal.SIG_DFL)
run_qemu(["-nic", "none", "-name", sys.argv[2]], workdir=Path(sys.argv[1]),
         timeout=600, memory=64)
"""

# A pytest run with the repository's conftests (SIGTERM becomes an interruption, the
# e2e hooks stop every VM): two VMs booted by a scenario-style thread pool.
POOL_TEST = """
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tests.e2e.vm import end_pool, run_qemu

def test_pool(tmp_path: Path) -> None:
    pool = ThreadPoolExecutor(2)
    futs = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        futs.append(pool.submit(run_qemu, ["-nic", "none", "-name", os.environ["E2E_MARKER"]],
                                workdir=tmp_path / str(i), timeout=600, memory=64))
    try:
        for f in futs:
            f.result()
    finally:
        end_pool(pool, futs)
"""


# The same pool, plus a fixture whose teardown takes a few seconds (as detaching loop
# devices and unmounting can): signals repeated at a supervisor's pace land in it.
SLOW_TEARDOWN_TEST = POOL_TEST.replace(
    "def test_pool(tmp_path: Path) -> None:",
    """import time
import pytest

@pytest.fixture
def slow_teardown():
    yield
    time.sleep(4)
    Path(DONE_FILE).touch()

def test_pool(tmp_path: Path, slow_teardown: None) -> None:""",
)


def _pids_named(marker: str, *, qemu_only: bool = False) -> list[int]:
    """PIDs of processes whose command line holds `marker` (this test's QEMU and the
    `timeout` that runs it; with `qemu_only`, QEMU itself)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        named = argv[:1] if qemu_only else argv
        if marker.encode() in argv and any(a.endswith(b"qemu-system-x86_64") for a in named):
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
def marker() -> Iterator[str]:
    """A unique QEMU `-name` for this test. Whatever still carries it at the end (the
    test failed) is killed: only this test's processes, by their unique name."""
    name = f"nestos-e2e-leak-{uuid.uuid4().hex[:12]}"
    yield name
    for pid in _pids_named(name):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_killed_runner_leaves_no_qemu(tmp_path: Path, marker: str, sig: int) -> None:
    """The process running `run_qemu` dies without unwinding (an unhandled SIGTERM, or
    SIGKILL: a CI timeout's last resort): QEMU, in a session of its own, must not run
    on for its `timeout`; it ends within seconds of its starter."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("missing qemu-system-x86_64 (make e2e-deps)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", BARE_CHILD, str(tmp_path), marker],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert _wait_for(lambda: bool(_pids_named(marker)), 60), "QEMU did not start"
        child.send_signal(sig)
        assert child.wait(timeout=60) == -sig
        assert _wait_for(lambda: not _pids_named(marker), 30), "QEMU outlived its starter"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()


@contextmanager
def _pytest_run(tmp_path: Path, marker: str, module: str) -> Iterator[subprocess.Popen[str]]:
    """A child pytest run (the repository's conftests: SIGTERM is an interruption, the
    e2e hooks stop every VM) of the test module `module`, once its two QEMUs run;
    output merged into stdout. Afterwards no process of this test is left."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("missing qemu-system-x86_64 (make e2e-deps)")
    (tmp_path / "test_pool.py").write_text(module)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), E2E_MARKER=marker)
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "tests.conftest", "-p", "tests.e2e.conftest", "-c", str(tmp_path / "pytest.ini"),
         "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "base"),
         str(tmp_path / "test_pool.py")],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=default_signal_actions,  # noqa: PLW1509 - signal() only, before exec
    )  # fmt: skip
    try:
        started = _wait_for(lambda: len(_pids_named(marker, qemu_only=True)) == 2, 60)
        assert started, "QEMUs did not start"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def test_sigterm_to_pytest_run_stops_its_vms(tmp_path: Path, marker: str) -> None:
    """SIGTERM to a pytest e2e run (a CI timeout, a stopped session) stops the VMs its
    scenario pool started, as Ctrl-C does, and pytest ends as interrupted (exit 2)."""
    with _pytest_run(tmp_path, marker, POOL_TEST) as child:
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 2, out
        assert "Terminated: SIGTERM" in out, out
        assert _pids_named(marker) == [], "QEMU outlived the terminated pytest run"


def test_repeated_sigterm_to_pytest_run_is_quiet(tmp_path: Path, marker: str) -> None:
    """Four SIGTERMs 0.3 s apart (a supervisor repeating itself): the first interrupts
    the run, the others arrive during its cleanup and must not break it off. One line,
    which gets past pytest's output capture, says the run is already stopping; no
    traceback; the teardown completes, the VMs are stopped and pytest ends as
    interrupted (exit 2)."""
    done = tmp_path / "teardown-done"
    module = SLOW_TEARDOWN_TEST.replace("DONE_FILE", repr(str(done)))
    with _pytest_run(tmp_path, marker, module) as child:
        for i in range(4):
            if i:
                time.sleep(0.3)
            assert child.poll() is None, "the run ended before the last signal"
            child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 2, out
        assert "Terminated: SIGTERM" in out, out
        assert out.count("SIGTERM again: the test run is already stopping") == 1, out
        assert "Traceback" not in out and "During handling" not in out, out
        assert done.exists(), out
        assert _pids_named(marker) == [], "QEMU outlived the terminated pytest run"


def test_stop_on_ends_qemu(tmp_path: Path, marker: str) -> None:
    """`stop_on` (a console line) ends the VM: QEMU is gone when run_qemu returns."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("missing qemu-system-x86_64 (make e2e-deps)")
    from tests.e2e.vm import run_qemu

    # SeaBIOS prints its banner on the serial console of a diskless VM.
    b = run_qemu(["-nic", "none", "-name", marker], workdir=tmp_path, timeout=300,
                 stop_on="SeaBIOS", memory=64)  # fmt: skip
    assert "SeaBIOS" in b.marks, b.log[-2000:]
    assert not b.timed_out
    assert _pids_named(marker) == []


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

"""Real loop devices and mounts, always released by exact name.

Released also when the run is interrupted: Ctrl-C (KeyboardInterrupt), and SIGTERM or
SIGHUP, which tests/conftest.py turns into an interruption of the same kind for the
test process. Attaching/mounting and releasing run with those signals held back
(deferred_signals), so an interruption can neither fall between "the kernel attached a
device" and "we know its name" nor cut a clean-up short; the clean-up commands run in
a session of their own, out of reach of a second Ctrl-C sent to the terminal's group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block is done, then deliver the first one
    that arrived to the handler that was in place (the interruption happens after)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can set handlers, and only it receives them
        return
    pending: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        del frame
        pending.append(signum)

    saved = {sig: signal.signal(sig, hold) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


def release(*argv: str) -> bool:
    """Run a clean-up command to its end (own session, output captured); True if it
    succeeded. Failures are left to the caller: clean-up must go on regardless."""
    proc = subprocess.run(argv, capture_output=True, check=False, start_new_session=True)
    return proc.returncode == 0


@contextlib.contextmanager
def loop_device(
    image: str | os.PathLike[str],
    *,
    sector_size: int = 512,
    partitions: bool = True,
    scan: bool = False,
) -> Iterator[str]:
    """Attach `image`; add partition nodes with partx (this kernel has no table parser).

    `scan`: partition scanning on (`losetup -P`), so BLKRRPART works on the device (on
    this kernel it then *drops* the nodes; tests of that behaviour want it).
    """
    argv = ["losetup", "-f", "--show"]
    if scan:
        argv.append("-P")
    if sector_size != 512:
        argv += ["--sector-size", str(sector_size)]
    dev = ""
    try:
        with deferred_signals():
            dev = _run(*argv, os.fspath(image)).strip()
        if partitions:
            subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
        yield dev
    finally:
        if dev:
            with deferred_signals():
                release("partx", "-d", dev)
                release("losetup", "-d", dev)


@contextlib.contextmanager
def mounted(
    device: str, *, options: str | None = None, fstype: str | None = None
) -> Iterator[Path]:
    """Mount `device` on a private temp dir; unmount that exact dir afterwards (lazily
    if something still holds it, so the mount never outlives the test)."""
    where = Path(tempfile.mkdtemp(prefix="nestos-test-mnt-"))
    argv = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", options]
    is_mounted = False
    try:
        with deferred_signals():
            _run(*argv, device, str(where))
            is_mounted = True
        yield where
    finally:
        with deferred_signals():
            if is_mounted and not release("umount", str(where)):
                release("umount", "--lazy", str(where))
            with contextlib.suppress(OSError):
                where.rmdir()

"""Hostile sources and sinks for the fault tests: endless inputs, full filesystems,
closed pipes, and a memory cap for the process under test."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.helpers.cli import run_cli
from tests.helpers.loop import mounted

MEMORY_CAP = 1 << 30  # far above what any command needs, far below "read it all"


def cap_memory() -> None:
    """In the child: an address-space cap, so an unbounded read fails (MemoryError,
    a traceback) instead of growing until the OOM killer ends the test run."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_capped(
    *args: str | os.PathLike[str],
    input: bytes | None = None,
    stdin: int | None = None,
    stdout: int | None = subprocess.PIPE,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    """The CLI under a 1 GiB address-space cap (see `cap_memory`)."""
    return run_cli(
        *args,
        input=input,
        stdin=stdin,
        stdout=stdout,
        env={"LC_ALL": "C.UTF-8"},
        timeout=timeout,
        preexec_fn=cap_memory,
    )


@contextlib.contextmanager
def endless_fifo(directory: Path) -> Iterator[Path]:
    """A FIFO fed with zeros until the reader goes away (the writer never ends)."""
    path = directory / "endless.fifo"
    os.mkfifo(path)
    stop = threading.Event()

    def feed() -> None:
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            return
        chunk = bytes(1 << 16)
        try:
            while not stop.is_set():
                os.write(fd, chunk)
        except OSError:
            pass  # EPIPE: the reader is gone
        finally:
            os.close(fd)

    worker = threading.Thread(target=feed, daemon=True)
    worker.start()
    try:
        yield path
    finally:
        stop.set()
        # Unblock a writer still waiting for a reader.
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        worker.join(10)


@contextlib.contextmanager
def tiny_fs(size_kib: int = 64) -> Iterator[Path]:
    """A real tmpfs of `size_kib` KiB (needs root), unmounted by its exact path."""
    with mounted("tmpfs", fstype="tmpfs", options=f"size={size_kib}k,mode=0755") as where:
        yield where


def fill(directory: Path) -> None:
    """Use up every free block of the filesystem holding `directory`."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)


def run_to_closed_pipe(
    args: Sequence[str | os.PathLike[str]],
) -> subprocess.CompletedProcess[bytes]:
    """The CLI writing into a pipe whose reader is already gone (EPIPE or SIGPIPE)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return run_capped(*args, stdout=w, stdin=subprocess.DEVNULL)
    finally:
        os.close(w)


def run_to_full(args: Sequence[str | os.PathLike[str]]) -> subprocess.CompletedProcess[bytes]:
    """The CLI with stdout on /dev/full (every write fails with ENOSPC)."""
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        return run_capped(*args, stdout=fd, stdin=subprocess.DEVNULL)
    finally:
        os.close(fd)


def listing(directory: Path) -> dict[str, tuple[int, bytes]]:
    """name → (mode, bytes) of every file below `directory` (to prove nothing changed)."""
    out: dict[str, tuple[int, bytes]] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(directory))] = (p.stat().st_mode & 0o7777, p.read_bytes())
    return out

"""Real loop devices and mounts, always released by exact name."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def loop_device(
    image: str | os.PathLike[str], *, sector_size: int = 512, partitions: bool = True
) -> Iterator[str]:
    """Attach `image`; add partition nodes with partx (this kernel has no table parser)."""
    argv = ["losetup", "-f", "--show"]
    if sector_size != 512:
        argv += ["--sector-size", str(sector_size)]
    dev = _run(*argv, os.fspath(image)).strip()
    try:
        if partitions:
            subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
        yield dev
    finally:
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


@contextlib.contextmanager
def mounted(device: str, *, options: str | None = None) -> Iterator[Path]:
    """Mount `device` on a private temp dir; unmount that exact dir afterwards."""
    where = Path(tempfile.mkdtemp(prefix="nestos-test-mnt-"))
    argv = ["mount"]
    if options:
        argv += ["-o", options]
    try:
        _run(*argv, device, str(where))
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], capture_output=True, check=False)
    finally:
        with contextlib.suppress(OSError):
            where.rmdir()

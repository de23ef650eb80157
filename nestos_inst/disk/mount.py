"""Mount a filesystem on a private temp dir for the duration of a block."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import CommandError, NestosError
from ..run import run

UMOUNT_TRIES = 20
UMOUNT_DELAY = 0.1


def _unmount(where: Path) -> None:
    """A just-closed file can keep the fs busy for a moment: retry, then report."""
    last: CommandError | None = None
    for attempt in range(UMOUNT_TRIES):
        try:
            run(["umount", str(where)])
            return
        except CommandError as exc:
            last = exc
            if attempt < UMOUNT_TRIES - 1:
                time.sleep(UMOUNT_DELAY)
    raise NestosError(f"unmounting {where}") from last


@contextlib.contextmanager
def mount_private(
    dev: str, fstype: str, *, prefix: str = "nestos-installer", options: str | None = None
) -> Iterator[Path]:
    """`dev` mounted on a fresh 0700 dir under /tmp; unmounted and removed afterwards.

    A failure to unmount is raised only when the body itself succeeded, so the body's
    error (the interesting one) is never masked.
    """
    where = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))
    try:
        argv = ["mount", "-t", fstype]
        if options:
            argv += ["-o", options]
        try:
            run([*argv, dev, str(where)])
        except CommandError as exc:
            raise NestosError(f"mounting {dev} ({fstype}) on {where}") from exc
        body_ok = False
        try:
            yield where
            body_ok = True
        finally:
            try:
                _unmount(where)
            except NestosError:
                if body_ok:
                    raise
    finally:
        if not os.path.ismount(where):
            with contextlib.suppress(OSError):
                where.rmdir()

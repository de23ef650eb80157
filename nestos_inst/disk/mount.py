"""Mount a filesystem on a private temp dir for the duration of a block."""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import CommandError, NestosError
from ..run import run

UMOUNT_TRIES = 20
UMOUNT_DELAY = 0.1
_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_private_threads: set[int] = set()


def enter_private_mount_namespace() -> None:
    """Give the calling thread its own mount namespace whose mounts never propagate out.

    Namespaces are per thread: only this thread (and programs it starts) sees mounts
    made afterwards, so mount, use and unmount from the same thread. Idempotent.
    """
    tid = threading.get_native_id()
    if tid in _private_threads:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise NestosError("creating a private mount namespace") from OSError(err, os.strerror(err))
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise NestosError("making mounts private") from OSError(err, os.strerror(err))
    _private_threads.add(tid)


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
    dev: str,
    fstype: str,
    *,
    prefix: str = "nestos-installer",
    options: str | None = None,
    private_namespace: bool = False,
) -> Iterator[Path]:
    """`dev` mounted on a fresh 0700 dir under /tmp; unmounted and removed afterwards.

    With `private_namespace` the mount is made in a namespace of this thread only
    (upstream's `unshare(CLONE_NEWNS)`), invisible to the rest of the system. A failure
    to unmount is raised only when the body itself succeeded, so the body's error (the
    interesting one) is never masked.
    """
    if private_namespace:
        enter_private_mount_namespace()
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

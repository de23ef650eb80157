"""FS_IOC_FIEMAP from Python: where a file's bytes sit on its block device.

Only plain, aligned, written extents can be copied back from an object file at
install time, so any extent the kernel flags as special is a hard error.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from ..errors import FormatError, NestosError
from .format import Extent

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_MAX_OFFSET = 0xFFFF_FFFF_FFFF_FFFF

FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_ENCODED = 0x8
FIEMAP_EXTENT_NOT_ALIGNED = 0x100
FIEMAP_EXTENT_UNWRITTEN = 0x800
FIEMAP_EXTENT_MERGED = 0x1000

FATAL_FLAGS = {
    FIEMAP_EXTENT_NOT_ALIGNED: "NOT_ALIGNED",
    FIEMAP_EXTENT_MERGED: "MERGED",
    FIEMAP_EXTENT_ENCODED: "ENCODED",
    FIEMAP_EXTENT_DELALLOC: "DELALLOC",
    FIEMAP_EXTENT_UNWRITTEN: "UNWRITTEN",
    FIEMAP_EXTENT_UNKNOWN: "UNKNOWN",
}

_HEADER = struct.Struct("=QQIIII")  # fm_start, fm_length, flags, mapped, count, reserved
_EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2 reserved, flags, 3 res.
_BATCH = 512


def check_flags(flags: int, logical: int) -> None:
    bad = [name for bit, name in FATAL_FLAGS.items() if flags & bit]
    if bad:
        raise FormatError(
            f"extent at logical offset {logical} has unsupported flags {flags:#x} "
            f"({', '.join(bad)})"
        )


def fiemap_fd(fd: int) -> list[Extent]:
    """Every extent of the open file, in logical order."""
    extents: list[Extent] = []
    start = 0
    while True:
        buf = bytearray(_HEADER.size + _BATCH * _EXTENT.size)
        _HEADER.pack_into(buf, 0, start, FIEMAP_MAX_OFFSET - start, FIEMAP_FLAG_SYNC, 0, _BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        mapped = _HEADER.unpack_from(buf, 0)[3]
        if mapped == 0:
            return extents
        last = False
        for i in range(mapped):
            logical, physical, length, _r1, _r2, flags, *_ = _EXTENT.unpack_from(
                buf, _HEADER.size + i * _EXTENT.size
            )
            check_flags(flags, logical)
            extents.append(Extent(logical, physical, length))
            last = bool(flags & FIEMAP_EXTENT_LAST)
            start = logical + length
        if last:
            return extents


def fiemap_path(path: Path) -> list[Extent]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise NestosError(f"opening {str(path)!r}") from exc
    try:
        return fiemap_fd(fd)
    except OSError as exc:
        raise NestosError(f"mapping extents of {str(path)!r}") from exc
    except FormatError as exc:
        raise FormatError(f"mapping extents of {str(path)!r}") from exc
    finally:
        os.close(fd)

"""The three output modes of every ISO-modifying command (docs/compat.md#iso-output-modes).

In place: only the changed regions are written. `-o PATH`: the input is copied by the
kernel (copy_file_range, hole-preserving) into a 0600 temp file beside PATH, patched,
then linked to PATH without clobbering. `-o -`: streamed to stdout with the regions
substituted. All three produce the same bytes.
"""

from __future__ import annotations

import errno
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import FormatError, NestosError
from ..io.pipeline import pwrite_all, write_all
from .iso9660 import descriptors_end, file_size

_CHUNK = 1 << 20
_BIG_CHUNK = 1 << 30
_TEMP_CHARS = string.ascii_letters + string.digits
Regions = Sequence[tuple[int, bytes]]


@dataclass(frozen=True)
class Area:
    """A byte range of the image that metadata says we may rewrite."""

    what: str
    offset: int
    length: int


def check_areas(areas: Sequence[Area], size: int, reserved: int) -> None:
    """The one rule for every area an ISO's metadata points at, checked before any
    write path touches a byte: inside the file, clear of the system area and volume
    descriptors (the first `reserved` bytes), and not overlapping one another."""
    ordered = sorted(areas, key=lambda a: (a.offset, a.length))
    prev: Area | None = None
    for area in ordered:
        end = area.offset + area.length
        if area.offset < 0 or area.length < 0 or end > size:
            raise FormatError(
                f"{area.what} at offset {area.offset} length {area.length} extends beyond "
                f"end of image ({size} bytes)"
            )
        if area.length and area.offset < reserved:
            raise FormatError(
                f"{area.what} at offset {area.offset} overlaps the system area or volume "
                f"descriptors (first {reserved} bytes)"
            )
        if prev is not None and area.length and area.offset < prev.offset + prev.length:
            raise FormatError(
                f"{area.what} at offset {area.offset} overlaps {prev.what} at offset "
                f"{prev.offset} length {prev.length}"
            )
        if area.length:
            prev = area


def check_regions(regions: Regions, size: int, reserved: int = 0) -> list[tuple[int, bytes]]:
    """Sorted regions; overlapping, out-of-file and reserved-area regions are refused
    before any write (`check_areas` with the compat messages for the first two)."""
    ordered = sorted(regions, key=lambda r: r[0])
    pos = 0
    for offset, data in ordered:
        if offset < pos:
            raise FormatError(f"region starting at {offset} precedes current offset {pos}")
        pos = offset + len(data)
        if pos > size:
            raise FormatError(f"region starting at {offset} extends beyond end of image")
    check_areas([Area("region", off, len(data)) for off, data in ordered], size, reserved)
    return ordered


def _checked(fd: int, regions: Regions) -> tuple[int, list[tuple[int, bytes]]]:
    size = file_size(fd)
    return size, check_regions(regions, size, descriptors_end(fd))


def write_in_place(fd: int, regions: Regions, path: str) -> None:
    """Patch only the regions; `fd` must be open read-write."""
    _, ordered = _checked(fd, regions)
    with _ctx(f"writing {path}"):
        for offset, data in ordered:
            pwrite_all(fd, data, offset)


def write_stream(fd: int, regions: Regions, out_fd: int, append: bytes = b"") -> None:
    """Stream the whole input to `out_fd` with the regions substituted, then `append`
    (`pxe customize` adds its archive after the input)."""
    size, ordered = _checked(fd, regions)
    pos = 0
    with _ctx("writing to stdout"):
        for offset, data in ordered:
            _send(fd, out_fd, pos, offset - pos)
            write_all(out_fd, data)
            pos = offset + len(data)
        _send(fd, out_fd, pos, size - pos)
        if append:
            write_all(out_fd, append)


def write_copy(
    fd: int, regions: Regions, output: str, temp_prefix: str, append: bytes = b""
) -> None:
    """Copy to a temp file beside `output`, patch it, add `append` at the end, link it
    to `output` (no clobber)."""
    size, ordered = _checked(fd, regions)
    parent = os.path.dirname(os.path.abspath(output))
    tmp_fd, tmp_path = _create_temp(parent, temp_prefix)
    try:
        try:
            with _ctx(f"copying to {tmp_path}"):
                copy_sparse(fd, tmp_fd, size)
            with _ctx(f"writing {tmp_path}"):
                for offset, data in ordered:
                    pwrite_all(tmp_fd, data, offset)
                if append:
                    pwrite_all(tmp_fd, append, size)
        finally:
            os.close(tmp_fd)
        with _ctx(f"persisting output file to {output}"):
            os.link(tmp_path, output)
    finally:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass


def copy_sparse(src: int, dst: int, size: int) -> None:
    """Copy `size` bytes of src into dst in the kernel, keeping holes as holes."""
    os.ftruncate(dst, size)
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                _copy_range(src, dst, pos, size - pos)
                return
            raise
        end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        if start >= size:
            return
        _copy_range(src, dst, start, end - start)
        pos = end


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
    """copy_file_range (reflink or in-kernel copy); plain pread/pwrite if refused."""
    done = 0
    while done < count:
        try:
            n = os.copy_file_range(
                src, dst, min(count - done, _BIG_CHUNK), offset + done, offset + done
            )
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                _copy_userspace(src, dst, offset + done, count - done)
                return
            raise
        if n == 0:
            raise FormatError(f"unexpected end of input at offset {offset + done}")
        done += n


def _copy_userspace(src: int, dst: int, offset: int, count: int) -> None:
    end = offset + count
    while offset < end:
        data = os.pread(src, min(_CHUNK, end - offset), offset)
        if not data:
            raise FormatError(f"unexpected end of input at offset {offset}")
        pwrite_all(dst, data, offset)
        offset += len(data)


def _send(src: int, dst: int, offset: int, count: int) -> None:
    """sendfile to the (pipe or file) output; read/write if the kernel refuses."""
    end = offset + count
    while offset < end:
        try:
            n = os.sendfile(dst, src, offset, min(end - offset, _BIG_CHUNK))
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                while offset < end:
                    data = os.pread(src, min(_CHUNK, end - offset), offset)
                    if not data:
                        raise FormatError(f"unexpected end of input at offset {offset}") from None
                    write_all(dst, data)
                    offset += len(data)
                return
            raise
        if n == 0:
            raise FormatError(f"unexpected end of input at offset {offset}")
        offset += n


def _create_temp(parent: str, prefix: str) -> tuple[int, str]:
    """`<prefix>XXXXXX` in parent, created exclusively with mode 0600."""
    for _ in range(100):
        name = prefix + "".join(_TEMP_CHARS[b % len(_TEMP_CHARS)] for b in os.urandom(6))
        path = os.path.join(parent, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise NestosError(f"creating temporary file in {parent}") from exc
        return fd, path
    raise NestosError(f"creating temporary file in {parent}: too many collisions")


class _ctx:
    """Like errors.context, but lets our own errors through unwrapped."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, OSError):
            raise NestosError(self.message) from exc

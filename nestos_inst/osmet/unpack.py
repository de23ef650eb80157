"""Rebuild a disk image from an osmet file plus an OSTree repo (docs/compat.md#osmet-unpack).

The image is produced by a worker thread (xz decode, object reads, SHA-256) and handed
to the reader through a bounded queue, so decoding and writing use both cores. Size
and digest are checked by the worker; a mismatch surfaces from the reader's final
`read()` as `while unpacking: ...`, i.e. before the caller can declare success.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..disk import blockdev
from ..errors import FormatError, NestosError, VerifyError
from ..io.compress import open_decompressed
from ..io.pipeline import pwrite_all
from .format import Osmet, OsmetFile, checksum_to_object_path, read_file

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)
# Block-granular extents may run past an object's EOF by less than one fs block.
MAX_TAIL_SLACK = 1 << 16
_XZ_MEMLIMIT = 1 << 30


def object_sizes(osmet: Osmet, repo: Path) -> dict[bytes, int]:
    """Stat every referenced object; refuse missing, non-regular or short ones."""
    sizes: dict[bytes, int] = {}
    for part in osmet.partitions:
        for m in part.mappings:
            size = sizes.get(m.object)
            if size is None:
                path = checksum_to_object_path(repo, m.object)
                try:
                    st = os.stat(path, follow_symlinks=False)
                except OSError as exc:
                    raise NestosError(f"missing OSTree object {m.object.hex()}") from exc
                if not stat.S_ISREG(st.st_mode):
                    raise NestosError(f"OSTree object {m.object.hex()} is not a regular file")
                size = sizes[m.object] = st.st_size
            _check_object_size(m.object, size, m.extent.logical, m.extent.length)
    return sizes


def _check_object_size(digest: bytes, size: int, logical: int, length: int) -> None:
    if length and (logical >= size or logical + length - size >= MAX_TAIL_SLACK):
        raise NestosError(
            f"OSTree object {digest.hex()} is shorter than its mapping: "
            f"{size} bytes, mapping covers {logical}..{logical + length}"
        )


def generate(osmet_file: OsmetFile, repo: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """The image bytes in order; raises at the end unless size and SHA-256 match."""
    osmet = osmet_file.osmet
    with osmet_file.path.open("rb", buffering=0) as raw:
        raw.seek(osmet_file.data_offset)
        # One xz stream ending the file (trailing bytes and truncation are errors); one
        # core, since this already runs beside the writer and the packed part is small.
        packed = open_decompressed(
            io.BufferedReader(raw, 1 << 16), expect="xz", memlimit=_XZ_MEMLIMIT, parallel=False
        )

        def from_packed(n: int) -> Iterator[bytes]:
            while n > 0:
                data = packed.read1(min(n, chunk))
                if not data:
                    raise FormatError(f"packed image ended early: {n} bytes missing")
                n -= len(data)
                yield data

        cursor = 0
        for part in osmet.partitions:
            yield from from_packed(part.start_offset - cursor)
            cursor = part.start_offset
            for m in part.mappings:
                start = part.start_offset + m.extent.physical
                yield from from_packed(start - cursor)
                yield from _from_object(repo, m.object, m.extent.logical, m.extent.length, chunk)
                cursor = start + m.extent.length
            yield from from_packed(part.end_offset - cursor)
            cursor = part.end_offset
        while data := packed.read1(chunk):
            yield data


def _from_object(repo: Path, obj: bytes, logical: int, length: int, chunk: int) -> Iterator[bytes]:
    path = checksum_to_object_path(repo, obj)
    try:
        f = path.open("rb", buffering=0)
    except OSError as exc:
        raise NestosError(f"opening {str(path)!r}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        _check_object_size(obj, size, logical, length)
        n = min(length, size - logical)
        f.seek(logical)
        while n > 0:
            data = f.read(min(n, chunk))
            if not data:
                raise NestosError(f"OSTree object {obj.hex()} changed while reading")
            n -= len(data)
            length -= len(data)
            yield data
    while length > 0:
        k = min(length, len(_ZEROS))
        yield _ZEROS if k == len(_ZEROS) else bytes(k)
        length -= k


def verified(osmet_file: OsmetFile, repo: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """`generate` plus the size and digest checks of docs/compat.md#osmet-unpack."""
    digest = hashlib.sha256()
    total = 0
    for data in generate(osmet_file, repo, chunk):
        digest.update(data)
        total += len(data)
        yield data
    expected = osmet_file.osmet.size
    if total != expected:
        raise VerifyError(f"wrote {total} bytes but expected {expected}")
    got = digest.hexdigest()
    want = osmet_file.osmet.checksum.hex()
    if got != want:
        raise VerifyError(f"expected final checksum {want}, but got {got}")


_EOF = object()


class OsmetReader(io.RawIOBase):
    """The rebuilt image as a readable stream, produced by a worker thread."""

    def __init__(self, chunks: Callable[[], Iterator[bytes]], depth: int = 8) -> None:
        super().__init__()
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._buf = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(
            target=self._work, args=(chunks,), name="osmet-unpack", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, chunks: Callable[[], Iterator[bytes]]) -> None:
        try:
            for data in chunks():
                if not self._put(data):
                    return
        except Exception as exc:
            self._put(exc)
            return
        self._put(_EOF)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            if self._done:
                return 0
            item = self._q.get()
            if item is _EOF:
                self._done = True
                return 0
            if isinstance(item, BaseException):
                self._done = True
                raise NestosError("while unpacking") from item
            assert isinstance(item, bytes)
            self._buf = memoryview(item)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        """Whole chunks when possible, so big reads avoid an extra copy."""
        if size is None or size < 0:
            return self.readall()
        if not self._buf and not self._done:
            item = self._q.get()
            if item is _EOF:
                self._done = True
                return b""
            if isinstance(item, BaseException):
                self._done = True
                raise NestosError("while unpacking") from item
            assert isinstance(item, bytes)
            if len(item) <= size:
                return item
            self._buf = memoryview(item)
        out = bytearray(min(size, len(self._buf)))
        n = self.readinto(out)
        return bytes(out[:n])

    def read1(self, size: int = -1) -> bytes:
        """One chunk of the rebuilt image (the SourceStream fast read)."""
        return self.read(size if size >= 0 else 1 << 20)

    def close(self) -> None:
        self._stop.set()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
        super().close()


def open_image(osmet_file: OsmetFile, repo: Path) -> OsmetReader:
    """Check every object first (nothing read yet), then start the rebuild."""
    object_sizes(osmet_file.osmet, repo)
    return OsmetReader(lambda: verified(osmet_file, repo))


def _device_size(fd: int) -> int | None:
    st = os.fstat(fd)
    if not stat.S_ISBLK(st.st_mode):
        return None
    return blockdev.device_size(fd)


FIRST_MIB = 1 << 20


def unpack_to_device(osmet_path: Path, repo: Path, device: Path) -> None:
    """`dev extract osmet`: rebuild onto DEV; the first MiB is written last, after the
    digest matched, so a failed rebuild never leaves a valid-looking partition table."""
    osmet_file = read_file(osmet_path)
    size = osmet_file.osmet.size
    object_sizes(osmet_file.osmet, repo)
    try:
        fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NestosError(f"opening {str(device)!r}") from exc
    try:
        dev_size = _device_size(fd)
        if dev_size is not None and dev_size < size:
            raise NestosError(f"image size {size} is larger than device size {dev_size}")
        reader = open_image(osmet_file, repo)
        try:
            _copy_first_mib_last(reader, fd, size, device)
        finally:
            reader.close()
    finally:
        os.close(fd)


def _copy_first_mib_last(reader: OsmetReader, fd: int, size: int, device: Path) -> None:
    """Zeros over the first MiB first, the image after it, its first MiB last."""
    try:
        head = bytearray()
        os.pwrite(fd, bytes(min(FIRST_MIB, size)), 0)
        os.fsync(fd)
        pos = 0
        while data := reader.read(CHUNK):
            if pos < FIRST_MIB:
                take = data[: FIRST_MIB - pos]
                head += take
                rest = memoryview(data)[len(take) :]
                pos += len(take)
                if rest:
                    pwrite_all(fd, rest, pos)
                    pos += len(rest)
            else:
                pwrite_all(fd, memoryview(data), pos)
                pos += len(data)
        os.fsync(fd)
        pwrite_all(fd, memoryview(head), 0)
        os.fsync(fd)
    except OSError as exc:
        raise NestosError(f"writing to {device}") from exc

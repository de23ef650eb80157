"""Compressed test payloads built with the real tools (xz, gzip, zstd) and Python."""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

from nestos_inst.errors import FormatError


def payload(size: int, seed: int = 1) -> bytes:
    """Mixed data: text-like runs, zeros and random bytes (realistic ratios, fast)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    out = bytearray()
    words = [b"boot", b"loader", b"nestos", b"ostree", b"\x00" * 64, b"kernel", b"\n"]
    while len(out) < size:
        kind = rng.randrange(3)
        n = rng.randrange(1, 20000)
        if kind == 0:
            out += b" ".join(rng.choice(words) for _ in range(n // 6 + 1))
        elif kind == 1:
            out += bytes(n)
        else:
            out += rng.randbytes(n)
    return bytes(out[:size])


def tool(argv: list[str], data: bytes) -> bytes:
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def xz_multiblock(data: bytes, block_size: int = 65536, check: str = "crc64") -> bytes:
    """A multi-threaded-style xz stream: every block header carries both sizes."""
    return tool(["xz", "-1", "-T2", f"--block-size={block_size}", f"--check={check}", "-c"], data)


def xz_single(data: bytes, check: int = lzma.CHECK_CRC64) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=check, preset=1)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def zst(data: bytes, *extra: str) -> bytes:
    return tool(["zstd", "-q", "-1", "-c", *extra], data)


def write(path: str | os.PathLike[str], data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def filled_target(tmp_path: Path, size: int = 8 << 20) -> Iterator[tuple[Path, int]]:
    """A `size`-byte file of 0xAA (so untouched bytes show) open read-write: (path, fd)."""
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xaa" * size)
    fd = os.open(path, os.O_RDWR)
    try:
        yield path, fd
    finally:
        os.close(fd)


class Pieces(io.RawIOBase):
    """Hands out `data` in pieces of the given sizes (cycled), as decoders do."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._view = memoryview(data)
        self._sizes = sizes
        self._i = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        n = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        out = bytes(self._view[:n])
        self._view = self._view[len(out) :]
        return out


class FailingReader(io.RawIOBase):
    """Gives `after` bytes of b"z", then fails as a decoder does (a FormatError with
    a cause), to check that errors cross the copy threads with their chain."""

    def __init__(self, after: int) -> None:
        self.left = after

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.left <= 0:
            raise FormatError("decoding failed") from ValueError("inner reason")
        n = min(self.left, size if size and size > 0 else 4096)
        self.left -= n
        return b"z" * n


class EndlessReader(io.RawIOBase):
    """Never ends: `piece` bytes of b"y" a read, counted in `reads`, to check that a
    failed write stops the reader rather than leaving it running."""

    def __init__(self, piece: int) -> None:
        self.piece = piece
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return b"y" * self.piece


@contextlib.contextmanager
def read_only_fd(tmp_path: Path) -> Iterator[int]:
    """An empty file opened read-only: every write to it fails (EBADF)."""
    path = tmp_path / "ro"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)

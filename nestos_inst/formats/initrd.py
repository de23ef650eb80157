"""Initrd images: concatenated newc archives, each raw or gzip/xz/zstd compressed.

The reader follows docs/compat.md#initrd-reader (the kernel's own rules: zero padding between
archives, last copy of a path wins); the writer produces the exact xz archive of
docs/compat.md#initrd-archive-format.
Decompression is streamed with bounded output per step, so a small hostile input
can't balloon in memory beyond the members actually kept.
"""

from __future__ import annotations

import io
import lzma
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO, Protocol

from ..errors import FormatError
from ..profile import ALL, Profile
from . import cpio
from .glob import compile_globs

_CHUNK = 1 << 20
_ZSTD_FRAME = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"
# xz -9 needs 65 MiB to decode; a forged header must not make us reserve gigabytes.
_XZ_MEMLIMIT = 512 << 20

archive_bytes = cpio.write_archive


class _Input:
    """The outer byte stream, with peeking and push-back of over-read bytes."""

    def __init__(self, stream: BinaryIO, tee: Callable[[bytes], object] | None = None) -> None:
        self._stream = stream
        self._tee = tee
        self._buf = b""
        self._pos = 0

    def _pull(self, n: int) -> bytes:
        data = self._stream.read(n)
        if data and self._tee is not None:
            self._tee(data)
        return data

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            data = self._pull(max(n, _CHUNK))
            if not data:
                break
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        return self._buf[self._pos : self._pos + n]

    def read(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            if n >= _CHUNK:
                return self._pull(n)
            self._buf, self._pos = self._pull(_CHUNK), 0
        data = self._buf[self._pos : self._pos + n]
        self._pos += len(data)
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self._buf = data + self._buf[self._pos :]
            self._pos = 0

    def skip_zeros(self) -> None:
        while True:
            chunk = self.peek(1)
            if not chunk:
                return
            rest = self._buf[self._pos :]
            stripped = rest.lstrip(b"\0")
            if len(stripped) != len(rest):
                self._pos += len(rest) - len(stripped)
                continue
            return

    def at_end(self) -> bool:
        return not self.peek(1)


class _Decoder(Protocol):
    def read(self, n: int) -> bytes: ...


def _truncated(kind: str) -> FormatError:
    return FormatError(f"unexpected end of {kind} stream")


class _Decoded:
    """Serves small reads (cpio headers) from whole decoded chunks.

    Asking a decompressor for 110 bytes at a time would cost a library call per
    header; subclasses instead produce up to ~1 MiB per call, which also bounds memory.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def _produce(self) -> bytes:
        """The next non-empty chunk of output, or b"" at the end of the stream."""
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            self._buf = self._produce()
            self._pos = 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out


class _Gzip(_Decoded):
    """One gzip member; bytes after it are pushed back to the input."""

    def __init__(self, inp: _Input) -> None:
        super().__init__()
        self._inp = inp
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._tail = b""
        self._eof = False

    def _produce(self) -> bytes:
        while not self._eof:
            data = self._tail or self._inp.read(_CHUNK)
            try:
                out = self._z.decompress(data, _CHUNK)
            except zlib.error as exc:
                raise FormatError("decoding gzip stream") from exc
            self._tail = self._z.unconsumed_tail
            if self._z.eof:
                self._eof = True
                self._inp.unread(self._z.unused_data)
            if out:
                return out
            if not data:
                raise _truncated("gzip")
        return b""


class _Xz(_Decoded):
    """One xz stream; stream padding and what follows go back to the input."""

    def __init__(self, inp: _Input) -> None:
        super().__init__()
        self._inp = inp
        self._x = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)
        self._eof = False

    def _produce(self) -> bytes:
        while not self._eof:
            data = self._inp.read(_CHUNK) if self._x.needs_input else b""
            if self._x.needs_input and not data:
                raise _truncated("xz")
            try:
                out = self._x.decompress(data, _CHUNK)
            except lzma.LZMAError as exc:
                raise FormatError("decoding xz stream") from exc
            if self._x.eof:
                self._eof = True
                self._inp.unread(self._x.unused_data)
            if out:
                return out
        return b""


def _zstd_magic(head: bytes) -> int | None:
    """The frame magic if `head` starts a zstd (or skippable) frame with data after it."""
    if len(head) <= 4:
        return None
    value = int.from_bytes(head[:4], "little")
    if value == _ZSTD_FRAME or (value & 0xFFFFFFF0) == _ZSTD_SKIPPABLE:
        return value
    return None


class _Zstd(_Decoded):
    """Consecutive zstd frames decoded as one stream.

    The frame and block headers are walked here so we know exactly where the last
    frame ends (the library would swallow following bytes) and so each library call
    decodes at most one block (<= 128 KiB) — bounded memory for hostile input.
    """

    def __init__(self, inp: _Input) -> None:
        import zstandard

        super().__init__()
        self._zstd = zstandard
        self._inp = inp
        self._dobj: Any = None
        self._checksum = False
        self._eof = False

    def _read(self, n: int) -> bytes:
        try:
            return cpio.read_exact(self._inp.read, n, "zstd frame")
        except FormatError as exc:
            raise _truncated("zstd") from exc

    def _skip(self, n: int) -> None:
        while n > 0:
            n -= len(self._read(min(n, _CHUNK)))

    def _feed(self, data: bytes) -> bytes:
        try:
            out: bytes = self._dobj.decompress(data)
        except self._zstd.ZstdError as exc:
            raise FormatError("decoding zstd stream") from exc
        return out

    def _start_frame(self) -> bytes | None:
        """Begin the next frame (output of its header); None when the stream has ended."""
        while True:
            magic = _zstd_magic(self._inp.peek(5))
            if magic is None:
                return None
            head = self._read(4)
            if magic != _ZSTD_FRAME:
                self._skip(int.from_bytes(self._read(4), "little"))
                continue
            desc = self._read(1)[0]
            fcs_flag, single, dict_flag = desc >> 6, (desc >> 5) & 1, desc & 3
            if desc & 0x08:
                raise FormatError("decoding zstd stream: reserved frame header bit set")
            self._checksum = bool(desc & 0x04)
            fcs_len = (0, 2, 4, 8)[fcs_flag] if fcs_flag or not single else 1
            rest = self._read((0 if single else 1) + (0, 1, 2, 4)[dict_flag] + fcs_len)
            self._dobj = self._zstd.ZstdDecompressor().decompressobj()
            return self._feed(head + bytes([desc]) + rest)

    def _next_block(self) -> bytes:
        head = self._read(3)
        value = int.from_bytes(head, "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:
            raise FormatError("decoding zstd stream: reserved block type")
        out = self._feed(head + self._read(1 if kind == 1 else size))
        if last:
            if self._checksum:
                out += self._feed(self._read(4))
            self._dobj = None
        return out

    def _produce(self) -> bytes:
        while not self._eof:
            if self._dobj is None:
                out = self._start_frame()
                if out is None:
                    self._eof = True
                    break
            else:
                out = self._next_block()
            if out:
                return out
        return b""


def _sniff(inp: _Input) -> _Decoder | None:
    head = inp.peek(6)
    if head.startswith(_GZIP_MAGIC):
        return _Gzip(inp)
    if head.startswith(_XZ_MAGIC):
        return _Xz(inp)
    if _zstd_magic(head) is not None:
        return _Zstd(inp)
    return None


def _check_trailing(decoder: _Decoder) -> None:
    while True:
        chunk = decoder.read(_CHUNK)
        if not chunk:
            return
        if chunk.count(0) != len(chunk):
            raise FormatError("found trailing garbage inside compressed archive")


def read_initrd_stream(
    stream: BinaryIO,
    patterns: Sequence[str] | None = None,
    *,
    tee: Callable[[bytes], object] | None = None,
) -> dict[str, bytes]:
    """Regular-file members matching any of `patterns` (all when None), sorted by path.

    `tee` receives every input byte exactly once, in order, so a caller can copy the
    input to an output while decoding it (`pxe customize`). The stream is read to EOF.
    """
    matcher = compile_globs(patterns) if patterns is not None else None
    found: dict[str, bytes] = {}

    def keep(name: str, mode: int) -> bool:
        if mode & cpio.S_IFMT != cpio.S_IFREG:
            return False
        return matcher is None or matcher(name)

    inp = _Input(stream, tee)
    inp.skip_zeros()  # the kernel skips NUL padding anywhere between archives
    while not inp.at_end():
        decoder = _sniff(inp)
        read = decoder.read if decoder is not None else inp.read
        for entry in cpio.iter_archive(read, keep):
            found[entry.name] = entry.data
        if decoder is not None:
            _check_trailing(decoder)
        inp.skip_zeros()
    return dict(sorted(found.items()))


def read_initrd(data: bytes, patterns: Sequence[str] | None = None) -> dict[str, bytes]:
    """Members of an in-memory initrd (see read_initrd_stream)."""
    return read_initrd_stream(io.BytesIO(data), patterns)


def compress(archive: bytes) -> bytes:
    """xz exactly as the kernel's decoder needs it (CRC32 check) and upstream hashes it."""
    return lzma.compress(archive, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)


def write_initrd(members: Mapping[str, bytes]) -> bytes:
    """The docs/compat.md#initrd-archive-format archive of `members`, xz-compressed (an empty map
    gives a trailer only)."""
    return compress(cpio.write_archive(members))


def network_patterns(profiles: Sequence[Profile] = ALL) -> list[str]:
    """Globs selecting the first-boot network keyfiles of every profile."""
    return [f"{p.initrd_network_dir}/*" for p in profiles]


def network_members(
    members: Mapping[str, bytes], profiles: Sequence[Profile] = ALL
) -> tuple[Profile | None, dict[str, bytes]]:
    """The keyfiles of the first profile (NestOS before CoreOS) that has any.

    An initrd normally carries one brand; if both are present the NestOS set is the
    one the NestOS live system reads, so it wins. Returns (None, {}) when there are none.
    """
    for profile in profiles:
        prefix = profile.initrd_network_dir + "/"
        found = {k: v for k, v in members.items() if k.startswith(prefix)}
        if found:
            return profile, found
    return None, {}

"""Sniff and stream-decompress gzip / xz / zstd images (docs/compat.md#signatures, #image-write).

Non-concatenated mode is the safe mode for signed images: the decoder reads its source
to EOF and rejects any byte after the compressed stream and any truncation, so a
signature over the compressed bytes covers everything that is written
(CVE-2021-20319). Concatenated mode is for initrds: it decodes one gzip member / one
xz stream / a run of zstd frames and leaves whatever follows unread in the source.

Output is bounded: every decoder hands out at most the requested number of bytes per
call, so a tiny input that expands enormously never sits in memory at once.
"""

from __future__ import annotations

import io
import lzma
import os
import zlib
from typing import BinaryIO, Literal, cast

from nestos_inst.errors import FormatError, NestosError
from nestos_inst.io.pipeline import read_full

Format = Literal["gzip", "xz", "zstd", "raw"]

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_FRAME = 0xFD2FB528
ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
ZSTD_SKIPPABLE = 0x184D2A50

TRAILING_DATA = "found trailing data after compressed stream"
SNIFF_LEN = 6
IN_CHUNK = 1 << 18
OUT_BUFFER = 1 << 16


def _is_zstd_magic(four: bytes) -> bool:
    if len(four) < 4:
        return False
    v = int.from_bytes(four[:4], "little")
    return v == ZSTD_FRAME or (v & ZSTD_SKIPPABLE_MASK) == ZSTD_SKIPPABLE


def sniff(head: bytes) -> Format:
    """Name the container format from the first bytes (the rules of upstream's sniffer)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if len(head) > 4 and _is_zstd_magic(head):
        return "zstd"
    return "raw"


class PushbackReader(io.RawIOBase):
    """A reader that can take bytes back: lets concatenated decoding work on pipes."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self._back = b""

    def readable(self) -> bool:
        return True

    def unread(self, data: bytes) -> None:
        self._back = bytes(data) + self._back

    def read(self, size: int | None = -1) -> bytes:
        if self._back:
            if size is None or size < 0:
                out = self._back + self._inner.read()
                self._back = b""
                return out
            out, self._back = self._back[:size], self._back[size:]
            return out
        return self._inner.read(-1 if size is None else size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Input:
    """Compressed bytes from `src`, with a pushback buffer for sniffed/over-read bytes."""

    def __init__(self, src: BinaryIO, head: bytes) -> None:
        self.src = src
        self.pending = head

    def read(self, n: int = IN_CHUNK) -> bytes:
        """Up to n bytes; b"" only at EOF."""
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
            return out
        while True:
            data = self.src.read(n)
            if data is None:  # non-blocking source with nothing yet
                continue
            return bytes(data)

    def read_exact(self, n: int) -> bytes:
        """n bytes, or fewer only at EOF."""
        return read_full(self.read, n)

    def unread(self, data: bytes) -> None:
        if data:
            self.pending = bytes(data) + self.pending

    def expect_eof(self) -> None:
        """Non-concatenated end: the source must be exhausted, no byte may follow."""
        if self.pending or self.read(1):
            raise FormatError(TRAILING_DATA)

    def give_back(self) -> None:
        """Concatenated end: return over-read bytes so the caller sees them next."""
        data, self.pending = self.pending, b""
        if not data:
            return
        unread = getattr(self.src, "unread", None)
        if callable(unread):
            unread(data)
            return
        try:
            self.src.seek(-len(data), os.SEEK_CUR)
        except (OSError, ValueError) as exc:
            raise NestosError(
                "cannot return unused bytes to a non-seekable source (wrap it in PushbackReader)"
            ) from exc


class _Decoder(io.RawIOBase):
    """Common plumbing: subclasses implement `_produce(n)` (≤ n bytes, b"" at end)."""

    fmt = "raw"

    def __init__(self, inp: _Input, concatenated: bool) -> None:
        super().__init__()
        self._in = inp
        self._concat = concatenated
        self._buf = b""
        self._off = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _produce(self, n: int) -> bytes:
        raise NotImplementedError

    def _finish(self, unused: bytes) -> None:
        """End of the compressed stream: check or return what follows it."""
        self._done = True
        if self._concat:
            self._in.unread(unused)
            self._in.give_back()
        else:
            if unused:
                raise FormatError(TRAILING_DATA)
            self._in.expect_eof()

    def _truncated(self) -> FormatError:
        return FormatError(f"unexpected end of {self.fmt} stream (truncated input)")

    @property
    def format(self) -> str:
        """The sniffed container format: gzip, xz, zstd or raw."""
        return self.fmt

    def _piece(self, size: int) -> bytes:
        """Up to `size` bytes from one decoder step (b"" only at the end).

        Small requests decode a bigger piece and keep the rest, so byte-wise reading
        stays cheap; large ones hand the decoder's own bytes object out uncopied."""
        if self._off < len(self._buf):
            out = self._buf[self._off : self._off + size]
            self._off += len(out)
            return out
        if self._done or size <= 0:
            return b""
        data = self._produce(max(size, OUT_BUFFER))
        if len(data) > size:
            self._buf, self._off = data, size
            return data[:size]
        return data

    def read1(self, size: int = -1) -> bytes:
        """Whatever one decoder step gives (at least a byte unless at the end)."""
        return self._piece(size if size is not None and size >= 0 else 1 << 20)

    def read(self, size: int | None = -1) -> bytes:
        """Exactly `size` bytes unless the stream ends first (like a buffered file)."""
        if size is None or size < 0:
            return self.readall()
        return read_full(self._piece, size)

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while data := self._piece(1 << 20):
            parts.append(data)
        return b"".join(parts)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _RawDecoder(_Decoder):
    def _produce(self, n: int) -> bytes:
        data = self._in.read(n)
        if not data:
            self._done = True
        return data


class _GzipDecoder(_Decoder):
    fmt = "gzip"

    def __init__(self, inp: _Input, concatenated: bool) -> None:
        super().__init__(inp, concatenated)
        self._d = zlib.decompressobj(wbits=31)

    def _produce(self, n: int) -> bytes:
        d = self._d
        try:
            while True:
                if d.eof:
                    self._finish(d.unused_data)  # unconsumed_tail may be stale at eof
                    return b""
                if d.unconsumed_tail:
                    data = d.decompress(d.unconsumed_tail, n)
                else:
                    inp = self._in.read(IN_CHUNK)
                    if not inp:
                        raise self._truncated()
                    data = d.decompress(inp, n)
                if data:
                    return data
        except zlib.error as exc:
            raise FormatError("invalid gzip stream") from exc


class _XzDecoder(_Decoder):
    """liblzma's own stream decoder: verifies block checks, index and footer itself."""

    fmt = "xz"

    def __init__(self, inp: _Input, concatenated: bool) -> None:
        super().__init__(inp, concatenated)
        self._d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    def _produce(self, n: int) -> bytes:
        d = self._d
        try:
            while True:
                if d.eof:
                    self._finish(d.unused_data)
                    return b""
                if d.needs_input:
                    inp = self._in.read(IN_CHUNK)
                    if not inp:
                        raise self._truncated()
                    data = d.decompress(inp, n)
                else:
                    data = d.decompress(b"", n)
                if data:
                    return data
        except lzma.LZMAError as exc:
            raise FormatError("invalid xz stream") from exc


class _ZstdFrame:
    """Hands zstandard exactly one frame's bytes, found by walking block headers.

    zstandard's stream reader bounds its output but cannot give back input it read
    past the end of a frame; walking the (cheap) block headers ourselves tells where
    the frame ends, so nothing after it is ever consumed. Each read() returns a large
    piece and walks every block header inside it (one small step per 128 KiB block).
    """

    def __init__(self, inp: _Input) -> None:
        self._in = inp
        self._skip = 0  # bytes of block content (or checksum) before the next header
        self._state = "header"  # header -> block ... -> end
        self._checksum = False
        self.done = False

    def _truncated(self) -> FormatError:
        return FormatError("unexpected end of zstd stream (truncated input)")

    def _structure(self, buf: bytes, pos: int) -> int:
        """Length of the header structure at buf[pos:] (needs 5 bytes for a frame header)."""
        if self._state == "header":
            fhd = buf[pos + 4]
            single = bool(fhd & 0x20)
            size = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
            return 5 + size + (1 if single else 0, 2, 4, 8)[fhd >> 6]
        return 3

    def _parse(self, buf: bytes, pos: int) -> None:
        if self._state == "header":
            fhd = buf[pos + 4]
            if fhd & 0x08:
                raise FormatError("invalid zstd frame header (reserved bit set)")
            self._checksum = bool(fhd & 0x04)
            self._state = "block"
            return
        v = int.from_bytes(buf[pos : pos + 3], "little")
        btype = (v >> 1) & 3
        if btype == 3:
            raise FormatError("invalid zstd block type")
        self._skip = 1 if btype == 1 else v >> 3
        if v & 1:
            self._state = "end"
            self._skip += 4 if self._checksum else 0

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        buf = self._in.read(max(n, 1 << 16) if n > 0 else IN_CHUNK)
        if not buf:
            raise self._truncated()
        pos = 0
        while True:
            if self._skip:
                take = min(self._skip, len(buf) - pos)
                pos += take
                self._skip -= take
                if self._skip:
                    return buf  # the whole piece is block content
            if self._state == "end":
                self.done = True
                break
            need = 5 if self._state == "header" else 3
            if pos + need > len(buf) or pos + self._structure(buf, pos) > len(buf):
                if pos:  # hand out what we have, parse the structure next time
                    self._in.unread(buf[pos:])
                    return buf[:pos]
                more = self._in.read_exact(need - len(buf))
                buf += more
                if len(buf) < need:
                    raise self._truncated()
                size = self._structure(buf, 0)
                if len(buf) < size:
                    buf += self._in.read_exact(size - len(buf))
                    if len(buf) < size:
                        raise self._truncated()
            size = self._structure(buf, pos)
            self._parse(buf, pos)
            pos += size
        self._in.unread(buf[pos:])
        return buf[:pos]


class _ZstdDecoder(_Decoder):
    fmt = "zstd"

    def __init__(self, inp: _Input, concatenated: bool) -> None:
        super().__init__(inp, concatenated)
        import zstandard

        self._zstd = zstandard
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: _ZstdFrame | None = None
        self._reader: BinaryIO | None = None

    def _next_frame(self) -> bool:
        """Skip skippable frames; start the next real frame. False at the end."""
        while True:
            magic = self._in.read_exact(4)
            if not magic:
                if self._concat:
                    self._finish(b"")
                else:
                    self._done = True
                return False
            v = int.from_bytes(magic, "little") if len(magic) == 4 else -1
            if v == ZSTD_FRAME:
                self._in.unread(magic)
                self._frame = _ZstdFrame(self._in)
                self._reader = self._dctx.stream_reader(
                    cast(BinaryIO, self._frame), read_size=IN_CHUNK, read_across_frames=False
                )
                return True
            if v >= 0 and (v & ZSTD_SKIPPABLE_MASK) == ZSTD_SKIPPABLE:
                size = int.from_bytes(self._frame_need(4), "little")
                while size:
                    got = self._in.read(min(size, IN_CHUNK))
                    if not got:
                        raise self._truncated()
                    size -= len(got)
                continue
            self._finish(magic)
            return False

    def _frame_need(self, n: int) -> bytes:
        data = self._in.read_exact(n)
        if len(data) < n:
            raise self._truncated()
        return data

    def _produce(self, n: int) -> bytes:
        try:
            while True:
                if self._reader is None and not self._next_frame():
                    return b""
                assert self._reader is not None and self._frame is not None
                data = self._reader.read(n)
                if data:
                    return data
                if not self._frame.done:
                    # the decoder saw the end of the frame before its blocks ended
                    raise FormatError("invalid zstd frame")
                self._reader = None
                self._frame = None
        except self._zstd.ZstdError as exc:
            raise FormatError("invalid zstd stream") from exc


def open_decompressed(src: BinaryIO, *, concatenated: bool = False) -> BinaryIO:
    """A readable stream of the decompressed bytes of `src` (format sniffed).

    Non-concatenated: exactly one gzip member / one xz stream / zstd frames, the whole
    source is consumed and any byte after the stream raises FormatError
    ("found trailing data after compressed stream"); truncation raises FormatError.
    Concatenated: the stream's end leaves any following bytes unread in `src`
    (seekable sources are sought back; pipes need a PushbackReader).
    """
    head = b""
    while len(head) < SNIFF_LEN:
        data = src.read(SNIFF_LEN - len(head))
        if not data:
            break
        head += data
    inp = _Input(src, head)
    fmt = sniff(head)
    decoder: _Decoder
    if fmt == "gzip":
        decoder = _GzipDecoder(inp, concatenated)
    elif fmt == "xz":
        from nestos_inst.io.xzpar import xz_decoder

        decoder = xz_decoder(inp, concatenated)
    elif fmt == "zstd":
        decoder = _ZstdDecoder(inp, concatenated)
    else:
        decoder = _RawDecoder(inp, concatenated)
    # The decoder is itself the stream: read(n) fills n bytes like a buffered file,
    # read1(n) hands out decoded pieces without copying them (copy_to_fd uses it).
    return cast(BinaryIO, decoder)

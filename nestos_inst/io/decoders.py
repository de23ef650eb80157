"""The decompressor family: the one module that constructs gzip, xz and zstd decoders.

Every reader of compressed bytes (install, download, initrds, osmet and minimal-ISO
data) goes through these classes, via nestos_inst.io.compress; the parallel xz decoder
(io/xzpar.py) builds on them. Keeping construction here means one place decides memory
limits and error wording, and one place to audit for bounded output.

Two end-of-stream rules (chosen by the caller):

- single (`concatenated=False`): exactly one gzip member / one xz stream / a run of
  zstd frames, then the source must be exhausted. Any byte after the stream is an
  error ("found trailing data after compressed stream"), so a signature over the
  compressed bytes covers everything that is written (CVE-2021-20319).
- concatenated: the decoder stops at the end of its stream and pushes whatever it read
  past it back into its Input, where the caller (the initrd reader) finds the zero
  padding or the next archive.

Output is bounded: each step decodes at most the requested size (at least 64 KiB), so a
tiny input that expands enormously never sits in memory at once.
"""

from __future__ import annotations

import lzma
import zlib
from typing import TYPE_CHECKING, Literal, cast

from nestos_inst.errors import FormatError
from nestos_inst.io.stream import IN_CHUNK, TRAILING_DATA, Input, read_full

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

    from zstandard import ZstdDecompressionReader

Format = Literal["gzip", "xz", "zstd", "raw"]

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_FRAME = 0xFD2FB528
ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
ZSTD_SKIPPABLE = 0x184D2A50
OUT_BUFFER = 1 << 16


def new_gzip() -> zlib._Decompress:
    """A decoder for one gzip member (header and CRC checked by zlib)."""
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


def new_xz(memlimit: int | None = None) -> lzma.LZMADecompressor:
    """liblzma's stream decoder (verifies block checks, index and footer itself).
    `memlimit` caps what a forged dictionary size can make it allocate."""
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=memlimit)


def is_zstd_magic(four: bytes) -> bool:
    if len(four) < 4:
        return False
    v = int.from_bytes(four[:4], "little")
    return v == ZSTD_FRAME or (v & ZSTD_SKIPPABLE_MASK) == ZSTD_SKIPPABLE


def sniff(head: bytes) -> Format:
    """Name the container format from the first bytes (the rules of upstream's sniffer:
    a zstd magic counts only with data after it)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if len(head) > 4 and is_zstd_magic(head):
        return "zstd"
    return "raw"


class Decoder:
    """One decompressed stream over an Input (the `Stream` protocol of io/stream.py).

    Subclasses implement `_produce(n)`: at most n bytes from one decoder step, b"" at
    the end (after calling `_end`)."""

    fmt: str = "raw"

    def __init__(self, inp: Input, *, concatenated: bool, give_back: bool = False) -> None:
        self._in = inp
        self._concat = concatenated
        self._give_back = give_back
        self._buf = b""
        self._off = 0
        self._done = False
        self.closed = False

    @property
    def format(self) -> str:
        """The sniffed container format: gzip, xz, zstd or raw."""
        return self.fmt

    def readable(self) -> bool:
        return True

    def decodes_ahead(self) -> bool:
        """Whether decoding runs on threads of the decoder's own (see DecodesAhead)."""
        return False

    def _produce(self, n: int) -> bytes:
        raise NotImplementedError

    def _end(self, unused: bytes) -> None:
        """End of the compressed stream: check or return what follows it."""
        self._done = True
        if self._concat:
            self._in.unread(unused)
            if self._give_back:
                self._in.give_back()
        else:
            if unused:
                raise FormatError(TRAILING_DATA)
            self._in.expect_eof()

    def _truncated(self) -> FormatError:
        return FormatError(f"unexpected end of {self.fmt} stream (truncated input)")

    def _invalid(self) -> FormatError:
        return FormatError(f"decoding {self.fmt} stream")

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

    def read1(self, size: int = -1, /) -> bytes:
        """Whatever one decoder step gives (at least a byte unless at the end)."""
        return self._piece(size if size >= 0 else 1 << 20)

    def read(self, size: int | None = -1, /) -> bytes:
        """Exactly `size` bytes unless the stream ends first (like a buffered file)."""
        if size is None or size < 0:
            return self.readall()
        return read_full(self._piece, size)

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while data := self._piece(1 << 20):
            parts.append(data)
        return b"".join(parts)

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        """The consumer is done: the stream must have ended (and its end been checked)."""
        if self._piece(1):
            raise FormatError("decompressed stream continues past its expected end")

    def close(self) -> None:
        self.closed = True
        self._buf = b""

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawDecoder(Decoder):
    """Uncompressed input, passed through (the same interface as the decoders)."""

    def _produce(self, n: int) -> bytes:
        data = self._in.read(n)
        if not data:
            self._done = True
        return data


class GzipDecoder(Decoder):
    fmt = "gzip"

    def __init__(self, inp: Input, **kw: bool) -> None:
        super().__init__(inp, **kw)
        self._d = new_gzip()

    def _produce(self, n: int) -> bytes:
        d = self._d
        try:
            while True:
                if d.eof:
                    self._end(d.unused_data)  # unconsumed_tail may be stale at eof
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
            raise self._invalid() from exc


class XzDecoder(Decoder):
    """liblzma's own stream decoder, one block after the other on one core."""

    fmt = "xz"

    def __init__(self, inp: Input, *, memlimit: int | None = None, **kw: bool) -> None:
        super().__init__(inp, **kw)
        self._d = new_xz(memlimit)

    def _produce(self, n: int) -> bytes:
        d = self._d
        try:
            while True:
                if d.eof:
                    self._end(d.unused_data)
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
            raise self._invalid() from exc


class _ZstdFrame:
    """Hands zstandard exactly one frame's bytes, found by walking block headers.

    zstandard's stream reader bounds its output but cannot give back input it read
    past the end of a frame; walking the (cheap) block headers ourselves tells where
    the frame ends, so nothing after it is ever consumed. Each read() returns a large
    piece and walks every block header inside it (one small step per 128 KiB block).
    """

    def __init__(self, inp: Input) -> None:
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
                raise FormatError("decoding zstd stream: reserved frame header bit set")
            self._checksum = bool(fhd & 0x04)
            self._state = "block"
            return
        v = int.from_bytes(buf[pos : pos + 3], "little")
        btype = (v >> 1) & 3
        if btype == 3:
            raise FormatError("decoding zstd stream: reserved block type")
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


class ZstdDecoder(Decoder):
    """A run of zstd frames (skippable frames skipped), decoded as one stream."""

    fmt = "zstd"

    def __init__(self, inp: Input, **kw: bool) -> None:
        super().__init__(inp, **kw)
        import zstandard  # here: a big module most runs never need

        self._zstd = zstandard
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: _ZstdFrame | None = None
        self._reader: ZstdDecompressionReader | None = None

    def _next_frame(self) -> bool:
        """Skip skippable frames; start the next real frame. False at the end."""
        while True:
            magic = self._in.read_exact(4)
            if not magic:
                self._end(b"")
                return False
            v = int.from_bytes(magic, "little") if len(magic) == 4 else -1
            if v == ZSTD_FRAME:
                self._in.unread(magic)
                self._frame = _ZstdFrame(self._in)
                self._reader = self._dctx.stream_reader(
                    cast("BinaryIO", self._frame), read_size=IN_CHUNK, read_across_frames=False
                )
                return True
            if v >= 0 and (v & ZSTD_SKIPPABLE_MASK) == ZSTD_SKIPPABLE:
                size = int.from_bytes(self._in.need(4, "zstd stream"), "little")
                while size:
                    got = self._in.read(min(size, IN_CHUNK))
                    if not got:
                        raise self._truncated()
                    size -= len(got)
                continue
            self._end(magic)
            return False

    def _produce(self, n: int) -> bytes:
        pieces: list[bytes] = []

        def step(reader: ZstdDecompressionReader) -> int:
            pieces.append(reader.read(n))
            return len(pieces[-1])

        return pieces[-1] if self._decode(step) else b""

    def readinto1(self, b: memoryview, /) -> int:
        """Decode straight into `b` (DecodesInto): at least one byte unless at the end.
        Bytes already decoded for a smaller read (the first MiB) come first."""
        if self._off < len(self._buf):
            n = min(len(b), len(self._buf) - self._off)
            b[:n] = self._buf[self._off : self._off + n]
            self._off += n
            return n
        if self._done or not len(b):
            return 0
        return self._decode(lambda reader: reader.readinto(b))

    def _decode(self, step: Callable[[ZstdDecompressionReader], int]) -> int:
        """Run `step` on the current frame's reader until it yields bytes, going on to
        the next frame at a frame's end; 0 at the end of the stream."""
        try:
            while True:
                if self._reader is None and not self._next_frame():
                    return 0
                assert self._reader is not None and self._frame is not None
                got = step(self._reader)
                if got:
                    return got
                if not self._frame.done:
                    # the decoder saw the end of the frame before its blocks ended
                    raise self._invalid()
                self._reader = None
                self._frame = None
        except self._zstd.ZstdError as exc:
            raise self._invalid() from exc

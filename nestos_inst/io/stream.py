"""The byte-stream protocol every io stage speaks, and the buffered input decoders read.

An image travels through typed stages: a source (file, HTTP body), a verify tap (the
hash or GPG sees every byte as it passes), the decompressor, a write limit and the
writer (docs/internals-io.md). Each stage reads the one before it through the small
protocols below, so a stage never needs to know what sits upstream and capabilities
are checked by type, not probed by name.

`Input` is what decoders read compressed bytes from: it can take bytes back (so one
decoder can stop exactly at the end of its stream and leave the rest for the next, as
concatenated initrd archives need), peek, skip zero padding, and hand every byte it
pulls to a tee exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from nestos_inst.errors import FormatError, NestosError

IN_CHUNK = 1 << 18
TRAILING_DATA = "found trailing data after compressed stream"


class Source(Protocol):
    """Anything bytes are pulled from: read(n) returns 1..n bytes, b"" only at the end.

    (A non-blocking source may return None when nothing is ready; `Input` waits.)"""

    def read(self, size: int = -1, /) -> bytes | None: ...


@runtime_checkable
class Stream(Protocol):
    """A stage's output.

    read(n) fills n bytes unless the stream ends first; read1(n) returns whatever one
    step produced (at least one byte unless at the end) without assembling pieces, which
    is what a copy loop wants; finish() is called once the consumer has read everything
    and checks the stream's end conditions (for a decoder: nothing left to decode, no
    data after the compressed stream); close() releases threads and buffers.
    """

    def read(self, size: int = -1, /) -> bytes: ...

    def read1(self, size: int = -1, /) -> bytes: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class DecodesAhead(Protocol):
    """A stream that may say it already works ahead on threads of its own (the parallel
    xz decoder): its read1 only collects finished pieces, so a copy loop can call it
    on the writing thread instead of adding a thread (and a hand-over) of its own."""

    def decodes_ahead(self) -> bool: ...


@runtime_checkable
class DecodesInto(Protocol):
    """A stream that can decode straight into the caller's buffer (zstd): readinto1(b)
    puts at least one byte into b unless at the end, and returns how many. The direct
    writer's page-aligned buffers are then filled by the decoder itself, without a
    bytes object per piece and a copy of it."""

    def readinto1(self, b: memoryview, /) -> int: ...


@runtime_checkable
class Pushback(Protocol):
    """A source that can take bytes back: a concatenated decoder returns what it read
    past the end of its stream, so the caller's next read sees it."""

    def unread(self, data: bytes, /) -> None: ...


@runtime_checkable
class Seekable(Protocol):
    """A source that can be sought back instead (regular files)."""

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@runtime_checkable
class FileBacked(Protocol):
    """A source with a kernel file descriptor: fast paths (splice, sendfile, readahead)
    may use it directly, and must leave the source's position where reads expect it."""

    def fileno(self) -> int: ...


def read_full(read: Callable[[int], bytes], n: int) -> bytes:
    """n bytes from repeated `read` calls (which may return short counts), fewer only
    at EOF (an empty read)."""
    first = read(n)
    if len(first) == n or not first:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        data = read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class Input:
    """Compressed bytes from a source, with push-back, peeking and an optional tee.

    Reads without pushed-back bytes go straight to the source (no copy), so a decoder
    feeding on large pieces pays nothing for the buffer. `tee` is called with every
    byte pulled from the source, exactly once and in order.
    """

    def __init__(
        self, src: Source, head: bytes = b"", *, tee: Callable[[bytes], object] | None = None
    ) -> None:
        self._src = src
        self._tee = tee
        self._buf = bytes(head)
        self._pos = 0

    def _pull(self, n: int) -> bytes:
        while True:
            data = self._src.read(n)
            if data is None:  # a non-blocking source with nothing ready yet
                continue
            if data and self._tee is not None:
                self._tee(data)
            return bytes(data) if not isinstance(data, bytes) else data

    def readable(self) -> bool:
        return True

    def read(self, n: int = IN_CHUNK, /) -> bytes:
        """Up to n bytes (all that is left for n < 0); b"" only at the end."""
        if self._pos < len(self._buf):
            if n < 0:
                out = self._buf[self._pos :] + self._read_all()
                self._buf, self._pos = b"", 0
                return out
            out = self._buf[self._pos : self._pos + n]
            self._pos += len(out)
            if self._pos >= len(self._buf):
                self._buf, self._pos = b"", 0
            return out
        if n < 0:
            return self._read_all()
        return self._pull(n)

    def _read_all(self) -> bytes:
        parts = []
        while data := self._pull(IN_CHUNK):
            parts.append(data)
        return b"".join(parts)

    def read_exact(self, n: int) -> bytes:
        """n bytes, fewer only at the end."""
        return read_full(self.read, n)

    def need(self, n: int, what: str) -> bytes:
        """n bytes or FormatError naming the truncated `what`."""
        data = self.read_exact(n)
        if len(data) < n:
            raise FormatError(f"unexpected end of {what} (truncated input)")
        return data

    def peek(self, n: int) -> bytes:
        """The next n bytes (fewer at the end) without consuming them."""
        while len(self._buf) - self._pos < n:
            data = self._pull(max(n, IN_CHUNK))
            if not data:
                break
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        return self._buf[self._pos : self._pos + n]

    def unread(self, data: bytes, /) -> None:
        """Put bytes back in front of the next read (bytes from this input only)."""
        if data:
            self._buf = bytes(data) + self._buf[self._pos :]
            self._pos = 0

    def skip_zeros(self) -> None:
        """Skip NUL padding (the kernel allows it anywhere between initrd archives)."""
        while self.peek(1) == b"\0":
            rest = self._buf[self._pos :]
            self._pos += len(rest) - len(rest.lstrip(b"\0"))

    def at_end(self) -> bool:
        return not self.peek(1)

    def expect_eof(self) -> None:
        """A single-stream end: the source must be exhausted, no byte may follow."""
        if not self.at_end():
            raise FormatError(TRAILING_DATA)

    def give_back(self) -> None:
        """Return buffered bytes to the underlying source, so a caller reading that
        source directly sees them next (seekable sources are sought back)."""
        data = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        if not data:
            return
        if isinstance(self._src, Pushback):
            self._src.unread(data)
            return
        if isinstance(self._src, Seekable):
            try:
                self._src.seek(-len(data), os.SEEK_CUR)
                return
            except (OSError, ValueError) as exc:
                raise NestosError(
                    "cannot return unused bytes to a non-seekable source (read it through an Input)"
                ) from exc
        raise NestosError("cannot return unused bytes to a source without push-back")

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._buf, self._pos = b"", 0

"""Never write into a saved partition (docs/compat.md#saved-partitions, #reference-results).

A limit is an absolute offset on the destination; the message is the whole error text,
e.g. `collision with partition 4 ("bovik") at offset 4194304`. Writes stop exactly at
the limit: the bytes before it are written, the first byte past it is an error.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from nestos_inst.errors import NestosError


def collision_message(conflict: str, offset: int) -> str:
    """Upstream's text: `collision with <conflict> at offset <offset>`."""
    return f"collision with {conflict} at offset {offset}"


class WriteLimit:
    """An absolute offset that writes may reach but not cross."""

    def __init__(self, offset: int, message: str) -> None:
        if offset < 0:
            raise ValueError("limit offset must not be negative")
        self.offset = offset
        self.message = message

    def allowed(self, pos: int, n: int) -> int:
        """How many of n bytes written at pos fit below the limit (may be < n)."""
        return max(0, min(n, self.offset - pos))

    def check(self, pos: int, n: int) -> None:
        """Raise unless all n bytes at pos stay below the limit."""
        if n > 0 and pos + n > self.offset:
            raise NestosError(self.message)

    def error(self) -> NestosError:
        return NestosError(self.message)


class _Limited(io.RawIOBase):
    """A stream over `inner` whose absolute position `pos` is checked against `limit`."""

    def __init__(self, inner: BinaryIO, limit: WriteLimit, *, start: int = 0) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self.pos = start


class LimitWriter(_Limited):
    """Writes through to `inner` up to the limit; a write crossing it is cut short there
    and the next one raises (so callers using write-all semantics fail at the limit)."""

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = memoryview(b).cast("B")
        if not data:
            return 0
        n = self._limit.allowed(self.pos, len(data))
        if n == 0:
            raise self._limit.error()
        self._inner.write(data[:n])
        self.pos += n
        return n

    def flush(self) -> None:
        self._inner.flush()


class LimitReader(_Limited):
    """Reads at most limit.offset - start bytes; data beyond that is an error, a clean
    EOF exactly at the limit is not."""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        n = self._limit.allowed(self.pos, size)
        if n == 0:
            if size and self._inner.read(1):
                raise self._limit.error()
            return b""
        data = self._inner.read(n)
        self.pos += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

"""bincode-1 with VarintEncoding, as upstream serializes osmet and miniso.dat files.

The reader never trusts a length field: every vector or string length is checked
against the bytes that remain before anything is allocated.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from ..errors import FormatError

_SINGLE_BYTE_MAX = 250
_U16_TAG = 251
_U32_TAG = 252
_U64_TAG = 253
_U128_TAG = 254

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


def encode_varint(value: int) -> bytes:
    """bincode-1 VarintEncoding of an unsigned integer (u64 range)."""
    if value < 0 or value > U64_MAX:
        raise ValueError(f"varint out of range: {value}")
    if value <= _SINGLE_BYTE_MAX:
        return bytes([value])
    if value <= 0xFFFF:
        return bytes([_U16_TAG]) + struct.pack("<H", value)
    if value <= U32_MAX:
        return bytes([_U32_TAG]) + struct.pack("<I", value)
    return bytes([_U64_TAG]) + struct.pack("<Q", value)


def encode_str(text: str) -> bytes:
    data = text.encode()
    return encode_varint(len(data)) + data


class Reader:
    """Cursor over a byte stream with a known number of remaining bytes."""

    def __init__(self, f: BinaryIO, remaining: int) -> None:
        self._f = f
        self.remaining = remaining
        self.consumed = 0

    def raw(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise FormatError(f"unexpected end of file reading {what}")
        data = self._f.read(n)
        if len(data) != n:
            raise FormatError(f"unexpected end of file reading {what}")
        self.remaining -= n
        self.consumed += n
        return data

    def varint(self, what: str, limit: int = U64_MAX) -> int:
        tag = self.raw(1, what)[0]
        if tag <= _SINGLE_BYTE_MAX:
            value = tag
        elif tag == _U16_TAG:
            value = struct.unpack("<H", self.raw(2, what))[0]
        elif tag == _U32_TAG:
            value = struct.unpack("<I", self.raw(4, what))[0]
        elif tag == _U64_TAG:
            value = struct.unpack("<Q", self.raw(8, what))[0]
        elif tag == _U128_TAG:
            raise FormatError(f"invalid value (u128 range) for {what}")
        else:
            raise FormatError(f"invalid varint discriminant {tag} for {what}")
        if value > limit:
            raise FormatError(f"value {value} out of range for {what}")
        return int(value)

    def length(self, what: str, min_item: int) -> int:
        """A vec/string length, refused when its items cannot fit in what remains."""
        n = self.varint(what)
        if n * min_item > self.remaining:
            raise FormatError(f"{what} length {n} exceeds the file size")
        return n

    def string(self, what: str) -> str:
        data = self.raw(self.length(what, 1), what)
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise FormatError(f"invalid UTF-8 in {what}") from exc

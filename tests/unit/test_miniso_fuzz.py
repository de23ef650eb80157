"""Property tests: the miniso parser and reconstruction only ever raise our own errors."""

from __future__ import annotations

import hashlib
import lzma
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.errors import NestosError
from nestos_inst.formats import miniso
from nestos_inst.formats.miniso import Entry, MinisoData

SECTOR = 2048
FULL = bytes(range(256)) * 8 * 6  # six sectors of a recognisable pattern
PACKED = lzma.compress(b"packed bytes " * 50, format=lzma.FORMAT_XZ)

entries_st = st.lists(
    st.builds(
        Entry,
        st.integers(0, 0xFFFF_FFFF),
        st.integers(0, 0xFFFF_FFFF),
        st.integers(0, 0xFFFF_FFFF),
    ),
    max_size=12,
)


def valid_sample() -> bytes:
    minimal = b"M" * SECTOR + FULL[SECTOR : 2 * SECTOR] + b"z" * 10
    data = MinisoData(
        [Entry(1, 1, SECTOR)],
        hashlib.sha256(minimal).digest(),
        lzma.compress(b"M" * SECTOR + b"z" * 10, format=lzma.FORMAT_XZ),
        "fuzz",
    )
    return data.encode()


def _unpack(raw: bytes) -> None:
    data = miniso.parse(raw)
    with tempfile.TemporaryFile() as f:
        f.write(FULL)
        f.flush()
        miniso.unpack(data, f.fileno(), len(FULL), lambda _: None, limit=1 << 20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes(raw: bytes) -> None:
    try:
        miniso.parse(raw)
    except NestosError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_magic(tail: bytes) -> None:
    try:
        miniso.parse(b"MINISO\0\0\x01" + tail)
    except NestosError:
        pass


@settings(max_examples=200, deadline=None)
@given(entries_st, st.binary(min_size=32, max_size=32), st.text(max_size=10))
def test_encode_parse_round_trip(entries: list[Entry], digest: bytes, version: str) -> None:
    data = MinisoData(entries, digest, PACKED, version)
    raw = data.encode()
    try:
        miniso.validate_table(entries)
    except NestosError:
        try:
            miniso.parse(raw)
        except NestosError:
            return
        raise AssertionError("invalid table accepted") from None
    assert miniso.parse(raw + bytes(64)) == data


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_sample(data: st.DataObject) -> None:
    raw = bytearray(valid_sample())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        _unpack(bytes(raw))
    except NestosError:
        pass


def test_valid_sample_unpacks() -> None:
    _unpack(valid_sample())


@settings(max_examples=150, deadline=None)
@given(entries_st, st.binary(max_size=300))
def test_unpack_arbitrary_tables(entries: list[Entry], packed: bytes) -> None:
    """Any table, any 'xz' bytes: bounded output and only our errors."""
    data = MinisoData(entries, bytes(32), packed, "fuzz")
    with tempfile.TemporaryFile() as f:
        f.write(FULL)
        f.flush()
        total = 0

        def sink(chunk: bytes) -> None:
            nonlocal total
            total += len(chunk)

        try:
            miniso.validate_table(entries)
            miniso.unpack(data, f.fileno(), len(FULL), sink, limit=1 << 16)
        except NestosError:
            pass
        assert total <= 1 << 16

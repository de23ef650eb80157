"""miniso.dat codec, table validation, reconstruction and the kargs.json rewrite."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import tempfile
from collections.abc import Iterator

import pytest

from nestos_inst.errors import FormatError, NestosError, format_chain
from nestos_inst.formats import miniso
from nestos_inst.formats.bincode import encode_varint
from nestos_inst.formats.miniso import Entry, MinisoData

SECTOR = 2048


def xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9)


@pytest.fixture
def full() -> Iterator[tuple[int, bytes]]:
    """A 'full ISO': 8 sectors, each filled with its sector number."""
    data = b"".join(bytes([i]) * SECTOR for i in range(8))
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        yield f.fileno(), data


def build(full_data: bytes, minimal: bytes, entries: list[Entry]) -> MinisoData:
    """Pack by hand: the minimal bytes outside the table files, xz'd."""
    rest = bytearray()
    pos = 0
    for e in entries:
        rest += minimal[pos : e.minimal * SECTOR]
        assert (
            minimal[e.minimal * SECTOR : e.minimal * SECTOR + e.length]
            == (full_data[e.full * SECTOR : e.full * SECTOR + e.length])
        )
        pos = e.minimal * SECTOR + e.length
    rest += minimal[pos:]
    return MinisoData(entries, hashlib.sha256(minimal).digest(), xz(bytes(rest)), "t")


def reconstruct(data: MinisoData, fd: int, size: int, limit: int = 1 << 30) -> bytes:
    out: list[bytes] = []
    miniso.unpack(data, fd, size, out.append, limit)
    return b"".join(out)


def sample(full_data: bytes) -> tuple[bytes, MinisoData]:
    # Minimal ISO: header sector, full sector 5 (partial length), gap, full sector 2.
    minimal = (
        b"H" * SECTOR
        + full_data[5 * SECTOR : 5 * SECTOR + 1000]
        + b"g" * (SECTOR - 1000)
        + full_data[2 * SECTOR : 3 * SECTOR]
        + b"tail"
    )
    entries = [Entry(1, 5, 1000), Entry(2, 2, SECTOR)]
    return minimal, build(full_data, minimal, entries)


def test_encoding_layout() -> None:
    data = MinisoData([Entry(44, 300, 70000)], bytes(range(32)), b"XZ", "0.11.0")
    enc = data.encode()
    expected = (
        b"MINISO\0\0"
        + b"\x01"
        + b"\x060.11.0"
        + b"\x01"
        + b"\x2c"
        + b"\xfb\x2c\x01"
        + b"\xfc\x70\x11\x01\x00"
        + bytes(range(32))
        + b"\x02XZ"
    )
    assert enc == expected
    parsed = miniso.parse(enc + bytes(1000))  # trailing zero fill is fine
    assert parsed == data


def test_round_trip(full: tuple[int, bytes]) -> None:
    fd, full_data = full
    minimal, data = sample(full_data)
    assert reconstruct(miniso.parse(data.encode()), fd, len(full_data)) == minimal


def test_wrong_digest(full: tuple[int, bytes]) -> None:
    fd, full_data = full
    minimal, data = sample(full_data)
    data.digest = bytes(32)
    with pytest.raises(FormatError) as exc:
        reconstruct(data, fd, len(full_data))
    found = hashlib.sha256(minimal).hexdigest()
    assert str(exc.value) == f"wrong final digest: expected {'00' * 32}, found {found}"


def chain_of(exc: pytest.ExceptionInfo[NestosError]) -> str:
    return format_chain(exc.value)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "table is empty"),
        ([Entry(2, 0, 10), Entry(1, 0, 10)], "Files at offsets 4096 and 2048 overlap"),
        ([Entry(1, 0, SECTOR + 1), Entry(2, 0, 10)], "Files at offsets 2048 and 4096 overlap"),
        ([Entry(3, 0, 1), Entry(3, 1, 1)], "Files at offsets 6144 and 6144 overlap"),
    ],
)
def test_bad_tables(entries: list[Entry], message: str) -> None:
    enc = MinisoData(entries, bytes(32), xz(b""), "t").encode()
    with pytest.raises(FormatError) as exc:
        miniso.parse(enc)
    text = chain_of(exc)
    assert "validating table" in text
    assert message in text


def test_entry_past_full_iso(full: tuple[int, bytes]) -> None:
    fd, full_data = full
    data = MinisoData([Entry(0, 7, SECTOR + 1)], bytes(32), xz(b""), "t")
    with pytest.raises(FormatError, match="extends beyond the full ISO"):
        reconstruct(data, fd, len(full_data))
    huge = MinisoData([Entry(0, 0xFFFF_FFFF, 0xFFFF_FFFF)], bytes(32), xz(b""), "t")
    with pytest.raises(FormatError, match="extends beyond the full ISO"):
        miniso.validate_against(huge, len(full_data))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "failed to deserialize header"),
        (b"MINISO\0\1\x01\x00", "not a miniso file!"),
        (b"MINISO\0\0\x02\x03abc", "incompatible miniso file version: 1 vs 2 (created by abc)"),
        (b"MINISO\0\0\xfd" + bytes(8), "failed to deserialize header"),  # u64 for a u32
        (b"MINISO\0\0\x01\xfe", "failed to deserialize header"),
        (b"MINISO\0\0\x01\x00\xfd" + b"\xff" * 8, "table entries length"),
        (b"MINISO\0\0\x01\x00\xfc\xff\xff\xff\xff", "table entries length"),
        (b"MINISO\0\0\x01\x00\x01\xfd" + (1 << 32).to_bytes(8, "little") + b"\0\0", "range"),
        (b"MINISO\0\0\x01\x00\x01\x00\x00\x01" + bytes(32) + b"\xfc\xff\xff\xff\x7f", "xzpacked"),
        (b"MINISO\0\0\x01\x00\x01\x00\x00\x01" + bytes(31), "digest"),
        (b"MINISO\0\0\x01\x05ab", "app_version"),
        (b"MINISO\0\0\x01\x02\xff\xfe", "invalid UTF-8"),
    ],
)
def test_hostile_headers(raw: bytes, message: str) -> None:
    with pytest.raises(FormatError) as exc:
        miniso.parse(raw)
    assert message in chain_of(exc)


def test_data_size_limit_is_enforced() -> None:
    big = MinisoData([Entry(0, 0, 1)], bytes(32), bytes(miniso.MAX_DATA), "t")
    with pytest.raises(FormatError) as exc:
        big.encode()
    assert "collision with data size limit" in chain_of(exc)
    # On reading, everything past 1 MiB is ignored, so the same vector is "truncated".
    raw = (
        b"MINISO\0\0\x01\x01t\x01\x00\x00\x01"
        + bytes(32)
        + encode_varint(miniso.MAX_DATA)
        + bytes(miniso.MAX_DATA)
    )
    with pytest.raises(FormatError) as exc2:
        miniso.parse(raw)
    assert "xzpacked length" in chain_of(exc2)


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        (b"not xz at all", "decompressing packed data"),
        (xz(b"x" * 10)[:-20], "decompressing packed data"),
        (xz(b"short"), "unexpected end of packed data"),
    ],
)
def test_bad_xz(full: tuple[int, bytes], packed: bytes, message: str) -> None:
    fd, full_data = full
    data = MinisoData([Entry(1, 0, 10)], bytes(32), packed, "t")
    with pytest.raises(FormatError) as exc:
        reconstruct(data, fd, len(full_data))
    assert message in chain_of(exc)


def test_xz_expansion_is_bounded(full: tuple[int, bytes]) -> None:
    fd, full_data = full
    bomb = xz(bytes(4 << 20))
    assert len(bomb) < 4096
    data = MinisoData([Entry(0, 0, 10)], bytes(32), bomb, "t")
    seen: list[int] = []
    with pytest.raises(FormatError, match="would exceed 65536 bytes"):
        miniso.unpack(data, fd, len(full_data), lambda c: seen.append(len(c)), 65536)
    assert sum(seen) <= 65536


def test_find_karg() -> None:
    kargs = "a nestos.liveisox=1 nestos.liveiso=abc\tb nestos.liveiso=2"
    assert miniso.find_karg(kargs, "nestos.liveiso=") == "nestos.liveiso=abc"
    assert miniso.find_karg("a b", "nestos.liveiso=") is None


def test_kargs_json_rewrite_layout() -> None:
    raw = json.dumps(
        {
            "size": 896,
            "extra": [1, 2],
            "files": [
                {"end": "\u0000", "offset": 66688, "pad": "\u0000", "path": "images/cdboot.img"},
                {"offset": 9, "path": "EFI/x/grub.cfg", "junk": True},
            ],
            "default": "old",
        }
    ).encode()
    out = miniso.rewrite_kargs_json(raw, "a b", 400, "NESTOS/KARGS.JSO")
    text = (
        b"{\n"
        b'  "default": "a b",\n'
        b'  "files": [\n'
        b"    {\n"
        b'      "path": "images/cdboot.img",\n'
        b'      "offset": 66688,\n'
        b'      "pad": "\\u0000",\n'
        b'      "end": "\\u0000"\n'
        b"    },\n"
        b"    {\n"
        b'      "path": "EFI/x/grub.cfg",\n'
        b'      "offset": 9\n'
        b"    }\n"
        b"  ],\n"
        b'  "size": 896\n'
        b"}"
    )
    assert out == text + b" " * (400 - len(text))
    nl = json.dumps({"files": [{"path": "p", "offset": 1, "end": "\n"}], "size": 5}).encode()
    assert b'"end": "\\n"' in miniso.rewrite_kargs_json(nl, "x", 200, "K")
    with pytest.raises(FormatError, match=r"New version of K does not fit in space \(\d+ vs 20\)"):
        miniso.rewrite_kargs_json(raw, "a b", 20, "K")
    with pytest.raises(FormatError, match="decoding kargs embed area info"):
        miniso.rewrite_kargs_json(b"[1]", "a", 100, "K")


def test_unpack_reads_full_iso_with_pread_only(full: tuple[int, bytes]) -> None:
    """The full ISO's file offset is not moved (other readers share the fd)."""
    fd, full_data = full
    os.lseek(fd, 123, os.SEEK_SET)
    minimal, data = sample(full_data)
    assert reconstruct(data, fd, len(full_data)) == minimal
    assert os.lseek(fd, 0, os.SEEK_CUR) == 123

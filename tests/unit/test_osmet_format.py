"""osmet file format: bincode-1 varints, models, validation, hostile input."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.errors import FormatError, NestosError
from nestos_inst.formats.bincode import Reader, encode_str, encode_varint
from nestos_inst.osmet.format import (
    MAGIC,
    Extent,
    Header,
    Mapping,
    Osmet,
    Partition,
    checksum_to_object_path,
    read_file,
    read_file_header,
    read_header,
    read_osmet,
    validate,
)
from nestos_inst.osmet.pack import canonicalize, object_path_to_checksum

DIGEST = bytes(range(32))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (250, b"\xfa"),
        (251, b"\xfb\xfb\x00"),
        (0xFFFF, b"\xfb\xff\xff"),
        (0x10000, b"\xfc\x00\x00\x01\x00"),
        (0xFFFF_FFFF, b"\xfc\xff\xff\xff\xff"),
        (0x1_0000_0000, b"\xfd\x00\x00\x00\x00\x01\x00\x00\x00"),
        (2**64 - 1, b"\xfd" + b"\xff" * 8),
    ],
)
def test_varint_vectors(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert Reader(io.BytesIO(encoded), len(encoded)).varint("x") == value


def test_varint_rejects_u128_and_reserved_tags() -> None:
    for tag in (b"\xfe", b"\xff"):
        with pytest.raises(FormatError):
            Reader(io.BytesIO(tag + bytes(16)), 17).varint("x")


def test_noncanonical_varint_accepted_like_bincode() -> None:
    assert Reader(io.BytesIO(b"\xfb\x05\x00"), 3).varint("x") == 5


def test_u32_limit() -> None:
    data = encode_varint(2**32)
    with pytest.raises(FormatError, match="out of range"):
        Reader(io.BytesIO(data), len(data)).varint("version", 0xFFFF_FFFF)


def _sample() -> tuple[Header, Osmet]:
    header = Header("0.1.0", 512, "NestOS 24.03", "x86_64")
    osmet = Osmet(
        (
            Partition(1 << 20, 2 << 20, (Mapping(Extent(0, 4096, 8192), DIGEST),)),
            Partition(2 << 20, 300 << 20, (Mapping(Extent(4096, 70000, 4096), b"\xff" * 32),)),
        ),
        b"\xaa" * 32,
        301 << 20,
    )
    return header, osmet


def test_header_layout_is_bincode() -> None:
    header, _ = _sample()
    assert header.encode() == (
        b"OSMET\0\0\0"
        + b"\x01"
        + b"\x050.1.0"
        + b"\xfb\x00\x02"
        + b"\x0cNestOS 24.03"
        + b"\x06x86_64"
    )


def test_table_layout_is_bincode() -> None:
    osmet = Osmet((Partition(1, 300, (Mapping(Extent(2, 3, 4), DIGEST),)),), b"\x11" * 32, 70000)
    assert osmet.encode() == (
        b"\x01"  # one partition
        + b"\x01\xfb\x2c\x01"  # start 1, end 300
        + b"\x01\x02\x03\x04"  # one mapping: logical, physical, length
        + DIGEST
        + b"\x11" * 32
        + b"\xfc\x70\x11\x01\x00"
    )


def test_roundtrip(tmp_path: Path) -> None:
    header, osmet = _sample()
    path = tmp_path / "f.osmet"
    path.write_bytes(header.encode() + osmet.encode() + b"XZDATA")
    parsed = read_file(path)
    assert parsed.header == header
    assert parsed.osmet == osmet
    assert path.read_bytes()[parsed.data_offset :] == b"XZDATA"
    assert read_file_header(path) == header


def test_bad_magic(tmp_path: Path) -> None:
    header, osmet = _sample()
    path = tmp_path / "f"
    path.write_bytes(b"OSMEX\0\0\0" + header.encode()[8:] + osmet.encode())
    with pytest.raises(FormatError, match=r"^not an OSMET file!$"):
        read_file(path)


def test_bad_version(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(MAGIC + encode_varint(2) + encode_str("x"))
    with pytest.raises(FormatError, match=r"^incompatible OSMET file version 2$"):
        read_file_header(path)


def test_truncated_header(tmp_path: Path) -> None:
    header, _ = _sample()
    path = tmp_path / "f"
    path.write_bytes(header.encode()[:-3])
    with pytest.raises(FormatError, match="failed to deserialize osmet file"):
        read_file_header(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NestosError, match="opening"):
        read_file(tmp_path / "nope")


def test_hostile_lengths_fail_fast(tmp_path: Path) -> None:
    header, _ = _sample()
    path = tmp_path / "f"
    # 2**60 partitions, then a string of 2**60 bytes: refused without allocating.
    path.write_bytes(header.encode() + encode_varint(2**60))
    with pytest.raises(FormatError, match="failed to deserialize osmet file") as exc:
        read_file(path)
    assert "partitions length 1152921504606846976 exceeds the file size" in str(exc.value.__cause__)
    path.write_bytes(MAGIC + b"\x01" + encode_varint(2**60) + b"abc")
    with pytest.raises(FormatError) as exc:
        read_file_header(path)
    assert "exceeds the file size" in str(exc.value.__cause__)


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(MAGIC + b"\x01\x02\xff\xfe")
    with pytest.raises(FormatError):
        read_file_header(path)


def _m(physical: int, length: int, logical: int | None = None) -> Mapping:
    return Mapping(Extent(physical if logical is None else logical, physical, length), DIGEST)


@pytest.mark.parametrize(
    ("osmet", "message"),
    [
        (Osmet((), DIGEST, 0), "OSMET file has no partitions!"),
        (
            Osmet((Partition(100, 200), Partition(150, 300)), DIGEST, 300),
            "cursor past partition start: 200 vs 150",
        ),
        (
            Osmet((Partition(100, 200, (_m(10, 20), _m(20, 5))),), DIGEST, 300),
            r"cursor past mapping start: 130 vs 120 \(partition 0, mapping 1\)",
        ),
        (
            Osmet((Partition(100, 200, (_m(90, 20),)),), DIGEST, 300),
            "cursor past partition end: 210 vs 200",
        ),
        (Osmet((Partition(100, 400),), DIGEST, 300), "partition past image end: 400 vs 300"),
        (Osmet((Partition(300, 200),), DIGEST, 300), "partition 0 ends before it starts"),
    ],
)
def test_validate_rejects(osmet: Osmet, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        validate(osmet)


def test_read_file_validates(tmp_path: Path) -> None:
    header, _ = _sample()
    bad = Osmet((Partition(100, 200, (_m(10, 20), _m(20, 5))),), DIGEST, 300)
    path = tmp_path / "f"
    path.write_bytes(header.encode() + bad.encode())
    with pytest.raises(FormatError, match="validating after reading") as exc:
        read_file(path)
    assert "cursor past mapping start" in str(exc.value.__cause__)


def test_checksum_to_object_path() -> None:
    repo = Path("/r")
    assert checksum_to_object_path(repo, bytes(32)) == Path("/r/objects/00/" + "0" * 62 + ".file")
    digest = b"\xff\xfe" + bytes(29) + b"\xfd"
    assert checksum_to_object_path(repo, digest) == Path("/r/objects/ff/fe" + "00" * 29 + "fd.file")
    assert object_path_to_checksum(checksum_to_object_path(repo, digest)) == digest
    with pytest.raises(FormatError):
        object_path_to_checksum(Path("/r/objects/zz/" + "0" * 62 + ".file"))


def test_canonicalize_upstream_vectors() -> None:
    maps = [_m(100, 50), _m(100, 10), _m(110, 10), _m(140, 10)]
    out, dropped, clamped = canonicalize(maps)
    assert out == [_m(100, 50)]
    assert (dropped, clamped) == (3, 0)
    out, dropped, clamped = canonicalize([*maps, _m(140, 20), _m(150, 20)])
    assert out == [_m(100, 50), _m(150, 10, 150), _m(160, 10, 160)]
    assert (dropped, clamped) == (3, 2)


extents = st.builds(Extent, st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40))


@given(st.lists(st.builds(Mapping, extents, st.binary(min_size=32, max_size=32)), max_size=30))
def test_canonicalize_properties(maps: list[Mapping]) -> None:
    out, dropped, _ = canonicalize(maps)
    assert len(out) + dropped == len(maps)
    for a, b in itertools.pairwise(out):
        assert a.extent.physical + a.extent.length <= b.extent.physical
    covered = {(m.extent.physical, m.extent.physical + m.extent.length) for m in maps}
    for m in out:
        assert any(
            s <= m.extent.physical and m.extent.physical + m.extent.length <= e for s, e in covered
        )


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_only_format_errors(data: bytes) -> None:
    for blob in (data, MAGIC + b"\x01" + data):
        r = Reader(io.BytesIO(blob), len(blob))
        try:
            read_header(r)
            read_osmet(r)
        except FormatError:
            pass


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            st.lists(st.tuples(extents, st.binary(min_size=32, max_size=32)), max_size=4),
        ),
        max_size=4,
    ),
    st.integers(0, 2**64 - 1),
    st.text(max_size=20),
)
def test_encode_decode_roundtrip(
    parts: list[tuple[int, int, list[tuple[Extent, bytes]]]], size: int, desc: str
) -> None:
    osmet = Osmet(
        tuple(Partition(s, e, tuple(Mapping(x, d) for x, d in ms)) for s, e, ms in parts),
        DIGEST,
        size,
    )
    header = Header("1", 4096, desc, "aarch64")
    blob = header.encode() + osmet.encode()
    r = Reader(io.BytesIO(blob), len(blob))
    assert read_header(r) == header
    assert read_osmet(r) == osmet
    assert r.remaining == 0

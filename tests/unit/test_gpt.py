"""Our GPT module against itself, sfdisk and sgdisk (512-byte files; 4Kn in integration)."""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.disk.gpt import GPT, NoGPTError, Partition, sniff_sector_size
from nestos_inst.errors import FormatError
from tests.helpers.diskmedia import LINUX_FS, MIB, Part, make_image, sfdisk_json, sgdisk_verify

LINUX = uuid.UUID(LINUX_FS)


def _part(
    number: int, first: int, last: int, name: str = "", guid: uuid.UUID | None = None
) -> Partition:
    return Partition(number, LINUX, guid or uuid.uuid4(), first, last, 0, name)


def _sample(ss: int, size: int) -> GPT:
    gpt = GPT.new(ss, size)
    per_mib = MIB // ss
    gpt.add(_part(1, per_mib, 2 * per_mib - 1, "boot"))
    gpt.add(_part(2, 2 * per_mib, 3 * per_mib - 1, "EFI-SYSTEM"))
    gpt.add(Partition(4, LINUX, uuid.uuid4(), 4 * per_mib, 6 * per_mib - 1, 1 << 60, "röot ✓"))
    return gpt


def _disk(gpt: GPT, size: int) -> io.BytesIO:
    buf = io.BytesIO(bytes(size))
    gpt.write(buf, size)
    return buf


@pytest.mark.parametrize("ss", [512, 4096])
def test_roundtrip_and_layout(ss: int) -> None:
    size = 16 * MIB
    gpt = _sample(ss, size)
    data = _disk(gpt, size).getvalue()
    lbas = size // ss
    assert data[ss : ss + 8] == b"EFI PART"
    assert data[size - ss : size - ss + 8] == b"EFI PART"
    assert sniff_sector_size(data[:MIB]) == ss
    assert gpt.first_usable == (34 if ss == 512 else 6)
    assert gpt.last_usable == lbas - (34 if ss == 512 else 6)
    back = GPT.read(io.BytesIO(data), ss, size)
    assert back == gpt
    # protective MBR: type EE from LBA 1 over the disk, boot signature
    assert data[450] == 0xEE
    assert struct.unpack_from("<II", data, 454) == (1, lbas - 1)
    assert data[510:512] == b"\x55\xaa"
    # backup header points at its own array right before it
    hdr = data[size - ss : size - ss + 92]
    cur, alt, _f, _l = struct.unpack_from("<QQQQ", hdr, 24)
    (elba,) = struct.unpack_from("<Q", hdr, 72)
    assert (cur, alt, elba) == (lbas - 1, 1, lbas - 1 - 16384 // ss)


def test_written_table_passes_sfdisk_and_sgdisk(tmp_path: Path) -> None:
    size = 16 * MIB
    img = tmp_path / "disk.img"
    img.write_bytes(b"")
    gpt = _sample(512, size)
    with open(img, "r+b") as f:
        f.truncate(size)
        gpt.write(f, size)
    sgdisk_verify(img)
    table = sfdisk_json(img)
    assert table["label"] == "gpt"
    assert uuid.UUID(table["id"]) == gpt.disk_guid
    assert (table["firstlba"], table["lastlba"]) == (gpt.first_usable, gpt.last_usable)
    got = [
        (int(p["node"][len(str(img)) :]), p["start"], p["size"], uuid.UUID(p["uuid"]), p["name"])
        for p in table["partitions"]
    ]
    want = [(p.number, p.first_lba, p.sectors, p.unique_guid, p.name) for p in gpt.entries]
    assert got == want


def test_reads_what_sfdisk_writes(tmp_path: Path) -> None:
    img = make_image(
        tmp_path / "d.img",
        32 * MIB,
        [
            Part("one", size=2048, start=2048),
            Part("", size=4096, number=3),
            Part("x" * 36, number=4),
        ],
    )
    with open(img, "rb") as f:
        gpt = GPT.read(f, 512, 32 * MIB)
    table = sfdisk_json(img)
    assert uuid.UUID(table["id"]) == gpt.disk_guid
    assert [p.number for p in gpt.entries] == [1, 3, 4]
    assert [p.name for p in gpt.entries] == ["one", "", "x" * 36]
    for p, q in zip(gpt.entries, table["partitions"], strict=True):
        assert (p.first_lba, p.sectors, p.unique_guid) == (
            q["start"],
            q["size"],
            uuid.UUID(q["uuid"]),
        )


def _corrupt_primary(buf: io.BytesIO, ss: int) -> None:
    buf.seek(ss + 40)  # first usable LBA: covered by the header CRC
    buf.write(b"\x99")


def _corrupt_backup(buf: io.BytesIO, ss: int, size: int) -> None:
    buf.seek(size - ss + 40)
    buf.write(b"\x99")


@pytest.mark.parametrize("ss", [512, 4096])
def test_backup_fallback(ss: int) -> None:
    size = 8 * MIB
    gpt = _sample(ss, size)
    buf = _disk(gpt, size)
    _corrupt_primary(buf, ss)
    assert GPT.read(buf, ss, size).entries == gpt.entries
    buf = _disk(gpt, size)
    _corrupt_backup(buf, ss, size)
    assert GPT.read(buf, ss, size).entries == gpt.entries
    # a damaged primary entry array also sends us to the backup
    buf = _disk(gpt, size)
    buf.seek(2 * ss + 5)
    buf.write(b"\x01")
    assert GPT.read(buf, ss, size).entries == gpt.entries
    buf = _disk(gpt, size)
    _corrupt_primary(buf, ss)
    _corrupt_backup(buf, ss, size)
    with pytest.raises(FormatError, match="could not read primary header") as info:
        GPT.read(buf, ss, size)
    assert not isinstance(info.value, NoGPTError)


def test_no_gpt() -> None:
    with pytest.raises(NoGPTError):
        GPT.read(io.BytesIO(bytes(MIB)), 512, MIB)
    with pytest.raises(NoGPTError):
        GPT.find(io.BytesIO(bytes(MIB)), MIB)
    # 4096-formatted disks are found by find() but not read as 512
    buf = _disk(_sample(4096, 8 * MIB), 8 * MIB)
    with pytest.raises(NoGPTError):
        GPT.read(buf, 512, 8 * MIB)
    assert GPT.find(buf, 8 * MIB).sector_size == 4096


def test_validate() -> None:
    gpt = GPT.new(512, 8 * MIB)
    gpt.add(_part(1, 2048, 4095))
    gpt.add(_part(2, 4000, 5000))
    with pytest.raises(FormatError, match="invalid partition boundaries"):
        gpt.validate()
    gpt = GPT.new(512, 8 * MIB)
    guid = uuid.uuid4()
    gpt.add(_part(1, 2048, 4095, guid=guid))
    gpt.add(_part(2, 4096, 5000, guid=guid))
    with pytest.raises(FormatError, match="conflict of partition GUIDs"):
        gpt.validate()
    for first, last in [(10, 100), (2048, 2047), (2048, 8 * 2048)]:
        gpt = GPT.new(512, 8 * MIB)
        gpt.add(_part(1, first, last))
        with pytest.raises(FormatError, match="invalid partition boundaries"):
            gpt.validate()
    gpt = GPT.new(512, 8 * MIB)
    gpt.add(_part(129, 2048, 4095))
    with pytest.raises(FormatError, match="out of range"):
        gpt.validate()
    buf = io.BytesIO(bytes(8 * MIB))
    with pytest.raises(FormatError):
        gpt.write(buf, 8 * MIB)
    assert buf.getvalue() == bytes(8 * MIB)  # nothing written on a bad table


def test_resize_moves_backup(tmp_path: Path) -> None:
    small, big = 8 * MIB, 24 * MIB
    gpt = _sample(512, small)
    img = tmp_path / "grow.img"
    with open(img, "wb") as f:
        f.truncate(big)
        gpt.write(f, small)
    with open(img, "r+b") as f:
        gpt = GPT.read(f, 512, small)
        gpt.resize(big)
        gpt.write(f, big)
    sgdisk_verify(img)
    assert sfdisk_json(img)["lastlba"] == big // 512 - 34
    with pytest.raises(FormatError, match="too small"):
        GPT.new(512, 16 * 1024)


def test_sniff() -> None:
    mib = bytearray(MIB)
    assert sniff_sector_size(bytes(mib)) is None
    assert sniff_sector_size(b"") is None
    mib[4096:4104] = b"EFI PART"
    assert sniff_sector_size(bytes(mib)) == 4096
    mib[512:520] = b"EFI PART"
    assert sniff_sector_size(bytes(mib)) == 512


def test_hostile_header_offsets() -> None:
    """Huge entry counts and arrays outside the disk are refused, never followed."""
    size = 8 * MIB
    buf = _disk(_sample(512, size), size)
    raw = bytearray(buf.getvalue())
    for field_off, value in [(72, 10**12), (80, 0xFFFFFFFF), (84, 4)]:
        hdr = bytearray(raw[512 : 512 + 92])
        fmt = "<Q" if field_off == 72 else "<I"
        struct.pack_into(fmt, hdr, field_off, value)
        struct.pack_into("<I", hdr, 16, 0)
        struct.pack_into("<I", hdr, 16, zlib.crc32(bytes(hdr)))
        bad = bytearray(raw)
        bad[512 : 512 + 92] = hdr
        # backup still fine: read succeeds through it
        assert GPT.read(io.BytesIO(bytes(bad)), 512, size).entries
        bad[size - 512 : size - 512 + 8] = b"XXXXXXXX"
        with pytest.raises(FormatError, match="could not read primary header"):
            GPT.read(io.BytesIO(bytes(bad)), 512, size)


def _small() -> bytes:
    size = 96 * 1024
    gpt = GPT.new(512, size)
    gpt.add(_part(1, 40, 99, "a"))
    gpt.add(_part(3, 100, 150, "b"))
    return _disk(gpt, size).getvalue()


_BASE = _small()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_BASE) - 1), st.integers(0, 255)), max_size=8))
def test_mutations_only_raise_format_error(flips: list[tuple[int, int]]) -> None:
    data = bytearray(_BASE)
    for off, val in flips:
        data[off] = val
    try:
        gpt = GPT.read(io.BytesIO(bytes(data)), 512, len(data))
    except FormatError:
        return
    assert all(1 <= p.number <= gpt.num_entries for p in gpt.entries)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=20000), st.sampled_from([512, 4096]))
def test_garbage_only_raises_format_error(data: bytes, ss: int) -> None:
    try:
        GPT.read(io.BytesIO(data), ss, len(data))
    except FormatError:
        pass
    try:
        GPT.from_bytes(data, ss)
    except FormatError:
        pass


def test_names_round_trip_byte_exact() -> None:
    """Odd UTF-16 (a lone surrogate) survives read -> write unchanged."""
    size = 4 * MIB
    gpt = GPT.new(512, size)
    gpt.add(_part(1, 2048, 4095, "x" * 36))
    data = bytearray(_disk(gpt, size).getvalue())
    entry = 2 * 512
    data[entry + 56 : entry + 60] = b"\x00\xd8a\x00"  # U+D800, "a"
    crc_fix = GPT.read(io.BytesIO(bytes(data)), 512, size)  # primary fails, backup read
    assert crc_fix.entries[0].name == "x" * 36
    raw_name = bytes(data[entry + 56 : entry + 128])
    part = Partition.unpack(1, bytes(data[entry : entry + 128]))
    assert part is not None and part.name.startswith("\ud800a")
    assert part.pack()[56:] == raw_name

"""docs/compat.md#reference-results blockdev expectations on the upstream disk fixtures (skipped
without them)."""

from __future__ import annotations

import io
import lzma
from pathlib import Path

import pytest

from nestos_inst.disk.gpt import GPT, sniff_sector_size
from nestos_inst.disk.saved import SavedPartitions, parse_partition_filters
from nestos_inst.errors import NestosError, format_chain
from tests.helpers.diskmedia import sgdisk_verify

pytestmark = pytest.mark.compat


def _load(upstream: Path, name: str) -> bytes:
    return lzma.decompress((upstream / "disk" / f"{name}.xz").read_bytes())


def _saved(data: bytes | bytearray, ss: int, labels: list[str]) -> SavedPartitions:
    filters = parse_partition_filters(labels, [])
    return SavedPartitions.read(io.BytesIO(bytes(data)), ss, len(data), filters)


def test_disk_sector_size_reader(upstream: Path) -> None:
    assert sniff_sector_size(b"") is None
    assert sniff_sector_size(_load(upstream, "empty")[: 1 << 20]) is None
    assert sniff_sector_size(_load(upstream, "gpt-512")[: 1 << 20]) == 512
    assert sniff_sector_size(_load(upstream, "gpt-4096")[: 1 << 20]) == 4096


def test_fixture_tables(upstream: Path) -> None:
    data = _load(upstream, "gpt-512")
    gpt = GPT.read(io.BytesIO(data), 512, len(data))
    assert [(p.number, p.first_lba, p.sectors, p.name) for p in gpt.entries] == [
        (1, 2048, 18399, "Linux filesystem")
    ]
    data = _load(upstream, "gpt-4096")
    gpt = GPT.read(io.BytesIO(data), 4096, len(data))
    assert [(p.first_lba, p.last_lba) for p in gpt.entries] == [(256, 2554)]
    assert (gpt.first_usable, gpt.last_usable) == (6, 2554)


def test_sector_size_mismatch(upstream: Path) -> None:
    with pytest.raises(NestosError) as info:
        _saved(_load(upstream, "gpt-4096"), 512, ["*"])
    assert str(info.value) == "GPT sector size 4096 doesn't match expected 512"
    with pytest.raises(NestosError) as info:
        _saved(_load(upstream, "gpt-512"), 4096, ["*"])
    assert str(info.value) == "GPT sector size 512 doesn't match expected 4096"


def test_duplicate_guids(upstream: Path) -> None:
    with pytest.raises(NestosError) as info:
        _saved(_load(upstream, "gpt-512-duplicate-partition-guids"), 512, ["*"])
    assert str(info.value) == (
        "failed dry run restoring saved partitions; input partition table may be invalid"
    )


def test_corrupted_copies(upstream: Path) -> None:
    data = bytearray(_load(upstream, "gpt-512"))
    size = len(data)
    primary, backup = 512 + 24, size - 512 + 24  # current-LBA fields, CRC-covered
    data[primary] ^= 0xFF
    assert len(_saved(data, 512, ["*"]).entries) == 1
    data[primary] ^= 0xFF
    data[backup] ^= 0xFF
    assert len(_saved(data, 512, ["*"]).entries) == 1
    data[primary] ^= 0xFF
    with pytest.raises(NestosError) as info:
        _saved(data, 512, ["*"])
    assert "could not read primary header" in format_chain(info.value)
    assert _saved(data, 512, []).entries == []


def test_empty_disk_and_mbr_rule(upstream: Path) -> None:
    data = _load(upstream, "empty")
    filters = parse_partition_filters([], ["1"])
    assert SavedPartitions.read(io.BytesIO(data), 512, len(data), filters).entries == []
    mbr = bytearray(data)
    mbr[510:512] = b"\x55\xaa"
    with pytest.raises(NestosError, match=r"^saving partitions from an MBR disk is not yet"):
        SavedPartitions.read(io.BytesIO(bytes(mbr)), 512, len(mbr), filters)
    assert _saved(mbr, 512, ["*"]).entries == []


@pytest.mark.parametrize(("name", "ss"), [("gpt-512", 512), ("gpt-4096", 4096)])
def test_fixture_roundtrip_through_fresh_table(
    upstream: Path, tmp_path: Path, name: str, ss: int
) -> None:
    data = _load(upstream, name)
    saved = _saved(data, ss, ["Linux*"])
    assert len(saved.entries) == 1
    out = tmp_path / "out.img"
    with open(out, "wb") as f:
        f.truncate(len(data))
        saved.write_fresh_table(f)
    with open(out, "rb") as f:
        assert GPT.read(f, ss, len(data)).entries == saved.entries
    if ss == 512:
        sgdisk_verify(out)

"""Saved partitions (docs/compat.md#saved-partitions, #wipe-on-error, #reference-results
test_saved_partitions) on sparse image files."""

from __future__ import annotations

import io
import os
import stat
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.disk.gpt import GPT, Partition, sniff_sector_size
from nestos_inst.disk.saved import (
    IndexFilter,
    LabelFilter,
    SavedPartitions,
    parse_partition_filters,
    wipe_partition_table,
)
from nestos_inst.errors import FormatError, NestosError, format_chain
from tests.helpers.diskmedia import (
    LINUX_FS,
    MIB,
    Part,
    make_image,
    pattern,
    sfdisk_json,
    sgdisk_verify,
)

DISK = 36 * MIB
NAMES = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 7: "seven", 8: "",
         9: "nine", 10: "ten", 11: "eleven"}  # fmt: skip


def _base_parts() -> list[Part]:
    # partition n lives at (8 + 2n) MiB, 1 MiB long; 6 is absent, 8 is unnamed
    return [Part(name, size=2048, start=(8 + 2 * n) * 2048, number=n) for n, name in NAMES.items()]


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image(tmp_path_factory.mktemp("base") / "base.img", DISK, _base_parts())


@pytest.fixture
def disk(base_image: Path, tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"")
    with open(base_image, "rb") as src, open(path, "r+b") as dst:
        dst.truncate(DISK)
        head = src.read(MIB)
        dst.write(head)
        src.seek(DISK - MIB)
        dst.seek(DISK - MIB)
        dst.write(src.read())
    return path


@pytest.fixture(scope="module")
def image_first_mib(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An OS image's head: partitions 1 boot, 2 EFI-SYSTEM, 4 root below 8 MiB."""
    img = make_image(
        tmp_path_factory.mktemp("img") / "os.img",
        8 * MIB,
        [
            Part("boot", size=2048, start=2048, number=1),
            Part("EFI-SYSTEM", size=2048, start=4096, number=2),
            Part("root", size=4096, start=6144, number=4),
        ],
        first_lba=34,
    )
    data = bytearray(img.read_bytes()[:MIB])
    data[:446] = pattern(446, seed=7)  # "boot code" we expect to land on the disk
    data[64 * 1024 :] = pattern(MIB - 64 * 1024, seed=3)
    return bytes(data)


def _read(path: Path, labels: list[str], indexes: list[str], ss: int = 512) -> SavedPartitions:
    filters = parse_partition_filters(labels, indexes)
    with open(path, "rb") as f:
        return SavedPartitions.read(f, ss, os.path.getsize(path), filters)


# ---- filter parsing ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("1", (1, 1)),
        ("1-5", (1, 5)),
        ("7-", (7, None)),
        ("-7", (None, 7)),
        ("+4", (4, 4)),
        ("4294967295", (4294967295, 4294967295)),
    ],
)
def test_index_specs(spec: str, want: tuple[int | None, int | None]) -> None:
    assert parse_partition_filters([], [spec]) == [IndexFilter(*want)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "both ends of partition index range '' cannot be open"),
        ("-", "both ends of partition index range '-' cannot be open"),
        ("--", "couldn't parse partition index range '--'"),
        ("-2-3", "couldn't parse partition index range '-2-3'"),
        ("0", "partition index cannot be zero"),
        ("0-3", "partition index cannot be zero"),
        ("23q", "couldn't parse partition index '23q'"),
        ("23-45.7", "couldn't parse partition index '45.7'"),
        ("0x7", "couldn't parse partition index '0x7'"),
        ("4294967296", "couldn't parse partition index '4294967296'"),
        ("9-7", "start of partition index range '9-7' cannot be greater than end"),
    ],
)
def test_index_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(NestosError) as info:
        parse_partition_filters([], [spec])
    assert str(info.value) == message


def test_comma_split_and_order() -> None:
    filters = parse_partition_filters(["a*,b", "c"], ["1,5-6", "9-"])
    labels = [f.glob for f in filters if isinstance(f, LabelFilter)]
    assert labels == ["a*", "b", "c"]
    assert [f for f in filters if isinstance(f, IndexFilter)] == [
        IndexFilter(1, 1),
        IndexFilter(5, 6),
        IndexFilter(9, None),
    ]


def test_label_globs() -> None:
    (star,) = parse_partition_filters(["*"], [])
    (empty,) = parse_partition_filters([""], [])
    (mid,) = parse_partition_filters(["*i*"], [])
    assert isinstance(star, LabelFilter) and isinstance(empty, LabelFilter)
    assert isinstance(mid, LabelFilter)
    assert star.matches("") and star.matches("anything")
    assert empty.matches("") and not empty.matches("x")
    assert mid.matches("five") and not mid.matches("four")
    with pytest.raises(NestosError) as info:
        parse_partition_filters(["***"], [])
    assert str(info.value) == "couldn't parse label glob '***'"
    assert format_chain(info.value) == (
        "Error: couldn't parse label glob '***'\n\nCaused by:\n    Pattern syntax error near "
        "position 2: wildcards are either regular `*` or recursive `**`"
    )
    for bad in ["a**", "[ab"]:
        with pytest.raises(NestosError, match="couldn't parse label glob"):
            parse_partition_filters([bad], [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=3), st.lists(st.text(max_size=12), max_size=3))
def test_filter_parser_only_raises_our_errors(labels: list[str], indexes: list[str]) -> None:
    try:
        parse_partition_filters(labels, indexes)
    except NestosError:
        pass


# ---- reading ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "indexes", "want"),
    [
        ([], ["5-"], [5, 7, 8, 9, 10, 11]),
        (["*i*"], [], [5, 9]),
        (["six"], ["7", "15-"], [7]),
        ([""], [], [8]),
        (["bogus"], [], []),
        ([], ["-2", "10"], [1, 2, 10]),
        ([], [], []),
    ],
)
def test_filters_select(disk: Path, labels: list[str], indexes: list[str], want: list[int]) -> None:
    saved = _read(disk, labels, indexes)
    assert [p.number for p in saved.entries] == want
    assert all(p.name == NAMES[p.number] for p in saved.entries)
    if want:
        low = min(want)
        assert saved.limit_offset == (8 + 2 * low) * MIB
        assert saved.limit_message == f'partition {low} ("{NAMES[low]}")'
    else:
        assert saved.limit_offset is None and saved.limit_message is None


def test_merge_example(
    disk: Path, image_first_mib: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = _read(disk, [], ["4-"])
    assert [p.number for p in saved.entries] == [4, 5, 7, 8, 9, 10, 11]
    before = {p.number: p for p in saved.entries}
    with open(disk, "r+b") as f:
        saved.write_fresh_table(f)
    sgdisk_verify(disk)
    assert [p["start"] // 2048 for p in sfdisk_json(disk)["partitions"]] == [
        16,
        18,
        22,
        24,
        26,
        28,
        30,
    ]
    with open(disk, "r+b") as f:
        saved.merge(f, image_first_mib)
    err = capsys.readouterr().err
    assert err.splitlines() == [
        'Saving partition 4 ("four") to new partition 5',
        'Saving partition 5 ("five") to new partition 6',
        'Saving partition 7 ("seven") to new partition 7',
        'Saving partition 8 ("") to new partition 8',
        'Saving partition 9 ("nine") to new partition 9',
        'Saving partition 10 ("ten") to new partition 10',
        'Saving partition 11 ("eleven") to new partition 11',
    ]
    sgdisk_verify(disk)
    table = sfdisk_json(disk)
    assert table["lastlba"] == DISK // 512 - 34
    got = {int(p["node"][len(str(disk)) :]): p for p in table["partitions"]}
    assert sorted(got) == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    assert [got[n].get("name", "") for n in (1, 2, 4, 5, 6)] == [
        "boot",
        "EFI-SYSTEM",
        "root",
        "four",
        "five",
    ]
    for new, old in [(5, 4), (6, 5), (7, 7), (11, 11)]:
        assert got[new]["start"] == before[old].first_lba
        assert got[new]["uuid"].lower() == str(before[old].unique_guid)
    data = disk.read_bytes()[:MIB]
    assert data[:446] == image_first_mib[:446]
    assert data[510:512] == b"\x55\xaa" and data[450] == 0xEE
    gpt = GPT.from_bytes(image_first_mib, 512)
    end = gpt.first_usable * 512
    assert end < 24576
    assert data[end:] == image_first_mib[end:]
    assert sniff_sector_size(data) == 512


def test_merge_overlap_refused(disk: Path, image_first_mib: bytes) -> None:
    bad = bytearray(image_first_mib)
    buf = io.BytesIO(bytes(bad) + bytes(63 * MIB))
    gpt = GPT.from_bytes(image_first_mib, 512)
    gpt.entries[-1].last_lba = 20 * 2048  # root now reaches over saved partition 4
    gpt.resize(DISK)
    gpt.write(buf, DISK)
    head = buf.getvalue()[:MIB]
    saved = _read(disk, ["four"], [])
    before = disk.read_bytes()
    with open(disk, "r+b") as f, pytest.raises(FormatError, match="invalid partition boundaries"):
        saved.merge(f, head)
    assert disk.read_bytes() == before


def test_nothing_saved_merge_is_noop(disk: Path, image_first_mib: bytes) -> None:
    saved = _read(disk, ["bogus"], [])
    before = disk.read_bytes()
    with open(disk, "r+b") as f:
        saved.merge(f, image_first_mib)
    assert disk.read_bytes() == before
    with open(disk, "r+b") as f:
        saved.write_first_mib(f, image_first_mib)
    assert disk.read_bytes()[:MIB] == image_first_mib


@pytest.mark.parametrize("ss", [512, 4096])
def test_fresh_table_clobbers_first_sector(tmp_path: Path, ss: int) -> None:
    size = 8 * MIB
    buf = io.BytesIO(b"\xa5" * size)
    SavedPartitions(ss, size).write_fresh_table(buf)
    data = buf.getvalue()
    assert data[:446] == bytes(446)
    lbas = (size // ss - 1).to_bytes(4, "little")
    assert data[446:462] == bytes.fromhex("00000200eeffffff01000000") + lbas
    assert data[462:510] == bytes(48) and data[510:512] == b"\x55\xaa"
    assert data[512 : ss if ss > 512 else 512] == bytes(max(0, ss - 512))
    assert data[ss : ss + 8] == b"EFI PART"
    gpt = GPT.read(buf, ss, size)
    assert gpt.entries == []
    other = io.BytesIO(b"\xa5" * size)
    SavedPartitions(ss, size).write_fresh_table(other)
    assert GPT.read(other, ss, size).disk_guid != gpt.disk_guid  # random each time


def test_corrupt_copies(disk: Path) -> None:
    def flip(offset: int) -> None:
        with open(disk, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x55]))

    flip(512 + 40)  # primary header
    assert [p.number for p in _read(disk, ["one"], []).entries] == [1]
    flip(512 + 40)
    flip(DISK - 512 + 40)  # backup header only
    assert [p.number for p in _read(disk, ["one"], []).entries] == [1]
    flip(512 + 40)  # now both
    with pytest.raises(NestosError) as info:
        _read(disk, ["one"], [])
    assert "could not read primary header" in format_chain(info.value)
    assert _read(disk, [], []).entries == []  # no filter: old table ignored


def test_mbr_disk(tmp_path: Path) -> None:
    img = tmp_path / "mbr.img"
    with open(img, "wb") as f:
        f.truncate(8 * MIB)
    import subprocess

    subprocess.run(
        ["sfdisk", "-q", "-w", "never", str(img)],
        input="label: dos\nsize=2048, type=83\n",
        text=True,
        check=True,
        capture_output=True,
    )
    before = img.read_bytes()
    with pytest.raises(NestosError) as info:
        _read(img, [], ["1"])
    assert str(info.value) == "saving partitions from an MBR disk is not yet supported"
    assert _read(img, ["*"], []).entries == []
    assert img.read_bytes() == before


def test_sector_size_mismatch(tmp_path: Path) -> None:
    buf = io.BytesIO(bytes(8 * MIB))
    gpt = GPT.new(4096, 8 * MIB)
    gpt.write(buf, 8 * MIB)
    with pytest.raises(NestosError) as info:
        SavedPartitions.read(buf, 512, 8 * MIB, parse_partition_filters(["*"], []))
    assert str(info.value) == "GPT sector size 4096 doesn't match expected 512"


def test_dry_run_failure(disk: Path) -> None:
    # make partition 2 a copy of 1's GUID: the saved table could never be written
    with open(disk, "r+b") as f:
        gpt = GPT.read(f, 512, DISK)
        gpt.entries[1].unique_guid = gpt.entries[0].unique_guid
        # write without validation, as a broken tool would
        for offset, data in _unchecked_pieces(gpt):
            f.seek(offset)
            f.write(data)
    before = disk.read_bytes()
    with pytest.raises(NestosError) as info:
        _read(disk, [], ["1-2"])
    assert str(info.value) == (
        "failed dry run restoring saved partitions; input partition table may be invalid"
    )
    assert "conflict of partition GUIDs" in format_chain(info.value)
    assert disk.read_bytes() == before
    assert [p.number for p in _read(disk, [], ["2"]).entries] == [2]  # alone it is fine


def _unchecked_pieces(gpt: GPT) -> list[tuple[int, bytes]]:
    orig = gpt.validate
    gpt.validate = lambda: None  # type: ignore[method-assign]
    try:
        return gpt.to_bytes(DISK)
    finally:
        gpt.validate = orig  # type: ignore[method-assign]


def test_stash_and_wipe(disk: Path) -> None:
    saved = _read(disk, ["t*"], [])
    assert [p.number for p in saved.entries] == [2, 3, 10]
    stash = saved.stash()
    assert stash is not None
    try:
        st_ = os.stat(stash)
        assert stat.S_IMODE(st_.st_mode) == 0o600
        assert st_.st_size == DISK and st_.st_blocks * 512 < MIB  # sparse
        assert stash.name.startswith("nestos-installer-partitions.")
        sgdisk_verify(stash)
        with open(stash, "rb") as f:
            assert [p.number for p in GPT.read(f, 512, DISK).entries] == [2, 3, 10]
    finally:
        stash.unlink()
    assert SavedPartitions(512, DISK).stash() is None
    data_before = disk.read_bytes()
    fd = os.open(disk, os.O_RDWR)
    try:
        wipe_partition_table(fd, 512, DISK, saved)
    finally:
        os.close(fd)
    sgdisk_verify(disk)
    after = disk.read_bytes()
    assert [p["name"] for p in sfdisk_json(disk)["partitions"]] == ["two", "three", "ten"]
    # partition data untouched: only the table areas changed
    assert after[MIB : DISK - MIB] == data_before[MIB : DISK - MIB]
    fd = os.open(disk, os.O_RDWR)
    try:
        wipe_partition_table(fd, 512, DISK, None)
    finally:
        os.close(fd)
    assert sfdisk_json(disk).get("partitions", []) == []


def _small_disk() -> bytes:
    size = 128 * 1024
    buf = io.BytesIO(bytes(size))
    gpt = GPT.new(512, size)
    for n, (first, last) in enumerate([(40, 79), (80, 119), (140, 180)], start=1):
        gpt.add(_entry(n, first, last))
    gpt.write(buf, size)
    return buf.getvalue()


def _entry(n: int, first: int, last: int) -> Partition:
    return Partition(n, uuid.UUID(LINUX_FS), uuid.uuid4(), first, last, 0, f"p{n}")


_SMALL = _small_disk()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(_SMALL) - 1), st.integers(0, 255)), max_size=6),
    st.sampled_from([(["*"], []), ([], ["2-"]), (["p1"], ["3"])]),
)
def test_read_damaged_tables_only_raises_our_errors(
    flips: list[tuple[int, int]], spec: tuple[list[str], list[str]]
) -> None:
    data = bytearray(_SMALL)
    for off, val in flips:
        data[off] = val
    filters = parse_partition_filters(*spec)
    try:
        saved = SavedPartitions.read(io.BytesIO(bytes(data)), 512, len(data), filters)
    except NestosError:
        return
    out = io.BytesIO(bytes(len(data)))
    saved.write_fresh_table(out)  # whatever passed the dry run must be writable
    assert GPT.read(out, 512, len(data)).entries == saved.entries


@settings(max_examples=60, deadline=None)
@given(
    st.sets(st.integers(1, 8), max_size=5),
    st.sets(st.integers(1, 20), min_size=1, max_size=8),
)
def test_merge_numbering_rule(image_nums: set[int], saved_nums: set[int]) -> None:
    """Image entries stay put; saved ones keep order, never move down, never collide."""
    size = 4 * MIB
    image = GPT.new(512, 2 * MIB)
    for i, n in enumerate(sorted(image_nums)):
        image.add(_entry(n, 64 + 16 * i, 64 + 16 * i + 15))
    img_buf = io.BytesIO(bytes(2 * MIB))
    image.write(img_buf, 2 * MIB)
    entries = [
        _entry(n, 4096 + 16 * i, 4096 + 16 * i + 15) for i, n in enumerate(sorted(saved_nums))
    ]
    saved = SavedPartitions(512, size, entries)
    disk = io.BytesIO(bytes(size))
    saved.write_fresh_table(disk)
    saved.merge(disk, img_buf.getvalue()[:MIB])
    merged = GPT.read(disk, 512, size)
    by_start = {p.first_lba: p for p in merged.entries}
    for p in image.entries:
        assert by_start[p.first_lba].number == p.number
    new_numbers = [by_start[p.first_lba].number for p in entries]
    assert new_numbers == sorted(set(new_numbers))
    floor = max(image_nums, default=0)
    for p, new in zip(entries, new_numbers, strict=True):
        assert new >= p.number and new > floor
    assert merged.last_usable == size // 512 - 34

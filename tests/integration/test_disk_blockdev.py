"""Block-device layer on real loop devices (512 and 4Kn), mounts and swap."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst.disk import blockdev
from nestos_inst.disk.blockdev import (
    attached,
    check_exclusive,
    device_size,
    find_partition_by_label,
    kernel_partitions,
    list_partitions,
    reread_partitions,
    sector_size,
)
from nestos_inst.disk.gpt import GPT, Partition
from nestos_inst.disk.mount import mount_private
from nestos_inst.disk.saved import SavedPartitions, parse_partition_filters, wipe_partition_table
from nestos_inst.errors import NestosError
from tests.helpers.diskmedia import LINUX_FS, MIB, Part, make_image, sfdisk_json, sgdisk_verify
from tests.helpers.loop import loop_device, mounted

pytestmark = pytest.mark.root
DISK = 32 * MIB


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def scanning_loop(image: Path, sector_size: int = 512) -> Iterator[str]:
    """A loop device with partition scanning on (-P), so BLKRRPART works (and drops nodes)."""
    with loop_device(image, sector_size=sector_size, partitions=False, scan=True) as dev:
        yield dev


def _three_parts(path: Path, sector_size: int = 512) -> Path:
    per_mib = MIB // sector_size
    return make_image(
        path,
        DISK,
        [
            Part("boot", size=4 * per_mib, start=per_mib, number=1),
            Part("data", size=4 * per_mib, number=2),
            Part("spare", size=4 * per_mib, number=3),
        ],
        sector_size=sector_size,
    )


@pytest.mark.parametrize("ss", [512, 4096])
def test_sizes(tmp_path: Path, ss: int) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(bytes(DISK))
    with loop_device(img, sector_size=ss, partitions=False) as dev:
        assert sector_size(dev) == ss
        fd = os.open(dev, os.O_RDONLY)
        try:
            assert sector_size(fd) == ss
            assert device_size(fd) == DISK
        finally:
            os.close(fd)
    fd = os.open(img, os.O_RDONLY)
    try:
        assert (sector_size(fd), device_size(fd)) == (512, DISK)
    finally:
        os.close(fd)


def test_4kn_table_written_on_device(tmp_path: Path) -> None:
    """Our 4096-byte GPT, written through a 4Kn device, as sfdisk and sgdisk see it."""
    img = tmp_path / "4k.img"
    img.write_bytes(b"")
    with open(img, "wb") as f:
        f.truncate(DISK)
    gpt = GPT.new(4096, DISK)
    gpt.add(Partition(1, uuid.UUID(LINUX_FS), uuid.uuid4(), 256, 511, 0, "one"))
    gpt.add(Partition(3, uuid.UUID(LINUX_FS), uuid.uuid4(), 1024, 2047, 0, "three"))
    with loop_device(img, sector_size=4096, partitions=False) as dev:
        fd = os.open(dev, os.O_RDWR)
        try:
            gpt.write(fd, device_size(fd))
            os.fsync(fd)
        finally:
            os.close(fd)
        table = sfdisk_json(dev)
        assert table["sectorsize"] == 4096
        assert (table["firstlba"], table["lastlba"]) == (6, DISK // 4096 - 6)
        assert [(p["start"], p["size"], p.get("name")) for p in table["partitions"]] == [
            (256, 256, "one"),
            (1024, 1024, "three"),
        ]
        sgdisk_verify(dev)
        # a 4Kn table read through a 512-byte view is refused by the sector-size check
        filters = parse_partition_filters(["*"], [])
        with (
            pytest.raises(NestosError, match="GPT sector size 4096 doesn't match expected 512"),
            open(img, "rb") as f,
        ):
            SavedPartitions.read(f, 512, DISK, filters)


@pytest.mark.parametrize("ss", [512, 4096])
def test_reread_adds_nodes_after_blkrrpart(tmp_path: Path, ss: int) -> None:
    img = _three_parts(tmp_path / "d.img", ss)
    with scanning_loop(img, ss) as dev:
        _sh("partx", "-a", dev)
        assert [p.number for p in kernel_partitions(dev)] == [1, 2, 3]
        # this kernel has no table parser: BLKRRPART alone drops the nodes
        blockdev.sync_partition_nodes(dev, None)
        assert kernel_partitions(dev) == []
        reread_partitions(dev)
        parts = kernel_partitions(dev)
        assert [p.number for p in parts] == [1, 2, 3]
        assert parts[0].start == MIB and parts[0].size == 4 * MIB
        for p in parts:
            assert stat.S_ISBLK(os.stat(p.path).st_mode)
        # a changed table: re-read from the GPT we give, stale nodes removed
        fd = os.open(dev, os.O_RDWR)
        try:
            gpt = GPT.read(fd, ss, DISK)
            gpt.entries = [e for e in gpt.entries if e.number != 2]
            gpt.entries[0].last_lba += MIB // ss
            gpt.write(fd, DISK)
            os.fsync(fd)
        finally:
            os.close(fd)
        reread_partitions(dev, gpt)
        parts = kernel_partitions(dev)
        assert [(p.number, p.size) for p in parts] == [(1, 5 * MIB), (3, 4 * MIB)]


def test_reread_without_partition_scanning(tmp_path: Path) -> None:
    """Loop devices without -P refuse BLKRRPART (EINVAL); nodes come from BLKPG."""
    img = _three_parts(tmp_path / "d.img")
    with loop_device(img, partitions=False) as dev:
        assert kernel_partitions(dev) == []
        reread_partitions(dev)
        assert [p.number for p in kernel_partitions(dev)] == [1, 2, 3]
        check_exclusive(dev)  # nothing mounted: fine even though BLKRRPART says EINVAL


def test_busy_partitions_listed(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    img = _three_parts(tmp_path / "d.img")
    with scanning_loop(img) as dev:
        reread_partitions(dev)
        _sh("mkfs.ext4", "-q", "-L", "boot", f"{dev}p1")
        _sh("mkswap", "-L", "swp", f"{dev}p3")
        check_exclusive(dev)  # BLKRRPART dropped the nodes; put them back
        reread_partitions(dev)
        capfd.readouterr()
        before = img.read_bytes()[:MIB]
        swapon = subprocess.run(["swapon", f"{dev}p3"], capture_output=True, check=False)
        swapped = swapon.returncode == 0
        try:
            with mounted(f"{dev}p1") as where:
                with pytest.raises(NestosError) as info:
                    check_exclusive(dev)
                assert str(info.value) == "found busy partitions"
                err = capfd.readouterr().err.splitlines()
                want = [f"Partitions in use on {dev}:", f"    {dev}p1 mounted on {where}"]
                if swapped:
                    want.append(f"    {dev}p3 is swap device")
                assert err == want
        finally:
            if swapped:
                subprocess.run(["swapoff", f"{dev}p3"], capture_output=True, check=False)
        assert img.read_bytes()[:MIB] == before  # refused without touching the table
        check_exclusive(dev)


def test_list_and_find_by_label(tmp_path: Path) -> None:
    img = _three_parts(tmp_path / "d.img")
    with loop_device(img) as dev:
        with pytest.raises(NestosError, match="couldn't find boot device for"):
            find_partition_by_label(dev, "boot")
        _sh("mkfs.ext4", "-q", "-L", "boot", f"{dev}p1")
        _sh("mkfs.vfat", "-n", "EFI-SYSTEM", f"{dev}p2")
        parts = list_partitions(dev)
        assert [(p.number, p.label, p.fstype, p.partlabel) for p in parts] == [
            (1, "boot", "ext4", "boot"),
            (2, "EFI-SYSTEM", "vfat", "data"),
            (3, None, None, "spare"),
        ]
        assert parts[0].uuid and parts[0].path == f"{dev}p1"
        boot = find_partition_by_label(dev, "boot")
        assert (boot.path, boot.fstype) == (f"{dev}p1", "ext4")
        _sh("mkfs.ext4", "-q", "-F", "-L", "boot", f"{dev}p3")
        with pytest.raises(NestosError) as info:
            find_partition_by_label(dev, "boot")
        assert str(info.value) == f'found multiple devices on {dev} with label "boot"'
    empty = tmp_path / "empty.img"
    empty.write_bytes(bytes(4 * MIB))
    with loop_device(empty) as dev:
        with pytest.raises(NestosError) as info:
            find_partition_by_label(dev, "boot")
        assert str(info.value) == f"couldn't find any partitions on {dev}"


def _loops_for(path: Path) -> str:
    """Loop devices still backed by path; a detach can complete on last close, so wait."""
    for _ in range(50):
        out = _sh("losetup", "-j", str(path)).strip()
        if not out:
            break
        time.sleep(0.1)
    return out


@pytest.mark.parametrize("ss", [512, 4096])
def test_attached_image_file(tmp_path: Path, ss: int) -> None:
    img = _three_parts(tmp_path / "d.img", ss)
    with attached(img, sector_size=ss) as dev:
        assert dev.startswith("/dev/loop")
        assert sector_size(dev) == ss
        assert [p.number for p in kernel_partitions(dev)] == [1, 2, 3]
        _sh("mkfs.ext4", "-q", "-L", "boot", f"{dev}p1")
        with mount_private(f"{dev}p1", "ext4") as where:
            assert os.path.ismount(where)
            assert where.name.startswith("nestos-installer-")
            (where / "hello").write_text("hi\n")
        assert not where.exists()
    assert _loops_for(img) == ""
    with attached(img, sector_size=ss) as dev, mount_private(f"{dev}p1", "ext4") as where:
        assert (where / "hello").read_text() == "hi\n"
    assert _loops_for(img) == ""
    # a failure inside still detaches and unmounts
    with (
        pytest.raises(RuntimeError),
        attached(img, sector_size=ss) as dev,
        mount_private(f"{dev}p1", "ext4") as where,
    ):
        raise RuntimeError("boom")
    assert not where.exists()
    assert _loops_for(img) == ""


def test_mount_errors(tmp_path: Path) -> None:
    img = _three_parts(tmp_path / "d.img")
    before = set(Path("/tmp").glob("nestos-installer-*"))
    with loop_device(img) as dev:
        mounting = pytest.raises(NestosError, match=f"mounting {dev}p1 \\(ext4\\)")
        with mounting, mount_private(f"{dev}p1", "ext4"):
            pass
    assert set(Path("/tmp").glob("nestos-installer-*")) <= before  # temp dir removed


@pytest.mark.parametrize("ss", [512, 4096])
def test_wipe_keeps_saved_partitions_on_device(tmp_path: Path, ss: int) -> None:
    img = _three_parts(tmp_path / "d.img", ss)
    with loop_device(img, sector_size=ss) as dev:
        _sh("mkfs.ext4", "-q", "-L", "keep", f"{dev}p2")
        fd = os.open(dev, os.O_RDWR)
        try:
            size = device_size(fd)
            saved = SavedPartitions.read(
                fd, sector_size(fd), size, parse_partition_filters(["data"], [])
            )
            assert [p.number for p in saved.entries] == [2]
            wipe_partition_table(fd, ss, size, saved)
        finally:
            os.close(fd)
        reread_partitions(dev)
        table = sfdisk_json(dev)
        assert [p.get("name") for p in table["partitions"]] == ["data"]
        sgdisk_verify(dev)
        assert [p.number for p in kernel_partitions(dev)] == [2]
        assert find_partition_by_label(dev, "keep").fstype == "ext4"
        with mounted(f"{dev}p2"):
            pass


def _with_partitions(*devs: str) -> list[str]:
    return [name for dev in devs for name in (dev, *(f"{dev}p{n}" for n in (1, 2, 3)))]


def _check_split_scan(dest: str, other: str) -> None:
    """OtherDisksScan (the other disks probed while the image is written, the target's
    partitions at the end) finds what one scan at the end finds, the other disks first
    (their order is blkid's), and never probes the target early: here the target's boot
    filesystem is made only after the scan of the others ended, as an install does."""
    _sh("wipefs", "-q", "-a", f"{dest}p1")
    scan = blockdev.OtherDisksScan(lambda dev: dev == dest or dev.startswith(f"{dest}p"))
    scan.wait()
    _sh("mkfs.ext4", "-q", "-L", "boot", f"{dest}p1")
    found = scan.candidates(_with_partitions(dest)[1:])
    names = [f["NAME"] for f in blockdev.filesystems_with_label("boot", candidates=found)]
    assert f"{other}p2" in names and f"{dest}p1" in names
    assert names.index(f"{other}p2") < names.index(f"{dest}p1")
    whole = [f["NAME"] for f in blockdev.filesystems_with_label("boot")]
    assert {f"{other}p2", f"{dest}p1"} <= set(whole)


def test_other_disks_scan_reports_its_error_on_the_callers_thread(tmp_path: Path) -> None:
    """A failure inside the early scan (here: the target test itself) is raised by
    candidates(), where the install turns it into its one-line note."""
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(8 * MIB)
    _sh("mkfs.ext4", "-q", str(img))  # a device blkid lists, whatever else is there

    def broken(dev: str) -> bool:
        raise NestosError(f"cannot tell whether {dev} is the target")

    with loop_device(img, partitions=False):
        scan = blockdev.OtherDisksScan(broken)
        with pytest.raises(NestosError, match="cannot tell whether /dev/"):
            scan.candidates([])


def test_duplicate_boot_labels(tmp_path: Path) -> None:
    """The label search and the `dest` exclusion, on this test's own devices only:
    another suite running at the same time has `boot` filesystems of its own."""
    dest_img = _three_parts(tmp_path / "dest.img")
    other_img = _three_parts(tmp_path / "other.img")
    with loop_device(dest_img) as dest, loop_device(other_img) as other:
        ours = _with_partitions(dest, other)
        _sh("mkfs.ext4", "-q", "-L", "boot", f"{dest}p1")
        _sh("mkfs.ext4", "-q", "-L", "nolabel", f"{other}p1")
        names = [f["NAME"] for f in blockdev.filesystems_with_label("boot", ours)]
        assert names == [f"{dest}p1"]
        # The system-wide search finds ours too (whatever else is there).
        assert f"{dest}p1" in [f["NAME"] for f in blockdev.filesystems_with_label("boot")]
        assert blockdev.other_devices_with_label(dest, devices=ours) == []
        _sh("mkfs.ext4", "-q", "-F", "-L", "boot", f"{other}p2")
        assert blockdev.other_devices_with_label(dest, devices=ours) == [f"{other}p2"]
        _check_split_scan(dest, other)
    note = blockdev.duplicate_label_note(["/dev/sdb1"])
    assert note.startswith("\nNote: detected other devices with a filesystem labeled `boot`:\n")
    assert "  - /dev/sdb1\n" in note and note.endswith("wiping them with `wipefs -a`.\n\n")


def test_probe_goes_on_after_a_blank_device(tmp_path: Path) -> None:
    """`blkid -p A B` stops at a device with nothing on it; the probe must still report
    B (a device wiped or rewritten between listing and probing, as under a concurrent
    install or test run)."""
    blank, labelled = tmp_path / "blank.img", tmp_path / "labelled.img"
    for img in (blank, labelled):
        with open(img, "wb") as f:
            f.truncate(8 * MIB)
    _sh("mkfs.ext4", "-q", "-L", "boot", str(labelled))
    with (
        loop_device(blank, partitions=False) as b,
        loop_device(labelled, partitions=False) as lab,
    ):
        stop = subprocess.run(["blkid", "-p", b, lab], capture_output=True, check=False)
        assert stop.returncode != 0 and lab.encode() not in stop.stdout  # why it is needed
        found = blockdev.probe_devices([b, lab, b, lab])
        assert [(f["NAME"], f.get("LABEL")) for f in found] == [(lab, "boot")]


_NS_CHILD = """
import os, sys
from nestos_inst.disk.mount import mount_private
outside = open(f"/proc/{sys.argv[2]}/mountinfo").read
with mount_private(sys.argv[1], "ext4", private_namespace=True) as where:
    assert os.path.ismount(where)
    (where / "x").write_text("y")
    assert f" {where} " not in outside(), "mount leaked into the parent namespace"
    print(where)
assert not where.exists()
"""


def test_private_namespace_mount(tmp_path: Path) -> None:
    img = _three_parts(tmp_path / "d.img")
    with loop_device(img) as dev:
        _sh("mkfs.ext4", "-q", f"{dev}p1")
        proc = subprocess.run(
            [sys.executable, "-c", _NS_CHILD, f"{dev}p1", str(os.getpid())],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert proc.returncode == 0, proc.stderr
        where = proc.stdout.strip()
        assert where.startswith("/tmp/nestos-installer-")
        assert not os.path.exists(where)
        with mounted(f"{dev}p1") as check:
            assert (check / "x").read_text() == "y"


def test_whole_disk_mounted(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "whole.img"
    with open(img, "wb") as f:
        f.truncate(16 * MIB)
    with loop_device(img, partitions=False) as dev:
        _sh("mkfs.ext4", "-q", dev)
        with mounted(dev):
            capfd.readouterr()
            with pytest.raises(NestosError) as info:
                check_exclusive(dev)
            assert str(info.value) == "couldn't reread partition table: device is in use"
            assert capfd.readouterr().err == ""
        check_exclusive(dev)


def test_4kn_save_and_merge(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """docs/compat.md#saved-partitions on a 4Kn device: image 1,2,4 + saved 4 and 5 renumbered to 5
    and 6."""
    per_mib = MIB // 4096
    disk = make_image(
        tmp_path / "disk.img",
        DISK,
        [
            Part("four", size=per_mib, start=16 * per_mib, number=4),
            Part("five", size=per_mib, start=18 * per_mib, number=5),
            Part("nine", size=per_mib, start=20 * per_mib, number=9),
        ],
        sector_size=4096,
    )
    image = make_image(
        tmp_path / "os.img",
        8 * MIB,
        [
            Part("boot", size=per_mib, start=per_mib, number=1),
            Part("EFI-SYSTEM", size=per_mib, start=2 * per_mib, number=2),
            Part("root", size=2 * per_mib, start=3 * per_mib, number=4),
        ],
        sector_size=4096,
        first_lba=6,
    )
    first_mib = image.read_bytes()[:MIB]
    with loop_device(disk, sector_size=4096, partitions=False) as dev:
        fd = os.open(dev, os.O_RDWR)
        try:
            filters = parse_partition_filters(["f*"], ["9"])
            saved = SavedPartitions.read(fd, sector_size(fd), device_size(fd), filters)
            assert [p.number for p in saved.entries] == [4, 5, 9]
            assert saved.limit_offset == 16 * MIB
            saved.write_fresh_table(fd)
            os.fsync(fd)
            assert [p["name"] for p in sfdisk_json(dev)["partitions"]] == ["four", "five", "nine"]
            capfd.readouterr()
            saved.merge(fd, first_mib)
            os.fsync(fd)
        finally:
            os.close(fd)
        assert capfd.readouterr().err.splitlines() == [
            'Saving partition 4 ("four") to new partition 5',
            'Saving partition 5 ("five") to new partition 6',
            'Saving partition 9 ("nine") to new partition 9',
        ]
        sgdisk_verify(dev)
        table = sfdisk_json(dev)
        assert table["sectorsize"] == 4096 and table["lastlba"] == DISK // 4096 - 6
        got = [(p["node"][len(dev) :], p["start"], p.get("name")) for p in table["partitions"]]
        assert got == [
            ("p1", per_mib, "boot"),
            ("p2", 2 * per_mib, "EFI-SYSTEM"),
            ("p4", 3 * per_mib, "root"),
            ("p5", 16 * per_mib, "four"),
            ("p6", 18 * per_mib, "five"),
            ("p9", 20 * per_mib, "nine"),
        ]
        reread_partitions(dev)
        assert [p.number for p in kernel_partitions(dev)] == [1, 2, 4, 5, 6, 9]


def test_reread_busy_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = _three_parts(tmp_path / "d.img")
    monkeypatch.setattr(blockdev, "REREAD_DELAY", 0.01)
    with scanning_loop(img) as dev:
        reread_partitions(dev)
        _sh("mkfs.ext4", "-q", f"{dev}p1")
        with mounted(f"{dev}p1"):
            with pytest.raises(NestosError) as info:
                reread_partitions(dev)
            assert str(info.value) == "couldn't reread partition table: device is in use"
            assert [p.number for p in kernel_partitions(dev)] == [1, 2, 3]  # nothing dropped

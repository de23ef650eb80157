"""Block devices through pyudev and through sysfs/blkid (nestos_inst/disk/udev.py).

This machine has no udevd, so the no-udev-data path is the real one here. The udev
path is exercised with the real libudev: pyudev enumerates sysfs, and for the
database-backed answers the test writes a udev database entry for its own loop
partition (what udevd would have written after probing), removing it afterwards.
udevd itself is not started: it would re-read every disk's table machine-wide.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestos_inst.disk import blockdev, udev
from nestos_inst.disk.udev import _partitions_pyudev, _partitions_sysfs
from tests.helpers.diskmedia import Part, make_image
from tests.helpers.loop import loop_device

pyudev = pytest.importorskip("pyudev")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")

UDEV_DB = Path("/run/udev/data")
MiB = 1 << 20


@contextlib.contextmanager
def disk_with_fs(tmp_path: Path, label: str) -> Iterator[str]:
    img = tmp_path / "disk.img"
    make_image(
        img, 64 * MiB, [Part("data", size=16 * MiB // 512), Part("other", size=16 * MiB // 512)]
    )
    with loop_device(img) as dev:
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", label, blockdev.partition_path(dev, 1)],
            check=True,
            capture_output=True,
        )
        yield dev


@contextlib.contextmanager
def udev_db_entry(devno: str, props: dict[str, str]) -> Iterator[None]:
    """A udev database record for one device, as udevd writes it; removed afterwards
    together with any directory this created."""
    created = [d for d in (UDEV_DB.parent, UDEV_DB) if not d.exists()]
    UDEV_DB.mkdir(parents=True, exist_ok=True)
    entry = UDEV_DB / f"b{devno}"
    assert not entry.exists()
    entry.write_text("".join(f"E:{k}={v}\n" for k, v in props.items()))
    try:
        yield
    finally:
        entry.unlink()
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()


def test_pyudev_and_sysfs_enumerate_the_same_partitions(tmp_path: Path) -> None:
    with disk_with_fs(tmp_path, "t-enum") as dev:
        ctx = pyudev.Context()
        via_udev = sorted(_partitions_pyudev(ctx, dev) or [], key=lambda p: p.number)
        via_sysfs = sorted(_partitions_sysfs(dev), key=lambda p: p.number)
        assert [p.number for p in via_udev] == [1, 2]
        assert via_udev == via_sysfs
        assert blockdev.kernel_partitions(dev) == via_udev


def test_without_udev_data_facts_come_from_blkid(tmp_path: Path) -> None:
    """This machine: no database, so list_partitions probes with blkid."""
    label = f"t-{uuid.uuid4().hex[:8]}"
    with disk_with_fs(tmp_path, label) as dev:
        part = blockdev.kernel_partitions(dev)[0]
        if (UDEV_DB / f"b{part.devno}").exists():
            pytest.skip("this machine has udev data")
        assert udev.probed_fields(part.devno) is None
        info = blockdev.list_partitions(dev)[0]
        assert (info.label, info.fstype, info.partlabel) == (label, "ext4", "data")
        found = blockdev.find_partition_by_label(dev, label)
        assert found.path == part.path
        if not udev.udevd_running():
            assert udev.devices_with_label(label) is None  # blkid decides


def test_with_udev_data_facts_come_from_udev(tmp_path: Path) -> None:
    """The database wins when it has the device: its label (deliberately different from
    what is on disk) is what list_partitions and the label lookup report."""
    on_disk = f"t-{uuid.uuid4().hex[:8]}"
    in_db = f"u-{uuid.uuid4().hex[:8]}"
    with disk_with_fs(tmp_path, on_disk) as dev:
        part = blockdev.kernel_partitions(dev)[0]
        props = {
            "ID_FS_LABEL": in_db,
            "ID_FS_TYPE": "ext4",
            "ID_FS_USAGE": "filesystem",
            "ID_PART_ENTRY_NAME": "data",
        }
        with udev_db_entry(part.devno, props):
            fields = udev.probed_fields(part.devno)
            assert fields is not None
            assert (fields["LABEL"], fields["TYPE"]) == (in_db, "ext4")
            info = blockdev.list_partitions(dev)[0]
            assert (info.label, info.fstype, info.partlabel) == (in_db, "ext4", "data")
            found = udev.labelled(pyudev.Context(), in_db)
            assert [f["NAME"] for f in found] == [part.path]
        assert udev.probed_fields(part.devno) is None


def test_wait_for_node_polls_until_the_node_appears(tmp_path: Path) -> None:
    """Without udevd the wait polls; the node showing up ends it, a timeout does too."""
    node = tmp_path / "appears"
    timer = threading.Timer(0.3, node.touch)
    timer.start()
    try:
        assert udev.wait_for_node(str(node), timeout=30)
    finally:
        timer.cancel()
    assert not udev.wait_for_node(str(tmp_path / "never"), timeout=0.2)

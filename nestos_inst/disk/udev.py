"""Block devices through udev (pyudev) where it is there, sysfs and blkid where not.

On an installed or live system udev has already probed every device: its database
holds filesystem labels and types and GPT partition names, and it announces devices
as they appear. In containers, minimal VMs and initramfs images without udev there is
no database; device enumeration still works through sysfs (pyudev reads sysfs too),
and the facts udev would have come from probing the device with blkid.

Each function here says which answer it gives when udev has nothing: None means "ask
blkid" (the caller's fallback), an empty result is a real answer.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SYS_BLOCK = Path("/sys/class/block")
UDEV_CONTROL = Path("/run/udev/control")  # present while udevd runs

# udev properties → the blkid export names the rest of the code uses
_FIELDS = {
    "ID_FS_LABEL": "LABEL",
    "ID_FS_TYPE": "TYPE",
    "ID_FS_UUID": "UUID",
    "ID_FS_USAGE": "USAGE",
    "ID_PART_ENTRY_NAME": "PART_ENTRY_NAME",
}


def _pyudev() -> Any | None:
    """The pyudev module, or None where the binding is not installed."""
    try:
        import pyudev
    except ImportError:
        return None
    return pyudev


def context() -> Any | None:
    """A pyudev Context, or None without the binding (or libudev)."""
    return _context()


def _context() -> Any | None:
    pyudev = _pyudev()
    if pyudev is None:
        return None
    try:
        return pyudev.Context()
    except Exception as exc:  # libudev missing or broken: fall back to sysfs
        log.debug("no udev context: %s", exc)
        return None


def udevd_running() -> bool:
    """True while udevd runs (and so events and settling mean something)."""
    return UDEV_CONTROL.exists()


@dataclass(frozen=True)
class BlockPartition:
    """One partition node of a disk, from sysfs (directly or through pyudev)."""

    name: str  # kernel name, e.g. "loop3p1"
    number: int
    start: int  # bytes
    size: int  # bytes
    devno: str  # "MAJ:MIN"

    @property
    def path(self) -> str:
        return f"/dev/{self.name}"


def _disk_name(dev: str) -> str:
    return os.path.basename(os.path.realpath(dev))


def partitions(dev: str) -> list[BlockPartition]:
    """Partitions of disk `dev` that have kernel nodes, sorted by number.

    Enumerated through pyudev while udevd runs (the same sysfs data, with udev's view
    of the device tree), otherwise by walking /sys/class/block directly: without
    udevd, libudev would read nothing but sysfs either, and loading it costs every
    start ~10 ms.
    """
    ctx = _context() if udevd_running() else None
    found = _partitions_pyudev(ctx, dev) if ctx is not None else None
    if found is None:
        found = _partitions_sysfs(dev)
    found.sort(key=lambda p: p.number)
    return found


def _partitions_pyudev(ctx: Any, dev: str) -> list[BlockPartition] | None:
    pyudev = _pyudev()
    assert pyudev is not None
    try:
        disk = pyudev.Devices.from_name(ctx, "block", _disk_name(dev))
    except Exception:
        return None
    out = []
    for part in ctx.list_devices(subsystem="block", DEVTYPE="partition").match_parent(disk):
        if part.parent != disk:
            continue
        attrs = part.attributes
        try:
            number = int(attrs.asint("partition"))
            start = int(attrs.asint("start")) * 512
            size = int(attrs.asint("size")) * 512
        except (KeyError, ValueError):
            continue
        devno = f"{os.major(part.device_number)}:{os.minor(part.device_number)}"
        out.append(BlockPartition(part.sys_name, number, start, size, devno))
    return out


def _partitions_sysfs(dev: str) -> list[BlockPartition]:
    base = SYS_BLOCK / _disk_name(dev)
    out: list[BlockPartition] = []
    try:
        children = list(base.iterdir())
    except OSError:
        return out
    for child in children:
        try:
            number = int((child / "partition").read_text())
            start = int((child / "start").read_text()) * 512
            size = int((child / "size").read_text()) * 512
            devno = (child / "dev").read_text().strip()
        except (OSError, ValueError):
            continue
        out.append(BlockPartition(child.name, number, start, size, devno))
    return out


def _fields(properties: Any) -> dict[str, str]:
    return {ours: str(properties.get(key, "")) for key, ours in _FIELDS.items()}


def probed_fields(devno: str) -> dict[str, str] | None:
    """udev's probe results for `MAJ:MIN` (blkid export names), or None when udev has
    no data for it (no udev, or not probed yet): the caller asks blkid then."""
    ctx = _context()
    pyudev = _pyudev()
    if ctx is None or pyudev is None:
        return None
    major, _, minor = devno.partition(":")
    try:
        device = pyudev.Devices.from_device_number(ctx, "block", os.makedev(int(major), int(minor)))
        props = device.properties
        if "ID_FS_TYPE" not in props and "ID_PART_ENTRY_NAME" not in props:
            return None
        return _fields(props)
    except Exception as exc:
        log.debug("no udev data for %s: %s", devno, exc)
        return None


def devices_with_label(label: str) -> list[dict[str, str]] | None:
    """Block devices whose filesystem label is `label`, per udev's database, as blkid
    export fields plus NAME; None when there is no udev to ask.

    The database is trusted only while udevd keeps it current (a leftover one, or
    none at all, means blkid has to probe).
    """
    if not udevd_running():
        return None
    ctx = _context()
    if ctx is None:
        return None
    return labelled(ctx, label)


def labelled(ctx: Any, label: str) -> list[dict[str, str]]:
    """The udev-database lookup of devices_with_label(), on context `ctx`."""
    out = []
    for device in ctx.list_devices(subsystem="block", ID_FS_LABEL=label):
        if device.device_node is None:
            continue
        fields = _fields(device.properties)
        fields["NAME"] = device.device_node
        out.append(fields)
    return out


def wait_for_node(path: str, timeout: float) -> bool:
    """Wait until `path` exists (the target disk in service mode); True if it does.

    With udevd running, sleep on its event stream and look again on every block
    event; otherwise poll, as devtmpfs creates nodes by itself.
    """
    deadline = time.monotonic() + timeout
    for _ in _wakeups(deadline):
        if Path(path).exists():
            return True
    return Path(path).exists()


def _wakeups(deadline: float) -> Iterator[None]:
    """Yield now, then on every udev block event (or every 0.5 s) until `deadline`."""
    yield None
    monitor = _monitor() if udevd_running() else None
    try:
        while (left := deadline - time.monotonic()) > 0:
            if monitor is None:
                time.sleep(min(0.5, left))
            else:
                ready, _, _ = select.select([monitor], [], [], min(0.5, left))
                if ready:
                    while monitor.poll(timeout=0) is not None:
                        pass
            yield None
    finally:
        if monitor is not None:
            monitor.stop()


def _monitor() -> Any | None:
    ctx = _context()
    pyudev = _pyudev()
    if ctx is None or pyudev is None:
        return None
    try:
        monitor = pyudev.Monitor.from_netlink(ctx)
        monitor.filter_by(subsystem="block")
        monitor.start()
    except Exception as exc:  # no netlink permission etc.: plain polling
        log.debug("no udev monitor: %s", exc)
        return None
    return monitor

"""Block devices: sizes, exclusive access, partition nodes, partition discovery.

The kernel may lack partition-table parsers (containers' hosts, micro-VMs): BLKRRPART
then succeeds but *removes* partition nodes. So after every re-read we compare the
kernel's view (sysfs) with the GPT we know and fix it with BLKPG ourselves.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ..errors import FormatError, NestosError
from ..report import say
from ..run import run
from . import udev
from .gpt import GPT, NoGPTError

log = logging.getLogger(__name__)

BLKRRPART = 0x125F
BLKSSZGET = 0x1268
BLKGETSIZE64 = 0x80081272
BLKPG = 0x1269
BLKPG_ADD_PARTITION = 1
BLKPG_DEL_PARTITION = 2
# struct blkpg_partition: long long start, length; int pno; char devname[64], volname[64];
# padded to 152 bytes by the C ABI (the kernel copies the padded size).
_BLKPG_PART = struct.Struct("qqi64s64s4x")


REREAD_TRIES = 20
REREAD_DELAY = 0.1


# ---- sizes ----------------------------------------------------------------------------
def is_block_device(path: str | os.PathLike[str]) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _ioctl_int(fd: int, request: int, fmt: str) -> int:
    buf = bytearray(struct.calcsize(fmt))
    fcntl.ioctl(fd, request, buf)
    value: int = struct.unpack(fmt, buf)[0]
    return value


def sector_size(path_or_fd: int | str | os.PathLike[str]) -> int:
    """Logical sector size; regular files (disk images) count as 512-byte disks."""
    if isinstance(path_or_fd, int):
        if not stat.S_ISBLK(os.fstat(path_or_fd).st_mode):
            return 512
        return _ioctl_int(path_or_fd, BLKSSZGET, "i")
    fd = os.open(path_or_fd, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sector_size(fd)
    finally:
        os.close(fd)


def device_size(fd: int) -> int:
    """Size in bytes of a block device or regular file."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return _ioctl_int(fd, BLKGETSIZE64, "Q")
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)


# ---- sysfs / udev view ---------------------------------------------------------------
# A partition the kernel currently knows; offsets in bytes (enumerated in disk/udev.py).
KernelPartition = udev.BlockPartition


def kernel_partitions(dev: str) -> list[KernelPartition]:
    """Partitions of `dev` that have kernel nodes, sorted by number."""
    return udev.partitions(dev)


def partition_path(dev: str, number: int) -> str:
    """Kernel naming: a disk ending in a digit gets `p<N>` (loop0p1), else `<N>` (sda1)."""
    real = os.path.realpath(dev)
    return f"{real}p{number}" if real[-1:].isdigit() else f"{real}{number}"


# ---- BLKPG ----------------------------------------------------------------------------
def _blkpg(fd: int, op: int, number: int, start: int = 0, length: int = 0) -> None:
    part = ctypes.create_string_buffer(_BLKPG_PART.pack(start, length, number, b"", b""))
    arg = struct.pack("iiiP", op, 0, _BLKPG_PART.size, ctypes.addressof(part))
    fcntl.ioctl(fd, BLKPG, arg)


def add_partition(fd: int, number: int, start: int, length: int) -> None:
    """Ask the kernel for a partition node (byte offsets)."""
    _blkpg(fd, BLKPG_ADD_PARTITION, number, start, length)


def delete_partition(fd: int, number: int) -> None:
    _blkpg(fd, BLKPG_DEL_PARTITION, number)


def sync_partition_nodes(dev: str, gpt: GPT | None) -> None:
    """Make the kernel's partitions equal the table (none when gpt is None)."""
    wanted: dict[int, tuple[int, int]] = {}
    if gpt is not None:
        ss = gpt.sector_size
        wanted = {p.number: (p.first_lba * ss, p.sectors * ss) for p in gpt.entries}
    fd = os.open(os.path.realpath(dev), os.O_RDONLY | os.O_CLOEXEC)
    try:
        have = {p.number: (p.start, p.size) for p in kernel_partitions(dev)}
        for number, span in sorted(have.items()):
            if wanted.get(number) != span:
                with contextlib.suppress(OSError):
                    delete_partition(fd, number)
        for number, (start, length) in sorted(wanted.items()):
            if have.get(number) == (start, length):
                continue
            try:
                add_partition(fd, number, start, length)
            except OSError as exc:
                raise NestosError(f"adding partition {number} to {dev}") from exc
    finally:
        os.close(fd)
    _wait_for_nodes(dev, sorted(wanted))


def _wait_for_nodes(dev: str, numbers: list[int]) -> None:
    """devtmpfs normally creates nodes at once; udev may lag behind a little."""
    for _ in range(REREAD_TRIES):
        missing = [n for n in numbers if not is_block_device(_node_for(dev, n))]
        if not missing:
            return
        time.sleep(REREAD_DELAY)


def _node_for(dev: str, number: int) -> str:
    for part in kernel_partitions(dev):
        if part.number == number:
            return part.path
    return partition_path(dev, number)


# ---- re-reading -----------------------------------------------------------------------
def _raise_blkrrpart(exc: OSError) -> NoReturn:
    if exc.errno == errno.EBUSY:
        raise NestosError("couldn't reread partition table: device is in use")
    if exc.errno == errno.EINVAL:
        raise NestosError("couldn't reread partition table: device may not support partitions")
    raise NestosError("couldn't reread partition table") from exc


def reread_partitions(dev: str, gpt: GPT | None = None) -> None:
    """BLKRRPART (20 tries, 100 ms apart), then make sure the nodes match the table.

    EINVAL (no partition scanning, e.g. a loop device without -P) is not fatal: we add
    the nodes ourselves. When `gpt` is None the table is read back from the device.
    """
    real = os.path.realpath(dev)
    if not is_block_device(real):
        return
    fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for attempt in range(REREAD_TRIES):
            try:
                fcntl.ioctl(fd, BLKRRPART)
                break
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    break
                if attempt == REREAD_TRIES - 1:
                    _raise_blkrrpart(exc)
                time.sleep(REREAD_DELAY)
        if gpt is None:
            try:
                gpt = GPT.read(fd, sector_size(fd), device_size(fd))
            except NoGPTError:
                gpt = None
            except FormatError as exc:
                log.debug("no usable GPT on %s after re-read: %s", dev, exc)
                gpt = None
    finally:
        os.close(fd)
    sync_partition_nodes(real, gpt)
    settle()


def settle() -> None:
    """Wait for udev when it runs; nothing to wait for otherwise (containers, here)."""
    if udev.udevd_running():
        time.sleep(0.2)
        run(["udevadm", "settle"], check=False)


# ---- exclusive access -----------------------------------------------------------------
def _mounts() -> dict[str, list[str]]:
    """Mount points keyed by both `MAJ:MIN` and the canonical source path."""
    out: dict[str, list[str]] = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if sep < 5 or len(fields) < sep + 3:
            continue
        mountpoint = _unescape(fields[4])
        source = _unescape(fields[sep + 2])
        out.setdefault(fields[2], []).append(mountpoint)
        if source.startswith("/"):
            out.setdefault(os.path.realpath(source), []).append(mountpoint)
    return out


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _swaps() -> set[str]:
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {os.path.realpath(_unescape(line.split()[0])) for line in lines if line.split()}


def busy_partitions(dev: str) -> list[str]:
    """One line per reason a partition of `dev` is in use (mount, swap, holder)."""
    mounts = _mounts()
    swaps = _swaps()
    lines: list[tuple[str, str]] = []
    for part in kernel_partitions(dev):
        path = part.path
        mps = mounts.get(part.devno) or mounts.get(os.path.realpath(path)) or []
        if path in swaps:
            lines.append((path, f"    {path} is swap device"))
        elif mps:
            lines.append((path, f"    {path} mounted on {mps[0]}"))
        holders_dir = udev.SYS_BLOCK / part.name / "holders"
        try:
            holders = sorted(h.name for h in holders_dir.iterdir())
        except OSError:
            holders = []
        for holder in holders:
            lines.append((path, f"    {path} in use by /dev/{holder}"))
    lines.sort(key=lambda item: item[0])
    return [text for _, text in lines]


def check_exclusive(dev: str) -> None:
    """Refuse a disk whose partitions are mounted, swapped on or held by another device.

    An O_EXCL open fails with EBUSY while anything holds the disk or a partition; then
    BLKRRPART (as upstream does) catches what O_EXCL cannot. On failure the busy
    partitions are reported (nestos_inst.report).
    """
    real = os.path.realpath(dev)
    failure: OSError | None = None
    try:
        fd = os.open(real, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise NestosError(f"opening {dev}") from exc
        failure = exc
    else:
        os.close(fd)
    if failure is None:
        fd = os.open(real, os.O_WRONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, BLKRRPART)
        except OSError as exc:
            # EINVAL: no kernel partition scanning; O_EXCL already proved exclusivity.
            if exc.errno != errno.EINVAL:
                failure = exc
        finally:
            os.close(fd)
    if failure is None:
        return
    busy = busy_partitions(real)
    if busy:
        say(f"Partitions in use on {dev}:")
        for line in busy:
            say(line)
        raise NestosError("found busy partitions")
    if os.path.basename(real).startswith("dm-"):
        return
    _raise_blkrrpart(failure)


# ---- partition discovery --------------------------------------------------------------
@dataclass(frozen=True)
class PartInfo:
    """A partition with the filesystem facts `install` needs; offsets in bytes."""

    path: str
    number: int
    start: int
    size: int
    label: str | None = None
    fstype: str | None = None
    uuid: str | None = None
    partlabel: str | None = None


def parse_lsblk_pairs(line: str) -> dict[str, str]:
    """`KEY="value" ...` from `lsblk --pairs`; empty values dropped, escapes kept."""
    out: dict[str, str] = {}
    i = 0
    n = len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        eq = line.find('="', i)
        if eq < 0:
            break
        key = line[i:eq]
        end = line.find('"', eq + 2)
        if end < 0:
            break
        value = line[eq + 2 : end]
        if value:
            out[key] = value
        i = end + 1
    return out


def parse_blkid_line(line: str) -> dict[str, str]:
    """`<dev>: K="v" ...` from plain `blkid`; NAME holds the device. Junk gives {}."""
    dev, sep, rest = line.partition(":")
    dev = dev.strip()
    if not sep or not dev:
        return {}
    out = parse_lsblk_pairs(rest.strip())
    out["NAME"] = dev
    return out


def parse_export(text: str) -> dict[str, str]:
    """`KEY=value` lines of `blkid -o export` or udev's `E:KEY=value` database."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("E:"):
            line = line[2:]
        key, sep, value = line.partition("=")
        if sep and key and value:
            out[key] = value
    return out


def probe(path: str) -> dict[str, str]:
    """Filesystem facts straight from the device (blkid -p bypasses every cache)."""
    proc = run(["blkid", "-p", "-o", "export", path], check=False)
    return parse_export(proc.stdout.decode(errors="replace"))


def list_partitions(dev: str) -> list[PartInfo]:
    """Partitions of `dev` with label/fstype/uuid: udev data when present, else blkid."""
    out: list[PartInfo] = []
    for part in kernel_partitions(dev):
        props = udev.probed_fields(part.devno)
        if props is None:
            props = probe(part.path)
        out.append(
            PartInfo(
                path=part.path,
                number=part.number,
                start=part.start,
                size=part.size,
                label=props.get("LABEL") or None,
                fstype=props.get("TYPE") or None,
                uuid=props.get("UUID") or None,
                partlabel=props.get("PART_ENTRY_NAME") or None,
            )
        )
    return out


def find_partition_by_label(dev: str, label: str) -> PartInfo:
    """The one partition whose filesystem label is exactly `label` (docs/compat.md#boot-edits
    errors)."""
    parts = list_partitions(dev)
    if not parts:
        raise NestosError(f"couldn't find any partitions on {dev}")
    found = [p for p in parts if p.label == label]
    if not found:
        raise NestosError(f"couldn't find {label} device for {dev}")
    if len(found) > 1:
        raise NestosError(f'found multiple devices on {dev} with label "{label}"')
    if not found[0].fstype:
        raise NestosError(f"couldn't get filesystem type of {label} device for {dev}")
    return found[0]


# ---- image files ----------------------------------------------------------------------
@contextlib.contextmanager
def attached(path: str | os.PathLike[str], sector_size: int = 512) -> Iterator[str]:
    """A block device for `path`: itself, or a loop device detached afterwards.

    Partition nodes are created from the file's GPT with BLKPG (no kernel parser needed)
    and refreshed by `reread_partitions` after the caller rewrites the table.
    """
    fspath = os.fspath(path)
    if is_block_device(fspath):
        yield fspath
        return
    argv = ["losetup", "-f", "--show", "-P"]
    if sector_size != 512:
        argv += ["--sector-size", str(sector_size)]
    proc = run([*argv, fspath])
    dev = proc.stdout.decode().strip()
    if not dev.startswith("/dev/"):
        raise NestosError(f"losetup returned an unexpected device name {dev!r}")
    try:
        reread_partitions(dev)
        yield dev
    finally:
        try:
            with contextlib.suppress(OSError, NestosError):
                sync_partition_nodes(dev, None)
        finally:
            run(["losetup", "-d", dev], check=False)


# ---- duplicate labels (docs/compat.md#after-install) ---------------------------------------------
def filesystems_with_label(
    label: str,
    devices: Sequence[str] | None = None,
    *,
    candidates: Sequence[dict[str, str]] | None = None,
) -> list[dict[str, str]]:
    """Every filesystem on the system labelled `label` (probed, RAID members excluded,
    one entry per filesystem UUID): udev's database when it has one, else blkid.
    `devices` limits the search to those block devices (probed directly); `candidates`
    gives probe results gathered beforehand (OtherDisksScan)."""
    if candidates is None:
        from_udev = None if devices is not None else udev.devices_with_label(label)
        if from_udev is not None:
            candidates = from_udev
        else:
            candidates = _blkid_all() if devices is None else probe_devices(devices)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for fields in candidates:
        if fields.get("LABEL") != label or fields.get("USAGE") == "raid":
            continue
        key = fields.get("UUID") or fields["NAME"]
        if key in seen:
            continue
        seen.add(key)
        out.append(fields)
    return out


def _blkid_devices() -> list[str]:
    listed = run(["blkid", "--cache-file", "/dev/null", "-o", "device"], check=False)
    # blkid's order (as upstream reports them), duplicates dropped
    return list(dict.fromkeys(d for d in listed.stdout.decode(errors="replace").split() if d))


def _blkid_all() -> list[dict[str, str]]:
    return probe_devices(_blkid_devices())


class OtherDisksScan:
    """The blkid half of the duplicate-label check, for every device but the target,
    run on a thread while the image is written.

    Without udev's database the check lists and probes every block device on the
    system (`blkid -o device`, then `blkid -p`): about 50-70 ms on a machine with a
    dozen loop devices, all of it after the last byte of the image, where the install
    is already done and only waits. Other disks do not change because we write ours,
    so they are probed while the copy runs and only the target's new partitions are
    probed at the end (candidates()); the result is the one a scan at the end would
    give, except for a disk someone else rewrites during our install.
    """

    def __init__(self, on_target: Callable[[str], bool]) -> None:
        self._on_target = on_target
        self._found: list[dict[str, str]] = []
        self._error: Exception | None = None
        # A daemon: an install that fails leaves the scan behind; blkid ends by itself.
        self._thread = threading.Thread(target=self._scan, name="label-scan", daemon=True)
        self._thread.start()

    def _scan(self) -> None:
        try:
            self._found = probe_devices([d for d in _blkid_devices() if not self._on_target(d)])
        except Exception as exc:  # reported by candidates(), on the caller's thread
            self._error = exc

    def wait(self) -> None:
        """Wait until the other disks are probed."""
        self._thread.join()

    def candidates(self, target_devices: Sequence[str]) -> list[dict[str, str]]:
        """Probe results of the other disks (in blkid's order), then of `target_devices`
        probed now; raises what the scan raised."""
        self.wait()
        if self._error is not None:
            raise self._error
        return self._found + (probe_devices(target_devices) if target_devices else [])


def probe_devices(devices: Sequence[str]) -> list[dict[str, str]]:
    """`blkid -p` of each device, in order; devices with nothing on them are left out.

    `blkid -p A B C` stops at the first device it finds nothing on (or cannot make
    sense of) and never looks at the rest. Between listing and probing, a device can be
    wiped, rewritten or detached by someone else (another install, a loop device of a
    test run), so after such a stop the probe goes on with the devices after it.
    """
    out: list[dict[str, str]] = []
    todo = list(dict.fromkeys(devices))
    while todo:
        probed = run(["blkid", "-p", *todo], check=False)
        lines = probed.stdout.decode(errors="replace").splitlines()
        found = [fields for fields in map(parse_blkid_line, lines) if fields]
        out += found
        if probed.returncode == 0:
            break
        # Every device before the one it stopped at was reported (in order).
        reported = {fields["NAME"] for fields in found}
        stop = next((i for i, dev in enumerate(todo) if dev not in reported), len(todo))
        todo = todo[stop + 1 :]
    return out


def other_devices_with_label(
    dest: str, label: str = "boot", devices: Sequence[str] | None = None
) -> list[str]:
    """When more than one `label` filesystem exists, those not on `dest` (else []);
    `devices` limits the search as in filesystems_with_label."""
    found = filesystems_with_label(label, devices)
    if len(found) <= 1:
        return []
    # upstream tests "path contains dest"; sysfs avoids /dev/loop1 matching /dev/loop10p1
    ours = {os.path.realpath(dest)} | {p.path for p in kernel_partitions(dest)}
    return [f["NAME"] for f in found if os.path.realpath(f["NAME"]) not in ours]


def duplicate_label_note(devices: list[str], label: str = "boot") -> str:
    """The stderr note install prints after success when `devices` is non-empty."""
    lines = ["", f"Note: detected other devices with a filesystem labeled `{label}`:"]
    lines += [f"  - {dev}" for dev in devices]
    lines += [
        "The installed OS may not work correctly if there are multiple boot filesystems.",
        "Before rebooting, investigate whether these filesystems are needed and consider",
        "wiping them with `wipefs -a`.",
        "",
    ]
    return "\n".join(lines) + "\n"

"""`pack osmet` (docs/compat.md#osmet-pack): map OSTree objects on a metal disk, pack the rest.

The disk's `boot` and `root` filesystems are mounted read-only; every byte range that
an OSTree content object (or a /boot file identical to one) occupies is left out of
the xz stream and recorded in the table instead. The result is verified by unpacking
it against the same repo before it replaces the output file.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import platform
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import __version__
from ..disk import blockdev
from ..disk.blockdev import PartInfo
from ..disk.mount import mount_private
from ..errors import FormatError, NestosError, UsageError, context
from ..profile import DEFAULT
from ..report import say
from .fiemap import fiemap_path
from .format import Extent, Header, Mapping, Osmet, OsmetFile, Partition, read_file, validate
from .unpack import generate

BOOT_FILE_MIN = 1024
CHUNK = 1 << 20


# ---------------------------------------------------------------------- canonicalize


def canonicalize(mappings: Sequence[Mapping]) -> tuple[list[Mapping], int, int]:
    """Sort by physical (longest first), drop contained extents, clamp overlapping
    ones; returns (mappings, dropped, clamped)."""
    ordered = sorted(mappings, key=lambda m: (m.extent.physical, -m.extent.length))
    out: list[Mapping] = []
    cursor = 0
    dropped = clamped = 0
    for m in ordered:
        e = m.extent
        end = e.physical + e.length
        if out and end <= cursor:
            dropped += 1
            continue
        if out and e.physical < cursor:
            delta = cursor - e.physical
            m = Mapping(Extent(e.logical + delta, e.physical + delta, e.length - delta), m.object)
            clamped += 1
        out.append(m)
        cursor = end
    return out, dropped, clamped


# ---------------------------------------------------------------------- block devices


def device_geometry(dev: Path) -> tuple[int, int]:
    """(logical sector size, size in bytes) of a block device."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NestosError(f"opening {str(dev)!r}") from exc
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            raise NestosError(f"{dev} is not a block device")
        return blockdev.sector_size(fd), blockdev.device_size(fd)
    finally:
        os.close(fd)


def _ro_options(fstype: str) -> str:
    """`ro` alone is not enough: XFS on recent kernels writes its log even on a
    read-only mount, which would change the very bytes being packed. Skipping log
    recovery keeps the device untouched; the final digest check catches any
    inconsistency that a dirty log could cause."""
    if fstype == "xfs":
        return "ro,norecovery"
    if fstype in ("ext3", "ext4"):
        return "ro,noload"
    return "ro"


def mount_ro(part: PartInfo) -> contextlib.AbstractContextManager[Path]:
    """`part` mounted read-only (the caller has entered a private mount namespace)."""
    assert part.fstype is not None  # find_partition_by_label guarantees it
    return mount_private(
        part.path, part.fstype, prefix=DEFAULT.unit_prefix, options=_ro_options(part.fstype)
    )


# ---------------------------------------------------------------------- scanning


def _walk_files(top: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files under `top` (symlinks not followed), in sorted order."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                yield path, st


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while data := f.read(CHUNK):
            h.update(data)
    return h.digest()


def prescan_boot(boot: Path) -> dict[int, Path]:
    """Large /boot files by size (first seen wins): candidates for object matching."""
    by_size: dict[int, Path] = {}
    for path, st in _walk_files(boot):
        if st.st_size > BOOT_FILE_MIN:
            by_size.setdefault(st.st_size, path)
    return by_size


def object_path_to_checksum(path: Path) -> bytes:
    hexsum = path.parent.name + path.name[: -len(".file")]
    if len(hexsum) != 64 or any(c not in "0123456789abcdef" for c in hexsum):
        raise FormatError(f"invalid object path {str(path)!r}")
    return bytes.fromhex(hexsum)


@dataclass
class RootScan:
    mappings: list[Mapping]
    boot_matches: dict[Path, bytes]
    scanned: int
    empty: int


def scan_root(root: Path, boot_files: dict[int, Path]) -> RootScan:
    objects = root / "ostree" / "repo" / "objects"
    if not objects.is_dir():
        raise NestosError(f"no OSTree repo objects in {objects}")
    mappings: list[Mapping] = []
    matches: dict[Path, bytes] = {}
    boot_digests: dict[int, bytes] = {}
    scanned = empty = 0
    for path, st in _walk_files(objects):
        if not path.name.endswith(".file"):
            continue
        scanned += 1
        checksum = object_path_to_checksum(path)
        extents = fiemap_path(path)
        if not extents:
            empty += 1
            continue
        mappings.extend(Mapping(e, checksum) for e in extents)
        candidate = boot_files.get(st.st_size)
        if candidate is not None:
            if st.st_size not in boot_digests:
                boot_digests[st.st_size] = _sha256_file(candidate)
            if boot_digests[st.st_size] == _sha256_file(path):
                matches[candidate] = checksum
                del boot_files[st.st_size]
    return RootScan(mappings, matches, scanned, empty)


def scan_boot(matches: dict[Path, bytes]) -> list[Mapping]:
    mappings: list[Mapping] = []
    for path, checksum in sorted(matches.items()):
        mappings.extend(Mapping(e, checksum) for e in fiemap_path(path))
    return mappings


# ---------------------------------------------------------------------- packing


def write_packed(
    dev: BinaryIO, out: BinaryIO, partitions: Sequence[Partition], preset: int
) -> tuple[int, int, int]:
    """xz of the disk minus mapped extents; returns (written, skipped, compressed)."""
    comp = lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=preset)
    written = skipped = compressed = 0

    def copy(n: int) -> None:
        nonlocal written, compressed
        while n > 0:
            data = dev.read(min(n, CHUNK))
            if not data:
                raise NestosError("device ended early while packing")
            n -= len(data)
            written += len(data)
            packed = comp.compress(data)
            compressed += len(packed)
            out.write(packed)

    cursor = 0
    for part in partitions:
        for m in part.mappings:
            start = part.start_offset + m.extent.physical
            copy(start - cursor)
            dev.seek(m.extent.length, os.SEEK_CUR)
            skipped += m.extent.length
            cursor = start + m.extent.length
    while data := dev.read(CHUNK):
        written += len(data)
        packed = comp.compress(data)
        compressed += len(packed)
        out.write(packed)
    tail = comp.flush()
    compressed += len(tail)
    out.write(tail)
    return written, skipped, compressed


def parse_checksum(text: str) -> bytes:
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise UsageError(f"--checksum must be a lower-case SHA-256 hex digest, got {text!r}")
    return bytes.fromhex(text)


def pack(
    device: Path,
    output_path: Path,
    checksum: str,
    description: str,
    *,
    fast: bool = False,
    architecture: str | None = None,
) -> None:
    """The whole of `pack osmet`; the output file is replaced only on success."""
    digest = parse_checksum(checksum)
    sector_size, disk_size = device_geometry(device)
    boot_part = blockdev.find_partition_by_label(str(device), "boot")
    root_part = blockdev.find_partition_by_label(str(device), "root")
    with mount_ro(boot_part) as boot, mount_ro(root_part) as root:
        boot_files = prescan_boot(boot)
        rscan = scan_root(root, boot_files)
        say(
            f"Total OSTree objects scanned from /root: {rscan.scanned} "
            f"({rscan.scanned - rscan.empty} mapped, {rscan.empty} empty)"
        )
        say(f"Total OSTree objects found in /boot: {len(rscan.boot_matches)}")
        boot_mappings = scan_boot(rscan.boot_matches)
        root_maps, dropped_r, clamped_r = canonicalize(rscan.mappings)
        boot_maps, dropped_b, clamped_b = canonicalize(boot_mappings)
        say(f"Duplicate extents dropped: {dropped_r + dropped_b}")
        say(f"Overlapping extents clamped: {clamped_r + clamped_b}")
        say(f"Total /root extents: {len(root_maps)}")
        say(f"Total /boot extents: {len(boot_maps)}")
        partitions = sorted(
            (
                Partition(boot_part.start, boot_part.start + boot_part.size, tuple(boot_maps)),
                Partition(root_part.start, root_part.start + root_part.size, tuple(root_maps)),
            ),
            key=lambda p: p.start_offset,
        )
        osmet = Osmet(tuple(partitions), digest, disk_size)
        try:
            validate(osmet)
        except FormatError as exc:
            raise NestosError("validating before writing") from exc
        header = Header(
            app_version=__version__,
            sector_size=sector_size,
            os_description=description,
            os_architecture=architecture or platform.machine(),
        )
        out_dir = output_path.resolve().parent
        with context(f"creating temporary file in {out_dir}"):
            fd, tmpname = tempfile.mkstemp(
                prefix=f"{DEFAULT.unit_prefix}-osmet", suffix=".partial", dir=out_dir
            )
        tmp = Path(tmpname)
        try:
            say("Packing image")
            try:
                with os.fdopen(fd, "wb") as out, device.open("rb", buffering=1 << 20) as dev:
                    out.write(header.encode())
                    out.write(osmet.encode())
                    written, skipped, compressed = write_packed(
                        dev, out, partitions, 0 if fast else 9
                    )
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                raise NestosError(f"packing {device} into {tmp}") from exc
            if written + skipped != disk_size:
                raise NestosError(
                    f"bytes written + skipped != block device size: {written} + {skipped} "
                    f"vs {disk_size}"
                )
            say(f"Total bytes skipped: {skipped}")
            say(f"Total bytes written: {written}")
            say(f"Total bytes written (compressed): {compressed}")
            say("Verifying that repacked image matches digest")
            _verify(read_file(tmp), root / "ostree" / "repo", checksum)
            with context(f"renaming {tmp} to {output_path}"):
                tmp.replace(output_path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    say("Packing successful!")


def _verify(osmet_file: OsmetFile, repo: Path, checksum: str) -> None:
    h = hashlib.sha256()
    size = 0
    for data in generate(osmet_file, repo):
        h.update(data)
        size += len(data)
    if size != osmet_file.osmet.size:
        raise NestosError(
            f"unpacked size ({size}) doesn't match original size ({osmet_file.osmet.size})"
        )
    got = h.hexdigest()
    if got != checksum:
        raise NestosError(
            f"unpacked image digest ({got}) does not match expected digest ({checksum})"
        )

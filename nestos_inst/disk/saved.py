"""Partitions kept across an install (`--save-partlabel`, `--save-partindex`),
docs/compat.md#saved-partitions.

The life cycle: parse filters, read the old table and pick entries (with a dry run so a
broken table is refused before anything is written), write a table holding only the
saved entries before the image lands, then merge them into the image's table at the end.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import FormatError, NestosError
from ..formats.glob import compile_glob
from ..report import say
from .gpt import GPT, NoGPTError, Partition, Target, has_mbr_signature, pwrite, zero_boot_code

_U32_MAX = 0xFFFFFFFF
_DIGITS = re.compile(r"\+?[0-9]+")


@dataclass(frozen=True)
class LabelFilter:
    """Shell glob on the GPT partition *name* (not the filesystem label)."""

    glob: str
    matches: Callable[[str], bool] = dataclasses.field(compare=False, repr=False)


@dataclass(frozen=True)
class IndexFilter:
    """Inclusive partition-number range; None is an open end."""

    start: int | None
    end: int | None

    def matches(self, number: int) -> bool:
        return (self.start is None or number >= self.start) and (
            self.end is None or number <= self.end
        )


Filter = LabelFilter | IndexFilter


def _parse_u32(text: str) -> int:
    """Rust's `str::parse::<u32>` rules: optional `+`, ASCII digits, no overflow."""
    if not text:
        raise ValueError("cannot parse integer from empty string")
    if not _DIGITS.fullmatch(text):
        raise ValueError("invalid digit found in string")
    value = int(text.lstrip("+"))
    if value > _U32_MAX:
        raise ValueError("number too large to fit in target type")
    return value


def _parse_index(text: str) -> int | None:
    if text == "":
        return None
    try:
        value = _parse_u32(text)
    except ValueError as exc:
        raise NestosError(f"couldn't parse partition index '{text}'") from NestosError(str(exc))
    if value == 0:
        raise NestosError("partition index cannot be zero")
    return value


def _split(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(value.split(","))
    return out


def parse_partition_filters(labels: Sequence[str], indexes: Sequence[str]) -> list[Filter]:
    """Label globs first, then index ranges; comma-separated values are split here."""
    filters: list[Filter] = []
    for glob in _split(labels):
        try:
            matcher = compile_glob(glob)
        except FormatError as exc:
            # upstream's chain names the pattern once: skip glob.py's own "invalid glob"
            raise NestosError(f"couldn't parse label glob '{glob}'") from (exc.__cause__ or exc)
        filters.append(LabelFilter(glob, matcher))
    for spec in _split(indexes):
        parts = spec.split("-")
        if len(parts) == 1:
            start = _parse_index(parts[0])
            end = _parse_index(parts[0])
        elif len(parts) == 2:
            start = _parse_index(parts[0])
            end = _parse_index(parts[1])
        else:
            raise NestosError(f"couldn't parse partition index range '{spec}'")
        if start is None and end is None:
            raise NestosError(f"both ends of partition index range '{spec}' cannot be open")
        if start is not None and end is not None and start > end:
            raise NestosError(f"start of partition index range '{spec}' cannot be greater than end")
        filters.append(IndexFilter(start, end))
    return filters


def _selected(part: Partition, filters: Sequence[Filter]) -> bool:
    for f in filters:
        if isinstance(f, LabelFilter):
            if f.matches(part.name):
                return True
        elif f.matches(part.number):
            return True
    return False


class SavedPartitions:
    """Entries (with their original numbers) to carry into the new disk layout."""

    def __init__(self, sector_size: int, disk_size: int, entries: Sequence[Partition] = ()):
        self.sector_size = sector_size
        self.disk_size = disk_size
        self.entries: list[Partition] = sorted(entries, key=lambda p: p.number)

    # ---- reading --------------------------------------------------------------------
    @classmethod
    def read(
        cls, fd: Target, sector_size: int, disk_size: int, filters: Sequence[Filter]
    ) -> SavedPartitions:
        """Pick matching entries from the disk's GPT; nothing to do without filters."""
        saved = cls(sector_size, disk_size)
        if not filters:
            return saved
        try:
            gpt = GPT.find(fd, disk_size)
        except NoGPTError:
            if any(isinstance(f, IndexFilter) for f in filters) and has_mbr_signature(fd):
                raise NestosError(
                    "saving partitions from an MBR disk is not yet supported"
                ) from None
            return saved
        except FormatError as exc:
            raise NestosError("reading partition table") from exc
        if gpt.sector_size != sector_size:
            raise NestosError(
                f"GPT sector size {gpt.sector_size} doesn't match expected {sector_size}"
            )
        saved.entries = [p for p in gpt.entries if _selected(p, filters)]
        if saved.entries:
            try:
                saved._dry_run()
            except Exception as exc:
                raise NestosError(
                    "failed dry run restoring saved partitions; "
                    "input partition table may be invalid"
                ) from exc
        return saved

    def _dry_run(self) -> None:
        with tempfile.TemporaryDirectory(prefix="nestos-installer-dryrun-") as tmp:
            path = Path(tmp) / "disk"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, self.disk_size)
                self.write_fresh_table(fd)
            finally:
                os.close(fd)

    # ---- the write limit -------------------------------------------------------------
    def _lowest(self) -> Partition | None:
        return min(self.entries, key=lambda p: p.first_lba, default=None)

    @property
    def limit_offset(self) -> int | None:
        """Byte offset the image stream must never reach (start of the lowest entry)."""
        low = self._lowest()
        return None if low is None else low.first_lba * self.sector_size

    @property
    def limit_message(self) -> str | None:
        """What the limit protects, for `collision with <this> at offset <n>`."""
        low = self._lowest()
        return None if low is None else f'partition {low.number} ("{low.name}")'

    # ---- writing ---------------------------------------------------------------------
    def fresh_gpt(self, disk_size: int | None = None) -> GPT:
        """A new table (random disk GUID) holding only the saved entries."""
        gpt = GPT.new(self.sector_size, self.disk_size if disk_size is None else disk_size)
        for part in self.entries:
            gpt.add(dataclasses.replace(part))
        return gpt

    def write_fresh_table(self, fd: Target, disk_size: int | None = None) -> None:
        """Replace whatever table is on disk: saved entries only, boot code zeroed."""
        size = self.disk_size if disk_size is None else disk_size
        gpt = self.fresh_gpt(size)
        pieces = gpt.to_bytes(size)  # validates before the first byte is written
        zero_boot_code(fd, self.sector_size)
        for offset, data in pieces:
            pwrite(fd, data, offset)

    def merge(self, fd: Target, image_first_mib: bytes) -> None:
        """Put the saved entries into the image's table (docs/compat.md#saved-partitions 'after the
        copy').

        Writes the image's LBA 0, the merged primary and backup GPT, and the rest of
        the first MiB after the image's GPT area. No-op when nothing was saved.
        """
        if not self.entries:
            return
        ss = self.sector_size
        try:
            gpt = GPT.from_bytes(image_first_mib, ss)
        except FormatError as exc:
            raise NestosError("reading partition table of image") from exc
        gpt.resize(self.disk_size)
        nxt = max((p.number for p in gpt.entries), default=0) + 1
        for part in self.entries:
            nxt = max(nxt, part.number)
            gpt.add(dataclasses.replace(part, number=nxt))
            say(f'Saving partition {part.number} ("{part.name}") to new partition {nxt}')
            nxt += 1
        pieces = gpt.to_bytes(self.disk_size)  # raises before any write on overlap
        pwrite(fd, image_first_mib[:ss], 0)
        for offset, data in pieces:
            pwrite(fd, data, offset)
        gpt_end = gpt.first_usable * ss
        if gpt_end < len(image_first_mib):
            pwrite(fd, image_first_mib[gpt_end:], gpt_end)

    def write_first_mib(self, fd: Target, image_first_mib: bytes) -> None:
        """The deferred first MiB: plain copy when nothing was saved, else merge."""
        if self.entries:
            self.merge(fd, image_first_mib)
        else:
            pwrite(fd, image_first_mib, 0)

    def stash(self, prefix: str = "nestos-installer") -> Path | None:
        """Saved entries in a sparse disk-sized file under /tmp (--preserve-on-error)."""
        if not self.entries:
            return None
        fd, name = tempfile.mkstemp(prefix=f"{prefix}-partitions.", dir="/tmp")
        try:
            os.ftruncate(fd, self.disk_size)
            self.write_fresh_table(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        return Path(name)


def wipe_partition_table(
    fd: int, sector_size: int, disk_size: int, saved: SavedPartitions | None
) -> None:
    """docs/compat.md#wipe-on-error: fresh empty GPT (plus saved entries), boot code zeroed, fsync.

    The caller re-reads the partition table afterwards (blockdev.reread_partitions).
    """
    keep = saved.entries if saved is not None else []
    SavedPartitions(sector_size, disk_size, keep).write_fresh_table(fd)
    os.fsync(fd)

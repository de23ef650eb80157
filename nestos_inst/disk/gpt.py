"""A small GUID Partition Table reader/writer (UEFI spec layout, any sector size).

Why our own: the installer needs exactly four operations (read with backup fallback,
create, resize to a new disk, write both copies plus a protective MBR) with byte-level
control over what lands where; no maintained Python library offers that.
"""

from __future__ import annotations

import io
import os
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import FormatError

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
ENTRY_SIZE = 128
DEFAULT_ENTRIES = 128
# Refuse absurd entry arrays from hostile media instead of allocating gigabytes.
MAX_ENTRY_ARRAY = 1 << 20
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")
_MBR_RECORD = struct.Struct("<B3sB3sII")
_U32_MAX = 0xFFFFFFFF

Target = int | BinaryIO


class NoGPTError(FormatError):
    """Neither header carries the `EFI PART` signature: the disk is not GPT at all."""


def pread(f: Target, size: int, offset: int) -> bytes:
    """Read exactly what exists at offset (short at end of file), fd or file object."""
    if isinstance(f, int):
        chunks = []
        while size > 0:
            data = os.pread(f, size, offset)
            if not data:
                break
            chunks.append(data)
            size -= len(data)
            offset += len(data)
        return b"".join(chunks)
    f.seek(offset)
    return f.read(size)


def pwrite(f: Target, data: bytes, offset: int) -> None:
    """Write all of data at offset, fd or file object."""
    if isinstance(f, int):
        view = memoryview(data)
        while view:
            n = os.pwrite(f, view, offset)
            view = view[n:]
            offset += n
        return
    f.seek(offset)
    f.write(data)


@dataclass
class Partition:
    """One used entry; `number` is its 1-based slot in the entry array."""

    number: int
    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int
    attributes: int = 0
    name: str = ""

    @property
    def sectors(self) -> int:
        return self.last_lba - self.first_lba + 1

    def pack(self) -> bytes:
        encoded = self.name.encode("utf-16-le", errors="surrogatepass")[:72]
        return _ENTRY.pack(
            self.type_guid.bytes_le,
            self.unique_guid.bytes_le,
            self.first_lba,
            self.last_lba,
            self.attributes,
            encoded,
        )

    @classmethod
    def unpack(cls, number: int, raw: bytes) -> Partition | None:
        """None for an unused slot (all-zero type GUID)."""
        type_b, uniq_b, first, last, attrs, name_b = _ENTRY.unpack_from(raw)
        if type_b == bytes(16):
            return None
        name = name_b.decode("utf-16-le", errors="surrogatepass")
        end = name.find("\0")
        if end >= 0:
            name = name[:end]
        return cls(
            number,
            uuid.UUID(bytes_le=type_b),
            uuid.UUID(bytes_le=uniq_b),
            first,
            last,
            attrs,
            name,
        )


def sniff_sector_size(first_mib: bytes) -> int | None:
    """Sector size an image was formatted for, from where its GPT header sits."""
    if first_mib[512:520] == SIGNATURE:
        return 512
    if first_mib[4096:4104] == SIGNATURE:
        return 4096
    return None


@dataclass
class _Header:
    current_lba: int
    backup_lba: int
    first_usable: int
    last_usable: int
    disk_guid: uuid.UUID
    entries_lba: int
    num_entries: int
    entry_size: int
    entries_crc: int


def _parse_header(sector: bytes, expect_lba: int) -> _Header:
    if len(sector) < HEADER_SIZE:
        raise NoGPTError("invalid signature")
    (sig, rev, hsize, hcrc, _res, cur, backup, first, last, dguid, elba, nent, esize, ecrc) = (
        _HEADER.unpack_from(sector)
    )
    if sig != SIGNATURE:
        raise NoGPTError("invalid signature")
    if rev != REVISION:
        raise FormatError(f"invalid revision {rev:#010x}")
    if not HEADER_SIZE <= hsize <= len(sector):
        raise FormatError(f"invalid header size {hsize}")
    raw = bytearray(sector[:hsize])
    raw[16:20] = bytes(4)
    if zlib.crc32(raw) != hcrc:
        raise FormatError("invalid header checksum")
    if cur != expect_lba:
        raise FormatError(f"header claims to be at LBA {cur}, found at LBA {expect_lba}")
    if esize < ENTRY_SIZE or esize % 8:
        raise FormatError(f"invalid partition entry size {esize}")
    if nent == 0 or nent * esize > MAX_ENTRY_ARRAY:
        raise FormatError(f"invalid number of partition entries {nent}")
    if first > last + 1:
        raise FormatError("invalid usable LBA range")
    return _Header(cur, backup, first, last, uuid.UUID(bytes_le=dguid), elba, nent, esize, ecrc)


@dataclass
class GPT:
    """An in-memory table; `entries` holds used slots only, sorted by number."""

    sector_size: int
    disk_guid: uuid.UUID
    first_usable: int
    last_usable: int
    num_entries: int = DEFAULT_ENTRIES
    entries_lba: int = 2
    entries: list[Partition] = field(default_factory=list)

    # ---- geometry --------------------------------------------------------------
    def entry_array_sectors(self) -> int:
        return -(-self.num_entries * ENTRY_SIZE // self.sector_size)

    def _disk_lbas(self, disk_size: int) -> int:
        lbas = disk_size // self.sector_size
        if lbas < 3 + 2 * self.entry_array_sectors():
            raise FormatError(
                f"disk of {disk_size} bytes is too small for a GPT with "
                f"{self.sector_size}-byte sectors"
            )
        return lbas

    @classmethod
    def new(cls, sector_size: int, disk_size: int) -> GPT:
        """An empty table with a random disk GUID covering the whole disk."""
        gpt = cls(sector_size, uuid.uuid4(), 0, 0)
        gpt.first_usable = 2 + gpt.entry_array_sectors()
        gpt.resize(disk_size)
        return gpt

    def resize(self, disk_size: int) -> None:
        """Move the backup to the end of a (possibly larger) disk."""
        lbas = self._disk_lbas(disk_size)
        self.last_usable = lbas - 2 - self.entry_array_sectors()
        if self.last_usable < self.first_usable:
            raise FormatError("disk too small for partition table")

    # ---- entries ---------------------------------------------------------------
    def get(self, number: int) -> Partition | None:
        for part in self.entries:
            if part.number == number:
                return part
        return None

    def add(self, part: Partition) -> None:
        """Insert or replace the entry in slot `part.number`."""
        self.entries = [p for p in self.entries if p.number != part.number]
        self.entries.append(part)
        self.entries.sort(key=lambda p: p.number)

    def validate(self) -> None:
        """The checks a disk must pass before we dare write this table to it."""
        numbers = [p.number for p in self.entries]
        if len(set(numbers)) != len(numbers):
            raise FormatError("duplicate partition numbers")
        for p in self.entries:
            if not 1 <= p.number <= self.num_entries:
                raise FormatError(f"partition number {p.number} out of range 1..{self.num_entries}")
        guids = [p.unique_guid for p in self.entries]
        if len(set(guids)) != len(guids):
            raise FormatError("conflict of partition GUIDs")
        spans = sorted((p.first_lba, p.last_lba) for p in self.entries)
        prev_end = self.first_usable - 1
        for first, last in spans:
            if first > last or first <= prev_end or last > self.last_usable:
                raise FormatError("invalid partition boundaries")
            prev_end = last

    # ---- serialisation ---------------------------------------------------------
    def _entry_array(self) -> bytes:
        arr = bytearray(self.num_entries * ENTRY_SIZE)
        for p in self.entries:
            off = (p.number - 1) * ENTRY_SIZE
            arr[off : off + ENTRY_SIZE] = p.pack()
        return bytes(arr)

    def _header(self, current: int, backup: int, entries_lba: int, array_crc: int) -> bytes:
        def pack(crc: int) -> bytes:
            return _HEADER.pack(
                SIGNATURE,
                REVISION,
                HEADER_SIZE,
                crc,
                0,
                current,
                backup,
                self.first_usable,
                self.last_usable,
                self.disk_guid.bytes_le,
                entries_lba,
                self.num_entries,
                ENTRY_SIZE,
                array_crc,
            )

        raw = pack(zlib.crc32(pack(0)))
        return raw + bytes(self.sector_size - len(raw))

    def to_bytes(self, disk_size: int) -> list[tuple[int, bytes]]:
        """(offset, data) pieces: MBR record + signature, both headers, both arrays."""
        self.validate()
        lbas = self._disk_lbas(disk_size)
        ss = self.sector_size
        last = lbas - 1
        backup_entries = last - self.entry_array_sectors()
        if self.last_usable >= backup_entries:
            raise FormatError("partition table does not fit the disk; resize it first")
        if (
            self.entries_lba < 2
            or self.entries_lba + self.entry_array_sectors() > self.first_usable
        ):
            raise FormatError("partition entry array overlaps the usable area")
        array = self._entry_array()
        crc = zlib.crc32(array)
        return [
            (446, protective_mbr_record(lbas)),
            (ss, self._header(1, last, self.entries_lba, crc)),
            (self.entries_lba * ss, array),
            (backup_entries * ss, array),
            (last * ss, self._header(last, 1, backup_entries, crc)),
        ]

    def write(self, f: Target, disk_size: int) -> None:
        """Primary + backup GPT and a protective MBR record (boot code left alone)."""
        for offset, data in self.to_bytes(disk_size):
            pwrite(f, data, offset)

    @classmethod
    def read(cls, f: Target, sector_size: int, disk_size: int) -> GPT:
        """The primary table, or the backup when the primary is damaged."""
        if sector_size < 512 or sector_size & (sector_size - 1):
            raise FormatError(f"unsupported sector size {sector_size}")
        lbas = disk_size // sector_size
        try:
            return cls._read_copy(f, sector_size, lbas, 1)
        except FormatError as primary:
            if lbas < 3:
                raise
            try:
                return cls._read_copy(f, sector_size, lbas, lbas - 1)
            except FormatError as backup:
                if isinstance(primary, NoGPTError) and isinstance(backup, NoGPTError):
                    raise NoGPTError("no GPT found: invalid signature") from None
                raise FormatError(
                    f"could not read primary header ({primary}) nor backup header ({backup})"
                ) from None

    @classmethod
    def find(cls, f: Target, disk_size: int) -> GPT:
        """Try 512-byte then 4096-byte sectors, like gptman's find_from."""
        try:
            return cls.read(f, 512, disk_size)
        except NoGPTError:
            return cls.read(f, 4096, disk_size)

    @classmethod
    def _read_copy(cls, f: Target, ss: int, lbas: int, lba: int, prefix: bool = False) -> GPT:
        if lba >= lbas:
            raise NoGPTError("invalid signature")
        hdr = _parse_header(pread(f, ss, lba * ss), lba)
        array_len = hdr.num_entries * hdr.entry_size
        if hdr.entries_lba >= lbas or hdr.entries_lba * ss + array_len > lbas * ss:
            raise FormatError("partition entry array lies outside the disk")
        if hdr.last_usable >= lbas and not prefix:
            raise FormatError("last usable LBA lies outside the disk")
        if lba == 1 and hdr.entries_lba <= 1:
            raise FormatError("partition entry array overlaps the header")
        array = pread(f, array_len, hdr.entries_lba * ss)
        if len(array) != array_len or zlib.crc32(array) != hdr.entries_crc:
            raise FormatError("invalid partition entry array checksum")
        gpt = cls(ss, hdr.disk_guid, hdr.first_usable, hdr.last_usable, hdr.num_entries)
        # Rebuilding from the backup puts the primary array back at its usual LBA 2.
        gpt.entries_lba = hdr.entries_lba if lba == 1 else 2
        for i in range(hdr.num_entries):
            raw = array[i * hdr.entry_size : i * hdr.entry_size + ENTRY_SIZE]
            part = Partition.unpack(i + 1, raw)
            if part is not None:
                gpt.entries.append(part)
        return gpt

    @classmethod
    def from_bytes(cls, data: bytes, sector_size: int) -> GPT:
        """Primary table from an in-memory prefix of an image (e.g. its first MiB)."""
        lbas = len(data) // sector_size
        return cls._read_copy(io.BytesIO(data), sector_size, lbas, 1, prefix=True)


def protective_mbr_record(disk_lbas: int) -> bytes:
    """Partition records 1-4 and the 55 AA signature (bytes 446..512)."""
    size = min(disk_lbas - 1, _U32_MAX)
    rec = _MBR_RECORD.pack(0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    return rec + bytes(48) + b"\x55\xaa"


def zero_boot_code(f: Target, sector_size: int) -> None:
    """Clear MBR boot code (and, on 4Kn, the rest of LBA 0) so nothing stale boots."""
    pwrite(f, bytes(446), 0)
    if sector_size > 512:
        pwrite(f, bytes(sector_size - 512), 512)


def has_mbr_signature(f: Target) -> bool:
    return pread(f, 2, 510) == b"\x55\xaa"

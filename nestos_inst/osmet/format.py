"""The osmet file format (docs/compat.md#osmet-format): bincode-1 varint header, table, xz stream.

Byte-compatible with upstream coreos-installer so either tool reads the other's files.
The reader never trusts a length field: every vector or string length is checked
against the bytes that remain in the file before anything is allocated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import FormatError
from ..formats.bincode import U32_MAX, U64_MAX, Reader, encode_str, encode_varint

MAGIC = b"OSMET\0\0\0"
VERSION = 1
DIGEST_LEN = 32


# Smallest possible encoding of one Mapping: three 1-byte varints + 32-byte digest.
_MIN_MAPPING_LEN = 3 + DIGEST_LEN
# start, end, mapping count.
_MIN_PARTITION_LEN = 3


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Header:
    """OsmetFileHeader: what the file is for (arch, sector size, OS description)."""

    app_version: str
    sector_size: int
    os_description: str
    os_architecture: str
    magic: bytes = MAGIC
    version: int = VERSION

    def encode(self) -> bytes:
        return b"".join(
            (
                self.magic,
                encode_varint(self.version),
                encode_str(self.app_version),
                encode_varint(self.sector_size),
                encode_str(self.os_description),
                encode_str(self.os_architecture),
            )
        )


@dataclass(frozen=True, order=True)
class Extent:
    """A byte range: `logical` in the object file, `physical` in the partition."""

    logical: int
    physical: int
    length: int


@dataclass(frozen=True)
class Mapping:
    extent: Extent
    object: bytes  # binary SHA-256 OSTree checksum

    def encode(self) -> bytes:
        e = self.extent
        return (
            encode_varint(e.logical)
            + encode_varint(e.physical)
            + encode_varint(e.length)
            + self.object
        )


@dataclass(frozen=True)
class Partition:
    start_offset: int
    end_offset: int
    mappings: tuple[Mapping, ...] = field(default=())

    def encode(self) -> bytes:
        parts = [
            encode_varint(self.start_offset),
            encode_varint(self.end_offset),
            encode_varint(len(self.mappings)),
        ]
        parts.extend(m.encode() for m in self.mappings)
        return b"".join(parts)


@dataclass(frozen=True)
class Osmet:
    partitions: tuple[Partition, ...]
    checksum: bytes  # SHA-256 of the whole unpacked image
    size: int

    def encode(self) -> bytes:
        parts = [encode_varint(len(self.partitions))]
        parts.extend(p.encode() for p in self.partitions)
        parts.append(self.checksum)
        parts.append(encode_varint(self.size))
        return b"".join(parts)


# ---------------------------------------------------------------------------- decoding


def read_header(r: Reader) -> Header:
    """Magic and version are checked first so a foreign file gets a plain answer."""
    try:
        magic = r.raw(len(MAGIC), "header")
    except FormatError as exc:
        raise FormatError("failed to deserialize osmet file") from exc
    if magic != MAGIC:
        raise FormatError("not an OSMET file!")
    try:
        version = r.varint("version", U32_MAX)
    except FormatError as exc:
        raise FormatError("failed to deserialize osmet file") from exc
    if version != VERSION:
        raise FormatError(f"incompatible OSMET file version {version}")
    try:
        return Header(
            app_version=r.string("app_version"),
            sector_size=r.varint("sector_size", U32_MAX),
            os_description=r.string("os_description"),
            os_architecture=r.string("os_architecture"),
        )
    except FormatError as exc:
        raise FormatError("failed to deserialize osmet file") from exc


def read_osmet(r: Reader) -> Osmet:
    partitions: list[Partition] = []
    for _ in range(r.length("partitions", _MIN_PARTITION_LEN)):
        start = r.varint("start_offset")
        end = r.varint("end_offset")
        mappings: list[Mapping] = []
        for _ in range(r.length("mappings", _MIN_MAPPING_LEN)):
            extent = Extent(r.varint("logical"), r.varint("physical"), r.varint("length"))
            mappings.append(Mapping(extent, r.raw(DIGEST_LEN, "object")))
        partitions.append(Partition(start, end, tuple(mappings)))
    checksum = r.raw(DIGEST_LEN, "checksum")
    size = r.varint("size")
    return Osmet(tuple(partitions), checksum, size)


def validate(osmet: Osmet) -> None:
    """Ordering and bounds, so the unpacker never seeks backwards or past the image."""
    if not osmet.partitions:
        raise FormatError("OSMET file has no partitions!")
    cursor = 0
    for i, part in enumerate(osmet.partitions):
        if cursor > part.start_offset:
            raise FormatError(f"cursor past partition start: {cursor} vs {part.start_offset}")
        if part.end_offset < part.start_offset:
            raise FormatError(
                f"partition {i} ends before it starts: {part.end_offset} vs {part.start_offset}"
            )
        cursor = part.start_offset
        for j, m in enumerate(part.mappings):
            start = part.start_offset + m.extent.physical
            if cursor > start:
                raise FormatError(
                    f"cursor past mapping start: {cursor} vs {start} (partition {i}, mapping {j})"
                )
            cursor = start + m.extent.length
            if m.extent.logical + m.extent.length > U64_MAX:
                raise FormatError(f"mapping overflows (partition {i}, mapping {j})")
        if cursor > part.end_offset:
            raise FormatError(f"cursor past partition end: {cursor} vs {part.end_offset}")
        cursor = part.end_offset
    if cursor > osmet.size:
        raise FormatError(f"partition past image end: {cursor} vs {osmet.size}")


@dataclass
class OsmetFile:
    """A parsed osmet file; `data_offset` is where the xz stream starts."""

    path: Path
    header: Header
    osmet: Osmet
    data_offset: int


def _file_size(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb", buffering=1 << 16)
    except OSError as exc:
        raise FormatError(f"opening {str(path)!r}") from exc


def read_file_header(path: Path) -> Header:
    """Only the header, as discovery needs (any error aborts discovery, like upstream)."""
    with _open(path) as f:
        return read_header(Reader(f, _file_size(f)))


def read_file(path: Path) -> OsmetFile:
    """Header + validated table of `path`."""
    with _open(path) as f:
        r = Reader(f, _file_size(f))
        header = read_header(r)
        try:
            osmet = read_osmet(r)
        except FormatError as exc:
            raise FormatError("failed to deserialize osmet file") from exc
    try:
        validate(osmet)
    except FormatError as exc:
        raise FormatError("validating after reading") from exc
    return OsmetFile(path, header, osmet, r.consumed)


def checksum_to_object_path(repo: Path, digest: bytes) -> Path:
    """`<repo>/objects/<hex byte 0>/<hex bytes 1..31>.file`."""
    h = digest.hex()
    return repo / "objects" / h[:2] / f"{h[2:]}.file"

"""Minimal ISO9660 reader: just enough to find the live ISO's embed areas
(docs/compat.md#iso9660-reader).

Only the primary volume descriptor and plain ISO9660 directory records are read;
Rock Ridge and Joliet are ignored on purpose so names match upstream's (`IGNINFO.JSO`).
Every offset comes from the image, so every read is bounds-checked against the file.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError

SECTOR = 2048
_DESCRIPTORS_START = 16 * SECTOR
_NAME_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_ !\"%&'()*+,-.:<=>?"
)
# Bounds the descriptor scan so a file without a terminator can't make us read forever.
_MAX_DESCRIPTORS = 64
# Real directories are a few KiB; a corrupt length must not make us slurp gigabytes.
MAX_DIRECTORY = 16 << 20


class NotFoundError(FormatError):
    """A path component is missing (callers treat this differently from corruption)."""


@dataclass(frozen=True)
class Record:
    """One directory record: a file or a directory extent."""

    name: str
    address: int  # sector number
    length: int  # bytes
    is_dir: bool

    @property
    def offset(self) -> int:
        return self.address * SECTOR


@dataclass
class Descriptor:
    kind: str  # boot | primary | supplementary | unknown
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, **self.fields}


def decode_name(raw: bytes) -> str:
    """ISO9660 file identifier → upstream's name (strip `;1`, then a trailing dot)."""
    raw = raw.split(b"\0", 1)[0]
    raw = raw.removesuffix(b";1")
    out = bytearray()
    for b in raw:
        if b in (ord(";"), ord("/")):
            out.append(ord("."))
        elif b in _NAME_CHARS:
            out.append(b)
        else:
            raise FormatError(f"invalid string name {raw!r}")
    return out.decode("ascii").removesuffix(".")


def _a_string(raw: bytes) -> str:
    """PVD identifiers: lenient, trailing spaces trimmed."""
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace").rstrip(" ")


def descriptors_end(fd: int) -> int:
    """End of the system area and volume descriptors of the ISO on `fd`, for callers
    that write without an IsoFs at hand; 0 when there is no descriptor (not an ISO)."""
    end = 0
    for i in range(_MAX_DESCRIPTORS):
        head = os.pread(fd, 7, _DESCRIPTORS_START + i * SECTOR)
        if len(head) < 7 or head[1:6] != b"CD001":
            break
        end = _DESCRIPTORS_START + (i + 1) * SECTOR
        if head[0] == 255:
            break
    return end


def file_size(fd: int) -> int:
    """Size of a regular file or a block device (whose st_size is 0)."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)


def path_components(path: str) -> list[str]:
    """Split like upstream: ignore empty and `.`, `..` pops (never above the root)."""
    out: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out:
                out.pop()
            continue
        out.append(comp)
    return out


class IsoFs:
    """An ISO9660 image opened from a file descriptor (read with pread, no seeks)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = file_size(fd)
        self.descriptors: list[Descriptor] = []
        self.root: Record | None = None
        self.volume_space_size = 0
        # End of the system area and the volume descriptor set (terminator included):
        # no embed area may reach into it (see isoedit.check_areas).
        self.descriptors_end = _DESCRIPTORS_START
        self._parse_descriptors()
        if self.root is None:
            raise FormatError("no primary volume descriptor found in ISO")
        if self.volume_space_size * SECTOR > self.size:
            raise FormatError("ISO image is incomplete")

    def read_at(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`, or a FormatError (never past EOF)."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FormatError(f"reading {length} bytes at {offset}: beyond end of image")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise FormatError(f"reading {length} bytes at {offset}: unexpected end of file")
        return data

    def _parse_descriptors(self) -> None:
        for i in range(_MAX_DESCRIPTORS):
            try:
                desc = self.read_at(_DESCRIPTORS_START + i * SECTOR, SECTOR)
            except FormatError as exc:
                raise FormatError(f"getting volume descriptor #{i}") from exc
            kind = desc[0]
            if kind == 255:
                self.descriptors_end = _DESCRIPTORS_START + (i + 1) * SECTOR
                return
            if kind in (0, 1):
                if desc[1:6] != b"CD001":
                    raise FormatError(f"unknown descriptor ID: {desc[1:6]!r}")
                if desc[6] != 1:
                    raise FormatError(f"unknown descriptor version: {desc[6]}")
            if kind == 0:
                self.descriptors.append(
                    Descriptor(
                        "boot",
                        {
                            "boot_system_id": _a_string(desc[7:39]),
                            "boot_id": _a_string(desc[39:71]),
                        },
                    )
                )
            elif kind == 1:
                (vss,) = struct.unpack_from("<I", desc, 80)
                root = self._record(desc[156:190], root=True)
                if root is None:
                    raise FormatError("invalid root directory record")
                if self.root is None:
                    self.root = root
                    self.volume_space_size = vss
                self.descriptors.append(
                    Descriptor(
                        "primary",
                        {
                            "system_id": _a_string(desc[8:40]),
                            "volume_id": _a_string(desc[40:72]),
                            "volume_space_size": vss,
                            "root": {"name": ".", "address": root.address, "length": root.length},
                        },
                    )
                )
            elif kind == 2:
                self.descriptors.append(Descriptor("supplementary"))
            else:
                self.descriptors.append(Descriptor("unknown", {"type_id": kind}))
        raise FormatError(f"no volume descriptor set terminator in {_MAX_DESCRIPTORS} descriptors")

    @staticmethod
    def _record(rec: bytes, *, root: bool = False) -> Record | None:
        """Parse one record; None for `.`/`..` (except the PVD's root, named `.`)."""
        if len(rec) < 34:
            raise FormatError("incomplete directory record; corrupt ISO?")
        (address,) = struct.unpack_from("<I", rec, 2)
        (length,) = struct.unpack_from("<I", rec, 10)
        is_dir = bool(rec[25] & 0x02)
        name_len = rec[32]
        raw = rec[33 : 33 + name_len]
        if len(raw) != name_len:
            raise FormatError("incomplete directory record; corrupt ISO?")
        if root:
            return Record(".", address, length, True)
        if raw in (b"\0", b"\1"):
            return None
        return Record(decode_name(raw), address, length, is_dir)

    def list_dir(self, directory: Record) -> Iterator[Record]:
        """Entries of a directory in on-disk order (zero bytes skip to the next sector)."""
        if not directory.is_dir:
            raise FormatError(f"entry {directory.name} is a file")
        if directory.length > MAX_DIRECTORY:
            raise FormatError(f"directory {directory.name} is too large; corrupt ISO?")
        data = self.read_at(directory.offset, directory.length)
        pos = 0
        end = len(data)
        while pos < end:
            rec_len = data[pos]
            if rec_len == 0:
                p = pos + 1
                q = (p + SECTOR) & ~(SECTOR - 1)
                if q - p >= end - p:
                    return
                pos = q
                continue
            if rec_len > end - pos + 1 or rec_len < 34:
                raise FormatError("incomplete directory record; corrupt ISO?")
            record = self._record(data[pos : pos + rec_len])
            pos += rec_len
            if record is not None:
                yield record

    def get_path(self, path: str) -> Record:
        """Record at `path`; NotFoundError when a component is missing."""
        assert self.root is not None
        cur = self.root
        for comp in path_components(path):
            if not cur.is_dir:
                raise NotFoundError(f"{path}: {cur.name} is not a directory")
            for entry in self.list_dir(cur):
                if entry.name == comp:
                    cur = entry
                    break
            else:
                raise NotFoundError(f"{path}: {comp} not found")
        return cur

    def get_file(self, path: str) -> Record:
        rec = self.get_path(path)
        if rec.is_dir:
            raise FormatError(f"entry {rec.name} is a directory")
        return rec

    def read_file(self, rec: Record) -> bytes:
        if rec.is_dir:
            raise FormatError(f"entry {rec.name} is a directory")
        return self.read_at(rec.offset, rec.length)

    def walk(self) -> Iterator[tuple[str, Record]]:
        """Depth-first pre-order walk; paths joined with `/`, no leading slash."""
        assert self.root is not None
        yield from self._walk(self.root, "", {self.root.address})

    def _walk(self, directory: Record, prefix: str, seen: set[int]) -> Iterator[tuple[str, Record]]:
        for entry in self.list_dir(directory):
            path = f"{prefix}{entry.name}"
            yield path, entry
            if entry.is_dir:
                # A directory extent reached twice means a loop: refuse, don't recurse.
                if entry.address in seen:
                    raise FormatError(f"directory loop at {path}; corrupt ISO?")
                seen.add(entry.address)
                yield from self._walk(entry, path + "/", seen)

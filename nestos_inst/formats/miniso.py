"""miniso.dat (docs/compat.md#minimal-iso, #bincode): regenerate the minimal ISO from the full one.

The full live ISO carries a table of files it shares with the minimal ISO plus the
xz-compressed bytes that are not shared. Everything in the file is untrusted: the
table is validated against the full ISO's size before a single byte is written, the
xz stream may not expand past a bound, and the result must match the recorded SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import lzma
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..errors import FormatError, NestosError, describe
from ..io.compress import Decoder, open_decompressed
from .bincode import U32_MAX, Reader, encode_str, encode_varint
from .iso9660 import SECTOR, IsoFs, Record

MAGIC = b"MINISO\0\0"
VERSION = 1
DIGEST_LEN = 32
# Upstream refuses to (de)serialize more than this; real files are a few KiB.
MAX_DATA = 1 << 20
# Three one-byte varints: the smallest possible encoded table entry.
_MIN_ENTRY_LEN = 3
_CHUNK = 1 << 20
MINISO_FILE = "MINISO.DAT"
ROOTFS_PATH = "IMAGES/PXEBOOT/ROOTFS.IMG"

Sink = Callable[[bytes], None]


@dataclass(frozen=True, order=True)
class Entry:
    """One file shared by both ISOs: its sector in each, and its byte length."""

    minimal: int
    full: int
    length: int

    def encode(self) -> bytes:
        return encode_varint(self.minimal) + encode_varint(self.full) + encode_varint(self.length)


@dataclass
class MinisoData:
    """The decoded contents of miniso.dat."""

    entries: list[Entry]
    digest: bytes
    xzpacked: bytes
    app_version: str = field(default=__version__)

    def encode(self) -> bytes:
        """Header + data, bincode-1 varint encoding; refused beyond the 1 MiB limit."""
        out = bytearray(MAGIC)
        out += encode_varint(VERSION)
        out += encode_str(self.app_version)
        out += encode_varint(len(self.entries))
        for e in self.entries:
            out += e.encode()
        if len(self.digest) != DIGEST_LEN:
            raise FormatError(f"digest must be {DIGEST_LEN} bytes, not {len(self.digest)}")
        out += self.digest
        out += encode_varint(len(self.xzpacked))
        out += self.xzpacked
        if len(out) > MAX_DATA:
            raise FormatError("writing miniso data") from FormatError(
                f"collision with data size limit: {len(out)} > {MAX_DATA}"
            )
        return bytes(out)


def validate_table(entries: list[Entry]) -> None:
    """Non-empty, sorted by minimal sector, no file running into the next one."""
    if not entries:
        raise FormatError("table is empty; ISOs have no files in common?")
    for e, nxt in itertools.pairwise(entries):
        if e.minimal * SECTOR + e.length > nxt.minimal * SECTOR:
            raise FormatError(
                f"Files at offsets {e.minimal * SECTOR} and {nxt.minimal * SECTOR} overlap"
            )


def validate_against(data: MinisoData, full_size: int) -> None:
    """Every table file must lie inside the full ISO (never read past its end)."""
    for e in data.entries:
        if e.full * SECTOR + e.length > full_size:
            raise FormatError(
                f"file at sector {e.full} with length {e.length} extends beyond the full ISO "
                f"({full_size} bytes)"
            )


def parse(raw: bytes) -> MinisoData:
    """Decode miniso.dat; trailing bytes (the zero fill of the file) are ignored."""
    raw = raw[:MAX_DATA]
    r = Reader(io.BytesIO(raw), len(raw))
    try:
        magic = r.raw(len(MAGIC), "magic")
        version = r.varint("version", U32_MAX)
        app_version = r.string("app_version")
    except FormatError as exc:
        raise FormatError("failed to deserialize header") from exc
    if magic != MAGIC:
        raise FormatError("validating header") from FormatError("not a miniso file!")
    if version != VERSION:
        raise FormatError("validating header") from FormatError(
            f"incompatible miniso file version: {VERSION} vs {version} (created by {app_version})"
        )
    try:
        count = r.length("table entries", _MIN_ENTRY_LEN)
        entries = [
            Entry(
                r.varint("minimal sector", U32_MAX),
                r.varint("full sector", U32_MAX),
                r.varint("file length", U32_MAX),
            )
            for _ in range(count)
        ]
        digest = r.raw(DIGEST_LEN, "digest")
        xzpacked = r.raw(r.length("xzpacked", 1), "xzpacked")
    except FormatError as exc:
        raise FormatError("failed to deserialize data") from exc
    try:
        validate_table(entries)
    except FormatError as exc:
        raise FormatError("validating table") from exc
    return MinisoData(entries, digest, xzpacked, app_version)


class _XzSource:
    """The packed bytes decoded in bounded pieces. Like the upstream reader, decoding
    stops at the end of the xz stream (what follows inside the field is not read)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._dec: Decoder | None = None

    def read(self, n: int) -> bytes:
        """Up to n bytes; b"" only at the end of the stream."""
        try:
            if self._dec is None:
                self._dec = open_decompressed(
                    io.BytesIO(self._data), concatenated=True, expect="xz", parallel=False
                )
            return self._dec.read1(n)
        except FormatError as exc:
            raise FormatError("decompressing packed data") from exc


def _pread_exact(fd: int, offset: int, n: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise FormatError(f"unexpected end of file at offset {offset + len(data)}")
    return data


def unpack(data: MinisoData, full_fd: int, full_size: int, sink: Sink, limit: int) -> int:
    """Rebuild the minimal ISO into `sink`; verify its SHA-256. Returns its size.

    `limit` bounds the output so a hostile xz stream cannot fill the disk.
    """
    validate_against(data, full_size)
    xz = _XzSource(data.xzpacked)
    hasher = hashlib.sha256()
    offset = 0

    def emit(chunk: bytes) -> None:
        nonlocal offset
        if offset + len(chunk) > limit:
            raise FormatError(f"minimal ISO would exceed {limit} bytes; corrupt miniso data?")
        hasher.update(chunk)
        sink(chunk)
        offset += len(chunk)

    def copy_packed(n: int) -> None:
        start = offset
        while n:
            chunk = xz.read(min(n, _CHUNK))
            if not chunk:
                raise FormatError(
                    f"copying {n + offset - start} packed bytes at offset {start}"
                ) from FormatError("unexpected end of packed data")
            emit(chunk)
            n -= len(chunk)

    for e in data.entries:
        target = e.minimal * SECTOR
        if target > offset:
            copy_packed(target - offset)
        src, end = e.full * SECTOR, e.full * SECTOR + e.length
        try:
            while src < end:
                chunk = _pread_exact(full_fd, src, min(_CHUNK, end - src))
                emit(chunk)
                src += len(chunk)
        except OSError as exc:
            raise NestosError(f"copying full ISO file at offset {e.full * SECTOR}") from exc
    while chunk := xz.read(_CHUNK):
        emit(chunk)
    found = hasher.digest()
    if found != data.digest:
        raise FormatError(f"wrong final digest: expected {data.digest.hex()}, found {found.hex()}")
    return offset


# ---------------------------------------------------------------------------- packing


@dataclass
class PackResult:
    data: MinisoData
    matched: int  # minimal ISO files found in the full ISO
    minimal_files: int
    skipped: int
    written: int
    written_compressed: int


def iso_files(fs: IsoFs) -> dict[str, Record]:
    return {path: rec for path, rec in fs.walk() if not rec.is_dir}


def build_table(full: dict[str, Record], minimal: dict[str, Record]) -> tuple[list[Entry], int]:
    """Shared files as sorted, de-duplicated entries, and how many files matched."""
    entries: list[Entry] = []
    for path, mrec in minimal.items():
        frec = full.get(path)
        if frec is None:
            raise FormatError(f"missing minimal file {path} in full ISO")
        if frec.length != mrec.length:
            raise FormatError(f"File {path} has different lengths in full and minimal ISOs")
        if mrec.length == 0:
            continue  # nothing to copy; empty files may share a sector with anything
        entries.append(Entry(mrec.address, frec.address, mrec.length))
    # Every minimal file matched (else we raised above), like upstream's count.
    matched = len(minimal)
    unique = sorted(set(entries))
    try:
        validate_table(unique)
    except FormatError as exc:
        raise FormatError("validating table") from exc
    return unique, matched


def pack(full_fs: IsoFs, minimal_fs: IsoFs, *, preset: int = 9) -> PackResult:
    """Table + xz of the minimal ISO's non-shared bytes + its digest."""
    full = iso_files(full_fs)
    minimal = iso_files(minimal_fs)
    if not full:
        raise FormatError("No files found in full ISO")
    if not minimal:
        raise FormatError("No files found in minimal ISO")
    entries, matched = build_table(full, minimal)
    fd, size = minimal_fs.fd, minimal_fs.size
    hasher = hashlib.sha256()
    comp = lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=preset)
    parts: list[bytes] = []
    written = skipped = 0

    def take(start: int, end: int, keep: bool) -> None:
        nonlocal written
        while start < end:
            chunk = _pread_exact(fd, start, min(_CHUNK, end - start))
            hasher.update(chunk)
            if keep:
                parts.append(comp.compress(chunk))
                written += len(chunk)
            start += len(chunk)

    offset = 0
    for e in entries:
        target = e.minimal * SECTOR
        if target + e.length > size:
            raise FormatError(f"minimal ISO file at sector {e.minimal} extends beyond its end")
        take(offset, target, keep=True)
        take(target, target + e.length, keep=False)
        skipped += e.length
        offset = target + e.length
    take(offset, size, keep=True)
    parts.append(comp.flush())
    xzpacked = b"".join(parts)
    data = MinisoData(entries, hasher.digest(), xzpacked)
    return PackResult(data, matched, len(minimal), skipped, written, len(xzpacked))


# ---------------------------------------------------------------------------- kargs.json


def rewrite_kargs_json(raw: bytes, new_default: str, capacity: int, name: str) -> bytes:
    """kargs.json with a new `default`, pretty-printed like upstream, space-filled."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FormatError("decoding kargs embed area info") from FormatError(describe(exc))
    if not isinstance(obj, dict) or not isinstance(obj.get("files"), list):
        raise FormatError("decoding kargs embed area info") from FormatError(
            "expected an object with a 'files' list"
        )
    files: list[dict[str, Any]] = []
    for entry in obj["files"]:
        if not isinstance(entry, dict):
            raise FormatError("decoding kargs embed area info") from FormatError(
                "file entry not an object"
            )
        item: dict[str, Any] = {"path": entry.get("path"), "offset": entry.get("offset")}
        for key in ("pad", "end"):
            if key in entry:
                item[key] = entry[key]
        files.append(item)
    out = {"default": new_default, "files": files, "size": obj.get("size")}
    text = json.dumps(out, indent=2, ensure_ascii=False).encode("utf-8")
    if len(text) > capacity:
        raise FormatError(
            f"New version of {name} does not fit in space ({len(text)} vs {capacity})"
        )
    return text + b" " * (capacity - len(text))


def find_karg(kargs: str, prefix: str) -> str | None:
    """First whitespace-separated karg starting with `prefix` (e.g. `nestos.liveiso=`)."""
    # ASCII whitespace only, like upstream's split_ascii_whitespace.
    return next((k for k in re.split(r"[ \t\n\f\r]+", kargs) if k.startswith(prefix)), None)

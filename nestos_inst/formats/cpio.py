"""The newc ("SVR4 without/with CRC") cpio format: a tolerant reader, an exact writer.

The writer's byte layout is a contract (docs/compat.md#initrd-archive-format): ISO embed areas and
`pxe * wrap` outputs are compared by hash, so every field is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

from ..errors import FormatError

HEADER_LEN = 110
MAGICS = (b"070701", b"070702")
TRAILER = "TRAILER!!!"
S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
DIR_MODE = 0o040755
FILE_MODE = 0o100600
_CHUNK = 1 << 20
_HEX = frozenset(b"0123456789abcdefABCDEF")

Read = Callable[[int], bytes]


class Entry(NamedTuple):
    """One archive member as read."""

    name: str
    mode: int
    data: bytes


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def read_exact(read: Read, n: int, what: str) -> bytes:
    """Read n bytes, in bounded chunks so a lying size field can't exhaust memory."""
    parts: list[bytes] = []
    left = n
    while left > 0:
        chunk = read(min(left, _CHUNK))
        if not chunk:
            raise FormatError(f"unexpected end of cpio archive reading {what}")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _skip(read: Read, n: int, what: str) -> None:
    left = n
    while left > 0:
        chunk = read(min(left, _CHUNK))
        if not chunk:
            raise FormatError(f"unexpected end of cpio archive reading {what}")
        left -= len(chunk)


def _fields(header: bytes) -> list[int]:
    """The 13 hex fields after the magic, strictly validated (no signs, no 0x)."""
    raw = header[6:]
    if not all(b in _HEX for b in raw):
        raise FormatError("invalid hex field in cpio header")
    return [int(raw[i : i + 8], 16) for i in range(0, 104, 8)]


def _decode_name(raw: bytes) -> str:
    # namesize counts the terminating NUL; dracut-cpio pads names with more NULs.
    name = raw.rstrip(b"\0")
    if b"\0" in name:
        raise FormatError(f"cpio entry name contains a NUL byte: {name!r}")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"cpio entry name is not valid UTF-8: {name!r}") from exc


class Member:
    """One archive member whose data is read in bounded pieces, before the next member.

    Reading a member never holds more than one piece of it, so a member that declares
    gigabytes costs no memory unless the caller keeps it (`read_all` with a limit)."""

    def __init__(self, name: str, mode: int, size: int, read: Read) -> None:
        self.name = name
        self.mode = mode
        self.size = size
        self._read = read
        self._left = size

    def read(self, n: int = _CHUNK) -> bytes:
        """Up to n bytes of the member's data; b"" once all of it has been read."""
        if self._left <= 0 or n <= 0:
            return b""
        chunk = self._read(min(n, self._left, _CHUNK))
        if not chunk:
            raise FormatError(f"unexpected end of cpio archive reading data of {self.name}")
        self._left -= len(chunk)
        return chunk

    def read_all(self, limit: int | None = None) -> bytes:
        """The whole (remaining) data; FormatError if the member is larger than `limit`."""
        if limit is not None and self.size > limit:
            raise FormatError(
                f"archive member {self.name} is {self.size} bytes, more than the "
                f"{limit} bytes this command keeps in memory"
            )
        data = read_exact(self._read, self._left, f"data of {self.name}")
        self._left = 0
        return data

    def skip(self) -> None:
        """Read past what is left of the data."""
        _skip(self._read, self._left, f"data of {self.name}")
        self._left = 0


def iter_members(read: Read, keep: Callable[[str, int], bool]) -> Iterator[Member]:
    """Members of one archive up to its trailer for which keep(name, mode) is true, each
    with its data still to be read (whatever the caller leaves unread is skipped when it
    asks for the next member).

    `read(n)` returns at most n bytes, b"" at end of input. Reading stops right after
    the trailer's padding, so whatever follows (block padding, the next archive) is
    left to the caller.
    """
    while True:
        header = read_exact(read, HEADER_LEN, "entry header")
        if header[:6] not in MAGICS:
            raise FormatError(f"invalid cpio magic {header[:6]!r}")
        fields = _fields(header)
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        if namesize == 0:
            raise FormatError("invalid cpio entry name size 0")
        name = _decode_name(read_exact(read, namesize, "entry name"))
        _skip(read, _pad4(HEADER_LEN + namesize), "entry name padding")
        if name == TRAILER:
            return
        member = Member(name, mode, filesize, read)
        if keep(name, mode):
            yield member
        member.skip()
        _skip(read, _pad4(filesize), f"data padding of {name}")


def iter_archive(read: Read, keep: Callable[[str, int], bool]) -> Iterator[Entry]:
    """Entries of one archive (see iter_members) with their data read whole."""
    for member in iter_members(read, keep):
        yield Entry(member.name, member.mode, member.read_all())


def parse_archive(data: bytes) -> list[Entry]:
    """Every entry of one uncompressed archive held in memory (for tests and tools)."""
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + n]
        pos += len(chunk)
        return chunk

    return list(iter_archive(read, lambda _name, _mode: True))


def _header(ino: int, mode: int, filesize: int, name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, 1, 0, filesize, 0, 0, 0, 0, len(name) + 1, 0)
    head = b"070701" + b"".join(b"%08x" % f for f in fields) + name + b"\0"
    return head + b"\0" * _pad4(len(head))


def write_archive(members: Mapping[str, bytes]) -> bytes:
    """Deterministic newc archive of docs/compat.md#initrd-archive-format: sorted paths, implicit
    parent dirs, no block pad.

    Directories are emitted when a file's parent differs from the last one emitted,
    from the common prefix downwards, exactly like upstream, so hashes match.
    """
    out: list[bytes] = []
    ino = 0
    current: list[str] = []
    for path in sorted(members, key=lambda p: p.encode("utf-8")):
        parent = path.split("/")[:-1]
        common = 0
        while common < min(len(current), len(parent)) and current[common] == parent[common]:
            common += 1
        for depth in range(common + 1, len(parent) + 1):
            out.append(_header(ino, DIR_MODE, 0, "/".join(parent[:depth]).encode("utf-8")))
            ino += 1
        current = parent
        data = members[path]
        out.append(_header(ino, FILE_MODE, len(data), path.encode("utf-8")))
        out.append(data + b"\0" * _pad4(len(data)))
        ino += 1
    out.append(_header(0, 0, 0, TRAILER.encode("ascii")))
    return b"".join(out)

"""Initrd images: concatenated newc archives, each raw or gzip/xz/zstd compressed.

The reader follows docs/compat.md#initrd-reader (the kernel's own rules: zero padding
between archives, last copy of a path wins); the writer produces the exact xz archive
of docs/compat.md#initrd-archive-format. Decompression is the io layer's decompressor
family in its concatenated mode, streamed with bounded output per step; members are
handed out with their data still to be read, so listing or extracting an initrd takes
memory independent of member sizes (a small hostile input declaring a huge member
cannot balloon).
"""

from __future__ import annotations

import io
import lzma
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

from ..errors import FormatError
from ..io.compress import Decoder, decoder_for, sniff
from ..io.pipeline import write_all
from ..io.stream import Input, Source
from ..profile import ALL, Profile
from . import cpio
from .glob import compile_globs

_CHUNK = 1 << 20
# xz -9 needs 65 MiB to decode; a forged header must not make us reserve gigabytes.
_XZ_MEMLIMIT = 512 << 20
# What read_initrd/read_initrd_stream keep in memory per member: configs and keyfiles
# are kilobytes; a member declaring more is refused instead of buffered.
MEMBER_LIMIT = 64 << 20

archive_bytes = cpio.write_archive
Member = cpio.Member


def _archive_decoder(inp: Input) -> Decoder | None:
    """The decoder for a compressed archive at `inp`, None for an uncompressed one.

    Each archive is one gzip member / xz stream / run of zstd frames; the decoder stops
    at its end and leaves the padding and the next archive in `inp` (the kernel's rule).
    """
    if sniff(inp.peek(6)) == "raw":
        return None
    return decoder_for(inp, concatenated=True, memlimit=_XZ_MEMLIMIT)


def _check_trailing(decoder: Decoder) -> None:
    """After the cpio trailer, a compressed archive may hold only zeros."""
    while chunk := decoder.read1(_CHUNK):
        if chunk.count(0) != len(chunk):
            raise FormatError("found trailing garbage inside compressed archive")


def iter_initrd(
    stream: Source,
    patterns: Sequence[str] | None = None,
    *,
    tee: Callable[[bytes], object] | None = None,
) -> Iterator[Member]:
    """Regular-file members matching any of `patterns` (all when None), in archive order,
    each with its data to be read (in bounded pieces) before asking for the next.

    A path may occur more than once; the last copy wins (the kernel's rule). `tee`
    receives every input byte exactly once, in order, so a caller can copy the input to
    an output while decoding it (`pxe customize`). The stream is read to EOF.
    """
    matcher = compile_globs(patterns) if patterns is not None else None

    def keep(name: str, mode: int) -> bool:
        if mode & cpio.S_IFMT != cpio.S_IFREG:
            return False
        return matcher is None or matcher(name)

    inp = Input(stream, tee=tee)
    inp.skip_zeros()  # the kernel skips NUL padding anywhere between archives
    while not inp.at_end():
        decoder = _archive_decoder(inp)
        read = decoder.read1 if decoder is not None else inp.read
        yield from cpio.iter_members(read, keep)
        if decoder is not None:
            _check_trailing(decoder)
            decoder.close()
        inp.skip_zeros()


def list_initrd(stream: Source, patterns: Sequence[str] | None = None) -> list[str]:
    """Sorted paths of the regular-file members (memory independent of member sizes)."""
    return sorted({m.name for m in iter_initrd(stream, patterns)})


def stage_initrd(
    stream: Source,
    patterns: Sequence[str] | None,
    directory: str,
    *,
    check_name: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Write each matching member's data, piece by piece, to a new 0600 file in
    `directory` (a private staging directory the caller owns and removes); return
    member path -> staged file, the last copy of a path winning.

    Nothing is kept in memory beyond one piece, whatever sizes the archive declares;
    `check_name` vets each path before any of its data is written.
    """
    staged: dict[str, str] = {}
    for index, member in enumerate(iter_initrd(stream, patterns)):
        if check_name is not None:
            check_name(member.name)
        path = os.path.join(directory, f"{index}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while data := member.read(_CHUNK):
                write_all(fd, data)
        finally:
            os.close(fd)
        old = staged.get(member.name)
        if old is not None:
            os.unlink(old)
        staged[member.name] = path
    return staged


def read_initrd_stream(
    stream: Source,
    patterns: Sequence[str] | None = None,
    *,
    tee: Callable[[bytes], object] | None = None,
    member_limit: int = MEMBER_LIMIT,
) -> dict[str, bytes]:
    """Regular-file members matching any of `patterns` (all when None), sorted by path,
    read into memory; a member larger than `member_limit` is an error (see iter_initrd)."""
    found: dict[str, bytes] = {}
    for member in iter_initrd(stream, patterns, tee=tee):
        found[member.name] = member.read_all(member_limit)
    return dict(sorted(found.items()))


def read_initrd(data: bytes, patterns: Sequence[str] | None = None) -> dict[str, bytes]:
    """Members of an in-memory initrd (see read_initrd_stream)."""
    return read_initrd_stream(io.BytesIO(data), patterns)


def compress(archive: bytes) -> bytes:
    """xz exactly as the kernel's decoder needs it (CRC32 check) and upstream hashes it."""
    return lzma.compress(archive, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)


def write_initrd(members: Mapping[str, bytes]) -> bytes:
    """The docs/compat.md#initrd-archive-format archive of `members`, xz-compressed (an empty map
    gives a trailer only)."""
    return compress(cpio.write_archive(members))


def network_patterns(profiles: Sequence[Profile] = ALL) -> list[str]:
    """Globs selecting the first-boot network keyfiles of every profile."""
    return [f"{p.initrd_network_dir}/*" for p in profiles]


def network_members(
    members: Mapping[str, bytes], profiles: Sequence[Profile] = ALL
) -> tuple[Profile | None, dict[str, bytes]]:
    """The keyfiles of the first profile (NestOS before CoreOS) that has any.

    An initrd normally carries one brand; if both are present the NestOS set is the
    one the NestOS live system reads, so it wins. Returns (None, {}) when there are none.
    """
    for profile in profiles:
        prefix = profile.initrd_network_dir + "/"
        found = {k: v for k, v in members.items() if k.startswith(prefix)}
        if found:
            return profile, found
    return None, {}

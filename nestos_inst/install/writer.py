"""Writing the image to the target (docs/compat.md#image-write).

The first MiB (partition tables, boot code) is held back: until the signature has been
verified the disk carries only an empty GPT (plus any saved partitions), so neither a
crash nor a tampered image can leave a table that looks bootable. Decompression runs in
one thread and `os.pwrite` in another (io.pipeline.copy_to_fd).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..disk.gpt import sniff_sector_size
from ..errors import NestosError
from ..io.compress import open_decompressed, passthrough
from ..io.limit import collision_message
from ..io.pipeline import copy_to_fd, pwrite_all, read_exact

if TYPE_CHECKING:
    from ..disk.saved import SavedPartitions
    from ..io.stream import Source

MiB = 1 << 20


@dataclass(frozen=True)
class WriteResult:
    sector_size: int | None  # as sniffed from the image's first MiB
    written: int  # decompressed bytes written (including the first MiB)
    first_mib: bytes


def write_image(
    source: Source,
    fd: int,
    *,
    saved: SavedPartitions | None,
    expected_sector_size: int | None,
    finish: Callable[[], None] | None = None,
    decompress: bool = True,
    size_limit: int | None = None,
    size_limit_message: str = "",
    copying: Callable[[], None] | None = None,
) -> WriteResult:
    """Stream `source` (bytes as served) onto `fd`; the first MiB goes on last.

    `finish` completes verification (GPG) after EOF; it runs before the first MiB is
    written so an image whose signature fails never becomes bootable. `size_limit` is the
    end of the target (regular files / devices) reported with `size_limit_message`.
    `copying` is called once the image's first MiB decoded and the bulk copy begins:
    work that may overlap the copy starts there, off the start-up's critical path.
    """
    reader = open_decompressed(source) if decompress else passthrough(source)
    try:
        first = read_exact(reader, MiB)
    except NestosError as exc:
        raise NestosError("decoding first MiB of image") from exc
    if len(first) < MiB:
        raise NestosError("decoding first MiB of image") from NestosError(
            "failed to fill whole buffer"
        )
    image_ss = sniff_sector_size(first)
    if (
        expected_sector_size is not None
        and image_ss is not None
        and image_ss != expected_sector_size
    ):
        raise NestosError(
            f"source has sector size {image_ss} but destination has sector size "
            f"{expected_sector_size}"
        )

    limit, message = _limit(saved, size_limit, size_limit_message)
    if limit is not None and limit < MiB:
        raise NestosError(message)

    # Deferred first MiB: the fresh (saved-only) table or zeros, made durable first.
    if saved is not None:
        saved.write_fresh_table(fd)
    else:
        pwrite_all(fd, bytes(MiB), 0)
    _fsync(fd)

    if copying is not None:
        copying()
    written = MiB + copy_to_fd(
        reader,
        fd,
        offset=MiB,
        limit=limit,
        limit_message=message,
    )
    if finish is not None:
        finish()

    if saved is not None and saved.entries:
        saved.merge(fd, first)
    else:
        pwrite_all(fd, first, 0)
    _fsync(fd)
    return WriteResult(image_ss, written, first)


def _limit(
    saved: SavedPartitions | None, size_limit: int | None, size_message: str
) -> tuple[int | None, str]:
    """The nearest of: first saved partition, end of target."""
    candidates: list[tuple[int, str]] = []
    if saved is not None and saved.limit_offset is not None:
        conflict = saved.limit_message or "saved partition"
        candidates.append((saved.limit_offset, collision_message(conflict, saved.limit_offset)))
    if size_limit is not None:
        candidates.append((size_limit, size_message))
    if not candidates:
        return None, ""
    return min(candidates, key=lambda c: c[0])


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise NestosError("syncing data to disk") from exc

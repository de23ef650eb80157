"""osmet as an install image source (docs/compat.md#image-source, #osmet-unpack).

`OsmetSource` satisfies the download helper's `ImageSource` protocol structurally: the
bytes it serves are the raw rebuilt disk image (the decompressor sniffs them as raw),
and no signature is needed because the live system's own files are trusted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import NestosError
from ..profile import ALL
from .format import Header, OsmetFile, read_file, read_file_header
from .unpack import OsmetReader, open_image

DEFAULT_REPO = Path("/sysroot/ostree/repo")


def default_dirs() -> list[Path]:
    """Where a live system keeps its osmet files, NestOS first."""
    return [Path(p.osmet_dir) for p in ALL]


class OsmetSource:
    """A rebuilt-on-the-fly disk image; `open()` checks every object before reading."""

    def __init__(self, osmet_file: OsmetFile, repo: Path) -> None:
        self.osmet_file = osmet_file
        self.repo = repo
        h = osmet_file.header
        self.artifact_type: str = "disk"
        self.filename: str = f"{osmet_file.path.stem}.raw"
        self.length: int | None = osmet_file.osmet.size
        self.description: str = (
            f"Installing {h.os_description} {h.os_architecture} ({h.sector_size}-byte sectors)"
        )
        self.sha256: str | None = None

    @property
    def header(self) -> Header:
        return self.osmet_file.header

    def open(self) -> OsmetReader:
        return open_image(self.osmet_file, self.repo)

    def signature(self) -> bytes | None:
        return None


def find_osmet(
    architecture: str, sector_size: int, dirs: Sequence[Path], repo: Path
) -> OsmetSource | None:
    """First osmet file (directory order, regular files only) matching arch and sector
    size; a missing directory means none, an unreadable file aborts the search."""
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise NestosError(f"listing {str(d)!r}") from exc
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            path = Path(entry.path)
            try:
                header = read_file_header(path)
            except NestosError as exc:
                raise NestosError(f"reading osmet file {str(path)!r}") from exc
            if header.os_architecture == architecture and header.sector_size == sector_size:
                try:
                    osmet_file = read_file(path)
                except NestosError as exc:
                    raise NestosError(f"reading osmet file {str(path)!r}") from exc
                return OsmetSource(osmet_file, repo)
    return None

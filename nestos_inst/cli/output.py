"""Files and listings the media commands write: create-new files, extracted keyfiles.

Shared by `iso network extract`, `pxe network unwrap` and `dev extract initrd` so the
three produce the same bytes and refuse the same existing targets.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from ..errors import context


def create_new(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write a new file; an existing one (or a symlink in its place) is an error."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    with context(f"opening {path}"):
        fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as f, context(f"writing {path}"):
        f.write(data)


def refuse_existing(paths: Sequence[str]) -> None:
    """Fail before writing anything if a target exists (create-new would fail later)."""
    for path in paths:
        if os.path.lexists(path):
            with context(f"opening {path}"):
                raise FileExistsError(17, os.strerror(17), path)


def print_path(path: str) -> None:
    """Paths as raw bytes: independent of the locale's encoding, like upstream."""
    out = sys.stdout.buffer
    out.write(os.fsencode(path) + b"\n")
    out.flush()


def show_keyfiles(members: Mapping[str, bytes], out: BinaryIO) -> None:
    """`########## name ##########` headers, a blank line between files (§3.5)."""
    for i, (path, data) in enumerate(sorted(members.items())):
        if i:
            out.write(b"\n")
        out.write(f"########## {os.path.basename(path)} ##########\n".encode())
        out.write(data)
    out.flush()


def extract_keyfiles(members: Mapping[str, bytes], directory: str) -> list[str]:
    """Write each keyfile as DIR/<basename> (create-new, 0600: they may hold secrets)."""
    targets = {path: os.path.join(directory, os.path.basename(path)) for path in members}
    refuse_existing(list(targets.values()))
    with context(f"creating directory {directory}"):
        os.makedirs(directory, exist_ok=True)
    written = []
    for path in sorted(members):
        create_new(targets[path], members[path], 0o600)
        written.append(targets[path])
    return written


def write_keyfiles(members: Mapping[str, bytes], directory: str | None) -> None:
    """Keyfiles on stdout with banners, or as DIR/<basename> files listed on stdout."""
    if directory is None:
        show_keyfiles(members, sys.stdout.buffer)
        return
    for path in extract_keyfiles(members, directory):
        print_path(path)


def add_keyfile_option(p: argparse.ArgumentParser) -> None:
    """`-k/--keyfile` of the network embed/wrap commands."""
    p.add_argument(
        "-k",
        "--keyfile",
        metavar="path",
        action="append",
        required=True,
        help="NetworkManager keyfile to embed",
    )


def add_directory_option(p: argparse.ArgumentParser) -> None:
    """`-C/--directory` of the network extract/unwrap commands."""
    p.add_argument(
        "-C", "--directory", metavar="path", help="Extract to directory instead of stdout"
    )

"""Listings and extracted keyfiles the media commands write (files via io.files).

Shared by `iso network extract`, `pxe network unwrap` and `dev extract initrd` so the
three produce the same bytes and refuse the same existing targets.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import BinaryIO

from ..io.files import SECRET_MODE, Created, create_new, refuse_existing
from .help import explain


def print_path(path: str) -> None:
    """Paths as raw bytes: independent of the locale's encoding, like upstream."""
    out = sys.stdout.buffer
    out.write(os.fsencode(path) + b"\n")
    out.flush()


def show_keyfiles(members: Mapping[str, bytes], out: BinaryIO) -> None:
    """`########## name ##########` headers, a blank line between files
    (docs/compat.md#pxe-commands)."""
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
    written = []
    with Created() as created:
        created.makedirs(directory)
        for path in sorted(members):
            create_new(targets[path], members[path], SECRET_MODE)
            created.add(targets[path])
            written.append(targets[path])
    return written


def write_keyfiles(members: Mapping[str, bytes], directory: str | None) -> None:
    """Keyfiles on stdout with banners, or as DIR/<basename> files listed on stdout."""
    if directory is None:
        show_keyfiles(members, sys.stdout.buffer)
        return
    for path in extract_keyfiles(members, directory):
        print_path(path)


def add_keyfile_option(p: argparse.ArgumentParser, doc: str) -> None:
    """`-k/--keyfile` of the network embed/wrap commands; `doc` says where they go."""
    explain(
        p.add_argument(
            "-k",
            "--keyfile",
            metavar="PATH",
            action="append",
            required=True,
            help="NetworkManager keyfile to embed",
        ),
        doc,
    )


def add_directory_option(p: argparse.ArgumentParser) -> None:
    """`-C/--directory` of the network extract/unwrap commands."""
    explain(
        p.add_argument(
            "-C", "--directory", metavar="PATH", help="Extract to directory instead of stdout"
        ),
        "Write each keyfile to PATH/NAME and print the paths, instead of printing the "
        "keyfiles themselves (each after a ########## NAME ########## line). PATH is "
        "created if needed and the files get mode 0600, since keyfiles may hold secrets. "
        "Existing files are never overwritten: if any target exists, nothing is written.",
    )

"""Hidden osmet commands: `pack osmet`, `dev show fiemap`, `dev extract osmet`
(docs/compat.md#hidden-commands)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .help import explain

if TYPE_CHECKING:
    from . import Registry


def _pack(args: argparse.Namespace) -> int:
    from ..disk.mount import enter_private_mount_namespace
    from ..osmet.pack import pack, parse_checksum

    parse_checksum(args.checksum)
    enter_private_mount_namespace()
    pack(Path(args.dev), Path(args.output), args.checksum, args.description, fast=args.fast)
    return 0


def _show_fiemap(args: argparse.Namespace) -> int:
    from ..osmet.fiemap import fiemap_path
    from .common import restore_sigpipe

    restore_sigpipe()
    extents = fiemap_path(Path(args.path))
    doc = {
        "extents": [
            {"logical": e.logical, "physical": e.physical, "length": e.length} for e in extents
        ]
    }
    print(json.dumps(doc, indent=2))
    return 0


def _extract(args: argparse.Namespace) -> int:
    from ..osmet.unpack import unpack_to_device

    unpack_to_device(Path(args.osmet), Path(args.repo), Path(args.dev))
    return 0


def register(reg: Registry) -> None:
    """Register this module's working commands."""
    p = reg.command("pack osmet", "Create osmet file from CoreOS block device", _pack, hidden=True)
    explain(
        p.add_argument(
            "--output", metavar="FILE", required=True, help="Path to osmet file to write"
        ),
        "Where to write the osmet file. It is built in a temporary file next to FILE "
        "(nestos-installer-osmet*.partial) and renamed over FILE only after it was unpacked "
        "against the same OSTree repo and reproduced --checksum.",
    )
    explain(
        p.add_argument(
            "--checksum", metavar="SHA256", required=True, help="Expected SHA256 of block device"
        ),
        "SHA-256 of the whole metal image on DEV, in lower-case hex. It is stored in the "
        "osmet file: the check at the end of packing and every later install compare the "
        "rebuilt image with it.",
    )
    explain(
        p.add_argument(
            "--description", metavar="TEXT", required=True, help="OS description to use in osmet"
        ),
        "Name of the OS build stored in the osmet file (e.g. NestOS 24.03.20240101); an "
        "offline install prints it (Installing TEXT ARCH (N-byte sectors)).",
    )
    explain(
        p.add_argument("--fast", action="store_true", help="Fast mode (generates a larger osmet)"),
        "Compress the packed data with xz preset 0 instead of 9: much quicker to build, "
        "noticeably larger. Meant for development builds.",
    )
    explain(
        p.add_argument("dev", metavar="DEV", help="Source device"),
        "Block device holding the metal image with its partitions visible (losetup -f "
        "--show -P, or partx -a). The partitions labelled boot and root are mounted "
        "read-only in a private mount namespace, without log replay, so the image is not "
        "changed while it is read.",
    )

    p = reg.command("dev show fiemap", "Print file extents", _show_fiemap, hidden=True)
    explain(
        p.add_argument("path", metavar="PATH", help="File name"),
        "File whose extents to print as JSON (logical offset, physical offset and length "
        "in bytes, as the FIEMAP ioctl reports them).",
    )

    p = reg.command("dev extract osmet", "Extract image from osmet file", _extract, hidden=True)
    explain(
        p.add_argument("--osmet", metavar="PATH", required=True, help="osmet file"),
        "The osmet file to rebuild the image from.",
    )
    explain(
        p.add_argument("repo", metavar="REPO", help="Path to OSTree repo"),
        "OSTree repository holding the objects the osmet file refers to (on a live system "
        "/sysroot/ostree/repo). Every object is checked before the first byte is written.",
    )
    explain(
        p.add_argument("dev", metavar="DEV", help="Destination device"),
        "Where to write the rebuilt image. As in install, the first MiB is written last, "
        "once the image's SHA-256 matched; after a failure it is left zeroed.",
    )

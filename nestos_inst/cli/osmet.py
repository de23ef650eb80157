"""Hidden osmet commands: `pack osmet`, `dev show fiemap`, `dev extract osmet`
(docs/compat.md#hidden-commands)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

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
    p.add_argument("--output", metavar="FILE", required=True, help="Path to osmet file to write")
    p.add_argument(
        "--checksum", metavar="SHA256", required=True, help="Expected SHA256 of block device"
    )
    p.add_argument(
        "--description", metavar="TEXT", required=True, help="OS description to use in osmet"
    )
    p.add_argument("--fast", action="store_true", help="Fast mode (generates a larger osmet)")
    p.add_argument("dev", metavar="DEV", help="Source device")

    p = reg.command("dev show fiemap", "Print file extents", _show_fiemap, hidden=True)
    p.add_argument("path", metavar="PATH", help="File name")

    p = reg.command("dev extract osmet", "Extract image from osmet file", _extract, hidden=True)
    p.add_argument("--osmet", metavar="PATH", required=True, help="osmet file")
    p.add_argument("repo", metavar="REPO", help="Path to OSTree repo")
    p.add_argument("dev", metavar="DEV", help="Destination device")

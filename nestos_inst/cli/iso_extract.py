"""`iso extract pxe`, `iso extract minimal-iso` and the hidden `pack minimal-iso`
(docs/compat.md#iso-extract, #minimal-iso, #commands, #hidden-commands). The work is in
nestos_inst.media.extract."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..media import extract
from .common import binary_stdout

if TYPE_CHECKING:
    from . import Registry


def _print_path(path: str) -> None:
    sys.stdout.write(path + "\n")
    sys.stdout.flush()


def cmd_extract_pxe(args: argparse.Namespace) -> None:
    extract.extract_pxe(args.iso, args.output_dir, _print_path)


def _stdout_fd() -> int:
    out = binary_stdout()
    out.flush()
    return out.fileno()


def cmd_extract_minimal_iso(args: argparse.Namespace) -> None:
    output: extract.Output = _stdout_fd if args.output_iso == "-" else args.output_iso
    extract.extract_minimal_iso(args.iso, output, args.output_rootfs, args.rootfs_url)


def cmd_pack_minimal_iso(args: argparse.Namespace) -> None:
    extract.pack_minimal_iso(args.full_iso, args.minimal_iso, args.consume)


# ---- registration -----------------------------------------------------------------------


def register(reg: Registry) -> None:
    p = reg.command("iso extract pxe", "Extract PXE files from an ISO image", cmd_extract_pxe)
    p.add_argument(
        "-o",
        "--output-dir",
        metavar="PATH",
        default=".",
        help="Output directory [default: .]",
    )
    p.add_argument("iso", metavar="ISO", help="ISO image")

    p = reg.command(
        "iso extract minimal-iso",
        "Extract a minimal ISO from a live ISO image",
        cmd_extract_minimal_iso,
    )
    p.add_argument("--output-rootfs", metavar="PATH", help="Extract rootfs image as well")
    p.add_argument("--rootfs-url", metavar="URL", help="Inject rootfs URL karg into minimal ISO")
    p.add_argument("iso", metavar="ISO", help="ISO image")
    p.add_argument(
        "output_iso",
        metavar="OUTPUT_ISO",
        nargs="?",
        default="-",
        help="Minimal ISO output file [default: -]",
    )

    p = reg.command(
        "pack minimal-iso",
        "Pack a minimal ISO into a live ISO image",
        cmd_pack_minimal_iso,
        hidden=True,
    )
    p.add_argument("full_iso", metavar="FULL_ISO", help="ISO image")
    p.add_argument("minimal_iso", metavar="MINIMAL_ISO", help="Minimal ISO image")
    p.add_argument("--consume", action="store_true", help="Delete minimal ISO after packing")

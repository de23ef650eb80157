"""`iso extract pxe`, `iso extract minimal-iso` and the hidden `pack minimal-iso`
(docs/compat.md#iso-extract, #minimal-iso, #commands, #hidden-commands). The work is in
nestos_inst.media.extract."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .common import binary_stdout
from .help import explain

if TYPE_CHECKING:
    from ..media import extract
    from . import Registry


def _print_path(path: str) -> None:
    sys.stdout.write(path + "\n")
    sys.stdout.flush()


def cmd_extract_pxe(args: argparse.Namespace) -> None:
    from ..media import extract  # imported by the command that runs it

    extract.extract_pxe(args.iso, args.output_dir, _print_path)


def _stdout_fd() -> int:
    out = binary_stdout()
    out.flush()
    return out.fileno()


def cmd_extract_minimal_iso(args: argparse.Namespace) -> None:
    from ..media import extract  # imported by the command that runs it

    output: extract.Output = _stdout_fd if args.output_iso == "-" else args.output_iso
    extract.extract_minimal_iso(args.iso, output, args.output_rootfs, args.rootfs_url)


def cmd_pack_minimal_iso(args: argparse.Namespace) -> None:
    from ..media import extract  # imported by the command that runs it

    extract.pack_minimal_iso(args.full_iso, args.minimal_iso, args.consume)


# ---- registration -----------------------------------------------------------------------


def register(reg: Registry) -> None:
    p = reg.command("iso extract pxe", "Extract PXE files from an ISO image", cmd_extract_pxe)
    explain(
        p.add_argument(
            "-o",
            "--output-dir",
            metavar="PATH",
            default=".",
            help="Output directory [default: .]",
        ),
        "Directory to write the PXE files to, created if needed. Every file of "
        "/images/pxeboot in the ISO (kernel, initramfs, rootfs) becomes "
        "PATH/<ISO name without extension>-<file name>, and each path is printed. Existing "
        "files are never overwritten (File exists).\n\n[default: .]",
    )
    explain(
        p.add_argument("iso", metavar="ISO", help="ISO image"),
        "The live ISO image to copy the PXE files from (never modified).",
    )

    p = reg.command(
        "iso extract minimal-iso",
        "Extract a minimal ISO from a live ISO image",
        cmd_extract_minimal_iso,
    )
    explain(
        p.add_argument("--output-rootfs", metavar="PATH", help="Extract rootfs image as well"),
        "Also save the live root filesystem image (/images/pxeboot/rootfs.img) to PATH: "
        "the file to serve at the --rootfs-url the minimal ISO boots from. PATH must not "
        "exist yet, and a failed run leaves no partial file behind.",
    )
    explain(
        p.add_argument(
            "--rootfs-url", metavar="URL", help="Inject rootfs URL karg into minimal ISO"
        ),
        "Add nestos.live.rootfs_url=URL (coreos.live.rootfs_url= on CoreOS media) to the "
        "minimal ISO's current kernel arguments, so that its live system fetches the root "
        "filesystem from URL. The default kernel arguments (what iso kargs reset restores) "
        "stay without it. The URL may not contain whitespace.",
    )
    explain(
        p.add_argument("iso", metavar="ISO", help="ISO image"),
        "The live ISO image carrying the minimal ISO (NESTOS/MINISO.DAT, or COREOS/ on "
        "CoreOS media). It must be pristine: an embedded Ignition config or changed kernel "
        "arguments are refused, so run iso reset on it (or on a copy) first. It is never "
        "modified.",
    )
    explain(
        p.add_argument(
            "output_iso",
            metavar="OUTPUT_ISO",
            nargs="?",
            default="-",
            help="Minimal ISO output file [default: -]",
        ),
        "Where to write the minimal ISO; - streams it to stdout (refused when stdout is a "
        "terminal). The image is rebuilt in a private temporary file, checked against the "
        "SHA-256 recorded when the live ISO was built, and only then appears under its "
        "name; an existing file is never overwritten.\n\n[default: -]",
    )

    p = reg.command(
        "pack minimal-iso",
        "Pack a minimal ISO into a live ISO image",
        cmd_pack_minimal_iso,
        hidden=True,
    )
    explain(
        p.add_argument("full_iso", metavar="FULL_ISO", help="ISO image"),
        "The live ISO to pack the minimal ISO into. Its existing MINISO.DAT file is "
        "rewritten in place (the packed data must fit; the rest is zeroed); nothing else "
        "in the image changes.",
    )
    explain(
        p.add_argument("minimal_iso", metavar="MINIMAL_ISO", help="Minimal ISO image"),
        "The minimal ISO built from the same tree. Files it shares with FULL_ISO (same "
        "path and length) are stored as references, everything else xz-compressed. The "
        "packed data is unpacked again and must reproduce this file's SHA-256 before "
        "FULL_ISO is touched.",
    )
    explain(
        p.add_argument("--consume", action="store_true", help="Delete minimal ISO after packing"),
        "Delete MINIMAL_ISO once it has been packed successfully, for build pipelines that "
        "have no further use for it.",
    )

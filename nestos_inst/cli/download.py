"""CLI registration for `download` and `list-stream` (the work is in nestos_inst.download)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..net.retries import parse_retries
from ..profile import DEFAULT

if TYPE_CHECKING:
    from . import Registry


def retries_arg(text: str) -> int | None:
    """argparse type for --fetch-retries: a number or `infinite` (usage error otherwise)."""
    try:
        return parse_retries(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_download(args: argparse.Namespace) -> int:
    from ..download import cmd_download as run

    return run(args)


def cmd_list_stream(args: argparse.Namespace) -> int:
    from ..download import cmd_list_stream as run

    return run(args)


def register(reg: Registry) -> None:
    """Register this module's working commands."""
    p = reg.command("download", "Download a NestOS image", cmd_download)
    p.add_argument(
        "-s",
        "--stream",
        default=DEFAULT.default_stream,
        metavar="NAME",
        help="NestOS stream (default: %(default)s)",
    )
    p.add_argument(
        "-a",
        "--architecture",
        default=os.uname().machine,
        metavar="NAME",
        help="Target CPU architecture (default: %(default)s)",
    )
    p.add_argument(
        "-p",
        "--platform",
        default="metal",
        metavar="NAME",
        help="NestOS platform name (default: %(default)s)",
    )
    p.add_argument(
        "-f",
        "--format",
        default="raw.xz",
        metavar="NAME",
        help="Image format (default: %(default)s)",
    )
    p.add_argument("-u", "--image-url", metavar="URL", help="Manually specify the image URL")
    p.add_argument(
        "-C",
        "--directory",
        default=".",
        metavar="PATH",
        help="Destination directory (default: %(default)s)",
    )
    p.add_argument("-d", "--decompress", action="store_true", help="Decompress image")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="Skip signature verification (only when the signature is missing)",
    )
    p.add_argument(
        "--keyring",
        action="append",
        type=Path,
        metavar="FILE",
        help="Also trust the armored public keys in FILE (repeatable)",
    )
    p.add_argument("--stream-base-url", metavar="URL", help="Base URL for stream metadata")
    p.add_argument(
        "--fetch-retries",
        type=retries_arg,
        default=0,
        metavar="N",
        help="Fetch retries, or 'infinite' (default: 0)",
    )

    ls = reg.command("list-stream", "List available images in a NestOS stream", cmd_list_stream)
    ls.add_argument(
        "-s",
        "--stream",
        default=DEFAULT.default_stream,
        metavar="NAME",
        help="NestOS stream (default: %(default)s)",
    )
    ls.add_argument("--stream-base-url", metavar="URL", help="Base URL for stream metadata")
    ls.add_argument("--json", action="store_true", help="Print the rows as JSON")

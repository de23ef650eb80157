"""`download` and `list-stream`: parse, call nestos_inst.download, print the paths."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..net.retries import parse_retries
from ..profile import BY_NAME, DEFAULT
from ..report import say
from .common import add_profile_option, restore_sigpipe
from .help import explain

if TYPE_CHECKING:
    from . import Registry


def retries_arg(text: str) -> int | None:
    """argparse type for --fetch-retries: a number or `infinite` (usage error otherwise)."""
    try:
        return parse_retries(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def timeout_arg(text: str) -> float:
    """argparse type for --fetch-timeout: the network layer's parser (install's too)."""
    from ..net.http import parse_timeout

    try:
        return parse_timeout(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_download(args: argparse.Namespace) -> int:
    from ..download import Options, download_artifact, sources_for
    from ..net.http import set_fetch_timeout

    if args.fetch_timeout is not None:
        set_fetch_timeout(args.fetch_timeout)

    opts = Options(
        directory=Path(args.directory),
        decompress=args.decompress,
        insecure=args.insecure,
        keyrings=tuple(args.keyring or ()),
        profile=BY_NAME[args.profile],
    )
    sources = sources_for(
        args.image_url,
        stream=args.stream,
        architecture=args.architecture,
        platform=args.platform,
        fmt=args.format,
        stream_base_url=args.stream_base_url,
        retries=args.fetch_retries,
        profile=BY_NAME[args.profile],
    )
    say(sources[0].description)
    for src in sources:
        path = download_artifact(src, opts)
        # Printed like upstream's Path::join: `-C .` gives `./name`.
        sys.stdout.write(os.path.join(args.directory, path.name) + "\n")
        sys.stdout.flush()
    return 0


def cmd_list_stream(args: argparse.Namespace) -> int:
    from ..net.stream import fetch_stream, format_table, stream_url

    restore_sigpipe()
    base = args.stream_base_url or BY_NAME[args.profile].stream_base_url
    meta = fetch_stream(stream_url(args.stream, base), retries=0)
    rows = meta.rows()
    if args.json:
        doc = [{"architecture": a, "platform": p, "format": f} for a, p, f in rows]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(format_table(rows))
    return 0


def _stream_base_url(p: argparse.ArgumentParser) -> None:
    explain(
        p.add_argument("--stream-base-url", metavar="URL", help="Base URL for stream metadata"),
        "Fetch the stream metadata, STREAM.json, relative to URL (a mirror, say; end URL "
        "with / to keep its last path segment) instead of from the profile's stream server "
        "(NestOS's, or Fedora CoreOS's with --profile coreos). Only http and https URLs "
        "work.",
    )


def register(reg: Registry) -> None:
    """Register this module's working commands."""
    p = reg.command("download", "Download a NestOS image", cmd_download)
    explain(
        p.add_argument(
            "-s",
            "--stream",
            default=DEFAULT.default_stream,
            metavar="NAME",
            help="NestOS stream [default: %(default)s]",
        ),
        "The stream to take the image from (stable, testing...). Its metadata is "
        "fetched from the stream base URL and names the newest build's artifacts.\n\n"
        "[default: %(default)s]",
    )
    explain(
        p.add_argument(
            "-a",
            "--architecture",
            default=os.uname().machine,
            metavar="NAME",
            help="Target CPU architecture [default: %(default)s]",
        ),
        "CPU architecture of the image (x86_64, aarch64...), as the stream metadata names "
        "it. Defaults to the architecture of the running machine.\n\n"
        "[default: %(default)s]",
    )
    explain(
        p.add_argument(
            "-p",
            "--platform",
            default="metal",
            metavar="NAME",
            help="NestOS platform name [default: %(default)s]",
        ),
        "Platform of the image (metal, qemu, openstack...), as the stream metadata names "
        "it; list-stream shows the combinations a stream offers.\n\n"
        "[default: %(default)s]",
    )
    explain(
        p.add_argument(
            "-f",
            "--format",
            default="raw.xz",
            metavar="NAME",
            help="Image format [default: %(default)s]",
        ),
        "Format of the image (raw.xz, iso, pxe, qcow2.xz...), as the stream metadata names "
        "it. A format made of several files (pxe: kernel, initramfs, rootfs) downloads "
        "each of them.\n\n[default: %(default)s]",
    )
    explain(
        p.add_argument("-u", "--image-url", metavar="URL", help="Manually specify the image URL"),
        "Download this URL instead of looking the image up in a stream (--stream, "
        "--architecture, --platform and --format are then unused). Its signature is "
        "fetched from the same URL with .sig appended and must verify unless --insecure "
        "is given.",
    )
    explain(
        p.add_argument(
            "-C",
            "--directory",
            default=".",
            metavar="PATH",
            help="Destination directory [default: %(default)s]",
        ),
        "Directory to save the files in; each saved path is printed on stdout. A file "
        "already there is reused only when its .sig equals the published signature and "
        "it verifies; otherwise it is replaced once the new download has verified.\n\n"
        "[default: %(default)s]",
    )
    explain(
        p.add_argument("-d", "--decompress", action="store_true", help="Decompress image"),
        "Write the image decompressed (.xz and .gz names lose their suffix; .tar.* "
        "archives and other formats are kept as they are). The signature is checked on "
        "the compressed bytes as they arrive; no .sig file is written.",
    )
    explain(
        p.add_argument("--insecure", action="store_true", help="Skip signature verification"),
        "Do not verify signatures at all: an image without one is downloaded (and says "
        "so), and a signature that is there is not checked either. Neither trusted keys "
        "nor the GPGME binding are needed then.",
    )
    explain(
        p.add_argument(
            "--keyring",
            action="append",
            type=Path,
            metavar="FILE",
            help="Also trust the armored public keys in FILE (repeatable)",
        ),
        "Trust the OpenPGP public keys in FILE for this download, in addition to the "
        "profile's built-in keys and the key directories "
        "(PREFIX/share/nestos-installer/keys.d/ and /etc/nestos-installer/keys.d/). "
        "Repeatable.",
    )
    _stream_base_url(p)
    explain(
        p.add_argument(
            "--fetch-retries",
            type=retries_arg,
            default=0,
            metavar="N",
            help="Fetch retries, or 'infinite' [default: 0]",
        ),
        "How many times to retry a failed fetch (stream metadata, signature, image), "
        "waiting 1 s, then 2 s, 4 s... up to 10 minutes between tries; infinite never "
        "gives up. A transfer that breaks in the middle resumes where it stopped.\n\n"
        "[default: 0]",
    )
    explain(
        p.add_argument(
            "--fetch-timeout",
            type=timeout_arg,
            metavar="SECS",
            help="Seconds to wait for a connection or for more data [default: 300]",
        ),
        "How long to wait for a server to accept the connection, and then for each further "
        "piece of data, before the fetch counts as failed (and is retried if "
        "--fetch-retries allows).\n\n[default: 300]",
    )
    add_profile_option(p)

    ls = reg.command("list-stream", "List available images in a NestOS stream", cmd_list_stream)
    explain(
        ls.add_argument(
            "-s",
            "--stream",
            default=DEFAULT.default_stream,
            metavar="NAME",
            help="NestOS stream [default: %(default)s]",
        ),
        "The stream whose newest build to list (stable, testing...).\n\n[default: %(default)s]",
    )
    _stream_base_url(ls)
    explain(
        ls.add_argument("--json", action="store_true", help="Print the rows as JSON"),
        "Print the rows as a JSON list of objects with architecture, platform and format "
        "keys instead of a table, for scripts.",
    )
    add_profile_option(ls)

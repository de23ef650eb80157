"""`iso ignition|network|kargs|reset`, the deprecated `iso embed|show|remove`, and
the hidden `dev show iso` (docs/compat.md#iso-commands, #karg-areas, #commands)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, NestosError
from ..io.files import IGNITION_LIMIT, KEYFILE_LIMIT, read_limited
from ..report import say
from .common import binary_stdout, restore_sigpipe
from .help import explain
from .output import add_directory_option, add_keyfile_option, write_keyfiles

if TYPE_CHECKING:
    from ..formats.embed import IsoConfig
    from ..media import iso as media
    from . import Registry

# The ISO code (media/, formats/) is imported by the commands that run it, not when the
# command line is built: other commands start without it.

ISO_HELP = "ISO image"
OUTPUT_HELP = "Write ISO to a new output file"


def output_target(output: str | None) -> media.Target:
    """`-o -` streams to stdout (refusing a terminal before any work), else a path."""
    if output != "-":
        return output
    out = binary_stdout()
    out.flush()
    return out.fileno()


def modify_iso(path: str, output: str | None, edit: Callable[[IsoConfig], None]) -> None:
    from ..media import iso as media

    media.modify_iso(path, output_target(output), edit)


def read_input(path: str | None, limit: int = IGNITION_LIMIT) -> bytes:
    """All of FILE, or all of stdin, up to `limit` bytes (an Ignition config's)."""
    return read_limited(path, limit, message="reading stdin" if path is None else f"reading {path}")


def read_keyfile(path: str) -> bytes:
    return read_input(path, KEYFILE_LIMIT)


# ---- ignition ---------------------------------------------------------------------------


def _ignition_embed(iso_path: str, config_path: str | None, force: bool, out: str | None) -> None:
    from ..media import iso as media

    config = read_input(config_path)
    modify_iso(iso_path, out, media.embed_ignition(config, force=force))


def _ignition_show(iso_path: str) -> None:
    from ..media import iso as media

    restore_sigpipe()
    config = media.read_iso(iso_path).ignition()
    if config is None:
        raise NestosError("No embedded Ignition config.")
    out = sys.stdout.buffer
    out.write(config)
    out.flush()


def _ignition_remove(iso_path: str, out: str | None) -> None:
    from ..media import iso as media

    modify_iso(iso_path, out, media.remove_ignition)


def cmd_ignition_embed(args: argparse.Namespace) -> None:
    _ignition_embed(args.iso, args.ignition_file, args.force, args.output)


def cmd_ignition_show(args: argparse.Namespace) -> None:
    _ignition_show(args.iso)


def cmd_ignition_remove(args: argparse.Namespace) -> None:
    _ignition_remove(args.iso, args.output)


def _deprecated(old: str, new: str) -> None:
    say(f"`{old}` is deprecated; use `{new}`.  Continuing.")


def cmd_embed(args: argparse.Namespace) -> None:
    _deprecated("iso embed", "iso ignition embed")
    _ignition_embed(args.iso, args.config, args.force, args.output)


def cmd_show(args: argparse.Namespace) -> None:
    _deprecated("iso show", "iso ignition show")
    _ignition_show(args.iso)


def cmd_remove(args: argparse.Namespace) -> None:
    _deprecated("iso remove", "iso ignition remove")
    _ignition_remove(args.iso, args.output)


# ---- network ----------------------------------------------------------------------------


def cmd_network_embed(args: argparse.Namespace) -> None:
    from ..media import iso as media

    modify_iso(
        args.iso, args.output, media.embed_network(args.keyfile, read_keyfile, force=args.force)
    )


def cmd_network_extract(args: argparse.Namespace) -> None:
    from ..media import iso as media

    if args.directory is None:
        restore_sigpipe()
    files = media.network_files(args.iso)
    if not files:
        raise NestosError("No embedded network settings.")
    write_keyfiles(files, args.directory)


def cmd_network_remove(args: argparse.Namespace) -> None:
    from ..media import iso as media

    modify_iso(args.iso, args.output, media.remove_network)


# ---- kargs ------------------------------------------------------------------------------


def cmd_kargs_modify(args: argparse.Namespace) -> None:
    from ..media import iso as media

    edit = media.modify_iso_kargs(
        delete=args.delete or (), append=args.append or (), replace=args.replace or ()
    )
    modify_iso(args.iso, args.output, edit)


def cmd_kargs_reset(args: argparse.Namespace) -> None:
    from ..media import iso as media

    modify_iso(args.iso, args.output, media.reset_kargs)


def cmd_kargs_show(args: argparse.Namespace) -> None:
    from ..media import iso as media

    restore_sigpipe()
    areas = media.read_iso(args.iso).require_kargs()
    text = areas.default if args.default else areas.current
    sys.stdout.buffer.write(text.encode() + b"\n")
    sys.stdout.buffer.flush()


def cmd_reset(args: argparse.Namespace) -> None:
    from ..media import iso as media

    modify_iso(args.iso, args.output, media.reset)


# ---- dev show iso -----------------------------------------------------------------------


def _print_json(obj: Any) -> None:
    sys.stdout.buffer.write(json.dumps(obj, indent=2, ensure_ascii=False).encode() + b"\n")
    sys.stdout.buffer.flush()


def cmd_dev_show_iso(args: argparse.Namespace) -> None:
    from ..formats.embed import find_karg_areas
    from ..formats.iso9660 import IsoFs
    from ..media import iso as media

    restore_sigpipe()
    fd = media.open_iso(args.iso, writable=False)
    try:
        if args.ignition:
            _print_json(media.load_iso(fd).initrd_json())
            return
        try:
            fs = IsoFs(fd)
        except FormatError as exc:
            raise FormatError("parsing ISO9660 image") from exc
        if args.kargs:
            from ..formats.embed import detect_profile

            areas = find_karg_areas(fs, detect_profile(fs))
            _print_json(None if areas is None else areas.to_json())
            return
        _print_json(
            {
                "header": {"descriptors": [d.to_json() for d in fs.descriptors]},
                "records": [path for path, _ in fs.walk()],
            }
        )
    finally:
        os.close(fd)


# ---- registration -----------------------------------------------------------------------

OUTPUT_DOC = (
    "Write the result to PATH, a new file, instead of changing ISO in place. The image is "
    "copied (reflinked or with holes kept where the filesystem allows) into a private "
    "temporary file beside PATH, patched, and only then linked to PATH; an existing PATH "
    "is refused (File exists) and a failure leaves nothing behind.\n\n"
    "With - the image is streamed to stdout instead, which is refused when stdout is a "
    "terminal. Without -o only the changed areas of ISO are rewritten, which is fast even "
    "for a multi-GiB image. All three forms produce the same bytes."
)
ISO_DOC_MODIFY = (
    "The live ISO image to change (in place unless -o is given). A block device holding "
    "the image, such as a USB stick it was written to, works too. NestOS and CoreOS "
    "layouts are both recognized; nothing is written unless every area of the image "
    "checks out."
)
ISO_DOC_READ = (
    "The live ISO image to read (never modified). A block device holding the image works "
    "too; NestOS and CoreOS layouts are both recognized."
)
KARG_ORDER = (
    "Whatever the order on the command line, deletions are applied first, then appends, "
    "then replacements. The result must fit the image's fixed-size karg slots (typically "
    "1139 bytes), else nothing is written (kargs too large for area)."
)


def _output(p: argparse.ArgumentParser) -> None:
    explain(p.add_argument("-o", "--output", metavar="PATH", help=OUTPUT_HELP), OUTPUT_DOC)


def _iso(p: argparse.ArgumentParser, *, modifies: bool = True) -> None:
    explain(
        p.add_argument("iso", metavar="ISO", help=ISO_HELP),
        ISO_DOC_MODIFY if modifies else ISO_DOC_READ,
    )


def _ignition_config_option(p: argparse.ArgumentParser, *flags: str) -> None:
    explain(
        p.add_argument(*flags, metavar="PATH", help="Ignition config to embed [default: stdin]"),
        "The Ignition config to embed, stored as given (it is not validated) as config.ign "
        "in the image's embed area, where the live system's Ignition finds it at boot. "
        "Without this option the config is read from stdin. A config that does not fit "
        "the embed area even compressed is refused before anything is written "
        "(Compressed initramfs is too large).\n\n[default: stdin]",
    )


def _ignition_force_option(p: argparse.ArgumentParser, help: str) -> None:
    explain(
        p.add_argument("-f", "--force", action="store_true", help=help),
        "Replace an Ignition config the image already carries. Without it such an image is "
        "refused (This ISO image already has an embedded Ignition config; use -f to "
        "force.) and left as it was. Network keyfiles embedded next to the config are kept "
        "either way.",
    )


def register(reg: Registry) -> None:
    """Register this module's working commands."""
    p = reg.command(
        "iso ignition embed", "Embed an Ignition config in an ISO image", cmd_ignition_embed
    )
    _ignition_force_option(p, "Overwrite an existing Ignition config")
    _ignition_config_option(p, "-i", "--ignition-file")
    _output(p)
    _iso(p)

    p = reg.command(
        "iso ignition show",
        "Show the embedded Ignition config from an ISO image",
        cmd_ignition_show,
    )
    _iso(p, modifies=False)

    p = reg.command(
        "iso ignition remove",
        "Remove an existing embedded Ignition config from an ISO image",
        cmd_ignition_remove,
    )
    _output(p)
    _iso(p)

    p = reg.command(
        "iso network embed", "Embed network settings in an ISO image", cmd_network_embed
    )
    add_keyfile_option(
        p,
        "A NetworkManager keyfile (NAME.nmconnection) for the live system; repeat the option "
        "for several. Each is stored under its file name in etc/nestos-firstboot-network/ "
        "(etc/coreos-firstboot-network/ on CoreOS media) in the embed area, from where the "
        "live initramfs hands it to NetworkManager; install --copy-network on the live "
        "system carries it on to the installed system. Two files with the same name are "
        "refused, and the image must announce the live-initrd-network feature.",
    )
    explain(
        p.add_argument(
            "-f", "--force", action="store_true", help="Overwrite existing network settings"
        ),
        "Replace the keyfiles the image already carries: all of them are dropped before the "
        "new ones are added. Without it such an image is refused. An embedded Ignition "
        "config is kept either way.",
    )
    _output(p)
    _iso(p)

    p = reg.command(
        "iso network extract",
        "Extract embedded network settings from an ISO image",
        cmd_network_extract,
    )
    add_directory_option(p)
    _iso(p, modifies=False)

    p = reg.command(
        "iso network remove",
        "Remove existing network settings from an ISO image",
        cmd_network_remove,
    )
    _output(p)
    _iso(p)

    p = reg.command("iso kargs modify", "Modify kernel args in an ISO image", cmd_kargs_modify)
    explain(
        p.add_argument(
            "-a", "--append", metavar="KARG", action="append", help="Kernel argument to append"
        ),
        "Add this argument at the end of the live kernel command line (the current "
        "arguments, not the defaults). Repeatable. Arguments may not contain control "
        "characters and must be UTF-8.\n\n" + KARG_ORDER,
    )
    explain(
        p.add_argument(
            "-d", "--delete", metavar="KARG", action="append", help="Kernel argument to delete"
        ),
        "Remove every occurrence of this argument, matched as a whole word exactly as "
        "written (quiet removes quiet, not quiet=1). Repeatable.\n\n" + KARG_ORDER,
    )
    explain(
        p.add_argument(
            "-r",
            "--replace",
            metavar="KARG=OLDVAL=NEWVAL",
            action="append",
            help="Kernel argument to replace",
        ),
        "Change the value of an argument: KARG=OLDVAL becomes KARG=NEWVAL, e.g. "
        "ignition.platform.id=metal=qemu. Repeatable; anything not of the form "
        "KEY=OLD=NEW is refused.\n\n" + KARG_ORDER,
    )
    _output(p)
    _iso(p)

    p = reg.command(
        "iso kargs reset", "Reset kernel args in an ISO image to defaults", cmd_kargs_reset
    )
    _output(p)
    _iso(p)

    p = reg.command("iso kargs show", "Show kernel args from an ISO image", cmd_kargs_show)
    explain(
        p.add_argument("-d", "--default", action="store_true", help="Show default kernel args"),
        "Print the kernel arguments the image was built with (what iso kargs reset "
        "restores) instead of the current ones.",
    )
    _iso(p, modifies=False)

    from .iso_extract import register as register_extract  # imports this module

    register_extract(reg)

    p = reg.command("iso reset", "Restore a live ISO image to default settings", cmd_reset)
    _output(p)
    _iso(p)

    p = reg.command("iso embed", "Embed an Ignition config in an ISO image", cmd_embed, hidden=True)
    _ignition_config_option(p, "-c", "--config")
    _ignition_force_option(p, "Overwrite an existing embedded Ignition config")
    _output(p)
    _iso(p)

    p = reg.command(
        "iso show", "Show the embedded Ignition config from an ISO image", cmd_show, hidden=True
    )
    _iso(p, modifies=False)

    p = reg.command(
        "iso remove",
        "Remove an existing embedded Ignition config from an ISO image",
        cmd_remove,
        hidden=True,
    )
    _output(p)
    _iso(p)

    p = reg.command("dev show iso", "Inspect a live ISO image", cmd_dev_show_iso, hidden=True)
    which = p.add_mutually_exclusive_group()
    explain(
        which.add_argument(
            "--ignition", action="store_true", help="Show Ignition embed area parameters"
        ),
        "Print the offset and length of the initrd embed area (where the Ignition config "
        "and network keyfiles go) as JSON, instead of the volume descriptors and file list.",
    )
    explain(
        which.add_argument("--kargs", action="store_true", help="Show kargs embed area parameters"),
        "Print the karg slots as JSON: their common length, the default kernel arguments "
        "and each slot's offset (with its pad and end characters where the image sets "
        "them); null when the image has none.",
    )
    _iso(p, modifies=False)

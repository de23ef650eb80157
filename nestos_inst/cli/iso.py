"""`iso ignition|network|kargs|reset`, the deprecated `iso embed|show|remove`, and
the hidden `dev show iso` (compat-spec §1.10-§1.12, §2.3, §4.1, §4.4, §11.4)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, NestosError
from ..formats import isoedit
from ..formats.embed import CONFIG_MEMBER, IsoConfig, find_karg_areas
from ..formats.iso9660 import IsoFs
from ..formats.kargs import modify_kargs
from .common import binary_stdout, restore_sigpipe
from .output import add_directory_option, add_keyfile_option, write_keyfiles

if TYPE_CHECKING:
    from . import Registry

ISO_HELP = "ISO image"
OUTPUT_HELP = "Write ISO to a new output file"


def open_iso(path: str, *, writable: bool) -> int:
    try:
        return os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as exc:
        raise NestosError(f"opening {path}") from exc


def load_iso(fd: int) -> IsoConfig:
    return IsoConfig(fd)


def modify_iso(path: str, output: str | None, edit: Callable[[IsoConfig], None]) -> None:
    """Open, edit the logical contents, then write in the mode `output` selects."""
    if output == "-":
        binary_stdout()  # refuse a terminal before doing any work
    fd = open_iso(path, writable=output is None)
    try:
        iso = load_iso(fd)
        edit(iso)
        regions = iso.modified_regions()
        if output is None:
            isoedit.write_in_place(fd, regions, path)
        elif output == "-":
            out = binary_stdout()
            out.flush()
            isoedit.write_stream(fd, regions, out.fileno())
        else:
            isoedit.write_copy(fd, regions, output, iso.profile.temp_prefix)
    finally:
        os.close(fd)


def read_iso(path: str) -> IsoConfig:
    fd = open_iso(path, writable=False)
    try:
        return load_iso(fd)
    finally:
        os.close(fd)


def read_input(path: str | None) -> bytes:
    """All of FILE, or all of stdin."""
    if path is None:
        try:
            return sys.stdin.buffer.read()
        except OSError as exc:
            raise NestosError("reading stdin") from exc
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise NestosError(f"reading {path}") from exc


# ---- ignition ---------------------------------------------------------------------------


def _ignition_embed(iso_path: str, config_path: str | None, force: bool, out: str | None) -> None:
    config = read_input(config_path)

    def edit(iso: IsoConfig) -> None:
        members = iso.members()
        if CONFIG_MEMBER in members and not force:
            raise NestosError(
                "This ISO image already has an embedded Ignition config; use -f to force."
            )
        members[CONFIG_MEMBER] = config
        iso.set_members(members)

    modify_iso(iso_path, out, edit)


def _ignition_show(iso_path: str) -> None:
    restore_sigpipe()
    config = read_iso(iso_path).ignition()
    if config is None:
        raise NestosError("No embedded Ignition config.")
    out = sys.stdout.buffer
    out.write(config)
    out.flush()


def _ignition_remove(iso_path: str, out: str | None) -> None:
    def edit(iso: IsoConfig) -> None:
        members = iso.members()
        members.pop(CONFIG_MEMBER, None)
        iso.set_members(members)

    modify_iso(iso_path, out, edit)


def cmd_ignition_embed(args: argparse.Namespace) -> None:
    _ignition_embed(args.iso, args.ignition_file, args.force, args.output)


def cmd_ignition_show(args: argparse.Namespace) -> None:
    _ignition_show(args.iso)


def cmd_ignition_remove(args: argparse.Namespace) -> None:
    _ignition_remove(args.iso, args.output)


def _deprecated(old: str, new: str) -> None:
    sys.stderr.write(f"`{old}` is deprecated; use `{new}`.  Continuing.\n")
    sys.stderr.flush()


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


def read_keyfiles(paths: list[str], directory: str) -> dict[str, bytes]:
    """Keyfiles as initrd members `<directory>/<basename>`; basenames must be unique."""
    members: dict[str, bytes] = {}
    for path in paths:
        name = os.path.basename(path)
        member = f"{directory}/{name}"
        if member in members:
            raise NestosError(f"multiple input files named '{name}'")
        members[member] = read_input(path)
    return members


def cmd_network_embed(args: argparse.Namespace) -> None:
    def edit(iso: IsoConfig) -> None:
        if not iso.features().live_initrd_network:
            raise NestosError("This OS image does not support customizing network settings.")
        members = iso.members()
        existing = iso.network_members()
        if existing and not args.force:
            raise NestosError(
                "This ISO image already has embedded network settings; use -f to force."
            )
        for name in existing:
            del members[name]
        members.update(read_keyfiles(args.keyfile, iso.network_dir))
        iso.set_members(members)

    modify_iso(args.iso, args.output, edit)


def cmd_network_extract(args: argparse.Namespace) -> None:
    if args.directory is None:
        restore_sigpipe()
    files = read_iso(args.iso).network_members()
    if not files:
        raise NestosError("No embedded network settings.")
    write_keyfiles(files, args.directory)


def cmd_network_remove(args: argparse.Namespace) -> None:
    def edit(iso: IsoConfig) -> None:
        members = iso.members()
        for name in iso.network_members():
            del members[name]
        iso.set_members(members)

    modify_iso(args.iso, args.output, edit)


# ---- kargs ------------------------------------------------------------------------------


def cmd_kargs_modify(args: argparse.Namespace) -> None:
    def edit(iso: IsoConfig) -> None:
        areas = iso.require_kargs()
        areas.set(
            modify_kargs(
                areas.current,
                delete=args.delete or (),
                append=args.append or (),
                replace=args.replace or (),
            )
        )

    modify_iso(args.iso, args.output, edit)


def cmd_kargs_reset(args: argparse.Namespace) -> None:
    def edit(iso: IsoConfig) -> None:
        areas = iso.require_kargs()
        areas.set(areas.default)

    modify_iso(args.iso, args.output, edit)


def cmd_kargs_show(args: argparse.Namespace) -> None:
    restore_sigpipe()
    areas = read_iso(args.iso).require_kargs()
    text = areas.default if args.default else areas.current
    sys.stdout.buffer.write(text.encode() + b"\n")
    sys.stdout.buffer.flush()


def cmd_reset(args: argparse.Namespace) -> None:
    def edit(iso: IsoConfig) -> None:
        iso.set_members({})
        if iso.kargs is not None:
            iso.kargs.set(iso.kargs.default)

    modify_iso(args.iso, args.output, edit)


# ---- dev show iso -----------------------------------------------------------------------


def _print_json(obj: Any) -> None:
    sys.stdout.buffer.write(json.dumps(obj, indent=2, ensure_ascii=False).encode() + b"\n")
    sys.stdout.buffer.flush()


def cmd_dev_show_iso(args: argparse.Namespace) -> None:
    restore_sigpipe()
    fd = open_iso(args.iso, writable=False)
    try:
        if args.ignition:
            _print_json(load_iso(fd).initrd_json())
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


def _output(p: argparse.ArgumentParser, metavar: str = "path") -> None:
    p.add_argument("-o", "--output", metavar=metavar, help=OUTPUT_HELP)


def _iso(p: argparse.ArgumentParser) -> None:
    p.add_argument("iso", metavar="ISO", help=ISO_HELP)


def register(reg: Registry) -> None:
    """Register this module's working commands."""
    p = reg.command(
        "iso ignition embed", "Embed an Ignition config in an ISO image", cmd_ignition_embed
    )
    p.add_argument(
        "-f", "--force", action="store_true", help="Overwrite an existing Ignition config"
    )
    p.add_argument(
        "-i", "--ignition-file", metavar="path", help="Ignition config to embed [default: stdin]"
    )
    _output(p)
    _iso(p)

    p = reg.command(
        "iso ignition show",
        "Show the embedded Ignition config from an ISO image",
        cmd_ignition_show,
    )
    _iso(p)

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
    add_keyfile_option(p)
    p.add_argument("-f", "--force", action="store_true", help="Overwrite existing network settings")
    _output(p)
    _iso(p)

    p = reg.command(
        "iso network extract",
        "Extract embedded network settings from an ISO image",
        cmd_network_extract,
    )
    add_directory_option(p)
    _iso(p)

    p = reg.command(
        "iso network remove",
        "Remove existing network settings from an ISO image",
        cmd_network_remove,
    )
    _output(p)
    _iso(p)

    p = reg.command("iso kargs modify", "Modify kernel args in an ISO image", cmd_kargs_modify)
    p.add_argument(
        "-a", "--append", metavar="KARG", action="append", help="Kernel argument to append"
    )
    p.add_argument(
        "-d", "--delete", metavar="KARG", action="append", help="Kernel argument to delete"
    )
    p.add_argument(
        "-r",
        "--replace",
        metavar="KARG=OLDVAL=NEWVAL",
        action="append",
        help="Kernel argument to replace",
    )
    _output(p, "PATH")
    _iso(p)

    p = reg.command(
        "iso kargs reset", "Reset kernel args in an ISO image to defaults", cmd_kargs_reset
    )
    _output(p, "PATH")
    _iso(p)

    p = reg.command("iso kargs show", "Show kernel args from an ISO image", cmd_kargs_show)
    p.add_argument("-d", "--default", action="store_true", help="Show default kernel args")
    _iso(p)

    from .iso_extract import register as register_extract  # imports this module

    register_extract(reg)

    p = reg.command("iso reset", "Restore a live ISO image to default settings", cmd_reset)
    _output(p)
    _iso(p)

    p = reg.command("iso embed", "Embed an Ignition config in an ISO image", cmd_embed, hidden=True)
    p.add_argument(
        "-c", "--config", metavar="path", help="Ignition config to embed [default: stdin]"
    )
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="Overwrite an existing embedded Ignition config",
    )
    _output(p)
    _iso(p)

    p = reg.command(
        "iso show", "Show the embedded Ignition config from an ISO image", cmd_show, hidden=True
    )
    _iso(p)

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
    which.add_argument(
        "--ignition", action="store_true", help="Show Ignition embed area parameters"
    )
    which.add_argument("--kargs", action="store_true", help="Show kargs embed area parameters")
    _iso(p)

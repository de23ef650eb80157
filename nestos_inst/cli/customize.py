"""`iso customize` and `pxe customize`: argument parsing only (nestos_inst/customize)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import NestosError, flat_chain
from .common import binary_stdout

if TYPE_CHECKING:
    from ..customize.build import Options
    from . import Registry

ISO_DESCRIPTION = """\
Customize a live ISO image so that it installs unattended (or just configures
the live system). Every input is checked before anything is written; the
generated live Ignition config and network keyfiles replace whatever the image
had embedded. Details: docs/customize.md.
"""

PXE_DESCRIPTION = """\
Customize a live PXE initramfs: the input is copied unchanged and an archive
with the generated live Ignition config and network keyfiles is appended.
Details: docs/customize.md.
"""


def _console(text: str) -> str:
    from ..install.console import parse_console

    try:
        parse_console(text)
    except NestosError as exc:
        raise argparse.ArgumentTypeError(flat_chain(exc)) from None
    return text


def _common(p: argparse.ArgumentParser) -> None:
    def rep(group: argparse._ArgumentGroup, flag: str, metavar: str, help: str) -> None:
        group.add_argument(flag, metavar=metavar, action="append", default=[], help=help)

    dest = p.add_argument_group("Installation options")
    rep(dest, "--dest-ignition", "PATH", "Ignition config fragment for dest sys")
    dest.add_argument("--dest-device", metavar="PATH", help="Install destination device")
    dest.add_argument(
        "--dest-console",
        metavar="SPEC",
        action="append",
        default=[],
        type=_console,
        help="Kernel and bootloader console for dest",
    )
    rep(dest, "--dest-karg-append", "ARG", "Destination kernel argument to append")
    rep(dest, "--dest-karg-delete", "ARG", "Destination kernel argument to delete")
    rep(dest, "--pre-install", "PATH", "Script to run before installation")
    rep(dest, "--post-install", "PATH", "Script to run after installation")
    rep(dest, "--installer-config", "PATH", "Installer config file")
    net = p.add_argument_group("Network options")
    rep(net, "--network-keyfile", "PATH", "NetworkManager keyfile for live & dest")
    rep(net, "--network-nmstate", "PATH", "nmstate config for live & dest")
    ign = p.add_argument_group("Ignition options")
    rep(ign, "--ignition-ca", "PATH", "Ignition PEM CA bundle for live & dest")
    rep(ign, "--live-ignition", "PATH", "Ignition config fragment for live env")


def _options(args: argparse.Namespace) -> Options:
    from ..customize.build import Options

    return Options(
        dest_ignition=args.dest_ignition,
        dest_device=args.dest_device,
        dest_console=args.dest_console,
        dest_karg_append=args.dest_karg_append,
        dest_karg_delete=args.dest_karg_delete,
        network_keyfile=args.network_keyfile,
        network_nmstate=args.network_nmstate,
        ignition_ca=args.ignition_ca,
        pre_install=args.pre_install,
        post_install=args.post_install,
        installer_config=args.installer_config,
        live_ignition=args.live_ignition,
        live_karg_append=getattr(args, "live_karg_append", []),
        live_karg_delete=getattr(args, "live_karg_delete", []),
        live_karg_replace=getattr(args, "live_karg_replace", []),
    )


def _target(output: str) -> str | int:
    """`-` streams to stdout (a terminal is refused before any work), else a path."""
    if output != "-":
        return output
    out = binary_stdout()
    out.flush()
    return out.fileno()


def cmd_iso_customize(args: argparse.Namespace) -> None:
    from ..media.customize import customize_iso

    target = None if args.output is None else _target(args.output)
    customize_iso(args.iso, target, _options(args), force=args.force)


def cmd_pxe_customize(args: argparse.Namespace) -> None:
    from ..media.customize import customize_pxe

    customize_pxe(args.initramfs, _target(args.output), _options(args))


def register(reg: Registry) -> None:
    """Register `iso customize` and `pxe customize`."""
    p = reg.command(
        "iso customize",
        "Customize a live ISO image",
        cmd_iso_customize,
        description=ISO_DESCRIPTION,
    )
    _common(p)
    live = p.add_argument_group("Live system options (ISO only)")
    live.add_argument(
        "--live-karg-append",
        metavar="ARG",
        action="append",
        default=[],
        help="Live kernel argument to append",
    )
    live.add_argument(
        "--live-karg-delete",
        metavar="ARG",
        action="append",
        default=[],
        help="Live kernel argument to delete",
    )
    live.add_argument(
        "--live-karg-replace",
        metavar="KARG=OLDVAL=NEWVAL",
        action="append",
        default=[],
        help="Live kernel argument to replace",
    )
    p.add_argument("-f", "--force", action="store_true", help="Overwrite existing customizations")
    p.add_argument("-o", "--output", metavar="PATH", help="Write ISO to a new output file")
    p.add_argument("iso", metavar="ISO", help="ISO image")

    p = reg.command(
        "pxe customize",
        "Create a custom live PXE boot config",
        cmd_pxe_customize,
        description=PXE_DESCRIPTION,
    )
    _common(p)
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        required=True,
        help="Output file (- for stdout)",
    )
    p.add_argument("initramfs", metavar="INITRAMFS", help="Live initramfs image")

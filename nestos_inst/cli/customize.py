"""`iso customize` and `pxe customize`: argument parsing only (nestos_inst/customize)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import NestosError, flat_chain
from .common import binary_stdout
from .help import explain

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


FEATURE = "Needs the image's {} feature (features.json), else it is refused."


def _common(p: argparse.ArgumentParser) -> None:
    def rep(group: argparse._ArgumentGroup, flag: str, metavar: str, help: str, doc: str) -> None:
        explain(
            group.add_argument(flag, metavar=metavar, action="append", default=[], help=help),
            doc,
        )

    dest = p.add_argument_group("Installation options")
    rep(
        dest,
        "--dest-ignition",
        "PATH",
        "Ignition config fragment for dest sys",
        "Ignition config for the installed system (spec 3.0.0 to 3.5.0). Repeat the option "
        "to give several: they are merged, in order, into one config. The result is placed "
        "in the live system as /etc/nestos/dest.ign (/etc/coreos/dest.ign on CoreOS media) "
        "and installed from there. Each config is checked against its own spec version "
        "first: wrong types and missing required keys are errors, unknown keys are "
        "reported and dropped.\n\n" + FEATURE.format("installer-config"),
    )
    explain(
        dest.add_argument("--dest-device", metavar="PATH", help="Install destination device"),
        "Disk the booted media installs to, e.g. /dev/vda (dest-device in the generated "
        "installer config). With it, booting the media installs without asking and then "
        "reboots into the installed system; the command warns you so. Without it the "
        "media install only if an --installer-config names the device.\n\n"
        + FEATURE.format("installer-config"),
    )
    explain(
        dest.add_argument(
            "--dest-console",
            metavar="SPEC",
            action="append",
            default=[],
            type=_console,
            help="Kernel and bootloader console for dest",
        ),
        "Kernel and GRUB console of the installed system, in the kernel's console= syntax "
        "without the prefix (tty0, ttyS0,115200n8); repeat for several, the last one "
        "becomes /dev/console. A malformed value is a usage error. Prefer this over "
        "--dest-karg-append console=..., which leaves GRUB on its default console.\n\n"
        + FEATURE.format("installer-config-directives console"),
    )
    rep(
        dest,
        "--dest-karg-append",
        "ARG",
        "Destination kernel argument to append",
        "Kernel argument to add to the installed system's command line (install "
        "--append-karg); repeatable.\n\n" + FEATURE.format("installer-config"),
    )
    rep(
        dest,
        "--dest-karg-delete",
        "ARG",
        "Destination kernel argument to delete",
        "Kernel argument to remove from the installed system's command line (install "
        "--delete-karg); repeatable.\n\n" + FEATURE.format("installer-config"),
    )
    hook = (
        "It is stored in the live system as /usr/local/bin/{when}-install-NAME and run by "
        "an enabled oneshot unit, {when}-install-NAME.service, {order}; its output goes to "
        "the console and the kernel log. NAME is the script's file name, which becomes part "
        "of a unit name: letters, digits, :, _, . and - only. Repeatable."
    )
    rep(
        dest,
        "--pre-install",
        "PATH",
        "Script to run before installation",
        "Script to run on the live system before the install starts. "
        + hook.format(when="pre", order="ordered before nestos-installer.service")
        + " A failing script stops the install.",
    )
    rep(
        dest,
        "--post-install",
        "PATH",
        "Script to run after installation",
        "Script to run on the live system after a successful install, before the reboot. "
        + hook.format(when="post", order="ordered after nestos-installer.service")
        + " A failing script stops the reboot.",
    )
    rep(
        dest,
        "--installer-config",
        "PATH",
        "Installer config file",
        "Installer config file (the YAML format of install --config-file) to place in "
        "/etc/nestos/installer.d/ (/etc/coreos/installer.d/) on the live system, numbered "
        "in command-line order; the settings from the --dest-* options follow in a last "
        "file. Each file must parse, and all of them together must make one valid install "
        "(for example not two destination devices).\n\n" + FEATURE.format("installer-config"),
    )
    net = p.add_argument_group("Network options")
    rep(
        net,
        "--network-keyfile",
        "PATH",
        "NetworkManager keyfile for live & dest",
        "NetworkManager keyfile (NAME.nmconnection) that configures the live system's "
        "network and, when the media install, the installed system's too (copy-network is "
        "set). It is checked with NetworkManager's own parser (libnm) first. Repeatable; "
        "two keyfiles with the same name are refused.\n\n" + FEATURE.format("live-initrd-network"),
    )
    rep(
        net,
        "--network-nmstate",
        "PATH",
        "nmstate config for live & dest",
        "nmstate network state (YAML or JSON), turned into NetworkManager keyfiles that "
        "are then used like --network-keyfile. The conversion is nmstate's own: nmstatectl "
        "gc when it is on PATH, else nmstate's Python library with libnm; without either "
        "the error says what to install. nmstate gives every profile a random UUID, so the "
        "output differs between runs. Repeatable.\n\n" + FEATURE.format("live-initrd-network"),
    )
    ign = p.add_argument_group("Ignition options")
    rep(
        ign,
        "--ignition-ca",
        "PATH",
        "Ignition PEM CA bundle for live & dest",
        "PEM bundle of CA certificates that Ignition trusts for HTTPS fetches, both on the "
        "live system and on the installed one (certificateAuthorities in both configs). "
        "It must contain certificates OpenSSL can load. Repeatable.",
    )
    rep(
        ign,
        "--live-ignition",
        "PATH",
        "Ignition config fragment for live env",
        "Ignition config for the live environment itself (users, extra units, files of "
        "the live system), merged into the generated live config. Checked like "
        "--dest-ignition. Repeatable. Given alone, the media boot with this config and "
        "install nothing.",
    )


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


LIVE_KARG_DOC = (
    "Edits start from the image's default kernel arguments (not its current ones): "
    "deletions first, then appends, then replacements, and every karg slot is rewritten. "
    "Without any --live-karg-* option the slots are left as they are. Repeatable."
)


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
    explain(
        live.add_argument(
            "--live-karg-append",
            metavar="ARG",
            action="append",
            default=[],
            help="Live kernel argument to append",
        ),
        "Kernel argument to add to the live system's command line. " + LIVE_KARG_DOC,
    )
    explain(
        live.add_argument(
            "--live-karg-delete",
            metavar="ARG",
            action="append",
            default=[],
            help="Live kernel argument to delete",
        ),
        "Kernel argument to remove from the live system's command line. " + LIVE_KARG_DOC,
    )
    explain(
        live.add_argument(
            "--live-karg-replace",
            metavar="KARG=OLDVAL=NEWVAL",
            action="append",
            default=[],
            help="Live kernel argument to replace",
        ),
        "Change a live kernel argument's value: KARG=OLDVAL becomes KARG=NEWVAL. " + LIVE_KARG_DOC,
    )
    explain(
        p.add_argument(
            "-f", "--force", action="store_true", help="Overwrite existing customizations"
        ),
        "Customize an image that was customized before: one with an embedded Ignition "
        "config, embedded keyfiles, or live kernel arguments other than its defaults. Without it "
        "such an image is refused. Everything embedded before is replaced, not merged.",
    )
    explain(
        p.add_argument("-o", "--output", metavar="PATH", help="Write ISO to a new output file"),
        "Write the customized image to PATH, a new file (an existing PATH is refused), "
        "instead of changing ISO in place; - streams it to stdout, which is refused when "
        "stdout is a terminal. All forms produce the same bytes, and every input is "
        "checked before anything is written.",
    )
    explain(
        p.add_argument("iso", metavar="ISO", help="ISO image"),
        "The live ISO image to customize (in place unless -o is given), NestOS or CoreOS "
        "layout; the layout decides the names the live system looks for.",
    )

    p = reg.command(
        "pxe customize",
        "Create a custom live PXE boot config",
        cmd_pxe_customize,
        description=PXE_DESCRIPTION,
    )
    _common(p)
    explain(
        p.add_argument(
            "-o",
            "--output",
            metavar="PATH",
            required=True,
            help="Output file (- for stdout)",
        ),
        "Where to write the customized initramfs: a new file (an existing PATH is "
        "refused), or - for stdout (refused when stdout is a terminal). The output is "
        "INITRAMFS byte for byte, followed by an xz-compressed archive with the generated "
        "config and keyfiles. Required, because the input is never modified.",
    )
    explain(
        p.add_argument("initramfs", metavar="INITRAMFS", help="Live initramfs image"),
        "The live PXE initramfs (e.g. nestos-live-initramfs.x86_64.img), not customized "
        "yet. Boot the result with ignition.firstboot ignition.platform.id=metal on the "
        "kernel command line.",
    )

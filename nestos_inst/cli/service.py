"""Hidden `service` commands: what the systemd units and the generator execute.

They are hidden because operators never type them; the file and directory options
let tests (and debugging) point the service at a fake command line and config dirs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Registry


def _run(args: argparse.Namespace) -> int:
    from ..service.main import run_service

    dirs = [Path(d) for d in args.config_dir] if args.config_dir else None
    run_service(cmdline_file=args.cmdline_file, dirs=dirs, device_timeout=args.device_timeout)
    return 0


def _generator(args: argparse.Namespace) -> int:
    from ..service.cmdline import Cmdline
    from ..service.generator import generate

    dirs = [Path(d) for d in args.config_dir] if args.config_dir else None
    generate(
        Cmdline.read(args.cmdline_file),
        Path(args.normal_dir),
        Path(args.early_dir) if args.early_dir else None,
        dirs=dirs,
        in_initrd=args.initrd,
        reboot_flag=Path(args.reboot_flag) if args.reboot_flag else None,
    )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cmdline-file",
        metavar="PATH",
        default="/proc/cmdline",
        help="Read kernel arguments from PATH",
    )
    p.add_argument(
        "--config-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="Installer config directory (repeatable; default both installer.d dirs)",
    )


def register(reg: Registry) -> None:
    """Register this module's working commands."""
    p = reg.command(
        "service run",
        "Install from kernel arguments and installer.d files",
        _run,
        hidden=True,
    )
    _common(p)
    p.add_argument(
        "--device-timeout",
        metavar="SECS",
        type=float,
        default=120.0,
        help="How long to wait for the install device to appear",
    )
    g = reg.command(
        "service generator",
        "systemd generator: make the boot install if asked to",
        _generator,
        hidden=True,
    )
    _common(g)
    g.add_argument("--reboot-flag", metavar="PATH", help="Reboot flag file to create")
    g.add_argument(
        "--initrd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Treat the system as an initramfs (default: detect /etc/initrd-release)",
    )
    g.add_argument("normal_dir", metavar="NORMAL_DIR")
    g.add_argument("early_dir", metavar="EARLY_DIR", nargs="?")
    g.add_argument("late_dir", metavar="LATE_DIR", nargs="?")

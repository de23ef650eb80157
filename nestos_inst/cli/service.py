"""Hidden `service run`: what nestos-installer.service executes.

Hidden because operators never type it; the file and directory options let tests (and
debugging) point the service at a fake command line and config dirs. The generator is
a plain sh script (units/nestos-installer-generator): it runs too early for Python.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .help import explain

if TYPE_CHECKING:
    from . import Registry


def _run(args: argparse.Namespace) -> int:
    from ..service.main import run_service

    dirs = [Path(d) for d in args.config_dir] if args.config_dir else None
    run_service(cmdline_file=args.cmdline_file, dirs=dirs, device_timeout=args.device_timeout)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    explain(
        p.add_argument(
            "--cmdline-file",
            metavar="PATH",
            default="/proc/cmdline",
            help="Read kernel arguments from PATH",
        ),
        "Read the nestos.inst.* (and coreos.inst.*) kernel arguments from PATH instead of "
        "the running kernel's command line.\n\n[default: /proc/cmdline]",
    )
    explain(
        p.add_argument(
            "--config-dir",
            metavar="DIR",
            action="append",
            default=[],
            help="Installer config directory (repeatable; default both installer.d dirs)",
        ),
        "Read installer config files from DIR instead of /etc/nestos/installer.d and "
        "/etc/coreos/installer.d. Repeatable.",
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
    explain(
        p.add_argument(
            "--device-timeout",
            metavar="SECS",
            type=float,
            default=120.0,
            help="How long to wait for the install device to appear",
        ),
        "How many seconds to wait for the install device to appear (a disk that is still "
        "being probed at boot) before failing.\n\n[default: 120]",
    )

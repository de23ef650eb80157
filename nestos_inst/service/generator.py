"""The systemd generator of compat-spec §8.2, in Python.

It decides at boot whether this live system installs: if an install device is on the
command line or an installer.d directory holds files, the boot's goal becomes
`nestos-installer-post.target`, and unless skip_reboot is set a flag file tells the
reboot unit to run afterwards.

In a real root the goal is `default.target`. Inside an initramfs systemd starts
`initrd.target` instead, so there the generator aliases `initrd.target` in the
early directory (which outranks /etc and /usr) to the post target: a PXE initramfs
then installs instead of looking for a root file system to switch to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..profile import ALL, DEFAULT, Profile
from .cmdline import Cmdline, flag_set, install_device

UNIT_DIR = "/usr/lib/systemd/system"
INITRD_RELEASE = "/etc/initrd-release"


def config_dirs(profiles: Sequence[Profile] = ALL) -> list[Path]:
    return [Path(p.installer_config_dir) for p in profiles]


def _non_empty(d: Path) -> bool:
    try:
        return any(d.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


def should_install(cmdline: Cmdline, dirs: Sequence[Path]) -> bool:
    """The §8.2 condition: a non-empty install_dev karg or a non-empty installer.d."""
    return install_device(cmdline) is not None or any(_non_empty(d) for d in dirs)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def generate(
    cmdline: Cmdline,
    normal_dir: Path,
    early_dir: Path | None = None,
    *,
    dirs: Sequence[Path] | None = None,
    in_initrd: bool | None = None,
    reboot_flag: Path | None = None,
    profile: Profile = DEFAULT,
) -> bool:
    """Write the generator's links; True if this boot will install."""
    if dirs is None:
        dirs = config_dirs()
    if not should_install(cmdline, dirs):
        return False
    if in_initrd is None:
        in_initrd = os.path.exists(INITRD_RELEASE)
    post = f"{UNIT_DIR}/{profile.unit_prefix}-post.target"
    if in_initrd:
        _link((early_dir or normal_dir) / "initrd.target", post)
    else:
        _link(normal_dir / "default.target", post)
    if not flag_set(cmdline, "skip_reboot"):
        flag = reboot_flag or Path(profile.reboot_flag)
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
    return True

"""Customising the freshly written /boot (docs/compat.md#boot-edits), in upstream's order.

`BootEdits` is computed from the config before anything is written (so `--dry-run`
can print it and validation errors surface early); `apply()` performs it on a mounted
boot filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NestosError
from ..io.files import METADATA_LIMIT, read_limited
from ..io.pipeline import write_all
from ..profile import ALL, Profile
from ..report import say
from . import bls
from .console import Console, console_hint, grub_commands
from .ignition import IgnitionHash

Platforms = dict[str, dict[str, list[str]]]


@dataclass(frozen=True)
class BootEdits:
    """Everything install will change on /boot."""

    ignition: bytes | None = None
    ignition_hash: IgnitionHash | None = None
    platform: str | None = None
    consoles: tuple[Console, ...] = ()
    firstboot_args: str | None = None
    append_karg: tuple[str, ...] = ()
    delete_karg: tuple[str, ...] = ()
    network_dir: Path | None = None
    s390x: bool = False

    @classmethod
    def build(
        cls,
        *,
        ignition: bytes | None,
        ignition_hash: IgnitionHash | None,
        platform: str | None,
        consoles: Sequence[Console],
        firstboot_args: str | None,
        append_karg: Sequence[str],
        delete_karg: Sequence[str],
        network_dir: str | None,
        s390x: bool = False,
    ) -> BootEdits:
        return cls(
            ignition=ignition,
            ignition_hash=ignition_hash,
            platform=platform,
            consoles=tuple(consoles),
            firstboot_args=firstboot_args,
            append_karg=tuple(append_karg),
            delete_karg=tuple(delete_karg),
            network_dir=Path(network_dir) if network_dir is not None else None,
            s390x=s390x,
        )

    def needed(self) -> bool:
        return bool(
            self.ignition is not None
            or self.firstboot_args
            or self.append_karg
            or self.delete_karg
            or self.platform
            or self.consoles
            or self.network_dir is not None
            or self.s390x
        )

    def describe(self) -> list[str]:
        """Human summary for --dry-run."""
        out: list[str] = []
        if self.ignition is not None:
            what = f"write Ignition config ({len(self.ignition)} bytes) to ignition/config.ign"
            if self.ignition_hash:
                what += f", checked against {self.ignition_hash}"
            out.append(what)
        if self.platform and self.platform != "metal":
            out.append(f"set platform to {self.platform}")
        if self.consoles:
            out.append("configure consoles: " + " ".join(str(c) for c in self.consoles))
        if self.firstboot_args:
            out.append(f"append first-boot kernel arguments: {self.firstboot_args}")
        if self.delete_karg:
            out.append("delete kernel arguments: " + " ".join(self.delete_karg))
        if self.append_karg:
            out.append("append kernel arguments: " + " ".join(self.append_karg))
        if self.network_dir is not None:
            out.append(f"copy network configuration from {self.network_dir}")
        return out

    def check_ignition_hash(self) -> None:
        if self.ignition is not None and self.ignition_hash is not None:
            self.ignition_hash.verify(self.ignition)


def load_platforms(boot: Path, profile: Profile) -> Platforms:
    """The profile's platforms.json, falling back to the other brands'; absent → {}."""
    candidates = [profile.platforms_json] + [
        p.platforms_json for p in ALL if p.platforms_json != profile.platforms_json
    ]
    for rel in candidates:
        path = boot / rel
        try:
            raw = read_limited(path, METADATA_LIMIT, message=f"reading {path}")
        except NestosError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                continue
            raise
        try:
            data = json.loads(raw)
            return _check_platforms(data)
        except (ValueError, TypeError) as exc:
            raise NestosError(f"parsing {path}") from exc
    return {}


def _check_platforms(data: Any) -> Platforms:
    if not isinstance(data, dict):
        raise ValueError("expected an object of platforms")
    out: Platforms = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"platform {name}: expected an object")
        clean: dict[str, list[str]] = {}
        for key in ("grub_commands", "kernel_arguments"):
            value = entry.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"platform {name}: {key} must be a list of strings")
            clean[key] = value
        out[str(name)] = clean
    return out


def _pget(platforms: Platforms, name: str, key: str) -> list[str]:
    return platforms.get(name, {}).get(key, [])


def boot_profile(boot: Path, default: Profile) -> Profile:
    """The brand of the installed image, from its platforms.json location.

    A CoreOS-layout image expects `coreos-firstboot-network/`, a NestOS one
    `nestos-firstboot-network/`, whatever installer wrote it.
    """
    if (boot / default.platforms_json).exists():
        return default
    for candidate in ALL:
        if (boot / candidate.platforms_json).exists():
            return candidate
    return default


def apply(boot: Path, edits: BootEdits, profile: Profile) -> None:
    """Apply `edits` to the boot filesystem mounted at `boot`, in upstream's order."""
    profile = boot_profile(boot, profile)
    if edits.ignition is not None:
        say("Writing Ignition config")
        edits.check_ignition_hash()
        write_ignition(boot, edits.ignition)

    platforms: Platforms | None = None

    def pj() -> Platforms:
        nonlocal platforms
        if platforms is None:
            platforms = load_platforms(boot, profile)
        return platforms

    if edits.platform and edits.platform != "metal":
        say(f"Setting platform to {edits.platform}")
        bls.set_platform(boot, edits.platform)
        if not edits.consoles:
            metal = _pget(pj(), "metal", "kernel_arguments")
            wanted = _pget(pj(), edits.platform, "kernel_arguments")
            if metal or wanted:
                bls.edit_kargs(boot, delete=metal, append=wanted)

    if edits.consoles:
        say("Configuring console settings")
        bls.edit_kargs(
            boot,
            delete=_pget(pj(), "metal", "kernel_arguments"),
            append=[c.karg for c in edits.consoles],
        )

    if edits.firstboot_args:
        say("Writing first-boot kernel arguments")
        write_firstboot_args(boot, edits.firstboot_args)

    if edits.append_karg or edits.delete_karg:
        say("Modifying kernel arguments")
        console_hint(edits.append_karg)
        bls.edit_kargs(boot, delete=edits.delete_karg, append=edits.append_karg)

    if not edits.s390x:
        if edits.consoles:
            bls.set_grub_console(boot, grub_commands(edits.consoles))
        elif edits.platform and edits.platform != "metal":
            wanted_cmds = _pget(pj(), edits.platform, "grub_commands")
            if wanted_cmds != _pget(pj(), "metal", "grub_commands"):
                bls.set_grub_console(boot, wanted_cmds)

    if edits.network_dir is not None:
        copy_network(edits.network_dir, boot / profile.boot_network_dir)


def write_ignition(boot: Path, data: bytes) -> None:
    """`ignition/config.ign`: directory 0700, file 0600, never over an existing one."""
    d = boot / "ignition"
    path = d / "config.ign"
    _refuse_symlink(d)
    try:
        if not d.is_dir():
            d.mkdir(mode=0o700)
        os.chmod(d, 0o700, follow_symlinks=False)
    except OSError as exc:
        raise NestosError(f"creating {d}") from exc
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise NestosError(f"opening {path}") from exc
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, data)
        os.fsync(fd)
    except OSError as exc:
        raise NestosError(f"writing {path}") from exc
    finally:
        os.close(fd)


def write_firstboot_args(boot: Path, args: str) -> None:
    path = boot / "ignition.firstboot"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    except OSError as exc:
        raise NestosError(f"opening {path}") from exc
    try:
        write_all(fd, f'set ignition_network_kcmdline="{args}"\n'.encode())
    except OSError as exc:
        raise NestosError(f"writing {path}") from exc
    finally:
        os.close(fd)


def copy_network(src: Path, dest: Path) -> None:
    """Copy the regular files (symlinks followed) of `src`; subdirectories ignored."""
    say(f"Copying networking configuration from {src}")
    try:
        names = sorted(os.listdir(src))
    except OSError as exc:
        raise NestosError(f"reading directory {src}") from exc
    _refuse_symlink(dest)
    try:
        dest.mkdir(exist_ok=True)
    except OSError as exc:
        raise NestosError(f"creating directory {dest}") from exc
    for name in names:
        path = src / name
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
        except OSError as exc:
            raise NestosError(f"getting file type of {path}") from exc
        say(f"Copying {path} to installed system")
        target = dest / name
        try:
            with open(path, "rb") as fin:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
        except OSError as exc:
            raise NestosError(f"copying {path} to {target}") from exc


def _refuse_symlink(path: Path) -> None:
    """Never follow a link planted on /boot out of the boot filesystem."""
    if path.is_symlink():
        raise NestosError(f"refusing to write through symbolic link {path}")

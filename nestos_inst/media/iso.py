"""Opening, editing and rewriting a live ISO's embed areas.

Each edit works on an IsoConfig (the logical contents: initrd members, kernel
arguments); modify_iso() then writes only the changed regions in the output mode the
caller chose. The command line maps `-o -` to a stream target after refusing a
terminal; this module never touches stdin or stdout itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence

from ..errors import NestosError
from ..formats import isoedit
from ..formats.embed import CONFIG_MEMBER, IsoConfig
from ..formats.kargs import check_text, modify_kargs

# Where modify_iso() writes: None rewrites the image in place, a str names a new
# file (never clobbered), an int is a descriptor the whole image is streamed to.
Target = str | int | None


def open_iso(path: str, *, writable: bool) -> int:
    """A descriptor on the image; a directory is refused here, with its name, rather
    than failing later on the first read."""
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as exc:
        raise NestosError(f"opening {path}") from exc
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise NestosError(f"opening {path}") from IsADirectoryError(21, os.strerror(21))
    return fd


def load_iso(fd: int) -> IsoConfig:
    return IsoConfig(fd)


def modify_iso(path: str, target: Target, edit: Callable[[IsoConfig], None]) -> None:
    """Open, edit the logical contents, then write in the mode `target` selects."""
    fd = open_iso(path, writable=target is None)
    try:
        iso = load_iso(fd)
        edit(iso)
        regions = iso.modified_regions()
        if target is None:
            isoedit.write_in_place(fd, regions, path)
        elif isinstance(target, int):
            isoedit.write_stream(fd, regions, target)
        else:
            isoedit.write_copy(fd, regions, target, iso.profile.temp_prefix)
    finally:
        os.close(fd)


def read_iso(path: str) -> IsoConfig:
    fd = open_iso(path, writable=False)
    try:
        return load_iso(fd)
    finally:
        os.close(fd)


# ---- edits (each is a Callable[[IsoConfig], None] factory) -----------------------------


def embed_ignition(config: bytes, *, force: bool) -> Callable[[IsoConfig], None]:
    def edit(iso: IsoConfig) -> None:
        members = iso.members()
        if CONFIG_MEMBER in members and not force:
            raise NestosError(
                "This ISO image already has an embedded Ignition config; use -f to force."
            )
        members[CONFIG_MEMBER] = config
        iso.set_members(members)

    return edit


def remove_ignition(iso: IsoConfig) -> None:
    members = iso.members()
    members.pop(CONFIG_MEMBER, None)
    iso.set_members(members)


def keyfile_members(
    paths: Sequence[str], directory: str, read: Callable[[str], bytes]
) -> dict[str, bytes]:
    """Keyfiles as initrd members `<directory>/<basename>`; basenames must be unique.

    Each file is read only after its name was checked, so a duplicate is reported
    before a later unreadable file.
    """
    members: dict[str, bytes] = {}
    for path in paths:
        name = os.path.basename(path)
        check_text(name, "keyfile name")
        member = f"{directory}/{name}"
        if member in members:
            raise NestosError(f"multiple input files named '{name}'")
        members[member] = read(path)
    return members


def embed_network(
    paths: Sequence[str], read: Callable[[str], bytes], *, force: bool
) -> Callable[[IsoConfig], None]:
    """Replace the network keyfiles with the files at `paths` (read through `read`)."""

    def edit(iso: IsoConfig) -> None:
        if not iso.features().live_initrd_network:
            raise NestosError("This OS image does not support customizing network settings.")
        members = iso.members()
        existing = iso.network_members()
        if existing and not force:
            raise NestosError(
                "This ISO image already has embedded network settings; use -f to force."
            )
        for name in existing:
            del members[name]
        members.update(keyfile_members(paths, iso.network_dir, read))
        iso.set_members(members)

    return edit


def network_files(path: str) -> Mapping[str, bytes]:
    """The embedded network keyfiles (member name -> bytes); empty when none."""
    return read_iso(path).network_members()


def remove_network(iso: IsoConfig) -> None:
    members = iso.members()
    for name in iso.network_members():
        del members[name]
    iso.set_members(members)


def modify_iso_kargs(
    *, delete: Sequence[str], append: Sequence[str], replace: Sequence[str]
) -> Callable[[IsoConfig], None]:
    def edit(iso: IsoConfig) -> None:
        areas = iso.require_kargs()
        areas.set(modify_kargs(areas.current, delete=delete, append=append, replace=replace))

    return edit


def reset_kargs(iso: IsoConfig) -> None:
    areas = iso.require_kargs()
    areas.set(areas.default)


def reset(iso: IsoConfig) -> None:
    """Back to the image as built: no embedded files, default kernel arguments."""
    iso.set_members({})
    if iso.kargs is not None:
        iso.kargs.set(iso.kargs.default)

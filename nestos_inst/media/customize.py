"""`iso customize` and `pxe customize` on the media (docs/customize.md).

ISO: the generated archive replaces the whole initrd embed area, and the live kernel
arguments are edited from the image's defaults; the three output modes (in place,
`-o PATH`, `-o -`) are the ones of every ISO-editing command and give the same bytes.

PXE: the input initramfs is copied unchanged and the archive is appended right after
it (no padding): the kernel unpacks concatenated archives in order, so ours adds files
to the live initramfs. The input is decoded first, without writing anything, to learn
its brand and features and to refuse an image that is not a live initramfs or is
already customized.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from .. import profile as profiles
from ..customize.build import NO_LIVE_KARGS, Options, Result, build
from ..errors import NestosError, context
from ..formats import isoedit
from ..formats.embed import CONFIG_MEMBER, Features, IsoConfig
from ..formats.initrd import read_initrd_stream, write_initrd
from ..formats.kargs import modify_kargs
from ..report import say
from .iso import Target, modify_iso

ALREADY_ISO = "This ISO image is already customized; use -f to force."
ALREADY_PXE = "input is already customized"
NOT_LIVE_PXE = "not a CoreOS live initramfs image"
PXE_KARGS = (
    "PXE configuration must include kernel arguments:\n"
    "\tignition.firstboot ignition.platform.id=metal"
)


def iso_is_customized(iso: IsoConfig) -> bool:
    """Anything embedded, or live kernel arguments that differ from the defaults."""
    if iso.ignition() is not None or iso.network_members():
        return True
    return iso.kargs is not None and iso.kargs.current != iso.kargs.default


def customize_iso(path: str, target: Target, opts: Options, *, force: bool) -> Result:
    """Customize the ISO at `path`, written in the mode `target` selects (media.iso)."""
    results: list[Result] = []

    def edit(iso: IsoConfig) -> None:
        results.append(customize_iso_areas(iso, opts, force=force))

    modify_iso(path, target, edit)
    return results[0]


def customize_iso_areas(iso: IsoConfig, opts: Options, *, force: bool) -> Result:
    """Edit the ISO's areas in memory (nothing is written here)."""
    if not force and iso_is_customized(iso):
        raise NestosError(ALREADY_ISO)
    new_kargs = None
    if opts.live_kargs:
        if iso.kargs is None:
            raise NestosError(NO_LIVE_KARGS)
        new_kargs = modify_kargs(
            iso.kargs.default,
            delete=opts.live_karg_delete,
            append=opts.live_karg_append,
            replace=opts.live_karg_replace,
        )
    result = build(opts, iso.features(), iso.profile, "iso")
    iso.set_members(result.members)
    if new_kargs is not None:
        assert iso.kargs is not None
        iso.kargs.set(new_kargs)
    return result


# ---- PXE --------------------------------------------------------------------------------


def _pxe_patterns() -> list[str]:
    pats = [CONFIG_MEMBER]
    for p in profiles.ALL:
        pats += [p.live_initramfs_marker, p.initrd_features, f"{p.initrd_network_dir}/*"]
    return pats


def inspect_initramfs(f: BinaryIO) -> tuple[profiles.Profile, Features]:
    """Brand and features of a live initramfs; refuse others and customized ones."""
    members = read_initrd_stream(f, _pxe_patterns())
    profile = next((p for p in profiles.ALL if p.live_initramfs_marker in members), None)
    if profile is None:
        raise NestosError(NOT_LIVE_PXE)
    network = tuple(p.initrd_network_dir + "/" for p in profiles.ALL)
    if CONFIG_MEMBER in members or any(m.startswith(network) for m in members):
        raise NestosError(ALREADY_PXE)
    raw = members.get(profile.initrd_features)
    return profile, (Features() if raw is None else Features.parse(raw))


def customize_pxe(path: str, target: str | int, opts: Options) -> Result:
    """Write INITRAMFS + archive to the new file `target`, or stream it to the
    descriptor `target`."""
    if isinstance(target, str):
        refuse_existing_output(target)
    with context(f"opening {path}"):
        f = open(path, "rb")  # noqa: SIM115 - closed below
    with f:
        with context(f"reading initrd {path}"):
            profile, features = inspect_initramfs(f)
        result = build(opts, features, profile, "pxe")
        archive = write_initrd(result.members)
        if CONFIG_MEMBER in result.members:
            say(PXE_KARGS)
        fd = f.fileno()
        if isinstance(target, int):
            isoedit.write_stream(fd, (), target, append=archive)
        else:
            isoedit.write_copy(fd, (), target, profile.temp_prefix, append=archive)
    return result


def refuse_existing_output(output: str) -> None:
    """`-o PATH` never clobbers: fail before reading anything (the final link would)."""
    if os.path.lexists(output):
        with context(f"persisting output file to {output}"):
            raise FileExistsError(17, os.strerror(17))

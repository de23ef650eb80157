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
import sys
from typing import BinaryIO, TextIO

from .. import profile as profiles
from ..errors import NestosError, context
from ..formats import isoedit
from ..formats.embed import CONFIG_MEMBER, Features, IsoConfig
from ..formats.initrd import read_initrd_stream, write_initrd
from ..formats.kargs import modify_kargs
from .build import NO_LIVE_KARGS, Options, Result, build

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


def customize_iso(iso: IsoConfig, opts: Options, force: bool, err: TextIO | None = None) -> Result:
    """Edit the ISO's areas in memory (the caller writes them in the chosen mode)."""
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
    result = build(opts, iso.features(), iso.profile, "iso", err)
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


def customize_pxe(
    path: str, output: str, opts: Options, out: BinaryIO | None = None, err: TextIO | None = None
) -> Result:
    """Write INITRAMFS + archive to `output` (a new file) or to `out` for `-`."""
    errs = err or sys.stderr
    if output != "-":
        refuse_existing_output(output)
    with context(f"opening {path}"):
        f = open(path, "rb")  # noqa: SIM115 - closed below
    with f:
        with context(f"reading initrd {path}"):
            profile, features = inspect_initramfs(f)
        result = build(opts, features, profile, "pxe", errs)
        archive = write_initrd(result.members)
        if CONFIG_MEMBER in result.members:
            errs.write(PXE_KARGS + "\n")
            errs.flush()
        fd = f.fileno()
        if output == "-":
            assert out is not None
            out.flush()
            isoedit.write_stream(fd, (), out.fileno(), append=archive)
        else:
            isoedit.write_copy(fd, (), output, profile.temp_prefix, append=archive)
    return result


def refuse_existing_output(output: str) -> None:
    """`-o PATH` never clobbers: fail before reading anything (the final link would)."""
    if os.path.lexists(output):
        with context(f"persisting output file to {output}"):
            raise FileExistsError(17, os.strerror(17))

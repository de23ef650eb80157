"""Extracting from a live ISO (PXE files, the minimal ISO) and packing the minimal ISO.

Outputs are created new (never clobbered) and removed again on failure; the minimal
ISO is assembled in a 0600 temp file and only linked into place when complete.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import FormatError, NestosError
from ..formats import isoedit, miniso
from ..formats.embed import IsoConfig, detect_profile, read_meta, unrecognized
from ..formats.iso9660 import SECTOR, IsoFs, NotFoundError, Record
from ..formats.kargs import modify_kargs
from ..io.files import Created, atomic_output, refuse_existing
from ..profile import Profile
from ..report import say
from .iso import open_iso

# A path to create, or a function returning the descriptor to stream to; it is called
# at the point the command commits to streaming (so it may refuse, e.g. a terminal).
Output = str | Callable[[], int]

PXEBOOT_DIR = "IMAGES/PXEBOOT"
_CHUNK = 1 << 20
_BIG_CHUNK = 1 << 30


def _open_fs(fd: int) -> IsoFs:
    try:
        return IsoFs(fd)
    except FormatError as exc:
        raise FormatError("parsing ISO9660 image") from exc


def copy_file_out(fs: IsoFs, rec: Record, path: str) -> None:
    """Copy one ISO file to a new file at `path` (never clobbers; kernel-side copy).
    The copy goes to a temporary file first: a full disk leaves nothing behind."""
    if rec.offset + rec.length > fs.size:
        raise FormatError(f"file {rec.name} extends beyond the end of the image")
    with atomic_output(path, mode=0o666, replace=False) as out:
        try:
            _copy(fs.fd, rec.offset, out.fileno(), rec.length)
        except OSError as exc:
            raise NestosError(f"copying {rec.name} to {path}") from exc


def _copy(src: int, offset: int, dst: int, count: int) -> None:
    done = 0
    while done < count:
        try:
            n = os.copy_file_range(src, dst, min(count - done, _BIG_CHUNK), offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            break
        if n == 0:
            raise FormatError(f"unexpected end of input at offset {offset + done}")
        done += n
    while done < count:
        data = os.pread(src, min(_CHUNK, count - done), offset + done)
        if not data:
            raise FormatError(f"unexpected end of input at offset {offset + done}")
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view) :]
        done += len(data)


# ---- iso extract pxe --------------------------------------------------------------------


def extract_pxe(
    iso_path: str, output_dir: str, on_file: Callable[[str], None] = lambda _: None
) -> list[str]:
    """Copy every file of IMAGES/PXEBOOT to `<dir>/<iso stem>-<lower-cased name>`.

    `on_file` hears each path just before it is written.
    """
    fd = open_iso(iso_path, writable=False)
    try:
        fs = _open_fs(fd)
        try:
            pxeboot = fs.get_path(PXEBOOT_DIR)
        except FormatError as exc:
            raise FormatError(unrecognized(detect_profile(fs))) from exc
        if not pxeboot.is_dir:
            raise FormatError(unrecognized(detect_profile(fs))) from FormatError(
                f"entry {pxeboot.name} is a file"
            )
        base = Path(iso_path).stem + "-"
        # ISO names never contain "/" (decoded to "."), and the stem prefix keeps
        # "." and ".." from naming anything outside output_dir.
        files = [
            (rec, os.path.join(output_dir, base + rec.name.lower()))
            for rec in fs.list_dir(pxeboot)
            if not rec.is_dir
        ]
        refuse_existing([path for _, path in files])  # before the first byte
        written: list[str] = []
        with Created() as created:
            created.makedirs(output_dir)
            for rec, path in files:
                on_file(path)
                copy_file_out(fs, rec, path)
                created.add(path)
                written.append(path)
        return written
    finally:
        os.close(fd)


# ---- iso extract minimal-iso ------------------------------------------------------------


def _reset_hint() -> str:
    return (
        "Cannot operate on ISO with embedded customizations.\n"
        "Reset it with `nestos-installer iso reset` and try again."
    )


def _miniso_record(fs: IsoFs, profile: Profile) -> Record | None:
    path = f"{profile.iso_dir}/{miniso.MINISO_FILE}"
    try:
        return fs.get_file(path)
    except NotFoundError:
        return None
    except FormatError as exc:
        raise FormatError(f"looking up '{path}'") from exc


def _load_miniso(fs: IsoFs, rec: Record) -> miniso.MinisoData:
    try:
        raw = fs.read_at(rec.offset, min(rec.length, miniso.MAX_DATA))
        data = miniso.parse(raw)
        miniso.validate_against(data, fs.size)
    except FormatError as exc:
        raise FormatError("reading miniso data file") from exc
    return data


def modify_minimal_kargs(fd: int, path: str, rootfs_url: str | None) -> None:
    """Drop the liveiso karg (and make that the new default); maybe add the rootfs URL."""
    iso = IsoConfig(fd)
    prof = iso.profile
    areas = iso.require_kargs()
    liveiso = miniso.find_karg(areas.current, prof.liveiso_karg + "=")
    if liveiso is None:
        raise FormatError(f"minimal ISO does not have {prof.liveiso_karg}= karg")
    new_default = modify_kargs(areas.current, delete=[liveiso])
    areas.set(new_default)
    if rootfs_url is not None:
        if any(c in " \t\n\f\r" for c in rootfs_url):
            raise NestosError(f"forbidden whitespace found in '{rootfs_url}'")
        areas.set(modify_kargs(new_default, append=[f"{prof.live_rootfs_url_karg}={rootfs_url}"]))
    if not areas.from_json:
        raise FormatError("minimal ISO does not have kargs.json; please report this as a bug")
    name = f"{prof.iso_dir}/KARGS.JSO"
    rec = iso.fs.get_file(name)
    raw = read_meta(iso.fs, prof, "KARGS.JSO")
    assert raw is not None
    new_json = miniso.rewrite_kargs_json(raw, new_default, rec.length, name)
    isoedit.write_in_place(fd, [*iso.modified_regions(), (rec.offset, new_json)], path)


def extract_minimal_iso(
    iso_path: str,
    output: Output,
    output_rootfs: str | None = None,
    rootfs_url: str | None = None,
) -> None:
    """Rebuild the minimal ISO; on any failure nothing we created is left behind."""
    fd = open_iso(iso_path, writable=False)
    try:
        full = IsoConfig(fd)
        fs, prof = full.fs, full.profile
        areas = full.require_kargs()
        if any(full.initrd_region.contents) or areas.current != areas.default:
            raise NestosError(_reset_hint())
        dest: str | int
        if isinstance(output, str):
            dest = output
            temp_dir = os.path.dirname(os.path.abspath(output))
        else:
            dest = output()
            temp_dir = tempfile.gettempdir()
        # Parse (and bound-check) the table before writing anything at all.
        rec = _miniso_record(fs, prof)
        data = None if rec is None else _load_miniso(fs, rec)
        created: list[str] = []
        try:
            if output_rootfs is not None:
                try:
                    rootfs = fs.get_file(miniso.ROOTFS_PATH)
                except FormatError as exc:
                    raise FormatError(f"looking up '{miniso.ROOTFS_PATH}'") from exc
                copy_file_out(fs, rootfs, output_rootfs)
                created.append(output_rootfs)
            if data is None:
                raise NestosError("This ISO image does not support extracting a minimal ISO.")
            _rebuild(
                fs,
                data=data,
                temp_dir=temp_dir,
                prefix=prof.temp_prefix,
                output=dest,
                rootfs_url=rootfs_url,
            )
        except BaseException:
            for path in created:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise
    finally:
        os.close(fd)


def _rebuild(
    fs: IsoFs,
    *,
    data: miniso.MinisoData,
    temp_dir: str,
    prefix: str,
    output: str | int,
    rootfs_url: str | None,
) -> None:
    try:
        tmp_fd, tmp_path = tempfile.mkstemp(prefix=prefix, dir=temp_dir)
    except OSError as exc:
        raise NestosError("creating temporary file") from exc
    try:
        try:

            def sink(chunk: bytes) -> None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(tmp_fd, view) :]

            # The minimal ISO is the full one minus the rootfs: never larger, give or
            # take padding. The bound only stops a hostile xz stream filling the disk.
            miniso.unpack(data, fs.fd, fs.size, sink, limit=2 * fs.size + (64 << 20))
        except (FormatError, OSError) as exc:
            raise NestosError("unpacking miniso") from exc
        try:
            modify_minimal_kargs(tmp_fd, tmp_path, rootfs_url)
        except (FormatError, OSError) as exc:
            raise NestosError("modifying miniso kernel args") from exc
        if isinstance(output, int):
            isoedit.write_stream(tmp_fd, [], output)
        else:
            try:
                os.link(tmp_path, output)
            except OSError as exc:
                raise NestosError(f"persisting output file to {output}") from exc
    finally:
        os.close(tmp_fd)
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass


# ---- pack minimal-iso -------------------------------------------------------------------


def pack_minimal_iso(full_path: str, minimal_path: str, consume: bool = False) -> None:
    """Store what `iso extract minimal-iso` needs into MINISO.DAT of FULL, in place."""
    full_fd = open_iso(full_path, writable=True)
    try:
        min_fd = open_iso(minimal_path, writable=False)
        try:
            full_fs = _open_fs(full_fd)
            min_fs = _open_fs(min_fd)
            prof = detect_profile(full_fs)
            name = f"{prof.iso_dir}/{miniso.MINISO_FILE}"
            try:
                target = full_fs.get_file(name)
            except FormatError as exc:
                raise FormatError(f"looking up '{name}'") from exc
            say("Packing minimal ISO")
            try:
                result = miniso.pack(full_fs, min_fs)
            except (FormatError, OSError) as exc:
                raise NestosError("packing miniso") from exc
            for e in result.data.entries:
                start, end = e.full * SECTOR, e.full * SECTOR + e.length
                if start < target.offset + target.length and target.offset < end:
                    raise FormatError(f"minimal ISO shares {name} with the full ISO")
            say(f"Matched {result.matched} files of {result.minimal_files}")
            say(f"Total bytes skipped: {result.skipped}")
            say(f"Total bytes written: {result.written}")
            say(f"Total bytes written (compressed): {result.written_compressed}")
            say("Verifying that packed image matches digest")
            try:
                miniso.unpack(result.data, full_fd, full_fs.size, lambda _: None, limit=min_fs.size)
            except (FormatError, OSError) as exc:
                raise NestosError("unpacking miniso for verification") from exc
            encoded = result.data.encode()
            if len(encoded) > target.length:
                raise FormatError(
                    f"writing miniso data file: {len(encoded)} bytes do not fit in "
                    f"{name} ({target.length} bytes)"
                )
            blob = encoded + bytes(target.length - len(encoded))
            isoedit.write_in_place(full_fd, [(target.offset, blob)], full_path)
        finally:
            os.close(min_fd)
    finally:
        os.close(full_fd)
    if consume:
        try:
            os.unlink(minimal_path)
        except OSError as exc:
            raise NestosError(f"consuming {minimal_path}") from exc
    say("Packing successful!")

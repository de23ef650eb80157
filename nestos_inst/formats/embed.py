"""Embed-area discovery and editing for live ISOs (docs/compat.md#iso-embed-areas, #karg-areas,
#iso-commands).

An `IsoConfig` finds the initrd (Ignition) area and the karg areas of a live ISO in any
historical layout, lets callers change their logical contents, and hands back the byte
regions that changed. It never writes: `formats.isoedit` owns the output modes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import profile as profiles
from ..errors import FormatError, NestosError, describe
from . import kargs as kargs_mod
from .iso9660 import IsoFs, NotFoundError, Record
from .isoedit import Area, check_areas

KARG_HEADER_OFFSET = 32768 - 24 - 72
KARG_HEADER_MAGIC = b"coreKarg"
KARG_HEADER_LEN = 72
MAX_KARG_AREA = 2048
# Shipped areas are 256 KiB; corrupt metadata must not make us read gigabytes into RAM.
MAX_INITRD_AREA = 256 << 20
DEFAULT_IGNITION_FILE = "IMAGES/IGNITION.IMG"
CONFIG_MEMBER = "config.ign"

# Media that cannot be told apart are CoreOS-era (detect_profile): upstream's text.
UNRECOGNIZED = "Unrecognized CoreOS ISO image."


def unrecognized(profile: profiles.Profile) -> str:
    return f"Unrecognized {profile.media_name} ISO image."


def no_kargs(profile: profiles.Profile, old: bool = True) -> str:
    kind = "old or corrupted" if old else "corrupted"
    return f"No karg embed areas found; {kind} {profile.media_name} ISO image."


NO_KARGS = no_kargs(profiles.COREOS)


@dataclass
class Region:
    """A byte range of the ISO that we may rewrite, with its current contents."""

    offset: int
    length: int
    contents: bytes
    modified: bool = False
    pad: str | None = None  # karg areas only: as given by kargs.json
    end: str | None = None


@dataclass
class Features:
    """Live-image capabilities from features.json; absent keys mean unsupported."""

    installer_config: bool = False
    installer_config_directives: dict[str, bool] = field(default_factory=dict)
    live_initrd_network: bool = False

    @classmethod
    def parse(cls, data: bytes) -> Features:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise FormatError("parsing OS features") from FormatError(describe(exc))
        if not isinstance(obj, dict):
            raise FormatError("parsing OS features") from FormatError("not a JSON object")
        directives = obj.get("installer-config-directives")
        return cls(
            installer_config=obj.get("installer-config") is True,
            installer_config_directives={str(k): v is True for k, v in directives.items()}
            if isinstance(directives, dict)
            else {},
            live_initrd_network=obj.get("live-initrd-network") is True,
        )


class KargAreas:
    """The karg slots of an ISO; all must agree, and all are rewritten together."""

    def __init__(
        self,
        length: int,
        default: str,
        regions: list[Region],
        from_json: bool,
        profile: profiles.Profile = profiles.COREOS,
    ):
        self.length = length
        self.default = default
        self.regions = sorted(regions, key=lambda r: r.offset)
        self.from_json = from_json
        if not self.regions:
            raise FormatError(no_kargs(profile, old=False))
        # Parsed on first use: IsoConfig checks where the areas are before what they hold.
        self._current: str | None = None

    def _parse_all(self) -> str:
        first: str | None = None
        for r in self.regions:
            text = kargs_mod.decode_area(r.contents, r.pad or "#", r.end or "\n")
            if first is None:
                first = text
            elif text != first:
                raise FormatError(
                    f"kargs don't match at all offsets! (expected '{first}', "
                    f"but offset {r.offset} has: '{text}')"
                )
        assert first is not None
        return first

    @property
    def current(self) -> str:
        if self._current is None:
            self._current = self._parse_all()
        return self._current

    def set(self, kargs: str) -> None:
        """Rewrite every slot (always marked modified, even if the bytes are the same)."""
        encoded = [
            kargs_mod.encode_area(kargs, r.length, r.pad or "#", r.end or "\n")
            for r in self.regions
        ]
        for r, data in zip(self.regions, encoded, strict=True):
            r.contents = data
            r.modified = True
        self._current = kargs.strip()

    def to_json(self) -> dict[str, Any]:
        areas: list[dict[str, Any]] = []
        for r in self.regions:
            item: dict[str, Any] = {"offset": r.offset, "length": r.length}
            if r.pad is not None:
                item["pad"] = r.pad
            if r.end is not None:
                item["end"] = r.end
            areas.append(item)
        return {"length": self.length, "default": self.default, "kargs": areas}


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"decoding {what}") from FormatError(describe(exc))
    if not isinstance(obj, dict):
        raise FormatError(f"decoding {what}") from FormatError("expected a JSON object")
    return obj


def _int_field(obj: Mapping[str, Any], key: str, what: str, default: int | None = None) -> int:
    if key not in obj and default is not None:
        return default
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"decoding {what}") from FormatError(
            f"field '{key}' must be a non-negative integer"
        )
    return value


def _char_field(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, str) or len(value.encode("utf-8")) != 1:
        raise FormatError(f"decoding {what}") from FormatError(
            f"field '{key}' must be a single one-byte character"
        )
    return value


def _str_field(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise FormatError(f"decoding {what}") from FormatError(f"field '{key}' must be a string")
    return value


def _caused(err: NestosError, cause: BaseException) -> NestosError:
    """`err` with `cause` attached, for building multi-level chains in one raise."""
    err.__cause__ = cause
    return err


def detect_profile(fs: IsoFs) -> profiles.Profile:
    """NESTOS/ → NestOS, COREOS/ → CoreOS; legacy ISOs without either are CoreOS-era."""
    for prof in profiles.ALL:
        try:
            if fs.get_path(prof.iso_dir).is_dir:
                return prof
        except NotFoundError:
            continue
    return profiles.COREOS


def read_meta(fs: IsoFs, profile: profiles.Profile, name: str) -> bytes | None:
    """A metadata file (`NESTOS/<name>` or `COREOS/<name>`), or None if absent."""
    try:
        rec = fs.get_file(f"{profile.iso_dir}/{name}")
    except NotFoundError:
        return None
    return fs.read_file(rec)


def region_in_file(fs: IsoFs, rec: Record, offset: int, length: int, what: str) -> Region:
    """A region inside a file's extent; refuse metadata pointing outside it."""
    if offset + length > rec.length:
        raise FormatError(
            f"{what} at offset {offset} length {length} extends beyond "
            f"{rec.name} ({rec.length} bytes)"
        )
    start = rec.offset + offset
    return Region(start, length, fs.read_at(start, length))


def find_karg_areas(fs: IsoFs, profile: profiles.Profile) -> KargAreas | None:
    """Karg slots from kargs.json, else the legacy coreKarg header, else None."""
    try:
        raw = read_meta(fs, profile, "KARGS.JSO")
    except FormatError as exc:
        raise FormatError("reading kargs embed area info") from exc
    if raw is not None:
        return _karg_areas_from_json(fs, raw, profile)
    return _karg_areas_from_header(fs, profile)


def _karg_areas_from_json(fs: IsoFs, raw: bytes, profile: profiles.Profile) -> KargAreas:
    what = "kargs embed area info"
    obj = _json_object(raw, what)
    default = _str_field(obj, "default", what)
    size = _int_field(obj, "size", what)
    files = obj.get("files")
    if not isinstance(files, list):
        raise FormatError(f"decoding {what}") from FormatError("field 'files' must be a list")
    if size > MAX_KARG_AREA:
        raise FormatError(f"karg embed area size larger than {MAX_KARG_AREA} (found {size})")
    if len(default.encode("utf-8")) > size:
        raise FormatError(
            f"default kargs size {len(default.encode('utf-8'))} larger than embed areas ({size})"
        )
    regions: list[Region] = []
    for entry in files:
        if not isinstance(entry, dict):
            raise FormatError(f"decoding {what}") from FormatError("file entry not an object")
        path = _str_field(entry, "path", what)
        offset = _int_field(entry, "offset", what)
        pad = _char_field(entry, "pad", what)
        end = _char_field(entry, "end", what)
        try:
            rec = fs.get_file(path.upper())
        except FormatError as exc:
            raise FormatError(f"looking up '{path}'") from exc
        try:
            region = region_in_file(fs, rec, offset, size, "karg embed area")
        except FormatError as exc:
            raise FormatError("reading kargs embed area") from exc
        region.pad, region.end = pad, end
        regions.append(region)
    return KargAreas(size, default, regions, from_json=True, profile=profile)


def _karg_areas_from_header(fs: IsoFs, profile: profiles.Profile) -> KargAreas | None:
    try:
        header = fs.read_at(KARG_HEADER_OFFSET, KARG_HEADER_LEN)
    except FormatError as exc:
        raise FormatError("reading karg embed header") from exc
    if header[:8] != KARG_HEADER_MAGIC:
        return None
    length, default_off, *offsets = struct.unpack_from("<8Q", header, 8)
    if length > MAX_KARG_AREA:
        raise FormatError(f"karg embed area length larger than {MAX_KARG_AREA} (found {length})")
    try:
        default_bytes = fs.read_at(default_off, length)
    except FormatError as exc:
        raise FormatError("reading default kargs") from exc
    default = kargs_mod.decode_area(default_bytes)
    regions: list[Region] = []
    for off in offsets:
        if off == 0:
            break
        try:
            regions.append(Region(off, length, fs.read_at(off, length)))
        except FormatError as exc:
            raise FormatError("reading kargs embed area") from exc
    return KargAreas(length, default, regions, from_json=False, profile=profile)


class IsoConfig:
    """The embed areas of one live ISO, read through an open file descriptor."""

    def __init__(self, fd: int) -> None:
        try:
            self.fs = IsoFs(fd)
        except FormatError as exc:
            raise FormatError("parsing ISO9660 image") from exc
        self.profile = detect_profile(self.fs)
        self.initrd_region = self._find_initrd_area()
        self.kargs = self._find_karg_areas()
        self._members: dict[str, bytes] | None = None
        self._check_areas()
        if self.kargs is not None:
            _ = self.kargs.current  # contents are parsed (and refused) at load, as before

    def _check_areas(self) -> None:
        """Every area, written or not, by the one rule of isoedit.check_areas: a reset
        must not find out about an overlap only after it wrote over the descriptors."""
        areas = [Area("initrd embed area", self.initrd_region.offset, self.initrd_region.length)]
        if self.kargs is not None:
            areas += [Area("karg embed area", r.offset, r.length) for r in self.kargs.regions]
        try:
            check_areas(areas, self.fs.size, self.fs.descriptors_end)
        except FormatError as exc:
            raise FormatError("checking embed areas") from exc

    # ---- metadata files -------------------------------------------------------------

    def _find_initrd_area(self) -> Region:
        try:
            raw = read_meta(self.fs, self.profile, "IGNINFO.JSO")
        except FormatError as exc:
            raise FormatError("reading igninfo") from exc
        if raw is None:
            info: dict[str, Any] = {"file": DEFAULT_IGNITION_FILE}
        else:
            info = _json_object(raw, "igninfo")
        path = _str_field(info, "file", "igninfo")
        try:
            rec = self.fs.get_file(path.upper())
        except FormatError as exc:
            raise FormatError(unrecognized(self.profile)) from _caused(
                FormatError("finding initrd embed area"), exc
            )
        offset = _int_field(info, "offset", "igninfo", default=0)
        if offset > rec.length:
            raise FormatError("reading initrd embed area") from FormatError(
                f"offset {offset} beyond end of {rec.name} ({rec.length} bytes)"
            )
        length = _int_field(info, "length", "igninfo", default=rec.length - offset)
        if length > MAX_INITRD_AREA:
            raise FormatError("reading initrd embed area") from FormatError(
                f"initrd embed area length {length} larger than {MAX_INITRD_AREA}"
            )
        try:
            return region_in_file(self.fs, rec, offset, length, "initrd embed area")
        except FormatError as exc:
            raise FormatError("reading initrd embed area") from exc

    def _find_karg_areas(self) -> KargAreas | None:
        return find_karg_areas(self.fs, self.profile)

    def features(self) -> Features:
        try:
            raw = read_meta(self.fs, self.profile, "FEATURES.JSO")
        except FormatError as exc:
            raise FormatError("reading OS features") from exc
        return Features() if raw is None else Features.parse(raw)

    # ---- initrd area ------------------------------------------------------------------

    @property
    def network_dir(self) -> str:
        return self.profile.initrd_network_dir

    def members(self) -> dict[str, bytes]:
        """Regular files held in the initrd area (empty when the area is all zeros)."""
        if self._members is None:
            data = self.initrd_region.contents
            if not any(data):
                self._members = {}
            else:
                from .initrd import read_initrd

                try:
                    self._members = dict(read_initrd(data))
                except NestosError as exc:
                    raise FormatError("decoding initrd embed area") from exc
        return dict(self._members)

    def set_members(self, members: Mapping[str, bytes]) -> None:
        """Encode `members` into the area (all zeros when empty); whole area rewritten."""
        capacity = self.initrd_region.length
        if members:
            from .initrd import write_initrd

            archive = write_initrd(dict(members))
            if len(archive) > capacity:
                raise FormatError(f"Compressed initramfs is too large: {len(archive)} > {capacity}")
            data = archive + bytes(capacity - len(archive))
        else:
            data = bytes(capacity)
        self.initrd_region.contents = data
        self.initrd_region.modified = True
        self._members = dict(members)

    def ignition(self) -> bytes | None:
        return self.members().get(CONFIG_MEMBER)

    def network_members(self) -> dict[str, bytes]:
        prefix = self.network_dir + "/"
        return {k: v for k, v in self.members().items() if k.startswith(prefix)}

    # ---- kargs ------------------------------------------------------------------------

    def require_kargs(self) -> KargAreas:
        if self.kargs is None:
            raise FormatError(no_kargs(self.profile))
        return self.kargs

    # ---- results ----------------------------------------------------------------------

    def modified_regions(self) -> list[tuple[int, bytes]]:
        """(offset, bytes) of every region that must be written, sorted by offset."""
        out = [(self.initrd_region.offset, self.initrd_region.contents)]
        if not self.initrd_region.modified:
            out = []
        if self.kargs is not None:
            out += [(r.offset, r.contents) for r in self.kargs.regions if r.modified]
        return sorted(out)

    def initrd_json(self) -> dict[str, int]:
        return {"offset": self.initrd_region.offset, "length": self.initrd_region.length}

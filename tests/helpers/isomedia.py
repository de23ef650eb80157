"""Build live-ISO-like images with real xorriso, in NestOS and CoreOS layouts.

The images carry what the installer looks for (metadata dir with igninfo/kargs/
features JSON, an Ignition embed file, karg slots in grub/isolinux configs, optionally
the legacy `coreKarg` system-area header). Expected offsets are taken from xorriso's
own `report_lba`, never from our parser, so tests check the parser independently.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestos_inst import profile as profiles

KIB = 1024
DEFAULT_KARGS = (
    "mitigations=auto,nosmt {liveiso}=nestos-24.03.20240101.0 "
    "ignition.firstboot ignition.platform.id=metal"
)
CONFIG = b'{"ignition": {"version": "3.0.0"}\n'
KARG_HEADER_OFFSET = 32768 - 24 - 72
GRUB_PREFIX = b"set timeout=5\nmenuentry 'Live' {\n  linux /images/pxeboot/vmlinuz "
GRUB_SUFFIX = b"\n  initrd /images/pxeboot/initrd.img /images/ignition.img\n}\n"
ISOLINUX_PREFIX = b"default live\nlabel live\n  kernel /images/pxeboot/vmlinuz\n  append "
ISOLINUX_SUFFIX = b"\n"
BOOT_IMAGE_PREFIX = 6 * KIB  # s390x-like: area in the middle of images/cdboot.img
BOOT_IMAGE_SUFFIX = 2 * KIB


@dataclass
class LiveIsoSpec:
    """What to put in the image; defaults give a current NestOS-layout live ISO."""

    profile: profiles.Profile = profiles.NESTOS
    # igninfo.json: None = absent (fallback IMAGES/IGNITION.IMG); "file" = file only;
    # "slice" = {"file": "images/cdboot.img", "offset": .., "length": ..}
    igninfo: str | None = "file"
    ignition_size: int = 64 * KIB
    kargs: str = "json"  # json | legacy | none
    default_kargs: str | None = None
    karg_size: int = 1139
    pad: str | None = None  # written to kargs.json only when not None
    end: str | None = None
    features: dict[str, Any] | None = field(
        default_factory=lambda: {"installer-config": True, "live-initrd-network": True}
    )
    extra_kargs_json: dict[str, Any] = field(default_factory=dict)
    extra_files: dict[str, bytes] = field(default_factory=dict)  # written last, may replace
    volume_id: str = "nestos-live"

    def default(self) -> str:
        if self.default_kargs is not None:
            return self.default_kargs
        return DEFAULT_KARGS.format(liveiso=self.profile.liveiso_karg)


@dataclass
class LiveIso:
    """A built image and the facts a test expects our parser to find."""

    path: Path
    spec: LiveIsoSpec
    initrd_offset: int
    initrd_length: int
    karg_offsets: list[int]
    default_offset: int | None = None
    lbas: dict[str, tuple[int, int]] = field(default_factory=dict)  # path → (offset, size)

    @property
    def default_kargs(self) -> str:
        return self.spec.default()

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)


def karg_area(kargs: str, size: int, pad: str = "#", end: str = "\n") -> bytes:
    body = kargs.encode() + end.encode()
    return body + pad.encode() * (size - len(body))


def _report_lba(iso: Path) -> dict[str, tuple[int, int]]:
    proc = subprocess.run(
        ["xorriso", "-indev", str(iso), "-find", "/", "-type", "f", "-exec", "report_lba"],
        capture_output=True,
        check=True,
    )
    out: dict[str, tuple[int, int]] = {}
    pattern = re.compile(r"File data lba:\s*\d+\s*,\s*(\d+)\s*,\s*\d+\s*,\s*(\d+)\s*,\s*'(.*)'")
    for line in (proc.stdout + proc.stderr).decode().splitlines():
        m = pattern.search(line)
        if m:
            out[m.group(3).lstrip("/")] = (int(m.group(1)) * 2048, int(m.group(2)))
    return out


def build_live_iso(path: Path, spec: LiveIsoSpec | None = None) -> LiveIso:
    """Write a live-ISO-like image at `path` with xorriso."""
    spec = spec or LiveIsoSpec()
    meta = spec.profile.iso_dir.lower()
    brand = "nestos" if spec.profile is profiles.NESTOS else "fedora"
    default = spec.default()
    pad, end = spec.pad or "#", spec.end or "\n"
    with tempfile.TemporaryDirectory(prefix="isomedia-") as tmp:
        root = Path(tmp)

        def put(rel: str, data: bytes) -> None:
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)

        put("images/pxeboot/vmlinuz", b"kernel\n")
        put("images/pxeboot/initrd.img", b"initrd\n")
        if spec.igninfo == "slice":
            put(
                "images/cdboot.img",
                b"K" * BOOT_IMAGE_PREFIX + bytes(spec.ignition_size) + b"S" * BOOT_IMAGE_SUFFIX,
            )
            info: dict[str, Any] = {
                "file": "images/cdboot.img",
                "offset": BOOT_IMAGE_PREFIX,
                "length": spec.ignition_size,
            }
            put(f"{meta}/igninfo.json", json.dumps(info).encode())
        else:
            put("images/ignition.img", bytes(spec.ignition_size))
            if spec.igninfo == "file":
                put(f"{meta}/igninfo.json", b'{"file": "images/ignition.img"}')
        area = karg_area(default, spec.karg_size, pad, end) if spec.kargs != "none" else b""
        grub_cfg = f"EFI/{brand}/grub.cfg"
        put(grub_cfg, GRUB_PREFIX + area + GRUB_SUFFIX)
        put("isolinux/isolinux.cfg", ISOLINUX_PREFIX + area + ISOLINUX_SUFFIX)
        if spec.kargs == "json":
            files: list[dict[str, Any]] = []
            for rel, offset in (
                (grub_cfg, len(GRUB_PREFIX)),
                ("isolinux/isolinux.cfg", len(ISOLINUX_PREFIX)),
            ):
                entry: dict[str, Any] = {"path": rel, "offset": offset}
                if spec.pad is not None:
                    entry["pad"] = spec.pad
                if spec.end is not None:
                    entry["end"] = spec.end
                files.append(entry)
            obj = {"default": default, "files": files, "size": spec.karg_size}
            obj.update(spec.extra_kargs_json)
            put(f"{meta}/kargs.json", json.dumps(obj, indent=2).encode())
        elif spec.kargs == "legacy":
            put(".cmdline", karg_area(default, spec.karg_size))
        if spec.features is not None:
            put(f"{meta}/features.json", json.dumps(spec.features).encode())
        for rel, data in spec.extra_files.items():
            put(rel, data)
        subprocess.run(
            ["xorriso", "-as", "mkisofs", "-quiet", "-V", spec.volume_id, "-o", str(path), tmp],
            capture_output=True,
            check=True,
        )
    lbas = _report_lba(path)
    if spec.igninfo == "slice":
        initrd_offset = lbas["images/cdboot.img"][0] + BOOT_IMAGE_PREFIX
    else:
        initrd_offset = lbas["images/ignition.img"][0]
    karg_offsets: list[int] = []
    default_offset = None
    if spec.kargs != "none":
        karg_offsets = sorted(
            [
                lbas[grub_cfg][0] + len(GRUB_PREFIX),
                lbas["isolinux/isolinux.cfg"][0] + len(ISOLINUX_PREFIX),
            ]
        )
    if spec.kargs == "legacy":
        default_offset = lbas[".cmdline"][0]
        write_karg_header(path, spec.karg_size, default_offset, karg_offsets)
    return LiveIso(
        path, spec, initrd_offset, spec.ignition_size, karg_offsets, default_offset, lbas
    )


def write_karg_header(path: Path, length: int, default: int, offsets: Sequence[int]) -> None:
    """The 72-byte legacy `coreKarg` header in the system area (docs/compat.md#iso-embed-areas)."""
    slots = list(offsets) + [0] * (6 - len(offsets))
    header = b"coreKarg" + struct.pack("<8Q", length, default, *slots)
    with open(path, "r+b") as f:
        f.seek(KARG_HEADER_OFFSET)
        f.write(header)


def build_plain_iso(path: Path, files: dict[str, bytes]) -> None:
    """A non-live ISO9660 image holding `files` (relative path → bytes)."""
    with tempfile.TemporaryDirectory(prefix="isomedia-") as tmp:
        for rel, data in files.items():
            dest = Path(tmp) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        subprocess.run(
            ["xorriso", "-as", "mkisofs", "-quiet", "-V", "plain", "-o", str(path), tmp],
            capture_output=True,
            check=True,
        )


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes


@contextmanager
def _swapped_stdio(stdin: bytes) -> Iterator[tuple[io.BufferedRandom, io.BufferedRandom]]:
    """Point sys.std* at temp files (real fds, so fileno()/sendfile work)."""
    saved = sys.stdin, sys.stdout, sys.stderr
    with (
        tempfile.TemporaryFile() as fin,
        tempfile.TemporaryFile() as fout,
        tempfile.TemporaryFile() as ferr,
    ):
        fin.write(stdin)
        fin.seek(0)
        sys.stdin = io.TextIOWrapper(os.fdopen(os.dup(fin.fileno()), "rb"))
        sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(fout.fileno()), "wb"), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(ferr.fileno()), "wb"), write_through=True)
        try:
            yield fout, ferr
        finally:
            for stream in (sys.stdin, sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except ValueError:
                    pass
                stream.close()
            sys.stdin, sys.stdout, sys.stderr = saved


def run_main(*args: str | os.PathLike[str], input: bytes = b"") -> Result:
    """Run the CLI in this process (fast path for suites with many invocations)."""
    from nestos_inst.__main__ import main

    # Commands restore the default SIGPIPE action (they die silently on a closed
    # pipe); in this process that would let any later EPIPE (the test HTTP server
    # writing to a client that went away) kill pytest itself.
    sigpipe = signal.getsignal(signal.SIGPIPE)
    with _swapped_stdio(input) as (fout, ferr):
        try:
            rc = main([os.fspath(a) for a in args])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        finally:
            signal.signal(signal.SIGPIPE, sigpipe)
        sys.stdout.flush()
        sys.stderr.flush()
        fout.seek(0)
        ferr.seek(0)
        return Result(rc, fout.read(), ferr.read())


MODES = ("stream", "copy", "inplace")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if "-installer-temp-" in p.name]


def ignition_from_area(area: bytes) -> bytes:
    """`config.ign` from a raw embed area, decoded by the real xz and cpio tools."""
    xz = subprocess.run(["xz", "-dc"], input=area.rstrip(b"\0"), capture_output=True, check=True)
    cpio = subprocess.run(
        ["cpio", "-i", "--to-stdout", "config.ign"],
        input=xz.stdout,
        capture_output=True,
        check=True,
    )
    return cpio.stdout


def unxz_fixture(src: Path, out: Path) -> Path:
    """Decompress an upstream `.xz` fixture to `out`; the test is skipped if it is absent."""
    import pytest  # here, not at the top: the benchmarks import this module too

    if not src.exists():
        pytest.skip(f"fixture {src} not present")
    with open(out, "wb") as f:
        subprocess.run(["xz", "-dc", str(src)], stdout=f, check=True)
    return out


def assert_truncated_refused(iso: Path, tmp_path: Path) -> None:
    """The first half of `iso` is refused as incomplete by the ISO 9660 reader."""
    import pytest  # here, not at the top: the benchmarks import this module too

    from nestos_inst.errors import FormatError
    from nestos_inst.formats.iso9660 import IsoFs

    half = tmp_path / "half.iso"
    data = iso.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    fd = os.open(half, os.O_RDONLY)
    try:
        with pytest.raises(FormatError, match=r"^ISO image is incomplete$"):
            IsoFs(fd)
    finally:
        os.close(fd)


def parse_mutated(
    data: bytes,
    edits: Iterable[tuple[int, bytes]],
    path: Path,
    parse: Callable[[Path], object],
) -> None:
    """Write `data` with each (offset, patch) applied to `path` and run `parse` on it.
    Refusing the damaged image with a NestosError is fine; anything else (a crash, a
    Python exception of another kind) fails the property test that calls this."""
    from nestos_inst.errors import NestosError

    mutated = bytearray(data)
    for offset, patch in edits:
        mutated[offset : offset + len(patch)] = patch
    path.write_bytes(bytes(mutated))
    try:
        parse(path)
    except NestosError:
        pass


def ok(result: Result) -> Result:
    assert result.returncode == 0, result.stderr.decode()
    return result


def fail(result: Result, message: str) -> Result:
    assert result.returncode == 1, result.stderr.decode()
    assert message in result.stderr.decode(), result.stderr.decode()
    return result


class Media:
    """A pristine image plus fresh copies to edit, in one temp dir."""

    def __init__(self, built: LiveIso | Path, work: Path) -> None:
        self._built = built if isinstance(built, LiveIso) else None
        self.path = built.path if isinstance(built, LiveIso) else built
        self.work = work
        self.original = sha(self.path)
        self.n = 0

    @property
    def built(self) -> LiveIso:
        assert self._built is not None, "not built by build_live_iso"
        return self._built

    def copy(self, src: Path | None = None) -> Path:
        self.n += 1
        dest = self.work / f"copy{self.n}.iso"
        shutil.copyfile(src or self.path, dest)
        return dest

    def run(self, mode: str, *args: str, src: Path | None = None, input: bytes = b"") -> Path:
        """Run `args ... [-o X] ISO` in `mode`; return the path of the result."""
        iso = self.copy(src)
        if mode == "inplace":
            ok(run_main(*args, str(iso), input=input))
            return iso
        out = self.work / f"out{self.n}.iso"
        if mode == "copy":
            ok(run_main(*args, "-o", str(out), str(iso), input=input))
        else:
            res = ok(run_main(*args, "-o", "-", str(iso), input=input))
            out.write_bytes(res.stdout)
        assert sha(iso) == sha(src or self.path), "input changed in -o mode"
        return out

    def all_modes(self, *args: str, src: Path | None = None, input: bytes = b"") -> Path:
        """Run in all three modes, assert identical outputs, return one of them."""
        outs = [self.run(m, *args, src=src, input=input) for m in MODES]
        assert len({sha(p) for p in outs}) == 1
        assert temps(self.work) == []
        return outs[0]

    def all_fail(self, message: str, *args: str, src: Path | None = None) -> None:
        """Every mode fails with `message`, leaves the input alone, creates nothing."""
        for mode in MODES:
            iso = self.copy(src)
            before = sha(iso)
            out = self.work / f"never{self.n}.iso"
            extra = [] if mode == "inplace" else ["-o", str(out) if mode == "copy" else "-"]
            fail(run_main(*args, *extra, str(iso)), message)
            assert sha(iso) == before
            assert not out.exists()
        assert temps(self.work) == []

"""Fuzz targets: every parser that reads bytes an attacker may control.

Each target takes one `bytes` input (so a crasher is a plain file that a regression
test can replay) and must end normally or with one of its `allowed` errors, our own
clear errors. Anything else (another exception, MemoryError under the fuzzer's
address-space cap, a hang) is a finding.

Inputs come from Hypothesis strategies: mutations of valid seeds built here with the
test helpers (focused on the bytes where structures live), plus free-form data.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from nestos_inst.errors import NestosError

Run = Callable[[bytes], None]


Seeds = tuple[list[bytes], list[list[tuple[int, int]]]]


def _no_seeds() -> Seeds:
    return [], []


@dataclass(frozen=True)
class Target:
    """`strategy` drives Hypothesis; `seeds` (valid inputs and their hot ranges) feed
    the fast mutation phase together with what Hypothesis generated."""

    name: str
    what: str
    strategy: Callable[[], st.SearchStrategy[bytes]]
    run: Run
    seeds: Callable[[], Seeds] = _no_seeds
    allowed: tuple[type[BaseException], ...] = (NestosError,)


_BOUNDARY = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 2**63, 2**64 - 1)


def mutate(rng: random.Random, seed: bytes, hot: Sequence[tuple[int, int]] = ()) -> bytes:
    """The fast twin of `mutated`: the same edits, drawn from `rng` (no Hypothesis
    bookkeeping, so a loaded machine still runs thousands of inputs a second)."""
    data = bytearray(seed)
    ranges = list(hot) or [(0, len(data))]
    for _ in range(rng.randint(1, 6)):
        if not data:
            data += rng.randbytes(rng.randint(0, 64))
            continue
        lo, hi = rng.choice(ranges)
        hi = min(max(hi, lo + 1), len(data))
        lo = min(lo, hi - 1)
        pos = rng.randint(lo, hi - 1)
        kind = rng.randint(0, 7)
        if kind <= 2:
            data[pos] = rng.randint(0, 255)
        elif kind == 3:
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(_BOUNDARY)
            data[pos : pos + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == 4:
            del data[pos : pos + rng.randint(1, 64)]
        elif kind == 5:
            n = rng.randint(1, 64)
            data[pos:pos] = data[pos : pos + n]
        elif kind == 6:
            data[pos] ^= 1 << rng.randint(0, 7)
        else:
            data += rng.randbytes(rng.randint(1, 32))
    return bytes(data)


# ---- mutation ------------------------------------------------------------------------------


@st.composite
def mutated(
    draw: st.DrawFn, seeds: Sequence[bytes], hot: Sequence[Sequence[tuple[int, int]]] = ()
) -> bytes:
    """A seed with a few edits: bytes set (mostly inside the seed's hot ranges),
    integers overwritten with boundary values, slices cut, duplicated or appended."""
    i = draw(st.integers(0, len(seeds) - 1))
    data = bytearray(seeds[i])
    ranges = list(hot[i]) if i < len(hot) and hot[i] else [(0, len(data))]
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            data += draw(st.binary(max_size=64))
            continue
        lo, hi = draw(st.sampled_from(ranges))
        hi = min(max(hi, lo + 1), len(data))
        lo = min(lo, hi - 1)
        pos = draw(st.integers(lo, hi - 1))
        kind = draw(st.integers(0, 6))
        if kind <= 2:
            data[pos] = draw(st.integers(0, 255))
        elif kind == 3:
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(
                st.sampled_from(
                    [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 2**63, 2**64 - 1]
                )
            )
            data[pos : pos + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == 4:
            n = draw(st.integers(1, 64))
            del data[pos : pos + n]
        elif kind == 5:
            n = draw(st.integers(1, 64))
            data[pos:pos] = data[pos : pos + n]
        else:
            data += draw(st.binary(max_size=32))
    return bytes(data)


def _either(*strategies: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(*strategies)


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("fuzz", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


# ---- ISO9660 + embed areas -----------------------------------------------------------------


@functools.cache
def iso_seeds() -> tuple[list[bytes], list[list[tuple[int, int]]]]:
    """Live ISOs (kargs.json layout, legacy header layout, an embedded config and
    keyfile) and where their structures are: system area tail, descriptors,
    directories, metadata files, the start of the embed area."""
    import tempfile

    from nestos_inst.formats.embed import IsoConfig
    from nestos_inst.formats.iso9660 import IsoFs
    from nestos_inst.formats.isoedit import write_stream
    from tests.helpers.isomedia import LiveIsoSpec, build_live_iso

    seeds: list[bytes] = []
    hot: list[list[tuple[int, int]]] = []
    with tempfile.TemporaryDirectory(prefix="fuzz-iso-") as tmp:
        for i, spec in enumerate(
            (LiveIsoSpec(ignition_size=8192), LiveIsoSpec(kargs="legacy", ignition_size=8192))
        ):
            path = Path(tmp) / f"{i}.iso"
            build_live_iso(path, spec)
            seeds.append(path.read_bytes())
        # A customised copy: members in the embed area (an xz cpio) to mutate too.
        fd = _memfd(seeds[0])
        try:
            iso = IsoConfig(fd)
            iso.set_members({"config.ign": b"{}", f"{iso.network_dir}/a.nmconnection": b"[x]"})
            out = os.memfd_create("out", os.MFD_CLOEXEC)
            write_stream(fd, iso.modified_regions(), out)
            seeds.append(os.pread(out, os.fstat(out).st_size, 0))
            os.close(out)
        finally:
            os.close(fd)
    for data in seeds:
        fd = _memfd(data)
        try:
            fs = IsoFs(fd)
            ranges = [(32768 - 96, 32768), (32768, fs.descriptors_end)]
            for _, rec in fs.walk():
                ranges.append((rec.offset, rec.offset + min(rec.length, 2048)))
            ranges.append((fs.root.offset, fs.root.offset + 2048) if fs.root else (0, 1))
        finally:
            os.close(fd)
        hot.append([(lo, hi) for lo, hi in ranges if hi > lo])
    return seeds, hot


def run_iso(data: bytes) -> None:
    """What `iso ... show`, `dev show iso` and every write path parse and check."""
    from nestos_inst.formats.embed import IsoConfig
    from nestos_inst.formats.iso9660 import descriptors_end
    from nestos_inst.formats.isoedit import check_regions

    fd = _memfd(data)
    try:
        iso = IsoConfig(fd)
        list(iso.fs.walk())
        iso.features()
        iso.network_members()
        iso.ignition()
        if iso.kargs is not None:
            iso.kargs.to_json()
            iso.kargs.set(iso.kargs.default)
        iso.set_members({})  # zeros: no xz preset-9 run per input
        # The check every write path (in place, -o PATH, -o -) makes before writing.
        check_regions(iso.modified_regions(), iso.fs.size, descriptors_end(fd))
    finally:
        os.close(fd)


def _iso_strategy() -> st.SearchStrategy[bytes]:
    seeds, hot = iso_seeds()
    return mutated(seeds, hot)


# ---- kargs areas ---------------------------------------------------------------------------


def run_kargs(data: bytes) -> None:
    """Slot decoding/encoding and the karg editor, fed text split from the input."""
    from nestos_inst.formats import kargs

    pad, end, rest = data[:1] or b"#", data[1:2] or b"\n", data[2:]
    pad_s, end_s = pad.decode("latin-1"), end.decode("latin-1")
    text = kargs.decode_area(rest, pad_s, end_s)
    words = text.split(" ")
    try:
        new = kargs.modify_kargs(
            text, delete=words[:2], append=words[2:4], append_if_missing=words[4:5],
            replace=words[5:6],
        )  # fmt: skip
    except NestosError:
        return
    encoded = kargs.encode_area(new, len(rest) + 1, pad_s, end_s)
    assert len(encoded) == len(rest) + 1


def _kargs_strategy() -> st.SearchStrategy[bytes]:
    karg = st.text(
        st.characters(codec="utf-8", exclude_characters=" "), min_size=0, max_size=12
    ) | st.sampled_from(
        ["quiet", "a=b=c", "console=ttyS0", "x=1=2", "=", "==", "ignition.platform.id=metal"]
    )
    line = st.lists(karg, max_size=10).map(" ".join)
    structured = st.builds(
        lambda pad, end, body, fill: pad + end + body.encode() + end + pad * fill,
        st.sampled_from([b"#", b" ", b"\0", b"\n"]),
        st.sampled_from([b"\n", b"#", b"\0"]),
        line,
        st.integers(0, 40),
    )
    return _either(structured, st.binary(max_size=300))


# ---- cpio / initrd -------------------------------------------------------------------------


@functools.cache
def initrd_seeds() -> list[bytes]:
    from nestos_inst.formats import cpio
    from nestos_inst.formats.initrd import write_initrd
    from tests.helpers import initrdmedia

    archive = cpio.write_archive({"config.ign": b"{}", "etc/x/y": b"hello world\n" * 4})
    gnu = initrdmedia.gnu_cpio({"d/f": b"data", "etc/nestos-firstboot-network/a": b"[c]"})
    return [
        archive,
        gnu,
        initrdmedia.gzip(archive),
        initrdmedia.xz(archive),
        initrdmedia.xz(archive, check="sha256"),
        initrdmedia.zstd(archive),
        write_initrd({"a": b"b" * 100}),
        initrdmedia.gzip(archive) + b"\0\0\0" + initrdmedia.zstd(gnu),
        archive + initrdmedia.xz(gnu),
    ]


def run_initrd(data: bytes) -> None:
    """`pxe ... unwrap`, `dev show/extract initrd`: every compression, concatenated."""
    from nestos_inst.formats import cpio
    from nestos_inst.formats.initrd import network_members, network_patterns, read_initrd

    read_initrd(data)
    network_members(read_initrd(data, network_patterns()))
    read_initrd(data, ["config.ign", "*x*"])
    try:
        cpio.parse_archive(data)
    except NestosError:
        pass


def _initrd_strategy() -> st.SearchStrategy[bytes]:
    return _either(mutated(initrd_seeds()), st.binary(max_size=512))


# ---- GPT -----------------------------------------------------------------------------------


@functools.cache
def gpt_seeds() -> list[bytes]:
    from nestos_inst.disk.gpt import GPT, Partition

    linux = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
    out = []
    for ss in (512, 4096):
        size = 96 * 1024 if ss == 512 else 512 * 1024
        gpt = GPT.new(ss, size)
        per = 40 if ss == 512 else 6
        gpt.add(Partition(1, linux, uuid.uuid4(), per, per + 20, 0, "boot"))
        gpt.add(Partition(3, linux, uuid.uuid4(), per + 21, per + 40, 1 << 60, "röot"))
        buf = io.BytesIO(bytes(size))
        gpt.write(buf, size)
        out.append(buf.getvalue())
    return out


def run_gpt(data: bytes) -> None:
    """The table reader install uses to keep partitions (primary, backup fallback)."""
    from nestos_inst.disk.gpt import GPT

    ss = 4096 if len(data) >= 512 * 1024 else 512
    try:
        gpt = GPT.read(io.BytesIO(data), ss, len(data))
        for p in gpt.entries:
            assert 1 <= p.number <= gpt.num_entries
    finally:
        try:
            GPT.from_bytes(data, ss)
        except NestosError:
            pass


def _gpt_seeds_hot() -> Seeds:
    """Headers and entry arrays of both copies, for 512 and 4096-byte sectors."""
    seeds = gpt_seeds()
    hot = [[(0, 3 * 512), (len(seeds[0]) - 33 * 512, len(seeds[0]))]]
    hot.append([(0, 3 * 4096), (len(seeds[1]) - 6 * 4096, len(seeds[1]))])
    return seeds, hot


def _gpt_strategy() -> st.SearchStrategy[bytes]:
    seeds, hot = _gpt_seeds_hot()
    return _either(mutated(seeds, hot), st.binary(max_size=4096))


# ---- osmet ---------------------------------------------------------------------------------


@functools.cache
def osmet_seeds() -> list[bytes]:
    from nestos_inst.osmet.format import Extent, Header, Mapping, Osmet, Partition

    header = Header("0.1.0", 512, "NestOS 24.03", "x86_64")
    osmet = Osmet(
        (
            Partition(1 << 20, 2 << 20, (Mapping(Extent(0, 4096, 8192), b"\x01" * 32),)),
            Partition(2 << 20, 300 << 20, (Mapping(Extent(4096, 70000, 4096), b"\xff" * 32),)),
        ),
        b"\xaa" * 32,
        301 << 20,
    )
    return [header.encode() + osmet.encode() + b"\xfd7zXZ\0"]


def run_osmet(data: bytes) -> None:
    """The osmet header and table an offline install trusts to rebuild the image."""
    from nestos_inst.formats.bincode import Reader
    from nestos_inst.osmet.format import read_header, read_osmet, validate

    r = Reader(io.BytesIO(data), len(data))
    read_header(r)
    validate(read_osmet(r))


def _osmet_strategy() -> st.SearchStrategy[bytes]:
    return _either(mutated(osmet_seeds()), st.binary(max_size=200))


# ---- minimal-ISO data ----------------------------------------------------------------------

_MINISO_FULL = bytes(range(256)) * 8 * 6


@functools.cache
def miniso_seeds() -> list[bytes]:
    import hashlib
    import lzma

    from nestos_inst.formats.miniso import Entry, MinisoData

    minimal = b"M" * 2048 + _MINISO_FULL[2048:4096] + b"z" * 10
    data = MinisoData(
        [Entry(1, 1, 2048)],
        hashlib.sha256(minimal).digest(),
        lzma.compress(b"M" * 2048 + b"z" * 10, format=lzma.FORMAT_XZ),
        "fuzz",
    )
    return [data.encode()]


def run_miniso(data: bytes) -> None:
    """MINISO.DAT: parse, bound-check against the full image, rebuild."""
    from nestos_inst.formats import miniso

    parsed = miniso.parse(data)
    miniso.validate_against(parsed, len(_MINISO_FULL))
    fd = _memfd(_MINISO_FULL)
    try:
        miniso.unpack(parsed, fd, len(_MINISO_FULL), lambda _: None, limit=1 << 20)
    finally:
        os.close(fd)


def _miniso_strategy() -> st.SearchStrategy[bytes]:
    return _either(mutated(miniso_seeds()), st.binary(max_size=300))


# ---- stream JSON ---------------------------------------------------------------------------

_STREAM = {
    "stream": "stable",
    "metadata": {"last-modified": "2024-01-01T00:00:00Z"},
    "architectures": {
        "x86_64": {
            "artifacts": {
                "metal": {
                    "release": "24.03.1",
                    "formats": {
                        "raw.xz": {
                            "disk": {
                                "location": "https://example.com/a.raw.xz",
                                "signature": "https://example.com/a.raw.xz.sig",
                                "sha256": "00" * 32,
                            }
                        }
                    },
                }
            }
        }
    },
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def run_stream(data: bytes) -> None:
    """Stream metadata from a (maybe hostile) mirror, then artifact selection."""
    from nestos_inst.net.stream import format_table, parse_stream

    stream = parse_stream(data)
    format_table(stream.rows())
    for arch in list(stream.architectures)[:2]:
        try:
            stream.artifacts(arch, "metal", "raw.xz")
        except NestosError:
            pass


def _stream_strategy() -> st.SearchStrategy[bytes]:
    seed = json.dumps(_STREAM).encode()
    structured = json_values.map(lambda v: json.dumps({**_STREAM, "architectures": v}).encode())
    return _either(mutated([seed]), structured, json_values.map(lambda v: json.dumps(v).encode()))


# ---- install YAML --------------------------------------------------------------------------


def _config_keys() -> list[str]:
    from nestos_inst.install.options import CONFIG_KEYS

    return sorted(CONFIG_KEYS)


def run_config(data: bytes) -> None:
    """An installer config file read from disk, validated and merged."""
    from nestos_inst.install.config import load_config_file, merge_layers

    fd = _memfd(data)
    try:
        layer = load_config_file(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    merge_layers([layer, {"dest_device": "/dev/vda"}], ["file", "command line"])


def _config_strategy() -> st.SearchStrategy[bytes]:
    import yaml

    scalar = st.none() | st.booleans() | st.integers(-5, 1 << 40) | st.text(max_size=20)
    value = scalar | st.lists(scalar, max_size=4)
    docs = st.dictionaries(st.sampled_from(_config_keys()), value, max_size=6).map(
        lambda d: yaml.safe_dump(d).encode()
    )
    return _either(docs, mutated([_CONFIG_SEED]), st.binary(max_size=200))


_CONFIG_SEED = b"dest-device: /dev/vda\nappend-karg: [quiet]\nfetch-retries: 3\nplatform: qemu\n"


# ---- kernel command line -------------------------------------------------------------------


def run_cmdline(data: bytes) -> None:
    """The service's kernel command line → config layer → validated install config."""
    from nestos_inst.install.config import merge_layers, validate_layer
    from nestos_inst.service.cmdline import Cmdline, install_device, parse_kargs

    cmdline = Cmdline.parse(data.decode("utf-8", errors="surrogateescape"))
    install_device(cmdline)
    kargs = parse_kargs(cmdline)
    for key, value in kargs.layer.items():
        validate_layer({key: value}, f"kernel argument {kargs.sources[key]}")
    merge_layers([kargs.layer], ["kernel command line"])


def _cmdline_strategy() -> st.SearchStrategy[bytes]:
    names = [
        f"{prefix}.inst.{suffix}"
        for prefix in ("nestos", "coreos")
        for suffix in (
            "install_dev", "image_url", "ignition_url", "platform_id", "append_karg", "insecure",
            "skip_reboot", "stream", "save_partlabel", "save_partindex", "fetch_retries",
            "console", "secure_ipl", "dry_run",
        )
    ] + ["coreos.inst", "ip", "rd.neednet"]  # fmt: skip
    value = st.text(st.characters(codec="utf-8", exclude_characters=" \t\n"), max_size=16)
    arg = st.builds(
        lambda n, eq, v: n + (f"={v}" if eq else ""), st.sampled_from(names), st.booleans(), value
    )
    line = st.lists(arg, max_size=8).map(lambda a: " ".join(a).encode("utf-8", "surrogateescape"))
    return _either(line, st.binary(max_size=200))


# ---- Ignition validation -------------------------------------------------------------------


def run_ignition(data: bytes) -> None:
    """What install checks about a given config: JSON, its digest spec, its URL rule."""
    from nestos_inst.install.ignition import IgnitionHash, check_ignition_url, check_json

    try:
        check_json(data)
    except NestosError:
        pass
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        IgnitionHash.parse(text).verify(data)
    except NestosError:
        pass
    check_ignition_url(text, has_hash=len(data) % 2 == 0, insecure=False)


def _ignition_strategy() -> st.SearchStrategy[bytes]:
    hashes = st.builds(
        lambda k, h: f"{k}-{h}".encode(),
        st.sampled_from(["sha256", "sha512", "md5", "", "SHA256"]),
        st.text("0123456789abcdefABCDEFxyz", max_size=130),
    )
    urls = st.builds(
        lambda s, rest: f"{s}{rest}".encode(),
        st.sampled_from(["http://", "https://", "HTTP://", "file://", "data:", "", "tftp://"]),
        st.text(max_size=30),
    )
    return _either(
        json_values.map(lambda v: json.dumps(v).encode()), hashes, urls, st.binary(max_size=100)
    )


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "iso",
            "ISO9660 + embed areas (IsoConfig, write checks)",
            _iso_strategy,
            run_iso,
            iso_seeds,
        ),
        Target("kargs", "karg slots and the karg editor", _kargs_strategy, run_kargs),
        Target(
            "initrd",
            "cpio/initrd, raw/gzip/xz/zstd, concatenated",
            _initrd_strategy,
            run_initrd,
            lambda: (initrd_seeds(), []),
        ),
        Target("gpt", "GPT headers and entries", _gpt_strategy, run_gpt, _gpt_seeds_hot),
        Target(
            "osmet",
            "osmet header and table",
            _osmet_strategy,
            run_osmet,
            lambda: (osmet_seeds(), []),
        ),
        Target(
            "miniso",
            "minimal-ISO data (MINISO.DAT)",
            _miniso_strategy,
            run_miniso,
            lambda: (miniso_seeds(), []),
        ),
        Target(
            "stream",
            "stream metadata JSON",
            _stream_strategy,
            run_stream,
            lambda: ([json.dumps(_STREAM).encode()], []),
        ),
        Target(
            "config",
            "installer YAML config files",
            _config_strategy,
            run_config,
            lambda: ([_CONFIG_SEED], []),
        ),
        Target("cmdline", "kernel command line (service mode)", _cmdline_strategy, run_cmdline),
        Target(
            "ignition",
            "Ignition config checks (JSON, digest, URL)",
            _ignition_strategy,
            run_ignition,
        ),
    )
}

"""Embed-area discovery on xorriso-built live ISOs in every layout we support."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestos_inst import profile as profiles
from nestos_inst.errors import FormatError, NestosError, chain
from nestos_inst.formats.embed import IsoConfig
from tests.helpers.isomedia import (
    CONFIG,
    KARG_HEADER_OFFSET,
    LiveIso,
    LiveIsoSpec,
    build_live_iso,
    build_plain_iso,
    karg_area,
    parse_mutated,
)

FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@contextmanager
def opened(path: Path) -> Iterator[IsoConfig]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield IsoConfig(fd)
    finally:
        os.close(fd)


ISOLINUX = "isolinux/isolinux.cfg"


def full_chain(exc: BaseException) -> str:
    return ": ".join(chain(exc))


@pytest.fixture(scope="module")
def nestos_iso(tmp_path_factory: pytest.TempPathFactory) -> LiveIso:
    return build_live_iso(tmp_path_factory.mktemp("embed") / "nestos.iso")


def test_nestos_layout(nestos_iso: LiveIso) -> None:
    with opened(nestos_iso.path) as iso:
        assert iso.profile is profiles.NESTOS
        assert iso.initrd_json() == {"offset": nestos_iso.initrd_offset, "length": 65536}
        assert iso.members() == {}
        assert iso.kargs is not None
        assert [r.offset for r in iso.kargs.regions] == nestos_iso.karg_offsets
        assert iso.kargs.current == iso.kargs.default == nestos_iso.default_kargs
        assert iso.kargs.to_json()["kargs"][0] == {
            "offset": nestos_iso.karg_offsets[0],
            "length": 1139,
        }
        assert iso.features().live_initrd_network
        assert iso.network_dir == "etc/nestos-firstboot-network"
        assert iso.modified_regions() == []


def test_coreos_slice_and_nul_padding(tmp_path: Path) -> None:
    spec = LiveIsoSpec(profile=profiles.COREOS, igninfo="slice", pad="\0", end="\0")
    built = build_live_iso(tmp_path / "s390x.iso", spec)
    with opened(built.path) as iso:
        assert iso.profile is profiles.COREOS
        assert iso.initrd_region.offset == built.initrd_offset
        assert iso.kargs is not None
        assert iso.kargs.to_json()["kargs"][1]["pad"] == "\0"
        iso.kargs.set("a b")
        regions = iso.modified_regions()
        assert [o for o, _ in regions] == built.karg_offsets
        assert regions[0][1] == b"a b" + bytes(1136)


def test_explicit_default_pad_end(tmp_path: Path) -> None:
    built = build_live_iso(tmp_path / "x.iso", LiveIsoSpec(pad="#", end="\n"))
    with opened(built.path) as iso:
        assert iso.kargs is not None
        assert iso.kargs.to_json()["kargs"][0]["pad"] == "#"
        assert iso.kargs.current == built.default_kargs


def test_fallback_without_igninfo(tmp_path: Path) -> None:
    built = build_live_iso(tmp_path / "x.iso", LiveIsoSpec(igninfo=None))
    with opened(built.path) as iso:
        assert iso.initrd_region.offset == built.initrd_offset


def test_legacy_header(tmp_path: Path) -> None:
    spec = LiveIsoSpec(profile=profiles.COREOS, igninfo=None, kargs="legacy", features=None)
    built = build_live_iso(tmp_path / "legacy.iso", spec)
    with opened(built.path) as iso:
        assert iso.kargs is not None
        assert not iso.kargs.from_json
        assert [r.offset for r in iso.kargs.regions] == built.karg_offsets
        assert iso.kargs.default == built.default_kargs
        assert iso.kargs.to_json()["kargs"][0] == {"offset": built.karg_offsets[0], "length": 1139}
        assert not iso.features().live_initrd_network
    # Clobbering the magic turns kargs support off rather than failing.
    with open(built.path, "r+b") as f:
        f.seek(KARG_HEADER_OFFSET)
        f.write(bytes(8))
    with opened(built.path) as iso:
        assert iso.kargs is None
        with pytest.raises(FormatError, match="No karg embed areas found; old or corrupted"):
            iso.require_kargs()


def test_members_round_trip(nestos_iso: LiveIso, tmp_path: Path) -> None:
    copy = tmp_path / "copy.iso"
    copy.write_bytes(nestos_iso.path.read_bytes())
    with opened(copy) as iso:
        iso.set_members({"config.ign": CONFIG})
        ((offset, data),) = iso.modified_regions()
        assert offset == nestos_iso.initrd_offset and len(data) == 65536
        assert data.startswith(b"\xfd7zXZ\0")
    with open(copy, "r+b") as f:
        f.seek(offset)
        f.write(data)
    with opened(copy) as iso:
        assert iso.ignition() == CONFIG
        iso.set_members({})
        assert iso.modified_regions() == [(offset, bytes(65536))]


def test_config_too_large(nestos_iso: LiveIso) -> None:
    too_large = r"Compressed initramfs is too large: \d+ > 65536"
    with opened(nestos_iso.path) as iso, pytest.raises(FormatError, match=too_large):
        iso.set_members({"config.ign": os.urandom(70000)})


def test_non_live_iso(tmp_path: Path) -> None:
    path = tmp_path / "plain.iso"
    build_plain_iso(path, {"readme.txt": b"hi\n"})
    with pytest.raises(NestosError) as info, opened(path):
        pass
    assert full_chain(info.value).startswith(
        "Unrecognized CoreOS ISO image.: finding initrd embed area: "
    )


def _bad(tmp_path: Path, spec: LiveIsoSpec) -> str:
    built = build_live_iso(tmp_path / "bad.iso", spec)
    with pytest.raises(NestosError) as info, opened(built.path) as iso:
        iso.members()
    return full_chain(info.value)


def _igninfo(obj: Any) -> dict[str, bytes]:
    return {"nestos/igninfo.json": json.dumps(obj).encode()}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            LiveIsoSpec(extra_files=_igninfo({"file": "images/ignition.img", "offset": 1 << 20})),
            "reading initrd embed area: offset 1048576 beyond end of IGNITION.IMG",
        ),
        (
            LiveIsoSpec(extra_files=_igninfo({"file": "images/ignition.img", "length": 1 << 20})),
            "reading initrd embed area: initrd embed area at offset 0 length 1048576 "
            "extends beyond IGNITION.IMG",
        ),
        (
            LiveIsoSpec(extra_files=_igninfo({"file": "images/ignition.img", "length": 1 << 40})),
            "reading initrd embed area: initrd embed area length 1099511627776 larger than",
        ),
        (
            LiveIsoSpec(extra_files=_igninfo({"file": "images/ignition.img", "offset": -5})),
            "decoding igninfo: field 'offset' must be a non-negative integer",
        ),
        (
            LiveIsoSpec(extra_files={"nestos/igninfo.json": b"{not json"}),
            "decoding igninfo",
        ),
        (
            LiveIsoSpec(extra_files=_igninfo({"file": "images/missing.img"})),
            "Unrecognized NestOS ISO image.: finding initrd embed area",
        ),
        (LiveIsoSpec(extra_kargs_json={"size": 4096}), "karg embed area size larger than 2048"),
        (
            LiveIsoSpec(extra_kargs_json={"default": "x" * 1200}),
            "default kargs size 1200 larger than embed areas (1139)",
        ),
        (
            LiveIsoSpec(extra_kargs_json={"files": []}),
            "No karg embed areas found; corrupted NestOS ISO image.",
        ),
        (
            LiveIsoSpec(
                extra_kargs_json={"files": [{"path": "isolinux/isolinux.cfg", "offset": 1 << 30}]}
            ),
            "reading kargs embed area: karg embed area at offset 1073741824",
        ),
        (
            LiveIsoSpec(extra_kargs_json={"files": [{"path": "nope.cfg", "offset": 0}]}),
            "looking up 'nope.cfg'",
        ),
        (
            LiveIsoSpec(
                extra_kargs_json={"files": [{"path": "isolinux/isolinux.cfg", "offset": 0}]}
            ),
            "invalid UTF-8 in karg area",
        ),
    ],
    ids=[
        "ign-offset",
        "ign-length",
        "ign-huge",
        "ign-negative",
        "ign-json",
        "ign-missing",
        "karg-size",
        "karg-default",
        "karg-none",
        "karg-offset",
        "karg-path",
        "karg-mismatch-or-utf8",
    ],
)
def test_bad_metadata(tmp_path: Path, spec: LiveIsoSpec, expected: str) -> None:
    if "UTF-8" in expected:
        # Put a non-UTF-8 byte at the start of the isolinux file so its slot is invalid.
        spec.extra_files["isolinux/isolinux.cfg"] = b"\xff" * 1200
    assert expected in _bad(tmp_path, spec)


def test_kargs_mismatch(tmp_path: Path) -> None:
    spec = LiveIsoSpec()
    spec.extra_files["isolinux/isolinux.cfg"] = (
        b"default live\nlabel live\n  kernel /images/pxeboot/vmlinuz\n  append "
        + karg_area("other", 1139)
        + b"\n"
    )
    msg = _bad(tmp_path, spec)
    assert "kargs don't match at all offsets! (expected '" in msg
    assert "has: 'other')" in msg


def test_legacy_header_too_long(tmp_path: Path) -> None:
    spec = LiveIsoSpec(profile=profiles.COREOS, igninfo=None, kargs="legacy")
    built = build_live_iso(tmp_path / "legacy.iso", spec)
    with open(built.path, "r+b") as f:
        f.seek(KARG_HEADER_OFFSET + 8)
        f.write((4096).to_bytes(8, "little"))
    with (
        pytest.raises(FormatError, match=r"karg embed area length larger than 2048 \(found 4096\)"),
        opened(built.path),
    ):
        pass


def _exercise(path: Path) -> None:
    with opened(path) as iso:
        iso.members()
        iso.features()
        if iso.kargs is not None:
            iso.kargs.set(iso.kargs.current + " x")
        # (no set_members: xz -9 costs ~0.1 s per example and adds no parser coverage)
        iso.modified_regions()


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1 << 20), st.binary(min_size=1, max_size=16)),
        min_size=1,
        max_size=6,
    ),
    target_meta=st.booleans(),
)
def test_mutations_only_raise_our_errors(
    nestos_iso: LiveIso, tmp_path: Path, edits: list[tuple[int, bytes]], target_meta: bool
) -> None:
    data = nestos_iso.path.read_bytes()
    # Aim half the edits at the metadata area (descriptors, directories, JSON files).
    aimed = [
        (32768 + offset % (40 * 2048) if target_meta else offset % len(data), patch)
        for offset, patch in edits
    ]
    parse_mutated(data, aimed, tmp_path / "mutated.iso", _exercise)


def test_nestos_dir_wins_over_coreos(tmp_path: Path) -> None:
    # A NestOS image that also carries a stray COREOS/ dir: NESTOS/ metadata is used.
    stray = {"coreos/kargs.json": b"not json at all"}
    built = build_live_iso(tmp_path / "both.iso", LiveIsoSpec(extra_files=stray))
    with opened(built.path) as iso:
        assert iso.profile is profiles.NESTOS
        assert iso.kargs is not None and iso.kargs.current == built.default_kargs


def test_coreos_layout_uses_coreos_names(tmp_path: Path) -> None:
    built = build_live_iso(tmp_path / "c.iso", LiveIsoSpec(profile=profiles.COREOS))
    with opened(built.path) as iso:
        assert iso.profile is profiles.COREOS
        assert iso.network_dir == "etc/coreos-firstboot-network"
        assert iso.profile.temp_prefix == ".coreos-installer-temp-"


@pytest.fixture(scope="module")
def embedded_iso(nestos_iso: LiveIso, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("embedded") / "embedded.iso"
    path.write_bytes(nestos_iso.path.read_bytes())
    fd = os.open(path, os.O_RDWR)
    try:
        iso = IsoConfig(fd)
        iso.set_members({"config.ign": CONFIG, "etc/nestos-firstboot-network/a": b"[x]\n"})
        for offset, data in iso.modified_regions():
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    return path


@settings(max_examples=50, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_archive_only_raises_our_errors(
    nestos_iso: LiveIso, embedded_iso: Path, tmp_path: Path, edits: list[tuple[int, bytes]]
) -> None:
    aimed = [(nestos_iso.initrd_offset + offset, patch) for offset, patch in edits]
    parse_mutated(embedded_iso.read_bytes(), aimed, tmp_path / "mutated.iso", _exercise)


def test_bad_features_json(tmp_path: Path) -> None:
    spec = LiveIsoSpec(extra_files={"nestos/features.json": b"[1, 2"})
    built = build_live_iso(tmp_path / "f.iso", spec)
    with opened(built.path) as iso, pytest.raises(FormatError, match="parsing OS features"):
        iso.features()

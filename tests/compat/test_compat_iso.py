"""Every ISO operation against the upstream fixtures (docs/compat.md#reference-results).

The fixtures are read-only and never copied into the repo: each is `xz -dc`'d into a
temp dir. Without the fixture tree the whole module skips with a visible reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nestos_inst.formats.iso9660 import IsoFs, NotFoundError
from tests.helpers.isomedia import (
    CONFIG,
    Media,
    assert_truncated_refused,
    fail,
    ignition_from_area,
    ok,
    run_main,
    sha,
    unxz_fixture,
)

pytestmark = pytest.mark.compat

NET_A = b"[connection]\nid=a\n"
NET_B = b"[connection]\nid=b\n"
PRE = "mitigations=auto,nosmt"
POST = "ignition.firstboot ignition.platform.id=metal"

# name: (size, sha256, (initrd offset, length), karg size, karg offsets, default kargs)
FACTS: dict[str, tuple[int, str, tuple[int, int], int | None, list[int], str | None]] = {
    "2020-09": (
        669696,
        "748e9a3a5d2e3ad7013f6421a335ff2196823cf2f9987caa4c9e45def6b087fe",
        (92160, 262144),
        None,
        [],
        None,
    ),
    "2021-01": (
        675840,
        "92355b648201b260a76d4a7cc2b30d889d485878fdd2081894d8f9cd8631d64d",
        (96256, 262144),
        1131,
        [94026, 365415],
        "random.trust_cpu=on coreos.liveiso=rhcos-47.84.202112162337-0 " + POST,
    ),
    "2021-12": (
        741376,
        "af3870b377dae61b51cec9b59e3b33baf711484aa0d32520a6ddb4d07398877f",
        (161792, 262144),
        1139,
        [139086, 431050],
        f"{PRE} coreos.liveiso=fedora-coreos-35.20211216.dev.0 {POST}",
    ),
    "2022-02": (
        1048576,
        "634dadf7f9231b9820fdf43e25e31307c78540072126ec0479ca72d59eca17be",
        (159744, 262144),
        1139,
        [137038, 429002],
        f"{PRE} coreos.liveiso=fedora-coreos-35.20220217.dev.0 {POST}",
    ),
    "2023-03.x86_64": (
        1048576,
        "c4e985015b1bce61f1e965e2aa0873003621613296c6f5037cba8a4e7cac21ce",
        (157696, 262144),
        1139,
        [427853, 431050],
        f"{PRE} coreos.liveiso=fedora-coreos-37.20230306.dev.0 {POST}",
    ),
    "2023-03.s390x": (
        946176,
        "a55d0d8a7dfce4f7674e68e2ec036da5b9c2e57da56bc1397ef6284ce7da8dca",
        (203776, 262144),
        None,
        [],
        None,
    ),
}

# docs/compat.md#reference-results [derived]: ignition embed, network embed -k b -k a, kargs -a
# foobar=oldval -a dodo,
# kargs -a foobar=val.
HASHES: dict[str, tuple[str, str | None, str | None, str | None]] = {
    "2020-09": (
        "d19eb6213110c68c993593e4992ca87727dbb49f172103bad8aeaa5cb961ddd8",
        None,
        None,
        None,
    ),
    "2021-01": (
        "fc5e2b29b4c215b0f61190aa573a861e0983f13e2d5c5b0c600ea84cfc4862a7",
        None,
        "69c3ff2e1c85b74a36423cf56e91293fd16ed30614f32e8f46a4dd514bdc085a",
        "451cef123776150cf4002220a1ee6b79c619d715a30b80a9a7b13fc147e749e9",
    ),
    "2021-12": (
        "b7c145ccf257857b6ac563862e5289fc97e9719a91186da6f3ab1d795f58040d",
        "fd638f095f588e2a5868d7cc5936e46b771955b3692c51945a6bf17488091b31",
        "8f9773866c32a043743c9b61e8e0b13b2ab05cc9e2970cda4e7b52e016f79baa",
        "f863cb6e333d59609ab47fc7a4215b129fa10ae7c73e4ddb278dd5975d0d5136",
    ),
    "2022-02": (
        "dd092ab55546f1427fd6fb3c25bf0b1abda9d3a53da1c43888f6330c15ef0254",
        "d0e6ea50434f4e396fbadc768033f643ee151d0dc08a396115bb7ec5961ca77e",
        "0fbe5170dea85168c15e9d8849ca29ad16244a166bd29fad11c5de2f3df4afd1",
        "97c7a16a3885634cd0f85dae8b691e5c03e44d45b50ce493473a5bb0d544cd02",
    ),
    "2023-03.x86_64": (
        "562bf66996e4520f3b2110df39037f39e412f9242a580a42ef23150397ec8946",
        "d48a1b46aa2b85b8256907d3d8fb758043c0735a993cabd0973ff87a7e335e7a",
        "a8f79673dbf1b10f4e30d7472ba4759b3ff12646647e2f7f6b7330bf708b3bdf",
        "e4223c39cf484287e03f3e509631f22b8147381b38f552e64ecaa36898af715c",
    ),
    "2023-03.s390x": (
        "1b20212b770793aa04f7789dbb321f541fd42dbcbcccaba838a8181528ad662b",
        "dcd169e7ccba1b2c97ec4f68dc57c515ba0b39200b327b4fbf07d7219d1bf29f",
        None,
        None,
    ),
}

NAMES = list(FACTS)


def decompress(upstream: Path, name: str, dest: Path) -> Path:
    return unxz_fixture(upstream / "iso" / f"{name}.iso.xz", dest / f"{name}.iso")


@pytest.fixture(scope="module")
def fixtures(upstream: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dest = tmp_path_factory.mktemp("upstream-iso")
    names = [f"embed-areas-{n}" for n in NAMES] + ["synthetic"]
    return {n.removeprefix("embed-areas-"): decompress(upstream, n, dest) for n in names}


@pytest.fixture(params=NAMES)
def media(request: pytest.FixtureRequest, fixtures: dict[str, Path], tmp_path: Path) -> Media:
    m = Media(fixtures[request.param], tmp_path)
    m.name = request.param  # type: ignore[attr-defined]
    return m


def _name(media: Media) -> str:
    name: str = media.name  # type: ignore[attr-defined]
    return name


def test_fixture_facts(media: Media) -> None:
    name = _name(media)
    size, digest, initrd, karg_size, offsets, default = FACTS[name]
    assert media.path.stat().st_size == size
    assert media.original == digest
    ign = json.loads(ok(run_main("dev", "show", "iso", "--ignition", str(media.path))).stdout)
    assert (ign["offset"], ign["length"]) == initrd
    kargs = json.loads(ok(run_main("dev", "show", "iso", "--kargs", str(media.path))).stdout)
    if karg_size is None:
        assert kargs is None
        return
    assert kargs["length"] == karg_size
    assert kargs["default"] == default
    assert [k["offset"] for k in kargs["kargs"]] == offsets
    assert all(k["length"] == karg_size for k in kargs["kargs"])
    current = ok(run_main("iso", "kargs", "show", str(media.path))).stdout.decode()
    assert current == f"{default}\n"


def test_ignition_round_trip(media: Media, tmp_path: Path) -> None:
    embedded = media.all_modes("iso", "ignition", "embed", input=CONFIG)
    assert sha(embedded) == HASHES[_name(media)][0]
    assert ok(run_main("iso", "ignition", "show", str(embedded))).stdout == CONFIG
    offset, length = FACTS[_name(media)][2]
    area = embedded.read_bytes()[offset : offset + length]
    assert ignition_from_area(area) == CONFIG
    media.all_fail(
        "already has an embedded Ignition config", "iso", "ignition", "embed", src=embedded
    )
    forced = media.run("inplace", "iso", "ignition", "embed", "-f", src=embedded, input=CONFIG)
    assert sha(forced) == sha(embedded)
    assert sha(media.all_modes("iso", "ignition", "remove", src=embedded)) == media.original
    assert sha(media.all_modes("iso", "reset", src=embedded)) == media.original
    if _name(media) in ("2020-09", "2023-03.s390x"):  # xz -9 of 300 KiB is slow: two suffice
        big = tmp_path / "big.ign"
        big.write_bytes(os.urandom(300 * 1024))
        media.all_fail("too large", "iso", "ignition", "embed", "-i", str(big))


def test_clobbered_karg_header_is_harmless(media: Media) -> None:
    clobbered = media.copy()
    with open(clobbered, "r+b") as f:
        f.seek(32672)
        f.write(bytes(8))
    embedded = media.run("inplace", "iso", "ignition", "embed", src=clobbered, input=CONFIG)
    assert ok(run_main("iso", "ignition", "show", str(embedded))).stdout == CONFIG
    assert sha(media.run("copy", "iso", "ignition", "remove", src=embedded)) == sha(clobbered)


def test_network(media: Media, tmp_path: Path) -> None:
    expected = HASHES[_name(media)][1]
    a, b = tmp_path / "a.nmconnection", tmp_path / "b.nmconnection"
    a.write_bytes(NET_A)
    b.write_bytes(NET_B)
    args = ("iso", "network", "embed", "-k", str(b), "-k", str(a))
    if expected is None:
        media.all_fail("does not support customizing network settings", *args)
        return
    net = media.all_modes(*args)
    assert sha(net) == expected
    dest = tmp_path / "extract"
    ok(run_main("iso", "network", "extract", "-C", str(dest), str(net)))
    assert (dest / "a.nmconnection").read_bytes() == NET_A
    assert (dest / "b.nmconnection").read_bytes() == NET_B
    shown = ok(run_main("iso", "network", "extract", str(net))).stdout
    assert b"id=a" in shown and b"id=b" in shown
    media.all_fail("already has embedded network settings", *args[:-2], src=net)
    assert sha(media.all_modes("iso", "network", "remove", src=net)) == media.original
    both = media.run("inplace", "iso", "ignition", "embed", src=net, input=CONFIG)
    no_ign = media.run("copy", "iso", "ignition", "remove", src=both)
    assert sha(no_ign) == expected
    no_net = media.run("stream", "iso", "network", "remove", src=both)
    assert ok(run_main("iso", "ignition", "show", str(no_net))).stdout == CONFIG
    fail(run_main("iso", "network", "extract", str(no_net)), "No embedded network settings")
    assert sha(media.run("inplace", "iso", "ignition", "remove", src=no_net)) == media.original


def test_kargs(media: Media) -> None:
    name = _name(media)
    _, _, _, size, offsets, default = FACTS[name]
    _, _, oldval_dodo, val = HASHES[name]
    if size is None or default is None:
        msg = "No karg embed areas found"
        media.all_fail(msg, "iso", "kargs", "modify", "-a", "foo")
        media.all_fail(msg, "iso", "kargs", "reset")
        fail(run_main("iso", "kargs", "show", str(media.path)), msg)
        fail(run_main("iso", "kargs", "show", "--default", str(media.path)), msg)
        # iso reset still works on them (the kargs part is skipped).
        assert sha(media.all_modes("iso", "reset")) == media.original
        return
    mod = media.all_modes("iso", "kargs", "modify", "-a", "foobar=oldval", "-a", "dodo")
    assert sha(mod) == oldval_dodo
    shown = ok(run_main("iso", "kargs", "show", str(mod))).stdout.decode()
    assert "foobar=oldval dodo" in shown
    back = media.all_modes("iso", "kargs", "modify", "-d", "foobar=oldval", "-d", "dodo", src=mod)
    assert sha(back) == media.original
    rep = media.all_modes("iso", "kargs", "modify", "-r", "foobar=oldval=newval", src=mod)
    assert "foobar=newval dodo" in ok(run_main("iso", "kargs", "show", str(rep))).stdout.decode()
    assert sha(media.all_modes("iso", "kargs", "reset", src=rep)) == media.original
    assert sha(media.all_modes("iso", "reset", src=rep)) == media.original
    v = media.all_modes("iso", "kargs", "modify", "-a", "foobar=val")
    assert sha(v) == val
    body = f"{default} foobar=val\n".encode()
    assert v.read_bytes()[offsets[0] : offsets[0] + size] == body + b"#" * (size - len(body))
    usable = size - (len(default) + 1) - 1
    longest = media.all_modes("iso", "kargs", "modify", "-a", "k" * usable)
    out = ok(run_main("iso", "kargs", "show", str(longest))).stdout.decode()
    assert out.endswith(" " + "k" * usable + "\n")
    media.all_fail("kargs too large for area", "iso", "kargs", "modify", "-a", "k" * (usable + 1))


def test_synthetic_is_not_live(fixtures: dict[str, Path], tmp_path: Path) -> None:
    media = Media(fixtures["synthetic"], tmp_path)
    media.all_fail("Unrecognized CoreOS ISO image", "iso", "ignition", "embed")
    fail(run_main("iso", "ignition", "show", str(media.path)), "Unrecognized CoreOS ISO image.")
    assert json.loads(ok(run_main("dev", "show", "iso", "--kargs", str(media.path))).stdout) is None


def test_synthetic_iso9660(fixtures: dict[str, Path], tmp_path: Path) -> None:
    path = fixtures["synthetic"]
    fd = os.open(path, os.O_RDONLY)
    try:
        fs = IsoFs(fd)
        (pvd,) = [d.fields for d in fs.descriptors if d.kind == "primary"]
        assert pvd["system_id"] == "system-ID-string"
        assert pvd["volume_id"] == "volume-ID-string"
        assert pvd["volume_space_size"] == 338
        assert fs.get_path("/").name == "."
        assert fs.get_path("./CONTENT").is_dir
        assert not fs.get_path("CONTENT/FILE.TXT").is_dir
        for missing in ("MISSING", "MISSING/STUFF.TXT", "CONTENT/FILE.TXT/STUFF.TXT"):
            with pytest.raises(NotFoundError):
                fs.get_path(missing)
        assert [r.name for r in fs.list_dir(fs.get_path("CONTENT"))] == ["DIR", "FILE.TXT"]
        assert fs.read_file(fs.get_file("REALLY/VERY/DEEPLY/NESTED/FILE.TXT")) == b"foo\n"
        walk = [p for p, _ in fs.walk()]
    finally:
        os.close(fd)
    names = [
        "ABC", "ABC.D", "ABC.DE", "ABC.DEF", "ABCDE000", "ABCDEFGH", "ABCDEFGH.I",
        "ABCDEFGH.IJ", "ABCDEFGH.IJK", "ABCDEFGH.M", "ABCDEFGH.MN", "ABCDEFGH.MNO",
    ]  # fmt: skip
    expected = [
        "CONTENT", "CONTENT/DIR", "CONTENT/DIR/SUBFILE.TXT", "CONTENT/FILE.TXT", "LARGEDIR",
        *sorted(f"LARGEDIR/{i}.DAT" for i in range(1, 151)),
        "NAMES", "NAMES/!\"%&'()*.+,-", "NAMES/:<=>?", *(f"NAMES/{n}" for n in names),
        "REALLY", "REALLY/VERY", "REALLY/VERY/DEEPLY", "REALLY/VERY/DEEPLY/NESTED",
        "REALLY/VERY/DEEPLY/NESTED/FILE.TXT",
    ]  # fmt: skip
    assert walk == sorted(expected)
    assert walk == expected or sorted(walk) == walk
    full = json.loads(ok(run_main("dev", "show", "iso", str(path))).stdout)
    assert full["records"] == walk
    assert_truncated_refused(path, tmp_path)


def _find_record_name(data: bytes, name: bytes) -> int:
    pos = data.find(name + b";1")
    assert pos > 0
    return pos


def test_initrd_area_needs_the_record(fixtures: dict[str, Path], tmp_path: Path) -> None:
    media = Media(fixtures["2021-12"], tmp_path)
    broken = media.copy()
    data = bytearray(broken.read_bytes())
    data[_find_record_name(bytes(data), b"IGNITION.IMG")] = ord("Z")
    broken.write_bytes(bytes(data))
    fail(run_main("iso", "ignition", "show", str(broken)), "Unrecognized CoreOS ISO image.")


def test_kargs_json_vs_legacy_header(fixtures: dict[str, Path], tmp_path: Path) -> None:
    media = Media(fixtures["2021-12"], tmp_path)

    def show(path: Path) -> object:
        return json.loads(ok(run_main("dev", "show", "iso", "--kargs", str(path))).stdout)

    reference = show(media.path)
    assert isinstance(reference, dict)
    # JSON only (header magic zeroed): same areas.
    json_only = media.copy()
    with open(json_only, "r+b") as f:
        f.seek(32672)
        f.write(bytes(8))
    assert show(json_only) == reference
    # Header only (KARGS.JSO record name clobbered): same regions from the header.
    header_only = media.copy()
    data = bytearray(header_only.read_bytes())
    data[_find_record_name(bytes(data), b"KARGS.JSO")] = ord("Z")
    header_only.write_bytes(bytes(data))
    legacy = show(header_only)
    assert isinstance(legacy, dict)
    assert legacy["length"] == reference["length"]
    assert legacy["default"] == reference["default"]
    assert [k["offset"] for k in legacy["kargs"]] == [k["offset"] for k in reference["kargs"]]
    # Neither: no karg support, which is not an error for discovery.
    with open(header_only, "r+b") as f:
        f.seek(32672)
        f.write(bytes(8))
    assert show(header_only) is None

"""`iso extract minimal-iso` / `pack minimal-iso` against the upstream fixtures
(docs/compat.md#minimal-iso, #reference-results)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from nestos_inst.formats import miniso
from nestos_inst.formats.iso9660 import IsoFs
from tests.helpers.isomedia import CONFIG, fail, ok, run_main, sha, temps, unxz_fixture

pytestmark = pytest.mark.compat

URL = "https://example.com/rootfs"
NEW_DEFAULT = "mitigations=auto,nosmt ignition.firstboot ignition.platform.id=metal"

# name: (plain, --rootfs-url) output hashes, docs/compat.md#reference-results [derived]
HASHES = {
    "2021-12": (
        "6158ad215448979f51c49e418efe02c04020467adeb99530b33b17c967f5cc43",
        "2c58aa8c76cdcb3361eac9766f5be72a1139c8d909475535ed4c2c89618c7923",
    ),
    "2022-02": (
        "1adee65e28f57ea2f3117d0aff0d7e30bd6e104f2e4c3c2be7f179473a7d0c10",
        "733d7e871a1ad2f6ae37d031465c0481d527e32d9ef4176df4d0cd1554a8773b",
    ),
    "2023-03.x86_64": (
        "34f052b485921f5cfc402c94d66220fcde09064eba217d0816fe21ae42e853f2",
        "f4e1cb87aeb8eb24fcfd022c32c0fc6559795785a75b2ff5994878cce8daecbd",
    ),
}
# name: (app_version, entries, digest of the minimal ISO, minimal ISO size),
# docs/compat.md#reference-results
MINISO = {
    "2021-12": (
        "0.11.0",
        12,
        "df1ddfdb586c714e7f59d96f4bff582d13acc948a75bb0c4f29f4889806db226",
        722944,
    ),
    "2022-02": (
        "0.13.1",
        11,
        "c68b4a9a085eed2cdae1b6266a3d346c42b0d76f268af365bb9486a62075d55c",
        1048576,
    ),
    "2023-03.x86_64": (
        "0.16.1",
        12,
        "8f447825e77125cd7444808acd5df8dd18b3abdffcb0a5171aa7f7b62c2baa9e",
        1048576,
    ),
    "2023-03.s390x": (
        "0.16.1",
        14,
        "1eba30dede5045b239f0c6b67e38c3e07b26b881580a0aaf817a798dcd914087",
        927744,
    ),
}
SUPPORTED = list(HASHES)
ALL = ["2020-09", "2021-01", *MINISO]


@pytest.fixture(scope="module")
def fixtures(upstream: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dest = tmp_path_factory.mktemp("upstream-miniso")
    out: dict[str, Path] = {}
    for name in ALL:
        src = upstream / "iso" / f"embed-areas-{name}.iso.xz"
        out[name] = unxz_fixture(src, dest / f"{name}.iso")
    return out


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def copy(fixtures: dict[str, Path], name: str, work: Path) -> Path:
    dest = work.parent / f"{name}.iso"
    shutil.copyfile(fixtures[name], dest)
    return dest


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(path: Path) -> miniso.MinisoData:
    with open(path, "rb") as f:
        fs = IsoFs(f.fileno())
        return miniso.parse(fs.read_file(fs.get_file("COREOS/MINISO.DAT")))


def unpack_pristine(path: Path) -> bytes:
    data = load(path)
    out: list[bytes] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        miniso.unpack(data, f.fileno(), size, out.append, limit=4 * size)
    return b"".join(out)


@pytest.mark.parametrize("name", list(MINISO))
def test_miniso_dat_facts(fixtures: dict[str, Path], name: str) -> None:
    app_version, count, want, size = MINISO[name]
    data = load(fixtures[name])
    assert data.app_version == app_version
    assert len(data.entries) == count
    assert data.digest.hex() == want
    minimal = unpack_pristine(fixtures[name])
    assert len(minimal) == size
    assert digest(minimal) == want
    if name == "2021-12":
        first = [(e.minimal, e.full, e.length) for e in data.entries[:6]]
        assert first == [
            (44, 44, 2048),
            (45, 45, 38912),
            (64, 64, 11),
            (65, 65, 116),
            (66, 66, 1139),
            (67, 67, 3083),
        ]


@pytest.mark.parametrize("name", SUPPORTED)
def test_reference_hashes(fixtures: dict[str, Path], work: Path, name: str) -> None:
    iso = fixtures[name]
    before = sha(iso)
    plain, with_url = HASHES[name]
    out = work / "plain.iso"
    ok(run_main("iso", "extract", "minimal-iso", str(iso), str(out)))
    assert sha(out) == plain
    assert digest(ok(run_main("iso", "extract", "minimal-iso", str(iso))).stdout) == plain
    assert digest(ok(run_main("iso", "extract", "minimal-iso", str(iso), "-")).stdout) == plain
    url_out = work / "url.iso"
    ok(run_main("iso", "extract", "minimal-iso", "--rootfs-url", URL, str(iso), str(url_out)))
    assert sha(url_out) == with_url
    res = ok(run_main("iso", "extract", "minimal-iso", "--rootfs-url", URL, str(iso)))
    assert digest(res.stdout) == with_url
    assert sha(iso) == before
    assert temps(work) == []

    src_kargs = ok(run_main("iso", "kargs", "show", str(iso))).stdout.decode()
    assert "coreos.liveiso=" in src_kargs
    for path, current in (
        (out, NEW_DEFAULT),
        (url_out, f"{NEW_DEFAULT} coreos.live.rootfs_url={URL}"),
    ):
        assert ok(run_main("iso", "kargs", "show", str(path))).stdout.decode() == current + "\n"
        shown = ok(run_main("iso", "kargs", "show", "-d", str(path))).stdout.decode()
        assert shown == NEW_DEFAULT + "\n"


@pytest.mark.parametrize("name", SUPPORTED)
def test_output_rootfs_and_file_exists(fixtures: dict[str, Path], work: Path, name: str) -> None:
    iso = fixtures[name]
    rootfs = work / "rootfs.img"
    out = work / "minimal.iso"
    ok(
        run_main(
            "iso", "extract", "minimal-iso", "--output-rootfs", str(rootfs), str(iso), str(out)
        )
    )
    pxe = work / "pxe"
    ok(run_main("iso", "extract", "pxe", "-o", str(pxe), str(iso)))
    assert rootfs.read_bytes() == (pxe / f"{name}-rootfs.img").read_bytes()
    # Existing output ISO, then existing rootfs: File exists, nothing changed.
    out_sha, rootfs_sha = sha(out), sha(rootfs)
    fail(run_main("iso", "extract", "minimal-iso", str(iso), str(out)), "File exists")
    res = run_main("iso", "extract", "minimal-iso", "--output-rootfs", str(rootfs), str(iso), "-")
    fail(res, "File exists")
    assert res.stdout == b""
    other = work / "other.iso"
    res = run_main(
        "iso", "extract", "minimal-iso", "--output-rootfs", str(rootfs), str(iso), str(other)
    )
    fail(res, "File exists")
    assert not other.exists()
    assert (sha(out), sha(rootfs)) == (out_sha, rootfs_sha)
    assert temps(work) == []


@pytest.mark.parametrize("name", SUPPORTED)
def test_corrupted_input(fixtures: dict[str, Path], work: Path, name: str) -> None:
    """`sed s/coreos.liveiso/codeos.liveiso/` on the full ISO, as upstream's script does."""
    iso = copy(fixtures, name, work)
    data = iso.read_bytes()
    assert b"coreos.liveiso" in data
    iso.write_bytes(data.replace(b"coreos.liveiso", b"codeos.liveiso"))
    for target in (str(work / "minimal.iso"), "-"):
        res = fail(
            run_main("iso", "extract", "minimal-iso", str(iso), target), "wrong final digest"
        )
        assert res.stdout == b""
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("name", SUPPORTED)
def test_customized_input(fixtures: dict[str, Path], work: Path, name: str) -> None:
    iso = copy(fixtures, name, work)
    message = "Cannot operate on ISO with embedded customizations."
    for edit in (("iso", "kargs", "modify", "-a", "foo=bar"), ("iso", "ignition", "embed")):
        ok(run_main(*edit, str(iso), input=CONFIG))
        for target in (str(work / "minimal.iso"), "-"):
            res = fail(run_main("iso", "extract", "minimal-iso", str(iso), target), message)
            assert res.stdout == b""
        assert list(work.iterdir()) == []
        ok(run_main("iso", "reset", str(iso)))
        assert sha(iso) == sha(fixtures[name])
    out = work / "minimal.iso"
    ok(run_main("iso", "extract", "minimal-iso", str(iso), str(out)))
    assert sha(out) == HASHES[name][0]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("2020-09", "No karg embed areas found"),
        ("2021-01", "This ISO image does not support extracting a minimal ISO."),
        ("2023-03.s390x", "No karg embed areas found"),
    ],
)
def test_unsupported(fixtures: dict[str, Path], work: Path, name: str, message: str) -> None:
    for target in (str(work / "minimal.iso"), "-"):
        res = fail(run_main("iso", "extract", "minimal-iso", str(fixtures[name]), target), message)
        assert res.stdout == b""
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("name", SUPPORTED)
def test_repack_reproduces_reference(fixtures: dict[str, Path], work: Path, name: str) -> None:
    """Our `pack minimal-iso` rebuilds a working miniso.dat from upstream media."""
    full = copy(fixtures, name, work)
    minimal = work.parent / "pristine-minimal.iso"
    minimal.write_bytes(unpack_pristine(full))
    with open(full, "r+b") as f:
        rec = IsoFs(f.fileno()).get_file("COREOS/MINISO.DAT")
        f.seek(rec.offset)
        f.write(bytes(rec.length))
    res = ok(run_main("pack", "minimal-iso", str(full), str(minimal)))
    assert "Packing successful!" in res.stderr.decode()
    ours, theirs = load(full), load(fixtures[name])
    assert ours.entries == theirs.entries
    assert ours.digest == theirs.digest
    out = work / "minimal.iso"
    ok(run_main("iso", "extract", "minimal-iso", str(full), str(out)))
    assert sha(out) == HASHES[name][0]


def test_extract_pxe_s390x(fixtures: dict[str, Path], work: Path) -> None:
    res = ok(run_main("iso", "extract", "pxe", "-o", str(work), str(fixtures["2023-03.s390x"])))
    names = ["initrd.img", "kernel.img", "rootfs.img", "vmlinuz"]
    assert sorted(res.stdout.decode().splitlines()) == [
        str(work / f"2023-03.s390x-{n}") for n in names
    ]
    with open(fixtures["2023-03.s390x"], "rb") as f:
        fs = IsoFs(f.fileno())
        for n in names:
            rec = fs.get_file(f"IMAGES/PXEBOOT/{n.upper()}")
            assert (work / f"2023-03.s390x-{n}").read_bytes() == fs.read_file(rec)

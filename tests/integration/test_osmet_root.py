"""Pack a real OSTree metal image on a loop device, rebuild it bit for bit (root)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nestos_inst.osmet.format import read_file
from tests.helpers.cli import run_cli
from tests.helpers.loop import loop_device, mounted
from tests.helpers.ostreeimage import OstreeImage, build_ostree_image

pytestmark = pytest.mark.root
MIB = 1 << 20


def sha256_file(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    left = limit
    with path.open("rb") as f:
        while True:
            n = MIB if left is None else min(MIB, left)
            data = f.read(n)
            if not data:
                break
            h.update(data)
            if left is not None:
                left -= len(data)
    return h.hexdigest()


@dataclass
class PackedImage:
    image: OstreeImage
    osmet: Path
    pack_stderr: str
    workdir: Path


def pack_image(
    image: OstreeImage, out: Path, *, fast: bool = True
) -> subprocess.CompletedProcess[bytes]:
    with loop_device(image.path, sector_size=image.sector_size) as dev:
        args = ["pack", "osmet", "--output", str(out), "--checksum", image.sha256]
        args += ["--description", "NestOS 24.03.test"]
        if fast:
            args.append("--fast")
        return run_cli(*args, dev)


@pytest.fixture(scope="module", params=[512, 4096], ids=["512", "4k"])
def packed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> PackedImage:
    ss = int(request.param)
    work = tmp_path_factory.mktemp(f"osmet{ss}")
    image = build_ostree_image(work / "img", sector_size=ss)
    out = work / "img.osmet"
    proc = pack_image(image, out)
    assert proc.returncode == 0, proc.stderr.decode()
    return PackedImage(image, out, proc.stderr.decode(), work)


@contextlib.contextmanager
def source_repo(image: OstreeImage) -> Iterator[Path]:
    """The image's own repo, mounted read-only without log replay (leaves it intact)."""
    with (
        loop_device(image.path, sector_size=image.sector_size) as dev,
        mounted(f"{dev}p3", options="ro,norecovery") as root,
    ):
        yield root / "ostree" / "repo"


@contextlib.contextmanager
def copied_repo(image: OstreeImage, dest: Path) -> Iterator[Path]:
    with source_repo(image) as repo:
        shutil.copytree(repo / "objects", dest / "objects", symlinks=True)
    yield dest


def blank_target(path: Path, size: int, fill: bytes = b"\xaa") -> Path:
    with path.open("wb") as f:
        f.write(fill * MIB)
        f.truncate(size + MIB)
    return path


def test_pack_stats_and_header(packed: PackedImage) -> None:
    err = packed.pack_stderr
    for line in (
        "Total OSTree objects found in /boot: 2",
        "Duplicate extents dropped: 0",
        "Packing image",
        "Verifying that repacked image matches digest",
        "Packing successful!",
    ):
        assert line in err.splitlines(), err
    assert "Total OSTree objects scanned from /root: " in err
    assert "(" in err and "1 empty)" in err
    assert not list(packed.osmet.parent.glob("*.partial"))
    parsed = read_file(packed.osmet)
    h = parsed.header
    assert (h.sector_size, h.os_description) == (packed.image.sector_size, "NestOS 24.03.test")
    assert h.os_architecture == platform.machine()
    assert parsed.osmet.size == packed.image.size
    assert parsed.osmet.checksum.hex() == packed.image.sha256
    boot, root = parsed.osmet.partitions
    assert boot.start_offset == 2 * MIB and root.start_offset == (2 + 24) * MIB
    kernel = bytes.fromhex(packed.image.kernel_object)
    assert any(m.object == kernel for m in boot.mappings)
    assert any(m.object == kernel for m in root.mappings)
    # packing mounts read-only without log replay: the source is untouched
    assert sha256_file(packed.image.path) == packed.image.sha256
    # the packed file is far smaller than the image
    assert packed.osmet.stat().st_size < packed.image.size // 10


def test_extract_bit_for_bit(packed: PackedImage) -> None:
    image = packed.image
    target = blank_target(packed.workdir / "target.img", image.size)
    with (
        source_repo(image) as repo,
        loop_device(target, sector_size=image.sector_size, partitions=False) as dev,
    ):
        proc = run_cli("dev", "extract", "osmet", "--osmet", packed.osmet, repo, dev)
    assert proc.returncode == 0, proc.stderr.decode()
    assert sha256_file(target, image.size) == image.sha256
    target.unlink()


def test_extract_missing_object_leaves_target(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    with copied_repo(image, tmp_path / "repo") as repo:
        kernel = image.kernel_object_path(repo)
        kernel.unlink()
        target = blank_target(tmp_path / "t.img", image.size)
        before = sha256_file(target)
        proc = run_cli("dev", "extract", "osmet", "--osmet", packed.osmet, repo, target)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"Error: missing OSTree object {image.kernel_object}" in err
    assert "No such file or directory (os error 2)" in err
    assert sha256_file(target) == before


def test_extract_altered_object_wipes(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    with copied_repo(image, tmp_path / "repo") as repo:
        kernel = image.kernel_object_path(repo)
        with kernel.open("r+b") as f:
            f.seek(1000)
            byte = f.read(1)
            f.seek(1000)
            f.write(bytes([byte[0] ^ 0xFF]))
        target = blank_target(tmp_path / "t.img", image.size)
        proc = run_cli("dev", "extract", "osmet", "--osmet", packed.osmet, repo, target)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "Error: while unpacking" in err
    assert f"expected final checksum {image.sha256}, but got " in err
    with target.open("rb") as f:
        assert f.read(MIB) == bytes(MIB)


def test_pack_wrong_checksum_writes_nothing(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    out = tmp_path / "bad.osmet"
    wrong = "0" * 64
    with loop_device(image.path, sector_size=image.sector_size) as dev:
        proc = run_cli(
            "pack",
            "osmet",
            "--output",
            out,
            "--checksum",
            wrong,
            "--description",
            "x",
            "--fast",
            dev,
        )
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"does not match expected digest ({wrong})" in err
    assert list(tmp_path.iterdir()) == []


def test_pack_bad_checksum_argument(packed: PackedImage, tmp_path: Path) -> None:
    proc = run_cli(
        "pack",
        "osmet",
        "--output",
        tmp_path / "o",
        "--checksum",
        "ABC",
        "--description",
        "x",
        "/dev/null",
    )
    assert proc.returncode == 2
    assert "lower-case SHA-256" in proc.stderr.decode()


def test_pack_needs_labeled_partitions(tmp_path: Path) -> None:
    img = tmp_path / "plain.img"
    with img.open("wb") as f:
        f.truncate(8 * MIB)
    subprocess.run(
        ["sfdisk", "-q", img],
        input="label: gpt\nsize=4MiB\n",
        text=True,
        check=True,
        capture_output=True,
    )
    with loop_device(img) as dev:
        subprocess.run(["mkfs.ext4", "-q", "-L", "other", f"{dev}p1"], check=True)
        proc = run_cli(
            "pack",
            "osmet",
            "--output",
            tmp_path / "o",
            "--checksum",
            "0" * 64,
            "--description",
            "x",
            dev,
        )
    assert proc.returncode == 1
    assert f"couldn't find boot device for {dev}" in proc.stderr.decode()
    assert not (tmp_path / "o").exists()


def test_show_fiemap_matches_table(packed: PackedImage) -> None:
    image = packed.image
    kernel = bytes.fromhex(image.kernel_object)
    parsed = read_file(packed.osmet)
    expected = [m.extent for m in parsed.osmet.partitions[1].mappings if m.object == kernel]
    with source_repo(image) as repo:
        path = image.kernel_object_path(repo)
        proc = run_cli("dev", "show", "fiemap", path)
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    got = [(e["logical"], e["physical"], e["length"]) for e in doc["extents"]]
    assert got == [(e.logical, e.physical, e.length) for e in expected]
    assert proc.stdout.decode().startswith('{\n  "extents": [\n    {\n      "logical": ')


# ------------------------------------------------------------------ offline install


def table_names(dev: str) -> list[str] | None:
    """Partition names of the GPT on dev, None when there is no table at all."""
    proc = subprocess.run(["sfdisk", "--json", dev], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    parts = json.loads(proc.stdout)["partitiontable"].get("partitions", [])
    return [str(p.get("name", "")) for p in parts]


@contextlib.contextmanager
def old_disk(tmp_path: Path, image: OstreeImage, sector_size: int | None = None) -> Iterator[str]:
    """A loop target bigger than the image that already holds an unrelated GPT."""
    path = tmp_path / "target.img"
    with path.open("wb") as f:
        f.truncate(image.size + 8 * MIB)
    ss = sector_size or image.sector_size
    with loop_device(path, sector_size=ss, partitions=False) as dev:
        subprocess.run(
            ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", dev],
            input='label: gpt\nsize=4MiB, name="old"\n',
            text=True,
            check=True,
            capture_output=True,
        )
        yield dev


def osmet_dir(packed: PackedImage, tmp_path: Path, *, tamper: bool = False) -> Path:
    d = tmp_path / "osmet"
    d.mkdir()
    dest = d / "nestos-metal.osmet"
    shutil.copyfile(packed.osmet, dest)
    if tamper:
        data = bytearray(dest.read_bytes())
        data[len(data) - 4096] ^= 0x10  # inside the xz stream's compressed blocks
        dest.write_bytes(data)
    return d


def install(dev: str, d: Path, repo: Path, *extra: str) -> tuple[int, str]:
    proc = run_cli("install", *extra, "--osmet-dir", d, "--ostree-repo", repo, dev)
    return proc.returncode, proc.stderr.decode()


def assert_wiped(dev: str) -> None:
    assert table_names(dev) == []
    with open(dev, "rb") as f:
        assert f.read(446) == bytes(446)


def test_install_offline_bit_for_bit(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    d = osmet_dir(packed, tmp_path)
    with source_repo(image) as repo, old_disk(tmp_path, image) as dev:
        rc, err = install(dev, d, repo, "--offline")
        assert rc == 0, err
        assert (
            f"Installing NestOS 24.03.test {platform.machine()} ({image.sector_size}-byte sectors)"
            in err
        )
        assert "Install complete." in err
        assert sha256_file(Path(dev), image.size) == image.sha256


def test_install_uses_osmet_automatically(packed: PackedImage, tmp_path: Path) -> None:
    """No --offline, no --stream/--image-*: a matching osmet file is used
    (docs/compat.md#image-source)."""
    if packed.image.sector_size != 512:
        pytest.skip("one sector size is enough for source selection")
    image = packed.image
    d = osmet_dir(packed, tmp_path)
    with source_repo(image) as repo, old_disk(tmp_path, image) as dev:
        rc, err = install(dev, d, repo)
        assert rc == 0, err
        assert "Installing NestOS 24.03.test" in err
        assert sha256_file(Path(dev), image.size) == image.sha256


def test_install_tampered_stream_wipes(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    d = osmet_dir(packed, tmp_path, tamper=True)
    with source_repo(image) as repo, old_disk(tmp_path, image) as dev:
        rc, err = install(dev, d, repo, "--offline")
        assert rc == 1
        assert "while unpacking" in err
        assert "Resetting partition table" in err
        assert "Error: install failed" in err
        assert_wiped(dev)


def test_install_altered_object_wipes(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    d = osmet_dir(packed, tmp_path)
    with copied_repo(image, tmp_path / "repo") as repo:
        obj = image.kernel_object_path(repo)
        data = bytearray(obj.read_bytes())
        data[12345] ^= 1
        obj.write_bytes(data)
        with old_disk(tmp_path, image) as dev:
            rc, err = install(dev, d, repo, "--offline")
            assert rc == 1
            assert f"expected final checksum {image.sha256}, but got " in err
            assert "Resetting partition table" in err
            assert_wiped(dev)


def test_install_missing_object_touches_nothing(packed: PackedImage, tmp_path: Path) -> None:
    """Every object is checked before the first write: the old disk survives intact."""
    image = packed.image
    d = osmet_dir(packed, tmp_path)
    with copied_repo(image, tmp_path / "repo") as repo:
        obj = image.kernel_object_path(repo)
        obj.unlink()
        with old_disk(tmp_path, image) as dev:
            before = sha256_file(Path(dev))
            rc, err = install(dev, d, repo, "--offline")
            assert rc == 1
            assert f"missing OSTree object {image.kernel_object}" in err
            assert sha256_file(Path(dev)) == before
            assert table_names(dev) == ["old"]


def test_install_wrong_sector_size(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    other = 4096 if image.sector_size == 512 else 512
    d = osmet_dir(packed, tmp_path)
    with source_repo(image) as repo, old_disk(tmp_path, image, sector_size=other) as dev:
        before = sha256_file(Path(dev))
        rc, err = install(dev, d, repo, "--offline")
        assert rc == 1
        assert "cannot perform offline install; metadata missing" in err
        assert sha256_file(Path(dev)) == before


def test_install_wrong_architecture(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    other = "s390x" if platform.machine() != "s390x" else "x86_64"
    d = osmet_dir(packed, tmp_path)
    with source_repo(image) as repo, old_disk(tmp_path, image) as dev:
        before = sha256_file(Path(dev))
        rc, err = install(dev, d, repo, "--offline", "--architecture", other)
        assert rc == 1
        assert "cannot perform offline install; metadata missing" in err
        assert sha256_file(Path(dev)) == before


def test_pack_output_dir_missing(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    out = tmp_path / "nope" / "x.osmet"
    with loop_device(image.path, sector_size=image.sector_size) as dev:
        proc = run_cli(
            "pack", "osmet", "--output", out, "--checksum", image.sha256,
            "--description", "x", "--fast", dev,
        )  # fmt: skip
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"Error: creating temporary file in {out.parent}" in err
    assert "No such file or directory (os error 2)" in err


def test_extract_device_too_small(packed: PackedImage, tmp_path: Path) -> None:
    image = packed.image
    small = tmp_path / "small.img"
    small.write_bytes(b"\xaa" * (image.size // 2))
    with (
        source_repo(image) as repo,
        loop_device(small, sector_size=image.sector_size, partitions=False) as dev,
    ):
        proc = run_cli("dev", "extract", "osmet", "--osmet", packed.osmet, repo, dev)
    assert proc.returncode == 1
    assert f"image size {image.size} is larger than device size {image.size // 2}" in (
        proc.stderr.decode()
    )
    assert small.read_bytes() == b"\xaa" * (image.size // 2)

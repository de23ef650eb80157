"""`install` end to end on real loop devices with real signed metal images (root)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import SigningKey
from tests.helpers.httpserver import http_server
from tests.helpers.loop import loop_device, mounted
from tests.helpers.metalimage import PLATFORMS, MetalImage, MetalImageFactory, Recipe

pytestmark = pytest.mark.root

MiB = 1 << 20


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> MetalImageFactory:
    return MetalImageFactory(tmp_path_factory.mktemp("metal"), signing_key)


@pytest.fixture
def ignition(tmp_path: Path) -> Path:
    path = tmp_path / "config.ign"
    path.write_text('{"ignition": {"version": "3.4.0"}}')
    return path


@contextlib.contextmanager
def blank_disk(
    tmp_path: Path, size_mib: int = 64, sector_size: int = 512, name: str = "disk.img"
) -> Iterator[str]:
    img = tmp_path / name
    with open(img, "wb") as f:
        f.truncate(size_mib * MiB)
    with loop_device(img, sector_size=sector_size, partitions=False) as dev:
        yield dev


def install(
    dev: str, img: MetalImage, key: SigningKey, *extra: str | os.PathLike[str]
) -> tuple[int, str, str]:
    proc = run_cli(
        "install", dev, "--image-file", img.path, "--keyring", key.public, *extra, timeout=300
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def install_wipes(
    tmp_path: Path, img: MetalImage, key: SigningKey, *extra: str | os.PathLike[str],
    size_mib: int = 64, sector_size: int = 512,
) -> tuple[str, str]:  # fmt: skip
    """Install onto a blank disk where it must fail after writing: exit 1 and the
    partition table wiped. Returns (device, stderr) for the message checks."""
    with blank_disk(tmp_path, size_mib=size_mib, sector_size=sector_size) as dev:
        rc, _, err = install(dev, img, key, *extra)
        assert rc == 1, err
        assert_wiped(dev)
    return dev, err


def install_touches_nothing(
    tmp_path: Path, img: MetalImage, key: SigningKey, *extra: str | os.PathLike[str]
) -> str:
    """Install onto a blank disk where it must fail before writing: exit 1 and not a
    byte changed. Returns stderr."""
    with blank_disk(tmp_path) as dev:
        before = digest(dev)
        rc, _, err = install(dev, img, key, *extra)
        assert rc == 1, err
        assert digest(dev) == before
    return err


def forged_copy(tmp_path: Path, img: MetalImage, other_key: SigningKey) -> Path:
    """The image, signed by a key nobody trusts (a tampered mirror)."""
    forged = tmp_path / "forged.raw.xz"
    forged.write_bytes(img.path.read_bytes())
    other_key.sign(forged)
    return forged


def table(dev: str) -> list[dict[str, object]]:
    proc = subprocess.run(["sfdisk", "--json", dev], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return []
    parts: list[dict[str, object]] = json.loads(proc.stdout)["partitiontable"].get("partitions", [])
    return parts


def read_dev(dev: str, offset: int, length: int) -> bytes:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def digest(dev: str, offset: int = 0, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        f.seek(offset)
        left = length
        while left is None or left > 0:
            chunk = f.read(MiB if left is None else min(MiB, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def assert_wiped(dev: str, keep: tuple[str, ...] = ()) -> None:
    """A fresh GPT holding only the saved partitions, boot code zeroed."""
    assert [p.get("name") for p in table(dev)] == list(keep)
    assert read_dev(dev, 0, 446) == bytes(446)


def assert_image_outside_boot(dev: str, img: MetalImage) -> None:
    boot_off, boot_len = img.part("boot")
    raw = img.raw
    with open(raw, "rb") as f:
        head = f.read(boot_off)
        f.seek(boot_off + boot_len)
        tail = f.read()
    assert read_dev(dev, 0, boot_off) == head
    assert read_dev(dev, boot_off + boot_len, len(tail)) == tail


def boot_node(dev: str) -> str:
    return f"{dev}p3"


def assert_installed(dev: str, img: MetalImage, ignition: Path) -> None:
    """The image landed outside /boot, and /boot holds the Ignition config unchanged."""
    assert_image_outside_boot(dev, img)
    with mounted(boot_node(dev)) as boot:
        assert (boot / "ignition" / "config.ign").read_bytes() == ignition.read_bytes()


def bls_options(boot: Path) -> str:
    entry = sorted((boot / "loader" / "entries").iterdir())[-1]
    line = next(x for x in entry.read_text().splitlines() if x.startswith("options "))
    return line[len("options ") :]


# ---- successful installs ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xz", "xz-mt", "gzip", "zstd", "raw"])
def test_formats_plain(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, fmt: str
) -> None:
    img = factory.get(Recipe(), fmt)  # type: ignore[arg-type]
    with blank_disk(tmp_path) as dev:
        rc, _, err = install(dev, img, signing_key)
        assert rc == 0, err
        assert "Install complete." in err
        assert "Good signature" in err or "gpg:" in err
        assert_image_outside_boot(dev, img)
        boot_off, boot_len = img.part("boot")
        assert digest(dev, boot_off, boot_len) == digest(str(img.raw), boot_off, boot_len)


def test_all_boot_edits(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(), "xz")
    nm = tmp_path / "nm"
    nm.mkdir()
    (nm / "eth0.nmconnection").write_text("[connection]\nid=eth0\n")
    with blank_disk(tmp_path) as dev:
        rc, _, err = install(
            dev,
            img,
            signing_key,
            "-i",
            ignition,
            "--platform",
            "qemu",
            "--append-karg",
            "nosmt",
            "--delete-karg",
            "mitigations=auto,nosmt",
            "--firstboot-args",
            "ip=dhcp",
            "-n",
            "--network-dir",
            nm,
        )
        assert rc == 0, err
        for msg in (
            "Writing Ignition config",
            "Setting platform to qemu",
            "Writing first-boot kernel arguments",
            "Modifying kernel arguments",
            f"Copying networking configuration from {nm}",
            "Install complete.",
        ):
            assert msg in err
        assert_image_outside_boot(dev, img)
        with mounted(boot_node(dev)) as boot:
            conf = boot / "ignition" / "config.ign"
            assert conf.read_bytes() == ignition.read_bytes()
            assert (conf.stat().st_mode & 0o777) == 0o600
            assert ((boot / "ignition").stat().st_mode & 0o777) == 0o700
            opts = bls_options(boot)
            assert "ignition.platform.id=qemu" in opts
            assert "mitigations=auto,nosmt" not in opts
            assert opts.endswith("console=tty0 console=ttyS0,115200n8 nosmt")
            grub = (boot / "grub2" / "grub.cfg").read_text()
            for cmd in PLATFORMS["qemu"]["grub_commands"]:
                assert cmd + "\n" in grub
            assert (
                'set ignition_network_kcmdline="ip=dhcp"'
                in (boot / "ignition.firstboot").read_text()
            )
            copied = boot / "nestos-firstboot-network" / "eth0.nmconnection"
            assert copied.read_text() == "[connection]\nid=eth0\n"


def test_sector_size_4096(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(sector_size=4096), "zstd")
    with blank_disk(tmp_path, sector_size=4096) as dev:
        rc, _, err = install(dev, img, signing_key, "-i", ignition, "--console", "ttyS0,115200")
        assert rc == 0, err
        assert "Configuring console settings" in err
        assert_image_outside_boot(dev, img)
        assert [p["name"] for p in table(dev)] == ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"]
        with mounted(boot_node(dev)) as boot:
            assert (boot / "ignition" / "config.ign").exists()
            assert bls_options(boot).endswith("console=ttyS0,115200n8")
            grub = (boot / "grub2" / "grub.cfg").read_text()
            assert "serial --unit=0 --speed=115200 --word=8 --parity=no\n" in grub
            assert "terminal_output serial\n" in grub


def test_regular_file_target(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(), "gzip")
    target = tmp_path / "vm.img"
    with open(target, "wb") as f:
        f.truncate(80 * MiB)
    before = set(os.listdir("/sys/block"))
    proc = run_cli(
        "install", target, "-f", img.path, "--keyring", signing_key.public, "-i", ignition
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert set(os.listdir("/sys/block")) <= before  # the tool's loop device is gone
    assert target.stat().st_size == 80 * MiB
    with loop_device(target) as dev:
        assert_installed(dev, img, ignition)


def test_empty_file_target_grows(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    target = tmp_path / "new.img"
    target.write_bytes(b"")
    proc = run_cli("install", target, "-f", img.path, "--keyring", signing_key.public)
    assert proc.returncode == 0, proc.stderr.decode()
    assert target.read_bytes() == img.raw.read_bytes()


def test_image_url(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(), "xz")
    assert img.sig is not None
    with http_server() as srv, blank_disk(tmp_path) as dev:
        srv.add("/metal.raw.xz", img.path)
        srv.add("/metal.raw.xz.sig", img.sig)
        srv.add("/config.ign", ignition)
        digest_ = hashlib.sha512(ignition.read_bytes()).hexdigest()
        proc = run_cli(
            "install",
            dev,
            "--image-url",
            srv.url("/metal.raw.xz"),
            "--keyring",
            signing_key.public,
            "--ignition-url",
            srv.url("/config.ign"),
            "--ignition-hash",
            f"sha512-{digest_}",
        )
        err = proc.stderr.decode()
        assert proc.returncode == 0, err
        assert_installed(dev, img, ignition)


def test_config_file_and_dry_run(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(), "xz")
    cfg = tmp_path / "install.yaml"
    cfg.write_text(
        f"image-file: {img.path}\nkeyring: [{signing_key.public}]\n"
        f"ignition-file: {ignition}\nappend-karg: [a]\n"
    )
    with blank_disk(tmp_path) as dev:
        before = digest(dev)
        proc = run_cli("install", "-c", cfg, dev, "--append-karg", "b", "--dry-run")
        out = proc.stdout.decode()
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.startswith(
            f"Running with arguments: --image-file {img.path} --ignition-file {ignition} "
            "--append-karg a --append-karg b "
        )
        assert "Dry run: nothing will be written." in out
        assert "Signature: found" in out
        assert f"Destination: {dev} (block device, 512-byte sectors" in out
        assert "append kernel arguments: a b" in out
        assert digest(dev) == before


# ---- saved partitions ------------------------------------------------------------------


@contextlib.contextmanager
def disk_with_data(tmp_path: Path, size_mib: int = 96, data_at_mib: int = 64) -> Iterator[str]:
    """An old disk: a junk partition 1 and an ext4 `data` partition 5 holding a file."""
    img = tmp_path / "olddisk.img"
    with open(img, "wb") as f:
        f.truncate(size_mib * MiB)
    tree = Path(tempfile.mkdtemp(dir=tmp_path))
    (tree / "precious.txt").write_text("keep me\n")
    fs = tmp_path / "data.fs"
    length = (size_mib - data_at_mib - 1) * MiB
    with open(fs, "wb") as f:
        f.truncate(length)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "data", "-d", str(tree), str(fs)],
        check=True,
        capture_output=True,
    )
    with open(img, "r+b") as f:
        f.seek(data_at_mib * MiB)
        f.write(fs.read_bytes())
    script = (
        "label: gpt\n"
        "1 : start=2048, size=20480, name=old\n"
        f"5 : start={data_at_mib * 2048}, size={length // 512}, name=data\n"
    )
    subprocess.run(["sfdisk", "--quiet", str(img)], input=script.encode(), check=True)
    with loop_device(img, partitions=False) as dev:
        yield dev


def assert_data_readable(dev: str, number: int) -> None:
    node = f"{dev}p{number}"
    if not os.path.exists(node):
        subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
    with mounted(node, options="ro") as where:
        assert (where / "precious.txt").read_text() == "keep me\n"


def test_saved_partition_is_merged(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    with disk_with_data(tmp_path) as dev:
        rc, _, err = install(dev, img, signing_key, "--save-partlabel", "d*")
        assert rc == 0, err
        assert 'Saving partition 5 ("data") to new partition 5' in err
        names = [(p["node"], p["name"]) for p in table(dev)]
        assert names[-1] == (f"{dev}p5", "data")
        assert [n for _, n in names] == ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root", "data"]
        subprocess.run(["sgdisk", "-v", dev], check=True, capture_output=True)
        assert_data_readable(dev, 5)


# ---- faults: message and disk state ------------------------------------------------


def test_bad_signature_wipes_but_keeps_saved(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, other_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    forged = forged_copy(tmp_path, img, other_key)
    with disk_with_data(tmp_path) as dev:
        proc = run_cli(
            "install", dev, "-f", forged, "--keyring", signing_key.public, "--save-partindex", "5-"
        )
        err = proc.stderr.decode()
        assert proc.returncode == 1
        assert "Resetting partition table" in err
        assert err.rstrip().endswith("Error: install failed")
        assert_wiped(dev, keep=("data",))
        assert_data_readable(dev, 5)


@pytest.mark.parametrize("fmt", ["zstd", "raw"])
def test_flipped_byte_wipes(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, fmt: str
) -> None:
    """zstd: its checksum or the signature; raw: only the signature, at the very end."""
    img = factory.get(Recipe(), fmt)  # type: ignore[arg-type]
    bad = tmp_path / img.path.name
    data = bytearray(img.path.read_bytes())
    data[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(data))
    assert img.sig is not None
    (tmp_path / (bad.name + ".sig")).write_bytes(img.sig.read_bytes())  # covers the original
    with disk_with_data(tmp_path) as dev:
        proc = run_cli(
            "install", dev, "-f", bad, "--keyring", signing_key.public, "--save-partlabel", "data"
        )
        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        assert "Error: install failed" in err
        if fmt == "raw":
            assert "GPG verification failure" in err
        assert_wiped(dev, keep=("data",))
        assert_data_readable(dev, 5)


@pytest.mark.parametrize(
    ("signame", "said"),
    [("SIGINT", "interrupted"), ("SIGTERM", "terminated by SIGTERM")],
    ids=["ctrl-c", "systemd-stop"],
)
def test_ctrl_c_mid_write_wipes_and_exits(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, signame: str, said: str
) -> None:
    """Ctrl-C (or systemd stopping the service) reaches the whole process group, gpg
    too, while the image streams in from a slow mirror: the command must end
    promptly, wipe the table, keep the saved partition and leave no GnuPG home."""
    import signal

    from tests.helpers.cli import interrupt_cli

    img = factory.get(Recipe(), "raw")
    assert img.sig is not None
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    with http_server() as srv, disk_with_data(tmp_path) as dev:
        srv.add("/metal.raw", img.path, rate=8 * MiB)
        srv.add("/metal.raw.sig", img.sig)
        rc, err = interrupt_cli(
            "install", dev, "--save-partlabel", "data", "--image-url", srv.url("/metal.raw"),
            "--keyring", signing_key.public,
            signum=getattr(signal, signame), env={"TMPDIR": str(private_tmp)}, delay=0.5,
        )  # fmt: skip
        assert rc == 1, err
        assert said in err
        assert "Resetting partition table" in err
        assert "Error: install failed" in err
        assert_wiped(dev, keep=("data",))
        assert_data_readable(dev, 5)
    assert os.listdir(private_tmp) == []


def test_target_smaller_than_image(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    dev, err = install_wipes(tmp_path, img, signing_key, size_mib=32)
    assert f"image is larger than {dev}" in err


def test_image_reaching_into_saved_partition(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    with disk_with_data(tmp_path, size_mib=64, data_at_mib=40) as dev:
        rc, _, err = install(dev, img, signing_key, "--save-partlabel", "data")
        assert rc == 1
        assert f'collision with partition 5 ("data") at offset {40 * MiB}' in err
        assert_wiped(dev, keep=("data",))
        assert_data_readable(dev, 5)


def test_busy_target_refused(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    with disk_with_data(tmp_path) as dev:
        subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
        with mounted(f"{dev}p5", options="ro"):
            before = read_dev(dev, 0, MiB)
            rc, _, err = install(dev, img, signing_key)
            assert rc == 1
            assert f"Partitions in use on {dev}:\n    {dev}p5 mounted on " in err
            assert "found busy partitions" in err
            assert read_dev(dev, 0, MiB) == before


def test_512_image_on_4096_device(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    _, err = install_wipes(tmp_path, img, signing_key, sector_size=4096)
    assert "source has sector size 512 but destination has sector size 4096" in err


def test_missing_boot_label(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(boot_label="notboot"), "xz")
    dev, err = install_wipes(tmp_path, img, signing_key, "-i", ignition)
    assert f"couldn't find boot device for {dev}" in err


def test_two_boot_labels(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(second_boot_label=True), "xz")
    dev, err = install_wipes(tmp_path, img, signing_key, "-i", ignition)
    assert f'found multiple devices on {dev} with label "boot"' in err


def test_preserve_on_error(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(boot_label="notboot"), "xz")
    with blank_disk(tmp_path) as dev:
        rc, _, err = install(dev, img, signing_key, "-i", ignition, "--preserve-on-error")
        assert rc == 1
        assert "Preserving partition table as requested" in err
        assert "Resetting partition table" not in err
        assert read_dev(dev, 0, MiB) == img.raw.read_bytes()[:MiB]


def test_ignition_hash_mismatch_touches_nothing(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(), "xz")
    with disk_with_data(tmp_path) as dev:
        before = digest(dev)
        rc, _, err = install(
            dev, img, signing_key, "-i", ignition, "--ignition-hash", "sha256-" + "0" * 64
        )
        assert rc == 1
        assert "failed to validate Ignition configuration digest" in err
        assert "hash mismatch, computed '" in err
        assert digest(dev) == before


def test_config_file_unknown_key_touches_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("image-file: /x\nbogus-key: 1\n")
    with blank_disk(tmp_path) as dev:
        before = digest(dev)
        proc = run_cli("install", "-c", cfg, dev)
        err = proc.stderr.decode()
        assert proc.returncode == 1
        assert f"Error: parsing config file {cfg}" in err
        assert "unknown field `bogus-key`" in err
        assert digest(dev) == before


def test_http_ignition_without_hash_touches_nothing(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    err = install_touches_nothing(tmp_path, img, signing_key, "-I", "http://127.0.0.1:9/config.ign")
    assert (
        "refusing to fetch Ignition config over HTTP without --ignition-hash or --insecure-ignition"
    ) in err


def test_unsigned_image_refused_without_insecure(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz", sign=False)
    err = install_touches_nothing(tmp_path, img, signing_key)
    assert "--insecure not specified and signature not found" in err


def test_duplicate_boot_note(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    other = tmp_path / "other.img"
    with open(other, "wb") as f:
        f.truncate(16 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-L", "boot", str(other)], check=True)
    with loop_device(other, partitions=False) as odev, blank_disk(tmp_path) as dev:
        rc, _, err = install(dev, img, signing_key)
        assert rc == 0, err
        assert "Note: detected other devices with a filesystem labeled `boot`:" in err
        assert f"  - {odev}\n" in err
        assert f"  - {dev}p3" not in err
        assert "wiping them with `wipefs -a`." in err
        assert err.rstrip().endswith("Install complete.")


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_stream_install_picks_format_by_sector_size(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, sector_size: int
) -> None:
    img = factory.get(Recipe(sector_size=sector_size), "xz")
    assert img.sig is not None
    fmt = "4k.raw.xz" if sector_size == 4096 else "raw.xz"
    arch = os.uname().machine
    with http_server() as srv, blank_disk(tmp_path, sector_size=sector_size) as dev:
        srv.add(f"/img/metal.{fmt}", img.path)
        srv.add(f"/img/metal.{fmt}.sig", img.sig)
        art = {
            "location": srv.url(f"/img/metal.{fmt}"),
            "signature": srv.url(f"/img/metal.{fmt}.sig"),
            "sha256": hashlib.sha256(img.path.read_bytes()).hexdigest(),
        }
        doc = {"architectures": {arch: {"artifacts": {"metal": {"formats": {fmt: {"disk": art}}}}}}}
        srv.add("/streams/2403-LTS.json", json.dumps(doc).encode())
        proc = run_cli(
            "install", dev, "--stream", "2403-LTS", "--stream-base-url", srv.url("/streams/"),
            "--keyring", signing_key.public, "--platform", "qemu",
        )  # fmt: skip
        err = proc.stderr.decode()
        assert proc.returncode == 0, err
        assert f"metal image ({fmt}) and signature" in err
        assert_image_outside_boot(dev, img)
        with mounted(boot_node(dev)) as boot:
            assert "ignition.platform.id=qemu" in bls_options(boot)


def test_file_target_4096_image(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, ignition: Path
) -> None:
    img = factory.get(Recipe(sector_size=4096), "gzip")
    target = tmp_path / "vm4k.img"
    target.write_bytes(b"")
    proc = run_cli(
        "install", target, "-f", img.path, "--keyring", signing_key.public, "-i", ignition
    )
    assert proc.returncode == 0, proc.stderr.decode()
    with loop_device(target, sector_size=4096) as dev:
        assert_installed(dev, img, ignition)


def test_preserve_on_error_stashes_saved_partitions(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey, other_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    forged = forged_copy(tmp_path, img, other_key)
    with disk_with_data(tmp_path) as dev:
        proc = run_cli(
            "install", dev, "-f", forged, "--keyring", signing_key.public,
            "--save-partlabel", "data", "--preserve-on-error",
        )  # fmt: skip
        err = proc.stderr.decode()
        assert proc.returncode == 1
        assert "Preserving partition table as requested" in err
        line = next(x for x in err.splitlines() if x.startswith("Storing saved partition"))
        stash = Path(line.rsplit(" ", 1)[1])
        try:
            assert stash.parent == Path("/tmp")
            assert stash.name.startswith("nestos-installer-partitions.")
            parts = json.loads(
                subprocess.run(["sfdisk", "--json", str(stash)], capture_output=True, text=True,
                               check=True).stdout
            )["partitiontable"]["partitions"]  # fmt: skip
            assert [p["name"] for p in parts] == ["data"]
        finally:
            stash.unlink(missing_ok=True)
        assert_data_readable(dev, 5)


def test_ignition_url_404_touches_nothing(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(), "xz")
    with http_server() as srv, blank_disk(tmp_path) as dev:
        before = digest(dev)
        rc, _, err = install(
            dev, img, signing_key, "-I", srv.url("/missing.ign"), "--insecure-ignition"
        )
        assert rc == 1
        assert f"downloading source Ignition config {srv.url('/missing.ign')}" in err
        assert digest(dev) == before


def test_coreos_layout_image(
    tmp_path: Path, factory: MetalImageFactory, signing_key: SigningKey
) -> None:
    img = factory.get(Recipe(brand="coreos"), "xz")
    nm = tmp_path / "nm"
    nm.mkdir()
    (nm / "eth0.nmconnection").write_text("[connection]\n")
    with blank_disk(tmp_path) as dev:
        rc, _, err = install(
            dev, img, signing_key, "--platform", "qemu", "--copy-network", "--network-dir", nm
        )
        assert rc == 0, err
        with mounted(boot_node(dev)) as boot:
            assert bls_options(boot).endswith("console=tty0 console=ttyS0,115200n8")
            assert (boot / "coreos-firstboot-network" / "eth0.nmconnection").exists()
            assert not (boot / "nestos-firstboot-network").exists()

"""Build a real OSTree-based metal image, laid out like a NestOS/FCOS disk.

GPT with a `BIOS-BOOT` partition of random bytes, `boot` (ext4) and `root` (xfs). The
root holds a bare-mode OSTree repo with a committed tree and a hard-linked deployment;
/boot holds copies of the kernel and initramfs (identical to repo objects, so pack
must match them), BLS entries and grub config. Built on a loop device of the requested
logical sector size; the image file is what tests pack and compare against.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.loop import loop_device, mounted

MIB = 1 << 20
KVER = "6.6.0-nestos.x86_64"
BRANCH = "nestos/x86_64/stable"
# mkfs.xfs refuses filesystems under 300 MB unless it believes it runs under xfstests.
_XFS_SMALL_ENV = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}


def _run(*argv: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
    full_env = dict(os.environ, LC_ALL="C")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [os.fspath(a) for a in argv], capture_output=True, text=True, env=full_env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class OstreeImage:
    path: Path
    sector_size: int
    size: int
    sha256: str
    commit: str
    kernel_object: str  # OSTree checksum of the kernel (also copied into /boot)
    objects_bytes: int  # total size of the tree's file content

    def kernel_object_path(self, repo: Path) -> Path:
        """Where the kernel's content object lives in an (archive or bare) OSTree repo."""
        return repo / "objects" / self.kernel_object[:2] / f"{self.kernel_object[2:]}.file"


def _compressible(rng: random.Random, n: int) -> bytes:
    """Roughly binary-like data: xz shrinks it to about half, like real executables."""
    out = bytearray()
    while len(out) < n:
        k = min(n - len(out), 64 * 1024)
        out += rng.randbytes((k + 1) // 2).hex().encode()[:k]
    return bytes(out)


def _make_tree(tree: Path, rng: random.Random, payload: int, kernel_size: int) -> int:
    mods = tree / "usr" / "lib" / "modules" / KVER
    mods.mkdir(parents=True)
    (mods / "vmlinuz").write_bytes(rng.randbytes(kernel_size))
    (mods / "initramfs.img").write_bytes(_compressible(rng, 600 * 1024 + 123))
    bindir = tree / "usr" / "bin"
    bindir.mkdir(parents=True)
    total = kernel_size + 600 * 1024 + 123
    # A spread of sizes: tiny, block-unaligned, multi-extent.
    for i, size in enumerate((1, 100, 1023, 1025, 4095, 4096, 4097, 65537, 300_001)):
        (bindir / f"tool{i}").write_bytes(_compressible(rng, size))
        total += size
    share = tree / "usr" / "share" / "data"
    share.mkdir(parents=True)
    (share / "empty").write_bytes(b"")
    left = payload
    i = 0
    while left > 0:
        size = min(left, rng.randint(MIB // 2, 4 * MIB) + rng.randint(0, 4095))
        (share / f"blob{i:04d}").write_bytes(_compressible(rng, size))
        left -= size
        total += size
        i += 1
    (share / "dup-a").write_bytes(b"same content\n" * 200)
    (share / "dup-b").write_bytes(b"same content\n" * 200)
    (tree / "usr" / "lib" / "libfoo.so").symlink_to("libfoo.so.1")
    etc = tree / "usr" / "etc"
    etc.mkdir(parents=True)
    (etc / "os-release").write_text('NAME="NestOS"\nID=nestos\n')
    return total


def _make_boot(boot: Path, tree: Path, commit: str, rng: random.Random, decoy: bool) -> None:
    mods = tree / "usr" / "lib" / "modules" / KVER
    kdir = boot / "ostree" / f"nestos-{commit[:16]}"
    kdir.mkdir(parents=True)
    shutil.copyfile(mods / "vmlinuz", kdir / f"vmlinuz-{KVER}")
    shutil.copyfile(mods / "initramfs.img", kdir / f"initramfs-{KVER}.img")
    entries = boot / "loader" / "entries"
    entries.mkdir(parents=True)
    (entries / "ostree-1-nestos.conf").write_text(
        "title NestOS (ostree:0)\n"
        "version 1\n"
        f"linux /ostree/nestos-{commit[:16]}/vmlinuz-{KVER}\n"
        f"initrd /ostree/nestos-{commit[:16]}/initramfs-{KVER}.img\n"
        "options ignition.platform.id=metal $ignition_firstboot "
        f"ostree=/ostree/boot.1/nestos/{commit}/0 root=LABEL=root rw\n"
    )
    grub = boot / "grub2"
    grub.mkdir()
    (grub / "grub.cfg").write_text(
        "set timeout=1\n\n# CONSOLE-SETTINGS-START\n# CONSOLE-SETTINGS-END\n\nblscfg\n"
    )
    (boot / "ignition.firstboot").write_text("")
    (boot / "nestos").mkdir()
    (boot / "nestos" / "platforms.json").write_text("{}\n")
    # Large but unrelated to any object (same size as the kernel: must not match).
    (boot / "bootuuid.bin").write_bytes(rng.randbytes(8192))
    if not decoy:
        return
    (boot / "zz").mkdir()
    (boot / "zz" / "decoy").write_bytes(rng.randbytes((mods / "vmlinuz").stat().st_size))


def build_ostree_image(
    workdir: Path,
    *,
    sector_size: int = 512,
    payload: int = 4 * MIB,
    kernel_size: int = 3 * MIB + 1234,
    boot_mib: int = 24,
    root_mib: int | None = None,
    seed: int = 0,
    decoy: bool = True,
) -> OstreeImage:
    """Create `workdir/disk.img` (sparse) and return its facts."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not crypto
    workdir.mkdir(parents=True, exist_ok=True)
    tree = workdir / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    objects_bytes = _make_tree(tree, rng, payload, kernel_size)
    if root_mib is None:
        root_mib = max(64, (objects_bytes * 2) // MIB + 48)
    img = workdir / "disk.img"
    img.unlink(missing_ok=True)
    with img.open("wb") as f:
        f.truncate((1 + 1 + boot_mib + root_mib + 1) * MIB)
    with loop_device(img, sector_size=sector_size, partitions=False) as dev:
        script = (
            "label: gpt\n"
            'size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name="BIOS-BOOT"\n'
            f'size={boot_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="boot"\n'
            f'size={root_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"\n'
        )
        subprocess.run(
            ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", dev],
            input=script,
            text=True,
            capture_output=True,
            check=True,
        )
        _run("partx", "-a", dev)
        p1, p2, p3 = (f"{dev}p{i}" for i in (1, 2, 3))
        with open(p1, "r+b") as f:
            f.write(rng.randbytes(MIB))
        _run(
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "boot",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            "-U",
            str(uuid.uuid4()),
            p2,
        )
        _run(
            "mkfs.xfs",
            "-q",
            "-f",
            "-L",
            "root",
            "-m",
            f"uuid={uuid.uuid4()}",
            p3,
            env=_XFS_SMALL_ENV,
        )
        # A fresh UUID per image: XFS refuses to mount a second filesystem with the UUID
        # of a mounted one, so fixed UUIDs made concurrent test runs (and the osmet
        # benchmark) fail each other's mounts, `pack osmet`'s included.
        with mounted(p3) as root:
            repo = root / "ostree" / "repo"
            repo.parent.mkdir(parents=True)
            _run("ostree", f"--repo={repo}", "init", "--mode=bare")
            _run(
                "ostree",
                f"--repo={repo}",
                "commit",
                f"--branch={BRANCH}",
                f"--tree=dir={tree}",
                "--no-xattrs",
                "--subject=test",
            )
            commit = _run("ostree", f"--repo={repo}", "rev-parse", BRANCH).strip()
            deploy = root / "ostree" / "deploy" / "nestos" / "deploy" / f"{commit}.0"
            deploy.parent.mkdir(parents=True)
            _run("ostree", f"--repo={repo}", "checkout", "--require-hardlinks", commit, deploy)
            kernel = deploy / "usr" / "lib" / "modules" / KVER / "vmlinuz"
            kernel_object = _object_of(repo, kernel)
            os.sync()
        with mounted(p2) as boot:
            _make_boot(boot, tree, commit, rng, decoy)
            os.sync()
    shutil.rmtree(tree)
    h = hashlib.sha256()
    with img.open("rb") as f:
        while data := f.read(MIB):
            h.update(data)
    return OstreeImage(
        path=img,
        sector_size=sector_size,
        size=img.stat().st_size,
        sha256=h.hexdigest(),
        commit=commit,
        kernel_object=kernel_object,
        objects_bytes=objects_bytes,
    )


def _object_of(repo: Path, deployed: Path) -> str:
    """The object a deployed file is hard-linked to (same inode under objects/)."""
    ino = deployed.stat().st_ino
    for path in (repo / "objects").glob("*/*.file"):
        if path.stat(follow_symlinks=False).st_ino == ino:
            return path.parent.name + path.name[: -len(".file")]
    raise RuntimeError(f"{deployed} is not hard-linked into {repo}")

"""Demo of `install`: a signed metal image served over HTTP, installed into a VM disk file.

Builds a small NestOS-like metal image, signs it with a throw-away key, serves it on
127.0.0.1, runs `nestos-installer install vm.img --image-url ... --ignition-file ...
--append-karg ...` and shows what landed on the disk image.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers.cli import run_cli
from tests.helpers.gpgkey import make_key
from tests.helpers.httpserver import http_server
from tests.helpers.loop import loop_device, mounted
from tests.helpers.metalimage import MetalImageFactory, Recipe

MiB = 1 << 20


def _show(title: str, text: str) -> None:
    sys.stdout.write(f"\n=== {title}\n{text.rstrip()}\n")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="nestos-install-demo-"))
    try:
        return demo_install(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def demo_install(work: Path) -> int:
    """The install stage of `make demo` (needs root: losetup, mount). Commands run in
    `work` and are shown with paths relative to it."""
    work.mkdir(parents=True, exist_ok=True)
    key = make_key(work / "gpg")
    try:
        img = MetalImageFactory(work / "media", key)
        (work / "media").mkdir()
        metal = img.get(Recipe(), "xz")
        assert metal.sig is not None
        (work / "config.ign").write_text(
            '{"ignition": {"version": "3.4.0"}, "passwd": {"users": [{"name": "nest"}]}}'
        )
        disk = work / "vm.img"
        with open(disk, "wb") as f:
            f.truncate(64 * MiB)
        with http_server() as srv:
            srv.add("/nestos-metal.x86_64.raw.xz", metal.path)
            srv.add("/nestos-metal.x86_64.raw.xz.sig", metal.sig)
            argv = [
                "install", "vm.img",
                "--image-url", srv.url("/nestos-metal.x86_64.raw.xz"),
                "--keyring", str(key.public.relative_to(work)),
                "--ignition-file", "config.ign",
                "--append-karg", "nosmt",
                "--console", "ttyS0,115200n8",
            ]  # fmt: skip
            _show("command (in the install/ directory)", "$ nestos-installer " + " ".join(argv))
            proc = run_cli(*argv, cwd=work)
        _show("installer stderr", proc.stderr.decode())
        if proc.returncode != 0:
            return proc.returncode
        table = subprocess.run(
            ["sfdisk", "-d", "vm.img"], capture_output=True, text=True, check=False, cwd=work
        )
        _show("partition table of vm.img (sfdisk -d)", table.stdout)
        with loop_device(disk) as dev, mounted(f"{dev}p3") as boot:
            entry = sorted((boot / "loader" / "entries").iterdir())[-1]
            _show(f"/boot/{entry.relative_to(boot)}", entry.read_text())
            conf = boot / "ignition" / "config.ign"
            mode = oct(conf.stat().st_mode & 0o777)
            _show(f"/boot/ignition/config.ign (mode {mode})", conf.read_text())
            grub = (boot / "grub2" / "grub.cfg").read_text()
            _show("/boot/grub2/grub.cfg", grub)
        return 0
    finally:
        key.close()


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: run the main job end to end on built-in data and show the result.

Each stage is a function taking a work directory so later stages (install) can be
appended to `main()` without touching the earlier ones.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.demo_install import demo_install
from tests.helpers.cli import run_cli
from tests.helpers.isomedia import LiveIsoSpec, build_live_iso

DEMO_CONFIG = b"""{
  "ignition": {"version": "3.3.0"},
  "passwd": {"users": [{"name": "nest", "sshAuthorizedKeys": ["ssh-ed25519 AAAA demo"]}]}
}
"""


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def cli(work: Path, *args: str | Path, input: bytes | None = None) -> bytes:
    """Run the real CLI in `work` (paths shown relative to it, as an operator would
    type them); show the command and its output; stop the demo on failure."""
    shown = [str(a.relative_to(work)) if isinstance(a, Path) else a for a in args]
    print("$ nestos-installer " + " ".join(shown), flush=True)
    proc = run_cli(*shown, input=input, cwd=work)
    sys.stderr.write(proc.stderr.decode(errors="replace"))
    sys.stderr.flush()
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: exit status {proc.returncode}")
    return proc.stdout


def demo_live_iso(work: Path) -> Path:
    """Build a NestOS-layout live ISO, customize it, show the result; return the ISO."""
    step("building a small NestOS-layout live ISO with xorriso")
    iso = build_live_iso(work / "nestos-live.iso", LiveIsoSpec())
    print(f"{iso.path.name}: {iso.path.stat().st_size // 1024} KiB")
    config = work / "config.ign"
    config.write_bytes(DEMO_CONFIG)

    step("embedding an Ignition config into a copy (-o), then editing kargs in place")
    custom = work / "nestos-custom.iso"
    cli(work, "iso", "ignition", "embed", "-i", config, "-o", custom, iso.path)
    cli(work, "iso", "kargs", "modify", "-a", "console=ttyS0,115200n8",
        "-d", "mitigations=auto,nosmt", custom)  # fmt: skip

    step("showing them back")
    shown = cli(work, "iso", "ignition", "show", custom)
    sys.stdout.write(shown.decode())
    assert shown == DEMO_CONFIG, "embedded config differs"
    kargs = cli(work, "iso", "kargs", "show", custom).decode()
    sys.stdout.write(kargs)
    assert "console=ttyS0,115200n8" in kargs and "mitigations" not in kargs
    sys.stdout.write(cli(work, "dev", "show", "iso", "--ignition", custom).decode())

    step("resetting restores the pristine image")
    cli(work, "iso", "reset", custom)
    same = custom.read_bytes() == iso.path.read_bytes()
    print(f"{custom.name} is byte-identical to {iso.path.name}: {'yes' if same else 'NO'}")
    assert same
    return custom


def main() -> int:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nestos-demo-") as tmp:
        work = Path(tmp)
        print(f"Working in {work} (removed at the end); commands run from there.")
        demo_live_iso(work)
        step("installing a signed metal image served on 127.0.0.1 into a VM disk file")
        if demo_install(work / "install") != 0:
            raise SystemExit("demo failed: install")
    print(f"\ndemo finished in {time.monotonic() - start:.1f} s")
    print("Next: `make test` runs the test suite; docs/README.md explains each command.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

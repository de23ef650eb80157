"""Customized live media boot in QEMU and do what they were told (docs/customize.md).

Three scenarios of build/e2e-report.json, on the harness's live media
(docs/e2e-harness.md): the live Ignition config `customize` generates is applied by
real Ignition (Debian's 2.14) in the live initramfs, and the installer then runs from
the installer.d files it wrote.

- customize-iso: `iso customize` with the install options, both hook scripts, a
  keyfile, a CA and live kernel arguments; booted from the CD drive.
- customize-pxe: the same through `pxe customize` on the live initramfs, booted over
  TFTP + iPXE from the mirror.
- customize-live-only: `iso customize --live-ignition` only: the live config runs,
  nothing is installed, the VM powers off.

The three scenarios run at once (the live-only one is short), started together on
first use; each test waits for its own and reports its own time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from nestos_inst import profile as profiles
from nestos_inst.customize.ignition import decode_resource
from tests.e2e import live
from tests.e2e.harness import (
    URL,
    MirrorEnv,
    blank_disk,
    boot_file,
    cli,
    disk_matches_image,
    ign_file,
    ign_unit,
    ignition,
    mirror_inputs,
    need,
    partitions,
)
from tests.e2e.mirror import Nginx
from tests.e2e.vm import Boot, end_pool, run_qemu, user_net
from tests.helpers.gpgkey import SigningKey
from tests.helpers.tlscert import self_signed

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.slow]

VM_TIMEOUT = 1200  # TCG, two guests on a 2-core host that may be loaded: generous
KEY_PATH = "/etc/nestos-e2e/key.asc"
# The scripts print markers built at run time, so the text only appears when they run.
PRE = '#!/bin/sh\necho "E2E-HOOK-$((40 + 2))-PRE ran before the install"\n'
POST = '#!/bin/sh\necho "E2E-HOOK-$((40 + 2))-POST ran after the install"\n'
PRE_MARK, POST_MARK = "E2E-HOOK-42-PRE", "E2E-HOOK-42-POST"
DEST_A = {"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "e2e-a"}]}}
DEST_B = {
    "ignition": {"version": "3.2.0"},
    "storage": {"files": [{"path": "/etc/e2e-b", "contents": {"source": "data:,b"}}]},
}
KEYFILE = b"[connection]\nid=e2e-cust\ntype=ethernet\n\n[ipv4]\nmethod=auto\n"
DEST_KARG = "e2e.customized.dest=1"
LIVE_KARG = "e2e.customized.live=1"
LIVE_ONLY_MARK = "E2E-LIVE-ONLY-CONFIG-APPLIED"


@dataclass
class Env(MirrorEnv):
    inputs: dict[str, Path]


def _inputs(root: Path, key: SigningKey) -> dict[str, Path]:
    """The files a user would pass to customize (the CA made with openssl)."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes | str] = {
        "a.ign": json.dumps(DEST_A),
        "b.ign": json.dumps(DEST_B),
        "pre.sh": PRE,
        "post.sh": POST,
        "e2e-cust.nmconnection": KEYFILE,
        # the image comes from the mirror and is verified with the test key, which
        # the live Ignition config below puts into the live root
        "install.yaml": f"image-url: {URL}/metal.raw.gz\nkeyring: [{KEY_PATH}]\n",
        "live.ign": ignition([ign_file(KEY_PATH, key.public.read_bytes())]),
    }
    out = {}
    for name, data in files.items():
        path = root / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        out[name] = path
    out["ca.pem"] = self_signed(root, "e2e customize CA")[1]
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Iterator[Env]:
    need("openssl")
    k, tmp, metal = mirror_inputs(tmp_path_factory, "customize", signing_key)
    web_root = tmp / "www"
    inputs = _inputs(tmp / "inputs", signing_key)
    live.live_iso_copy(k, tmp / "warm.iso").unlink()  # build the cached media before threads
    with Nginx(web_root, tmp / "nginx") as web:
        yield Env(k, tmp, web_root, web, metal, inputs)


def install_options(i: dict[str, Path]) -> list[str | Path]:
    """Every install-related option of issue 10's customize-iso scenario."""
    return [
        "--dest-device", "/dev/vda",
        "--dest-ignition", i["a.ign"], "--dest-ignition", i["b.ign"],
        "--dest-karg-append", DEST_KARG,
        "--pre-install", i["pre.sh"], "--post-install", i["post.sh"],
        "--installer-config", i["install.yaml"],
        "--network-keyfile", i["e2e-cust.nmconnection"],
        "--ignition-ca", i["ca.pem"],
        "--live-ignition", i["live.ign"],
    ]  # fmt: skip


def assert_customized_install(env: Env, b: Boot, disk: Path, w: Path) -> None:
    log = b.log
    assert not b.timed_out, log[-5000:]
    assert "live Ignition config applied" in log, log[-5000:]
    assert "Install complete." in log, log[-5000:]
    # hooks ran, in order around the install, and their output reached the console
    pre, done, post = (log.index(m) for m in (PRE_MARK, "Install complete.", POST_MARK))
    assert pre < done < post, (pre, done, post)
    assert "reboot: Restarting system" in log
    # the disk holds the image
    table = partitions(disk)
    assert [p.get("name") for p in table["partitions"]] == [
        p.get("name") for p in env.metal.partitions
    ]
    assert disk_matches_image(disk, env.metal.raw)
    # the installed Ignition config merges A and B and trusts the CA
    config = json.loads(boot_file(disk, "/ignition/config.ign", w))
    merged = [json.loads(decode_resource(r)) for r in config["ignition"]["config"]["merge"]]
    assert merged == [DEST_A, DEST_B]
    [ca] = config["ignition"]["security"]["tls"]["certificateAuthorities"]
    assert decode_resource(ca) == env.inputs["ca.pem"].read_bytes()
    # the destination kernel argument is in the boot entry
    entry = boot_file(disk, "/loader/entries/ostree-1.conf", w)
    options = next(line for line in entry.splitlines() if line.startswith("options "))
    assert DEST_KARG in options.split(), options
    # the keyfile was copied for the installed system's first boot
    assert boot_file(disk, "/nestos-firstboot-network/e2e-cust.nmconnection", w) == (
        KEYFILE.decode()
    )


def customize_iso(env: Env) -> None:
    w = env.workdir("customize-iso")
    iso = live.live_iso_copy(env.k, w / "live.iso")
    cli("iso", "customize", *install_options(env.inputs), "--live-karg-append", LIVE_KARG, iso)
    disk = blank_disk(w / "disk.img")
    b = run_qemu(
        live.cdrom_args(iso, disk) + user_net(env.web.port),
        workdir=w,
        timeout=VM_TIMEOUT,
        marks=(PRE_MARK, "Install complete.", POST_MARK),
    )
    cmdline = next(line for line in b.log.splitlines() if "Kernel command line:" in line)
    assert LIVE_KARG in cmdline.split(), cmdline
    assert_customized_install(env, b, disk, w)


def customize_pxe(env: Env) -> None:
    w = env.workdir("customize-pxe")
    iso = live.live_iso_copy(env.k, w / "live.iso")
    pxe_dir = env.web_root / "customize-pxe"
    cli("iso", "extract", "pxe", "-o", pxe_dir, iso)
    initrd = pxe_dir / "live-initrd.img"
    custom = pxe_dir / "custom-initrd.img"
    proc = cli("pxe", "customize", *install_options(env.inputs), "-o", custom, initrd)
    assert "PXE configuration must include kernel arguments" in proc.stderr
    for f in pxe_dir.iterdir():
        f.chmod(0o644)
    disk = blank_disk(w / "disk.img")
    args = live.pxe_args(
        w / "tftp",
        "customize-pxe/live-vmlinuz",
        ["customize-pxe/custom-initrd.img", "customize-pxe/live-rootfs.img"],
        live.pxe_kargs(profiles.NESTOS),
        env.web.port,
        disk=disk,
    )
    b = run_qemu(
        args, workdir=w, timeout=VM_TIMEOUT, marks=(PRE_MARK, "Install complete.", POST_MARK)
    )
    assert "iPXE" in b.log
    assert_customized_install(env, b, disk, w)


def customize_live_only(env: Env) -> None:
    w = env.workdir("customize-live-only")
    unit = (
        "[Unit]\nDescription=e2e: live config applied, power off\n"
        "After=multi-user.target\n\n[Service]\nType=oneshot\n"
        "StandardOutput=tty\nTTYPath=/dev/ttyS0\n"
        f"ExecStart=/bin/echo {LIVE_ONLY_MARK}\n"
        "ExecStart=/usr/bin/systemctl --no-block poweroff\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    cfg = w / "live.ign"
    cfg.write_text(ignition(units=[ign_unit("e2e-live-only.service", unit)]))
    iso = live.live_iso_copy(env.k, w / "live.iso")
    proc = cli("iso", "customize", "--live-ignition", cfg, iso)
    assert proc.stderr == ""  # nothing about installing
    disk = blank_disk(w / "disk.img")
    b = run_qemu(live.cdrom_args(iso, disk) + user_net(env.web.port), workdir=w, timeout=VM_TIMEOUT)
    log = b.log
    assert not b.timed_out, log[-5000:]
    assert "live Ignition config applied" in log, log[-5000:]
    assert LIVE_ONLY_MARK in log, log[-5000:]
    assert "Install complete." not in log
    assert "reboot: Power down" in log, log[-5000:]
    with disk.open("rb") as f:
        assert not any(f.read(1 << 20)), "the disk was written"


SCENARIOS: dict[str, Callable[[Env], None]] = {
    "customize-iso": customize_iso,
    "customize-pxe": customize_pxe,
    "customize-live-only": customize_live_only,
}


def _timed(fn: Callable[[Env], None], env: Env) -> float:
    t = time.monotonic()
    fn(env)
    return time.monotonic() - t


@pytest.fixture(scope="module")
def launched(env: Env, request: pytest.FixtureRequest) -> Iterator[dict[str, Future[float]]]:
    """The selected scenarios, all at once, submitted on first use."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is not None
        and item.module.__name__ == __name__
        and hasattr(item, "callspec")
    }
    # All three at once: customize-live-only is short (no install), so the third guest
    # fills the core the two long installs would otherwise leave idle at the end.
    pool = ThreadPoolExecutor(3, thread_name_prefix="customize")
    futures = {n: pool.submit(_timed, fn, env) for n, fn in SCENARIOS.items() if n in selected}
    try:
        yield futures
    finally:
        end_pool(pool, futures.values())


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.scenario(n), id=n) for n in SCENARIOS]
)
def test_scenario(
    name: str, launched: dict[str, Future[float]], request: pytest.FixtureRequest
) -> None:
    seconds = launched[name].result()
    # the scenario's own time (it shared the host with one other VM)
    request.node.user_properties.append(("scenario_seconds", seconds))

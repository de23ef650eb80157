"""`iso customize` and `pxe customize` end to end on generated NestOS/CoreOS media.

ISOs come from xorriso, initramfs images from GNU cpio + xz/zstd; results are read
back with our own readers and with the real tools (xz, cpio, ignition-validate,
systemd-analyze). Most runs are in-process (`run_main`); exit codes, usage errors and
the terminal refusal use a real process (`run_cli`).
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nestos_inst import profile as profiles
from nestos_inst.customize.ignition import decode_resource
from nestos_inst.formats.initrd import read_initrd, write_initrd
from tests.helpers import initrdmedia
from tests.helpers.cli import REPO, run_cli
from tests.helpers.isomedia import (
    LiveIsoSpec,
    Media,
    build_live_iso,
    build_plain_iso,
    fail,
    ignition_from_area,
    ok,
    run_main,
    sha,
    temps,
)
from tests.helpers.tlscert import self_signed

FEATURES = {
    "installer-config": True,
    "installer-config-directives": {"console": True},
    "live-initrd-network": True,
}
KEYFILE = b"[connection]\nid=wired\ntype=ethernet\n\n[ipv4]\nmethod=auto\n"
DEST = b'{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "core"}]}}\n'
DEST2 = b'{"ignition": {"version": "3.1.0"}, "storage": {"files": [{"path": "/etc/b"}]}}\n'
LIVE = b'{"ignition": {"version": "3.3.0"}, "systemd": {"units": [{"name": "l.service"}]}}\n'
PXE_NOTE = (
    "PXE configuration must include kernel arguments:\n"
    "\tignition.firstboot ignition.platform.id=metal\n"
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One of every input kind, made with the tools users have (openssl for the CA)."""
    root = tmp_path_factory.mktemp("inputs")
    files = {
        "dest": ("dest.ign", DEST),
        "dest2": ("dest-2.ign", DEST2),
        "live": ("live.ign", LIVE),
        "keyfile": ("wired.nmconnection", KEYFILE),
        "pre": ("pre.sh", b"#!/bin/sh\necho @pre@\n"),
        "post": ("post.sh", b"#!/bin/sh\necho @post@\n"),
        "config": ("install.yaml", b"append-karg: [from-config]\n"),
    }
    out = {}
    for key, (name, data) in files.items():
        (root / name).write_bytes(data)
        out[key] = str(root / name)
    self_signed(root, "customize CA")
    out["ca"] = str(root / "ca.pem")
    return out


def all_options(i: dict[str, str]) -> list[str]:
    """Every option except --network-nmstate (nmstate picks random UUIDs)."""
    return [
        "--dest-ignition", i["dest"], "--dest-ignition", i["dest2"],
        "--dest-device", "/dev/vda",
        "--dest-console", "ttyS0,115200n8",
        "--dest-karg-append", "dest-karg", "--dest-karg-delete", "quiet",
        "--network-keyfile", i["keyfile"],
        "--ignition-ca", i["ca"],
        "--pre-install", i["pre"], "--post-install", i["post"],
        "--installer-config", i["config"],
        "--live-ignition", i["live"],
    ]  # fmt: skip


def live_files(config: bytes) -> dict[str, bytes]:
    obj = json.loads(config)
    return {f["path"]: decode_resource(f["contents"]) for f in obj["storage"]["files"]}


@pytest.fixture(params=[profiles.NESTOS, profiles.COREOS], ids=["nestos", "coreos"])
def media(request: pytest.FixtureRequest, tmp_path: Path) -> Media:
    prof: profiles.Profile = request.param
    spec = LiveIsoSpec(
        profile=prof, features=FEATURES, igninfo="file" if prof is profiles.NESTOS else "slice"
    )
    return Media(build_live_iso(tmp_path / "live.iso", spec), tmp_path)


# ---- ISO --------------------------------------------------------------------------------


def test_iso_all_options_three_modes_identical(media: Media, inputs: dict[str, str]) -> None:
    prof = media.built.spec.profile
    args = [
        "iso", "customize", *all_options(inputs),
        "--live-karg-append", "live-karg", "--live-karg-delete", "mitigations=auto,nosmt",
        "--live-karg-replace", "ignition.platform.id=metal=qemu",
    ]  # fmt: skip
    out = media.all_modes(*args)
    config = ok(run_main("iso", "ignition", "show", str(out))).stdout
    # the raw area is a real xz'd cpio archive holding the same config
    built = media.built
    with open(out, "rb") as f:
        f.seek(built.initrd_offset)
        area = f.read(built.initrd_length)
    assert ignition_from_area(area) == config
    etc = "/etc/nestos" if prof is profiles.NESTOS else "/etc/coreos"
    assert list(live_files(config)) == [
        "/usr/local/bin/pre-install-pre.sh",
        "/usr/local/bin/post-install-post.sh",
        f"{etc}/installer.d/0000-install.yaml",
        f"{etc}/dest.ign",
        f"{etc}/installer.d/0001-customize.yaml",
    ]
    units = [u["name"] for u in json.loads(config)["systemd"]["units"]]
    assert units == ["pre-install-pre.sh.service", "post-install-post.sh.service"]
    net = ok(run_main("iso", "network", "extract", str(out))).stdout
    assert net == b"########## wired.nmconnection ##########\n" + KEYFILE
    kargs = ok(run_main("iso", "kargs", "show", str(out))).stdout.decode().split()
    default = media.built.default_kargs.split()
    assert "mitigations=auto,nosmt" in default and "mitigations=auto,nosmt" not in kargs
    assert kargs[-1] == "live-karg" and "ignition.platform.id=qemu" in kargs
    defaults = ok(run_main("iso", "kargs", "show", "--default", str(out))).stdout.split()
    assert [k.decode() for k in defaults] == default


def test_iso_messages_and_validated_config(
    media: Media, inputs: dict[str, str], tmp_path: Path
) -> None:
    iso = media.copy()
    res = ok(
        run_main("iso", "customize", *all_options(inputs), "-o", str(tmp_path / "o.iso"), str(iso))
    )
    assert res.stderr.decode() == (
        "Boot media will automatically install to /dev/vda without confirmation.\n"
    )
    if shutil.which("ignition-validate") is None:
        pytest.skip("ignition-validate not installed")
    config = ok(run_main("iso", "ignition", "show", str(tmp_path / "o.iso"))).stdout
    (tmp_path / "live.ign").write_bytes(config)
    proc = subprocess.run(
        ["ignition-validate", str(tmp_path / "live.ign")], capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dest = next(v for k, v in live_files(config).items() if k.endswith("/dest.ign"))
    (tmp_path / "dest.ign").write_bytes(dest)
    proc = subprocess.run(
        ["ignition-validate", str(tmp_path / "dest.ign")], capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_iso_no_options_gives_pristine_image(media: Media) -> None:
    out = media.all_modes("iso", "customize")
    assert sha(out) == media.original


def test_iso_already_customized_and_force(media: Media, inputs: dict[str, str]) -> None:
    net_only = media.all_modes("iso", "customize", "--network-keyfile", inputs["keyfile"])
    msg = "This ISO image is already customized; use -f to force."
    media.all_fail(msg, "iso", "customize", "--live-ignition", inputs["live"], src=net_only)
    # -f replaces everything that was embedded; kargs stay untouched without --live-karg-*
    forced = media.all_modes(
        "iso", "customize", "-f", "--live-ignition", inputs["live"], src=net_only
    )
    assert fail(run_main("iso", "network", "extract", str(forced)), "No embedded network settings")
    assert ok(run_main("iso", "ignition", "show", str(forced))).stdout
    # modified kargs count as a customization too
    kargs = media.all_modes("iso", "kargs", "modify", "-a", "x")
    media.all_fail(msg, "iso", "customize", src=kargs)
    kept = media.all_modes("iso", "customize", "-f", src=kargs)
    assert ok(run_main("iso", "kargs", "show", str(kept))).stdout.split()[-1] == b"x"
    # an embedded Ignition config alone too
    ign = media.all_modes("iso", "ignition", "embed", "-i", inputs["live"])
    media.all_fail(msg, "iso", "customize", src=ign)


def test_iso_live_kargs_unsupported(tmp_path: Path) -> None:
    media = Media(build_live_iso(tmp_path / "l.iso", LiveIsoSpec(kargs="none")), tmp_path)
    media.all_fail(
        "This OS image does not support customizing live kernel arguments.",
        "iso", "customize", "--live-karg-append", "a",
    )  # fmt: skip
    media.all_modes("iso", "customize")


def test_iso_feature_messages(tmp_path: Path, inputs: dict[str, str]) -> None:
    media = Media(build_live_iso(tmp_path / "l.iso", LiveIsoSpec(features=None)), tmp_path)
    for args, message in [
        (["--dest-console", "ttyS0"], "the destination console"),
        (["--network-keyfile", inputs["keyfile"]], "network settings"),
        (["--dest-device", "/dev/vda"], "installer configuration"),
        (["--installer-config", inputs["config"]], "installer configuration"),
    ]:
        text = f"Error: This OS image does not support customizing {message}."
        media.all_fail(text, "iso", "customize", *args)


def test_iso_input_errors_change_nothing(
    media: Media, inputs: dict[str, str], tmp_path: Path
) -> None:
    bad_ign = tmp_path / "bad.ign"
    bad_ign.write_bytes(b'{"ignition": {"version": "3.3.0"}, "systemd": {"units": [{}]}}')
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_bytes(b"dest-device: [a, b]\n")
    for args, message in [
        (["--dest-ignition", str(bad_ign)], f"parsing Ignition config {bad_ign}"),
        (["--live-ignition", str(bad_ign)], f"parsing Ignition config {bad_ign}"),
        (["--installer-config", str(bad_cfg)], f"parsing installer config {bad_cfg}"),
        (["--pre-install", inputs["pre"], "--pre-install", inputs["pre"]],
         "config already specifies path /usr/local/bin/pre-install-pre.sh"),
        (["--network-keyfile", inputs["keyfile"], "--network-keyfile", inputs["keyfile"]],
         "config already specifies keyfile wired.nmconnection"),
        (["--live-karg-replace", "nonsense"], "KEY=OLD=NEW"),
        # an error found last still means nothing was written before
        (["--network-keyfile", inputs["keyfile"], "--live-ignition", str(tmp_path / "nope")],
         "reading Ignition config"),
    ]:  # fmt: skip
        media.all_fail(message, "iso", "customize", *args)


def test_iso_area_too_small(tmp_path: Path, inputs: dict[str, str]) -> None:
    spec = LiveIsoSpec(ignition_size=4096)
    media = Media(build_live_iso(tmp_path / "l.iso", spec), tmp_path)
    big = tmp_path / "big.sh"
    big.write_bytes(os.urandom(8192))
    media.all_fail(
        "Compressed initramfs is too large", "iso", "customize", "--pre-install", str(big)
    )


def test_iso_not_live_and_existing_output(tmp_path: Path, inputs: dict[str, str]) -> None:
    plain = tmp_path / "plain.iso"
    build_plain_iso(plain, {"a.txt": b"a"})
    before = sha(plain)
    fail(run_main("iso", "customize", str(plain)), "Unrecognized CoreOS ISO image.")
    assert sha(plain) == before
    built = build_live_iso(tmp_path / "live.iso")
    out = tmp_path / "exists.iso"
    out.write_bytes(b"keep")
    proc = run_cli("iso", "customize", "--live-ignition", inputs["live"], "-o", out, built.path)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"Error: persisting output file to {out}\n\nCaused by:\n    File exists (os error 17)\n"
    )
    assert out.read_bytes() == b"keep"
    assert temps(tmp_path) == []


def test_iso_usage_errors(tmp_path: Path) -> None:
    built = build_live_iso(tmp_path / "live.iso")
    before = sha(built.path)
    proc = run_cli("iso", "customize", "--dest-console", "ttyS0,115200p8", built.path)
    assert proc.returncode == 2
    assert b"invalid or unsupported console argument" in proc.stderr
    proc = run_cli("iso", "customize", "--no-such-option", built.path)
    assert proc.returncode == 2
    assert sha(built.path) == before


def test_iso_stdout_refuses_terminal(tmp_path: Path, inputs: dict[str, str]) -> None:
    built = build_live_iso(tmp_path / "live.iso")
    before = sha(built.path)
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "nestos_inst", "iso", "customize", "-o", "-",
             "--live-ignition", inputs["live"], str(built.path)],
            stdout=secondary,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )  # fmt: skip
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 1
    assert b"Refusing to write binary data to terminal" in proc.stderr
    assert sha(built.path) == before


# ---- PXE --------------------------------------------------------------------------------


def live_initramfs(
    path: Path, prof: profiles.Profile = profiles.NESTOS, features: dict[str, Any] | None = None
) -> Path:
    """A live-initramfs-like image: an xz archive with the marker, then a zstd one."""
    members = {prof.live_initramfs_marker: b"", "usr/bin/tool": b"#!/bin/sh\n" * 50}
    if features is not None:
        members[prof.initrd_features] = json.dumps(features).encode()
    first = initrdmedia.xz(initrdmedia.gnu_cpio(members))
    second = initrdmedia.zstd(initrdmedia.gnu_cpio({"usr/lib/modules/x.ko": os.urandom(4096)}))
    path.write_bytes(first + second)
    return path


@pytest.fixture(params=[profiles.NESTOS, profiles.COREOS], ids=["nestos", "coreos"])
def initramfs(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = live_initramfs(tmp_path / "initramfs.img", request.param, FEATURES)
    BRANDS[path] = request.param
    return path


BRANDS: dict[Path, profiles.Profile] = {}


def appended(src: Path, out: Path) -> bytes:
    """The archive after the unchanged input; checks the append rule on the way."""
    data, original = out.read_bytes(), src.read_bytes()
    assert data[: len(original)] == original
    assert data[len(original)] == 0xFD
    assert data[len(original) + 1 : len(original) + 6] == b"7zXZ\x00"
    return data[len(original) :]


def test_pxe_all_options(initramfs: Path, inputs: dict[str, str], tmp_path: Path) -> None:
    before = sha(initramfs)
    out = tmp_path / "custom.img"
    res = ok(run_main("pxe", "customize", *all_options(inputs), "-o", str(out), str(initramfs)))
    assert res.stderr.decode() == (
        "Boot media will automatically install to /dev/vda without confirmation.\n" + PXE_NOTE
    )
    assert sha(initramfs) == before
    archive = appended(initramfs, out)
    members = read_initrd(archive)
    prof = BRANDS[initramfs]
    assert sorted(members) == sorted(
        ["config.ign", f"{prof.initrd_network_dir}/wired.nmconnection"]
    )
    # the real tools read the appended archive; our unwrap reads the whole image
    listing = (
        subprocess.run(
            ["sh", "-c", "xz -dc | cpio -t --quiet"], input=archive, capture_output=True, check=True
        )
        .stdout.decode()
        .split()
    )
    assert "config.ign" in listing
    unwrapped = ok(run_main("pxe", "ignition", "unwrap", str(out))).stdout
    assert unwrapped == members["config.ign"]
    config = json.loads(unwrapped)
    assert f"{prof.dest_ignition}" in [f["path"] for f in config["storage"]["files"]]
    unit = config["systemd"]["units"][0]["contents"]
    assert unit.startswith("# Generated by nestos-installer pxe customize\n")
    assert f"Before={prof.unit_prefix}.service" in unit


def test_pxe_stdout_equals_file(initramfs: Path, inputs: dict[str, str], tmp_path: Path) -> None:
    args = ["pxe", "customize", *all_options(inputs)]
    out = tmp_path / "custom.img"
    ok(run_main(*args, "-o", str(out), str(initramfs)))
    res = ok(run_main(*args, "-o", "-", str(initramfs)))
    assert res.stdout == out.read_bytes()
    assert temps(tmp_path) == []
    assert os.stat(out).st_mode & 0o777 == 0o600


def test_pxe_empty_customization_appends_trailer_only(initramfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "same.img"
    res = ok(run_main("pxe", "customize", "-o", str(out), str(initramfs)))
    assert res.stderr == b""
    assert appended(initramfs, out) == write_initrd({})


def test_pxe_keyfile_only_has_no_note(
    initramfs: Path, inputs: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "net.img"
    res = ok(
        run_main(
            "pxe",
            "customize",
            "--network-keyfile",
            inputs["keyfile"],
            "-o",
            str(out),
            str(initramfs),
        )
    )
    assert res.stderr == b""
    assert "config.ign" not in read_initrd(appended(initramfs, out))


def test_pxe_refusals(tmp_path: Path, inputs: dict[str, str]) -> None:
    plain = tmp_path / "plain.img"
    plain.write_bytes(initrdmedia.xz(initrdmedia.gnu_cpio({"etc/hostname": b"x\n"})))
    out = tmp_path / "out.img"
    fail(
        run_main("pxe", "customize", "-o", str(out), str(plain)),
        "not a CoreOS live initramfs image",
    )
    assert not out.exists()
    live = live_initramfs(tmp_path / "live.img", features=FEATURES)
    done = tmp_path / "done.img"
    ok(run_main("pxe", "customize", "--live-ignition", inputs["live"], "-o", str(done), str(live)))
    fail(run_main("pxe", "customize", "-o", str(out), str(done)), "input is already customized")
    net = tmp_path / "net.img"
    ok(
        run_main(
            "pxe", "customize", "--network-keyfile", inputs["keyfile"], "-o", str(net), str(live)
        )
    )
    fail(run_main("pxe", "customize", "-o", str(out), str(net)), "input is already customized")
    assert not out.exists()
    # features come from the initramfs: none there, nothing allowed
    bare = live_initramfs(tmp_path / "bare.img")
    for args, message in [
        (["--dest-device", "/dev/vda"], "does not support customizing installer configuration."),
        (["--network-keyfile", inputs["keyfile"]], "customizing network settings."),
        (["--dest-console", "tty0"], "customizing the destination console."),
    ]:
        fail(run_main("pxe", "customize", *args, "-o", str(out), str(bare)), message)
        assert not out.exists()
    assert temps(tmp_path) == []


def test_pxe_existing_output_and_usage(tmp_path: Path, inputs: dict[str, str]) -> None:
    live = live_initramfs(tmp_path / "live.img", features=FEATURES)
    out = tmp_path / "exists.img"
    out.write_bytes(b"keep")
    proc = run_cli("pxe", "customize", "--live-ignition", inputs["live"], "-o", out, live)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f"Error: persisting output file to {out}\n\nCaused by:\n    File exists (os error 17)\n"
    )
    assert out.read_bytes() == b"keep"
    proc = run_cli("pxe", "customize", live)
    assert proc.returncode == 2
    assert b"-o/--output" in proc.stderr
    proc = run_cli("pxe", "customize", "--live-karg-append", "x", "-o", "-", live)
    assert proc.returncode == 2
    assert temps(tmp_path) == []


def test_pxe_input_error_leaves_no_output(tmp_path: Path, inputs: dict[str, str]) -> None:
    live = live_initramfs(tmp_path / "live.img", features=FEATURES)
    out = tmp_path / "out.img"
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"copy-network: maybe\n")
    fail(
        run_main("pxe", "customize", "--installer-config", str(bad), "-o", str(out), str(live)),
        f"parsing installer config {bad}",
    )
    assert not out.exists() and temps(tmp_path) == []
    res = run_main("pxe", "customize", "--installer-config", str(bad), "-o", "-", str(live))
    assert res.returncode == 1 and res.stdout == b""


# ---- the generated hook units are valid systemd units --------------------------------


def test_hook_units_pass_systemd_analyze_verify(
    media: Media, inputs: dict[str, str], tmp_path: Path
) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    out = media.all_modes(
        "iso", "customize", "--pre-install", inputs["pre"], "--post-install", inputs["post"]
    )
    config = json.loads(ok(run_main("iso", "ignition", "show", str(out))).stdout)
    prof = media.built.spec.profile
    root = tmp_path / "root"
    units = root / "usr/lib/systemd/system"
    host = next(p for p in ("/usr/lib/systemd/system", "/lib/systemd/system") if Path(p).is_dir())
    shutil.copytree(host, units, symlinks=True)
    for d in ("usr/bin", "usr/local/bin", "usr/libexec", "etc/systemd/system"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "bin").symlink_to("usr/bin")
    for exe in ("systemctl", "sh", "sulogin", "echo"):
        found = shutil.which(exe)
        if found:
            shutil.copy2(found, root / "usr/bin" / exe)
    # our own units, renamed to the media's brand the way a CoreOS live system has them
    for src in (REPO / "units").glob("nestos-installer*"):
        if src.suffix in (".service", ".target"):
            text = src.read_text().replace("nestos-installer", prof.unit_prefix)
            (units / src.name.replace("nestos-installer", prof.unit_prefix)).write_text(text)
    for script in (REPO / "units/scripts").iterdir():
        dest = root / "usr/libexec" / script.name.replace("nestos-installer", prof.unit_prefix)
        shutil.copy2(script, dest)
    for f in config["storage"]["files"]:
        target = root / f["path"].lstrip("/")
        target.write_bytes(decode_resource(f["contents"]))
        target.chmod(f["mode"])
    names = []
    for u in config["systemd"]["units"]:
        (root / "etc/systemd/system" / u["name"]).write_text(u["contents"])
        names.append(u["name"])
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *names],
        cwd=root / "etc/systemd/system",
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr.decode() == ""
    # the check has teeth: a hook whose script is missing is reported
    script = root / "usr/local/bin" / names[0].removesuffix(".service")
    script.unlink()
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", names[0]],
        cwd=root / "etc/systemd/system",
        capture_output=True,
        check=False,
    )
    assert str(script.relative_to(root)) in proc.stderr.decode()

"""`customize` with upstream's own test inputs and ISOs (../shared/fixtures/upstream).

The inputs (Butane-made Ignition configs, installer configs, keyfiles, nmstate states,
hook scripts, a CA) are the ones upstream's customize tests use; the ISOs are the
decompressed `embed-areas-*` fixtures. Without the fixture tree the module skips with
the reason shown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from nestos_inst import profile as profiles
from nestos_inst.customize import build as b
from nestos_inst.customize import ignition, keyfile, nmstate
from nestos_inst.errors import NestosError, format_chain
from nestos_inst.formats.embed import Features
from tests.helpers.isomedia import Media, fail, ok, run_main, unxz_fixture

pytestmark = pytest.mark.compat

ALL = Features(True, {"console": True}, True)


@pytest.fixture(scope="module")
def fx(upstream: Path) -> Path:
    path = upstream / "customize"
    if not path.is_dir():
        pytest.skip(f"customize fixtures not found at {path}")
    return path


def _libnmstate() -> nmstate.Backend | None:
    try:
        return nmstate.find_backend(which=lambda _n: None)
    except NestosError:
        return None


@pytest.mark.parametrize("name", ["dest.ign", "dest-2.ign", "live.ign", "live-2.ign"])
def test_upstream_ignition_configs_parse_cleanly(
    fx: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parsed = ignition.parse_file(name, (fx / name).read_bytes())
    assert capsys.readouterr().err == ""
    assert parsed.version == "3.3.0"
    # normalisation keeps every key these real configs use
    assert parsed.config == json.loads((fx / name).read_bytes())


@pytest.mark.parametrize(
    "name",
    [
        "installer-test.nmconnection",
        "nmstate-js-eth1.nmconnection",
        "nmstate-js-eth2.nmconnection",
        "nmstate-yl-eth1.nmconnection",
        "nmstate-yl-eth2.nmconnection",
    ],
)
def test_upstream_keyfiles_pass_networkmanager(fx: Path, name: str) -> None:
    if keyfile.libnm() is None:
        pytest.skip("libnm introspection (python3-gi, gir1.2-nm-1.0) missing")
    keyfile.check_keyfile(name, (fx / name).read_bytes())


def test_upstream_nmstate_yaml(fx: Path) -> None:
    backend = _libnmstate()
    if backend is None:
        pytest.skip("libnmstate not installed (pip install --no-deps nmstate==2.0.0)")
    out = nmstate.generate_keyfiles(str(fx / "installer-test-nmstate-yaml.yaml"), backend)
    assert [name for name, _ in out] == [
        "nmstate-yl-eth1.nmconnection",
        "nmstate-yl-eth2.nmconnection",
    ]
    for name, data in out:
        assert b"id=" + name.removesuffix(".nmconnection").encode() + b"\n" in data
        assert b"method=auto" in data


def test_upstream_nmstate_json_with_string_booleans(fx: Path) -> None:
    """Upstream's JSON state writes `"enabled": "true"`. nmstatectl (Rust) coerces it;
    the Python libnmstate refuses it. Either way the user gets keyfiles or a clear
    error naming the property, never a silent guess."""
    backend = _libnmstate()
    if backend is None:
        pytest.skip("libnmstate not installed (pip install --no-deps nmstate==2.0.0)")
    path = fx / "installer-test-nmstate-json.json"
    with pytest.raises(NestosError) as exc:
        nmstate.generate_keyfiles(str(path), backend)
    text = format_chain(exc.value)
    assert text.startswith(f"Error: generating configuration from nmstate file {path}")
    assert "must be a boolean" in text


def test_upstream_inputs_build(
    fx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Upstream's full customize invocation (without the JSON nmstate state, see above)."""
    opts = b.Options(
        dest_ignition=[str(fx / "dest.ign"), str(fx / "dest-2.ign")],
        dest_device="/dev/vda",
        dest_console=["ttyS0,115200n8"],
        dest_karg_append=["dest-karg"],
        network_keyfile=[str(fx / "installer-test.nmconnection")],
        ignition_ca=[str(fx / "cert.pem")],
        pre_install=[str(fx / "pre-install-1"), str(fx / "pre-install-2")],
        post_install=[str(fx / "post-install-1"), str(fx / "post-install-2")],
        installer_config=[str(fx / "install-1.conf"), str(fx / "install-2.conf")],
        live_ignition=[str(fx / "live.ign"), str(fx / "live-2.ign")],
    )
    result = b.build(opts, ALL, profiles.COREOS, "iso")
    assert capsys.readouterr().err == (
        "Boot media will automatically install to /dev/vda without confirmation.\n"
    )
    config = json.loads(result.live_config or b"")
    assert [f["path"] for f in config["storage"]["files"]] == [
        "/usr/local/bin/pre-install-pre-install-1",
        "/usr/local/bin/pre-install-pre-install-2",
        "/usr/local/bin/post-install-post-install-1",
        "/usr/local/bin/post-install-post-install-2",
        "/etc/coreos/installer.d/0000-install-1.conf",
        "/etc/coreos/installer.d/0001-install-2.conf",
        "/etc/coreos/dest.ign",
        "/etc/coreos/installer.d/0002-customize.yaml",
    ]
    assert len(config["ignition"]["config"]["merge"]) == 2
    assert result.installer_yaml == (
        b"ignition-file: /etc/coreos/dest.ign\n"
        b"console:\n- ttyS0,115200n8\n"
        b"append-karg:\n- dest-karg\n"
        b"copy-network: true\n"
        b"dest-device: /dev/vda\n"
    )
    if shutil.which("ignition-validate"):
        for name, data in (("live.ign", result.live_config), ("dest.ign", result.dest_config)):
            (tmp_path / name).write_bytes(data or b"")
            proc = subprocess.run(
                ["ignition-validate", str(tmp_path / name)], capture_output=True, check=False
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr


def test_upstream_isos(fx: Path, upstream: Path, tmp_path: Path) -> None:
    """2022-02 lacks the console directive (upstream's unsupported.sh case); 2023-03
    takes everything, in all three output modes with identical bytes."""
    old = unxz_fixture(upstream / "iso/embed-areas-2022-02.iso.xz", tmp_path / "2022-02.iso")
    res = fail(run_main("iso", "customize", "--dest-console", "ttyS0", "-o", "-", str(old)), "")
    assert b"does not support customizing the destination console" in res.stderr
    new = unxz_fixture(upstream / "iso/embed-areas-2023-03.x86_64.iso.xz", tmp_path / "2023-03.iso")
    media = Media(new, tmp_path)
    out = media.all_modes(
        "iso", "customize",
        "--dest-ignition", str(fx / "dest.ign"), "--dest-device", "/dev/vda",
        "--dest-console", "ttyS0,115200n8",
        "--network-keyfile", str(fx / "installer-test.nmconnection"),
        "--ignition-ca", str(fx / "cert.pem"),
        "--pre-install", str(fx / "pre-install-1"), "--post-install", str(fx / "post-install-1"),
        "--installer-config", str(fx / "install-1.conf"),
        "--live-ignition", str(fx / "live.ign"),
        "--live-karg-append", "coreos.liveiso.fromram",
    )  # fmt: skip
    shown = ok(run_main("iso", "ignition", "show", str(out))).stdout
    assert json.loads(shown)["ignition"]["version"] == "3.3.0"
    kargs = ok(run_main("iso", "kargs", "show", str(out))).stdout.split()
    assert kargs[-1] == b"coreos.liveiso.fromram"
    # and it resets to the pristine image
    reset = media.all_modes("iso", "reset", src=out)
    assert reset.read_bytes() == new.read_bytes()

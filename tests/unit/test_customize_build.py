"""The customize processing order, feature gating and generated live config (in memory)."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nestos_inst import profile as profiles
from nestos_inst.customize import build as b
from nestos_inst.customize.ignition import decode_resource
from nestos_inst.errors import NestosError, format_chain
from nestos_inst.formats.embed import Features
from tests.helpers.tlscert import self_signed

ALL = Features(
    installer_config=True,
    installer_config_directives={"console": True},
    live_initrd_network=True,
)
NONE = Features()
KEYFILE = b"[connection]\nid=wired\ntype=ethernet\n\n[ipv4]\nmethod=auto\n"
DEST = b'{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "core"}]}}'
DEST2 = b'{"ignition": {"version": "3.0.0"}, "systemd": {"units": [{"name": "b.service"}]}}'
LIVE = b'{"ignition": {"version": "3.2.0"}, "storage": {"files": [{"path": "/etc/l"}]}}'
NESTOS_NET = "etc/nestos-firstboot-network"


class Inputs:
    """Input files in a temp dir, created on demand by name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str, data: bytes | str) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)


@pytest.fixture
def f(tmp_path: Path) -> Inputs:
    return Inputs(tmp_path)


def run(
    opts: b.Options,
    features: Features = ALL,
    profile: profiles.Profile = profiles.NESTOS,
    command: str = "iso",
) -> tuple[b.Result, str]:
    """build() and what it told the user (report.say writes to stderr)."""
    with _stderr() as err:
        result = b.build(opts, features, profile, command)
    return result, err.getvalue()


@contextlib.contextmanager
def _stderr() -> Iterator[io.StringIO]:
    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        yield sys.stderr
    finally:
        sys.stderr = saved


def fails(opts: b.Options, message: str, features: Features = ALL) -> str:
    with pytest.raises(NestosError) as exc, _stderr():
        b.build(opts, features, profiles.NESTOS, "iso")
    text = format_chain(exc.value)
    assert message in text, text
    return text


def live(result: b.Result) -> dict[str, Any]:
    assert result.live_config is not None
    assert result.members["config.ign"] == result.live_config
    obj: dict[str, Any] = json.loads(result.live_config)
    return obj


def files(result: b.Result) -> dict[str, tuple[bytes, int]]:
    return {
        f["path"]: (decode_resource(f["contents"]), f["mode"])
        for f in live(result).get("storage", {}).get("files", [])
    }


def test_no_options_embed_nothing() -> None:
    result, err = run(b.Options())
    assert result.members == {}
    assert result.live_config is None and not result.installs
    assert err == ""


def test_keyfile_alone_needs_no_live_config(f: Inputs) -> None:
    result, err = run(b.Options(network_keyfile=[f("wired.nmconnection", KEYFILE)]))
    assert result.members == {f"{NESTOS_NET}/wired.nmconnection": KEYFILE}
    assert result.live_config is None
    assert err == ""


def test_full_install_config_order_and_contents(f: Inputs) -> None:
    opts = b.Options(
        dest_ignition=[f("dest.ign", DEST)],
        dest_device="/dev/vda",
        dest_console=["ttyS0,115200"],
        dest_karg_append=["quiet", "x=1"],
        dest_karg_delete=["rhgb"],
        network_keyfile=[f("wired.nmconnection", KEYFILE)],
        pre_install=[f("p/pre.sh", "#!/bin/sh\necho pre\n")],
        post_install=[f("q/post.sh", "#!/bin/sh\necho post\n")],
        installer_config=[
            f("c/one.yaml", "append-karg: [c1]\n"),
            f("c/two.yaml", "offline: true\n"),
        ],
        live_ignition=[f("live.ign", LIVE)],
    )
    result, err = run(opts)
    assert err == "Boot media will automatically install to /dev/vda without confirmation.\n"
    assert result.installs
    out = files(result)
    assert list(out) == [
        "/usr/local/bin/pre-install-pre.sh",
        "/usr/local/bin/post-install-post.sh",
        "/etc/nestos/installer.d/0000-one.yaml",
        "/etc/nestos/installer.d/0001-two.yaml",
        "/etc/nestos/dest.ign",
        "/etc/nestos/installer.d/0002-customize.yaml",
    ]
    assert out["/usr/local/bin/pre-install-pre.sh"] == (b"#!/bin/sh\necho pre\n", 0o700)
    assert out["/etc/nestos/installer.d/0000-one.yaml"] == (b"append-karg: [c1]\n", 0o600)
    # one fragment, no CA: the fragment itself, normalised
    assert out["/etc/nestos/dest.ign"] == (
        b'{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core"}]}}\n',
        0o600,
    )
    assert out["/etc/nestos/installer.d/0002-customize.yaml"] == (
        b"ignition-file: /etc/nestos/dest.ign\n"
        b"console:\n- ttyS0,115200n8\n"
        b"append-karg:\n- quiet\n- x=1\n"
        b"delete-karg:\n- rhgb\n"
        b"copy-network: true\n"
        b"dest-device: /dev/vda\n",
        0o600,
    )
    assert result.installer_yaml == out["/etc/nestos/installer.d/0002-customize.yaml"][0]
    obj = live(result)
    assert list(obj) == ["ignition", "storage", "systemd"]
    [merged] = obj["ignition"]["config"]["merge"]
    assert (
        decode_resource(merged)
        == b'{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/l"}]}}\n'
    )
    assert [u["name"] for u in obj["systemd"]["units"]] == [
        "pre-install-pre.sh.service",
        "post-install-post.sh.service",
    ]
    assert all(u["enabled"] is True and u["mask"] is None for u in obj["systemd"]["units"])
    assert result.members[f"{NESTOS_NET}/wired.nmconnection"] == KEYFILE


def test_hook_unit_text_is_exact() -> None:
    pre = b.hook_unit(profiles.NESTOS, "iso", "pre", "a.sh")
    assert pre == "\n".join(
        [
            "# Generated by nestos-installer iso customize",
            "",
            "[Unit]",
            "Description=Pre-Install Script (a.sh)",
            "Documentation=file:/usr/share/doc/nestos-installer/customize.md",
            "After=nestos-installer-pre.target",
            "Before=nestos-installer.service",
            "",
            "[Service]",
            "Type=oneshot",
            "ExecStart=/usr/local/bin/pre-install-a.sh",
            "RemainAfterExit=true",
            "StandardOutput=kmsg+console",
            "StandardError=kmsg+console",
            "",
            "[Install]",
            "RequiredBy=nestos-installer.service",
        ]
    )
    post = b.hook_unit(profiles.COREOS, "pxe", "post", "b")
    assert post.splitlines()[0] == "# Generated by nestos-installer pxe customize"
    assert post.splitlines()[3:7] == [
        "Description=Post-Install Script (b)",
        "Documentation=https://coreos.github.io/coreos-installer/customizing-install/",
        "After=coreos-installer.service",
        "Before=coreos-installer.target",
    ]
    assert post.splitlines()[10] == "ExecStart=/usr/local/bin/post-install-b"
    assert post.endswith("\n[Install]\nRequiredBy=coreos-installer.target")


def test_coreos_layout_paths(f: Inputs) -> None:
    opts = b.Options(
        dest_ignition=[f("d.ign", DEST)],
        network_keyfile=[f("k.nmconnection", KEYFILE)],
        installer_config=[f("i.yaml", "offline: true\n")],
    )
    result, err = run(opts, profile=profiles.COREOS)
    assert err == "Boot media will automatically run installer.\n"
    assert list(files(result)) == [
        "/etc/coreos/installer.d/0000-i.yaml",
        "/etc/coreos/dest.ign",
        "/etc/coreos/installer.d/0001-customize.yaml",
    ]
    yml = files(result)["/etc/coreos/installer.d/0001-customize.yaml"][0]
    assert yaml.safe_load(yml) == {"ignition-file": "/etc/coreos/dest.ign", "copy-network": True}
    assert "etc/coreos-firstboot-network/k.nmconnection" in result.members


def test_several_dest_configs_or_a_ca_give_a_merge_config(f: Inputs, tmp_path: Path) -> None:
    ca = f("ca.pem", _ca(tmp_path))
    result, _ = run(b.Options(dest_ignition=[f("a.ign", DEST), f("b.ign", DEST2)]))
    dest = json.loads(result.dest_config or b"")
    assert list(dest["ignition"]) == ["config", "version"]
    merged = [decode_resource(r) for r in dest["ignition"]["config"]["merge"]]
    assert merged == [
        b'{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core"}]}}\n',
        b'{"ignition":{"version":"3.0.0"},"systemd":{"units":[{"name":"b.service"}]}}\n',
    ]
    result, _ = run(b.Options(dest_ignition=[f("a.ign", DEST)], ignition_ca=[ca]))
    dest = json.loads(result.dest_config or b"")
    assert [decode_resource(r) for r in dest["ignition"]["config"]["merge"]] == [
        b'{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core"}]}}\n'
    ]
    [dest_ca] = dest["ignition"]["security"]["tls"]["certificateAuthorities"]
    assert decode_resource(dest_ca) == Path(ca).read_bytes()
    [live_ca] = live(result)["ignition"]["security"]["tls"]["certificateAuthorities"]
    assert decode_resource(live_ca) == Path(ca).read_bytes()


def test_ca_alone_only_configures_the_live_system(f: Inputs, tmp_path: Path) -> None:
    result, err = run(b.Options(ignition_ca=[f("ca.pem", _ca(tmp_path))]))
    assert err == ""
    assert not result.installs and result.dest_config is None
    assert list(live(result)) == ["ignition"]
    assert list(live(result)["ignition"]) == ["security", "version"]


def test_live_ignition_alone(f: Inputs) -> None:
    result, err = run(b.Options(live_ignition=[f("a.ign", LIVE), f("b.ign", DEST)]))
    assert err == ""
    assert not result.installs
    assert len(live(result)["ignition"]["config"]["merge"]) == 2
    assert list(live(result)) == ["ignition"]


def test_installer_config_alone_runs_the_installer_without_customize_yaml(f: Inputs) -> None:
    result, err = run(b.Options(installer_config=[f("a.yaml", "dest-device: /dev/sda\n")]))
    assert err == "Boot media will automatically run installer.\n"
    assert list(files(result)) == ["/etc/nestos/installer.d/0000-a.yaml"]


def test_dest_device_alone(f: Inputs) -> None:
    result, err = run(b.Options(dest_device="/dev/disk/by-id/x"))
    assert "install to /dev/disk/by-id/x without confirmation" in err
    assert files(result)["/etc/nestos/installer.d/0000-customize.yaml"][0] == (
        b"dest-device: /dev/disk/by-id/x\n"
    )


def test_karg_options_and_console_hint(f: Inputs) -> None:
    result, err = run(
        b.Options(dest_karg_append=["console=ttyS0,115200"], dest_karg_delete=["quiet"])
    )
    assert err.startswith('\nNote: consider using "--dest-console ttyS0,115200n8" instead of\n')
    assert '"--dest-karg-append console=ttyS0,115200"' in err
    assert err.endswith("Boot media will automatically run installer.\n")
    assert yaml.safe_load(result.installer_yaml or b"") == {
        "append-karg": ["console=ttyS0,115200"],
        "delete-karg": ["quiet"],
    }
    _, err = run(b.Options(dest_karg_append=["console=bogus"]))
    assert "Note:" not in err


@pytest.mark.parametrize(
    ("kwargs", "features", "message"),
    [
        ({"dest_console": ["ttyS0"]}, Features(installer_config=True), b.NO_CONSOLE),
        ({"dest_device": "/dev/vda"}, NONE, b.NO_INSTALLER),
        ({"dest_karg_append": ["a"]}, NONE, b.NO_INSTALLER),
        ({"dest_karg_delete": ["a"]}, NONE, b.NO_INSTALLER),
        ({"installer_config": ["CFG"]}, NONE, b.NO_INSTALLER),
        ({"dest_ignition": ["DEST"]}, NONE, b.NO_INSTALLER),
        ({"network_keyfile": ["KEY"]}, Features(installer_config=True), b.NO_NETWORK),
        ({"network_nmstate": ["STATE"]}, NONE, b.NO_NETWORK),
    ],
)
def test_feature_gating(
    f: Inputs, kwargs: dict[str, Any], features: Features, message: str
) -> None:
    paths = {
        "CFG": f("c.yaml", "offline: true\n"),
        "DEST": f("d.ign", DEST),
        "KEY": f("k.nmconnection", KEYFILE),
        "STATE": f("s.yaml", "interfaces: []\n"),
    }
    kwargs = {
        k: [paths.get(x, x) for x in v] if isinstance(v, list) else v for k, v in kwargs.items()
    }
    text = fails(b.Options(**kwargs), message, features)
    assert text == f"Error: {message}"


def test_gating_does_not_apply_to_live_only_options(f: Inputs, tmp_path: Path) -> None:
    opts = b.Options(
        live_ignition=[f("l.ign", LIVE)],
        ignition_ca=[f("ca.pem", _ca(tmp_path))],
        pre_install=[f("p", "#!/bin/sh\n")],
    )
    result, _ = run(opts, NONE)
    assert result.live_config is not None


def test_duplicate_names(f: Inputs) -> None:
    k1, k2 = f("a/k.nmconnection", KEYFILE), f("b/k.nmconnection", KEYFILE)
    fails(b.Options(network_keyfile=[k1, k2]), "config already specifies keyfile k.nmconnection")
    p1, p2 = f("a/s.sh", "#!/bin/sh\n"), f("b/s.sh", "#!/bin/sh\n")
    fails(
        b.Options(pre_install=[p1, p2]),
        "config already specifies path /usr/local/bin/pre-install-s.sh",
    )
    # pre and post of one name are different files and units
    result, _ = run(b.Options(pre_install=[p1], post_install=[p2]))
    assert len(live(result)["systemd"]["units"]) == 2


@pytest.mark.parametrize("name", ["a b", "x$y", "é", "a\\b"])
def test_hook_names_must_make_unit_names(f: Inputs, name: str) -> None:
    fails(b.Options(post_install=[f(name, "#!/bin/sh\n")]), "can't be part of a systemd unit name")


def test_control_characters_in_names_are_refused(f: Inputs) -> None:
    fails(b.Options(network_keyfile=[f("k\nx", KEYFILE)]), "has no usable file name")
    fails(
        b.Options(installer_config=[f("c\x1b.yaml", "offline: true\n")]), "has no usable file name"
    )


def test_parse_errors_name_the_file(f: Inputs) -> None:
    bad = f("bad.ign", b'{"ignition": {"version": "3.3.0"}, "storage": {"files": [{}]}}')
    text = fails(b.Options(dest_ignition=[bad]), f"Error: parsing Ignition config {bad}")
    assert "missing field `path`" in text
    fails(b.Options(live_ignition=[f("l.ign", "[]")]), "parsing Ignition config")
    cfg = f("c.yaml", "no-such-key: 1\n")
    text = fails(b.Options(installer_config=[cfg]), f"Error: parsing installer config {cfg}")
    assert "unknown field `no-such-key`" in text
    fails(
        b.Options(installer_config=[f("d.yaml", "console: [bogus]\n")]), "parsing installer config"
    )
    key = f("k.nmconnection", "[connection]\nid=x\ntype=bogus\n")
    fails(b.Options(network_keyfile=[key]), f"parsing keyfile {key}")
    ca = f("ca.pem", "not a certificate\n")
    fails(b.Options(ignition_ca=[ca]), f"parsing CA certificate {ca}")
    fails(b.Options(dest_ignition=[str(f.root / "missing.ign")]), "reading Ignition config")


def test_dest_ignition_warning_goes_to_stderr(f: Inputs) -> None:
    path = f("d.ign", b'{"ignition": {"version": "3.3.0"}, "extra": true}')
    _, err = run(b.Options(dest_ignition=[path]))
    assert err.splitlines()[0] == f"Warning parsing {path}: unused key: $.extra"


def test_combined_installer_config_is_checked(f: Inputs) -> None:
    cfg = f("c.yaml", "dest-device: /dev/sda\n")
    text = fails(
        b.Options(installer_config=[cfg], dest_device="/dev/vda"),
        "checking the combined installer configuration",
    )
    assert "cannot be used multiple times" in text


def test_inputs_too_large_are_refused(f: Inputs) -> None:
    big = f("big.nmconnection", b"#" * (1024 * 1024 + 1))
    text = fails(b.Options(network_keyfile=[big]), f"reading keyfile {big}")
    assert "larger than the limit of 1 MiB" in text
    fails(b.Options(pre_install=[str(f.root)]), "reading pre-install script")


def _ca(tmp_path: Path) -> bytes:
    """A real self-signed CA made by openssl (the same tool users would use)."""
    cert = tmp_path / "ca.pem"
    if not cert.exists():
        self_signed(tmp_path, "customize test CA")
    return cert.read_bytes()

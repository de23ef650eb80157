"""Keyfiles checked by NetworkManager's parser; nmstate states converted by nmstate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nestos_inst import profile as profiles
from nestos_inst.customize import build as b
from nestos_inst.customize import keyfile, nmstate
from nestos_inst.errors import NestosError, format_chain
from nestos_inst.formats.embed import Features

needs_libnm = pytest.mark.skipif(
    keyfile.libnm() is None, reason="libnm introspection (python3-gi, gir1.2-nm-1.0) missing"
)
LIBNMSTATE: nmstate.Backend | None
try:
    LIBNMSTATE = nmstate.find_backend(which=lambda _name: None)
except NestosError:
    LIBNMSTATE = None
needs_libnmstate = pytest.mark.skipif(
    LIBNMSTATE is None, reason="libnmstate not installed (pip install --no-deps nmstate==2.0.0)"
)

GOOD = b"[connection]\nid=wired\ntype=ethernet\n\n[ipv4]\nmethod=auto\n"
STATE = b"""\
interfaces:
  - name: eth1
    type: ethernet
    state: up
    ipv4:
      enabled: true
      dhcp: true
  - name: bond0
    type: bond
    state: up
    link-aggregation:
      mode: active-backup
      port: [eth2]
    ipv4:
      enabled: true
      address:
        - ip: 192.0.2.10
          prefix-length: 24
      dhcp: false
"""


@needs_libnm
def test_networkmanager_accepts_good_keyfiles() -> None:
    keyfile.check_keyfile("wired.nmconnection", GOOD)
    # the daemon names a profile without id after its file; so does the check
    keyfile.check_keyfile("noid.nmconnection", b"[connection]\ntype=ethernet\n")


@needs_libnm
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[connection]\nid=x\ntype=bogus\n", "connection type 'bogus' is not valid"),
        (b"garbage\n", "not a key-value pair, group, or comment"),
        (b"[ipv4]\nmethod=auto\n", "keyfile has no [connection] group"),
        (
            b"[connection]\nid=x\ntype=ethernet\n[ipv4]\nmethod=manual\n",
            "ipv4.addresses: this property cannot be empty for 'method=manual'",
        ),
        (b"[connection]\nid=\xff\n", "keyfile is not valid UTF-8"),
        (b"[connection]\nid=a\0\n", "keyfile contains a NUL byte"),
    ],
)
def test_networkmanager_rejects_bad_keyfiles(data: bytes, message: str) -> None:
    with pytest.raises(NestosError) as exc:
        keyfile.check_keyfile("k.nmconnection", data)
    assert message in format_chain(exc.value)


def test_fallback_ini_check() -> None:
    keyfile.check_ini(GOOD.decode())
    with pytest.raises(NestosError, match="no \\[connection\\] group"):
        keyfile.check_ini("[ipv4]\nmethod=auto\n")
    with pytest.raises(NestosError):
        keyfile.check_ini("garbage\n")


# ---- nmstate ---------------------------------------------------------------------------


@needs_libnm
@needs_libnmstate
def test_libnmstate_generates_keyfiles_networkmanager_accepts(tmp_path: Path) -> None:
    state = tmp_path / "net.yaml"
    state.write_bytes(STATE)
    out = nmstate.generate_keyfiles(str(state), LIBNMSTATE)
    names = [name for name, _ in out]
    assert sorted(names) == ["bond0.nmconnection", "eth1.nmconnection", "eth2.nmconnection"]
    texts = dict(out)
    assert b"interface-name=eth1\n" in texts["eth1.nmconnection"]
    assert b"type=bond\n" in texts["bond0.nmconnection"]
    assert b"address1=192.0.2.10/24" in texts["bond0.nmconnection"]
    for name, data in out:
        keyfile.check_keyfile(name, data)


@needs_libnm
@needs_libnmstate
def test_nmstate_json_is_read_too(tmp_path: Path) -> None:
    state = tmp_path / "net.json"
    state.write_text(
        '{"interfaces": [{"name": "eth9", "type": "ethernet", "state": "up",'
        ' "ipv4": {"enabled": true, "dhcp": true}}]}'
    )
    [(name, data)] = nmstate.generate_keyfiles(str(state), LIBNMSTATE)
    assert name == "eth9.nmconnection" and b"method=auto" in data


@needs_libnmstate
def test_nmstate_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(NestosError) as exc:
        nmstate.generate_keyfiles(str(missing), LIBNMSTATE)
    assert format_chain(exc.value).startswith(f"Error: opening nmstate file {missing}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("interfaces: [\n")
    with pytest.raises(NestosError) as exc:
        nmstate.generate_keyfiles(str(bad), LIBNMSTATE)
    assert format_chain(exc.value).startswith(f"Error: parsing nmstate file {bad}")
    bad.write_text("- a list\n")
    with pytest.raises(NestosError, match="parsing nmstate file"):
        nmstate.generate_keyfiles(str(bad), LIBNMSTATE)
    bad.write_text("interfaces:\n  - name: x\n    type: ethernet\n    ipv4: {enabled: maybe}\n")
    with pytest.raises(NestosError) as exc:
        nmstate.generate_keyfiles(str(bad), LIBNMSTATE)
    text = format_chain(exc.value)
    assert text.startswith(f"Error: generating configuration from nmstate file {bad}")
    assert "boolean" in text


def _stand_in(tmp_path: Path, script: str) -> str:
    """An `nmstatectl` stand-in: Debian has no nmstate package, so the real one cannot
    run here. It prints exactly the shape `nmstatectl gc` prints on Fedora/openEuler."""
    exe = tmp_path / "bin" / "nmstatectl"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_nmstatectl_is_preferred_and_its_output_parsed(tmp_path: Path) -> None:
    exe = _stand_in(
        tmp_path,
        'test "$1" = gc || exit 3\n'
        'test -f "$2" || exit 4\n'
        "cat <<'EOF'\n"
        "---\n"
        "NetworkManager:\n"
        "  - - eth1.nmconnection\n"
        '    - "[connection]\\nid=eth1\\ntype=ethernet\\n"\n'
        "EOF\n",
    )
    backend = nmstate.find_backend(which=lambda name: exe if name == "nmstatectl" else None)
    assert backend.name == f"nmstatectl ({exe})"
    state = tmp_path / "s.yaml"
    state.write_bytes(STATE)
    assert nmstate.generate_keyfiles(str(state), backend) == [
        ("eth1.nmconnection", b"[connection]\nid=eth1\ntype=ethernet\n")
    ]


def test_nmstatectl_failure_and_bad_names(tmp_path: Path) -> None:
    state = tmp_path / "s.yaml"
    state.write_bytes(STATE)
    exe = _stand_in(tmp_path, 'echo "NmstateError: InvalidArgument: bad state" >&2\nexit 1\n')
    backend = nmstate.find_backend(which=lambda _n: exe)
    with pytest.raises(NestosError) as exc:
        nmstate.generate_keyfiles(str(state), backend)
    assert "nmstatectl gc failed: NmstateError: InvalidArgument: bad state" in format_chain(
        exc.value
    )
    exe = _stand_in(tmp_path, "echo 'NetworkManager: [[../evil, x]]'\n")
    with pytest.raises(NestosError) as exc:
        nmstate.generate_keyfiles(str(state), nmstate.find_backend(which=lambda _n: exe))
    assert "unusable file name '../evil'" in format_chain(exc.value)


def test_missing_backend_names_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(NestosError) as exc:
        nmstate.find_backend(
            which=lambda _n: None, import_libnmstate=lambda: None, have_libnm=lambda: True
        )
    assert str(exc.value) == nmstate.INSTALL_HINT
    assert "nmstatectl" in nmstate.INSTALL_HINT and "gir1.2-nm-1.0" in nmstate.INSTALL_HINT
    with pytest.raises(NestosError):
        nmstate.find_backend(which=lambda _n: None, have_libnm=lambda: False)


@needs_libnm
@needs_libnmstate
def test_nmstate_in_build_and_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "s.yaml"
    state.write_bytes(STATE)
    features = Features(live_initrd_network=True)
    result = b.build(b.Options(network_nmstate=[str(state)]), features, profiles.COREOS, "pxe")
    assert sorted(result.members) == [
        "etc/coreos-firstboot-network/bond0.nmconnection",
        "etc/coreos-firstboot-network/eth1.nmconnection",
        "etc/coreos-firstboot-network/eth2.nmconnection",
    ]
    assert result.live_config is None and capsys.readouterr().err == ""
    clash = tmp_path / "eth1.nmconnection"
    clash.write_bytes(b"[connection]\nid=eth1\ntype=ethernet\n")
    opts = b.Options(network_keyfile=[str(clash)], network_nmstate=[str(state)])
    with pytest.raises(NestosError) as exc:
        b.build(opts, features, profiles.NESTOS, "iso")
    assert format_chain(exc.value) == (
        "Error: config already specifies keyfile etc/nestos-firstboot-network/eth1.nmconnection"
    )
    assert os.path.exists(clash)

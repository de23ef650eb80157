"""Ignition fragments (spec versions, schema, unused keys) and the generated config."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from nestos_inst.customize import ignition
from nestos_inst.errors import NestosError, format_chain

FULL_33 = {
    "ignition": {
        "version": "3.3.0",
        "config": {"merge": [{"source": "https://example.com/a.ign"}]},
        "proxy": {"httpProxy": "http://p", "noProxy": ["a"]},
        "security": {"tls": {"certificateAuthorities": [{"source": "data:,x"}]}},
        "timeouts": {"httpTotal": 5},
    },
    "kernelArguments": {"shouldExist": ["a"], "shouldNotExist": ["b"]},
    "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA"]}]},
    "storage": {
        "files": [{"path": "/etc/x", "mode": 420, "contents": {"source": "data:,y"}}],
        "luks": [{"name": "root", "device": "/dev/vda4", "clevis": {"tpm2": True}}],
        "disks": [{"device": "/dev/vda", "partitions": [{"number": 4, "resize": True}]}],
    },
    "systemd": {"units": [{"name": "a.service", "enabled": True, "dropins": [{"name": "d"}]}]},
}


def parse(obj: object) -> ignition.ParsedConfig:
    return ignition.check_config(json.dumps(obj).encode())


@pytest.mark.parametrize("version", ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0"])
def test_every_stable_3x_version_parses(version: str) -> None:
    parsed = parse({"ignition": {"version": version}})
    assert parsed.version == version
    assert parsed.unused == []


def test_full_33_config_has_no_unused_keys_and_is_normalised() -> None:
    parsed = parse(FULL_33)
    assert parsed.unused == []
    out = json.loads(parsed.serialize())
    assert out == FULL_33
    assert list(out) == sorted(out)  # keys in the schema's (alphabetical) order
    assert list(out["ignition"]) == ["config", "proxy", "security", "timeouts", "version"]
    assert parsed.serialize().endswith(b"}\n")
    assert b" " not in parsed.serialize().replace(b"ssh-ed25519 AAAA", b"")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"ignition": {"version": "2.2.0"}}, "unsupported config version '2.2.0'"),
        ({"ignition": {"version": "3.7.0"}}, "unsupported config version '3.7.0'"),
        ({"ignition": {}}, "$.ignition.version: missing field `version`"),
        ({}, "$.ignition.version: missing field `version`"),
        ([], "expected a JSON object"),
        (
            {"ignition": {"version": "3.3.0"}, "storage": {"files": [{"mode": 420}]}},
            "$.storage.files[0]: missing field `path`",
        ),
        (
            {
                "ignition": {"version": "3.3.0"},
                "storage": {"files": [{"path": "/a", "mode": "644"}]},
            },
            "$.storage.files[0].mode: expected an integer",
        ),
        (
            {"ignition": {"version": "3.3.0"}, "systemd": {"units": [{"name": "a", "enabled": 1}]}},
            "$.systemd.units[0].enabled: expected a boolean",
        ),
        (
            {"ignition": {"version": "3.3.0"}, "passwd": {"users": {"name": "x"}}},
            "$.passwd.users: expected a list",
        ),
        ({"ignition": {"version": "3.3.0"}, "storage": 5}, "$.storage: expected an object"),
    ],
)
def test_invalid_configs_name_the_problem(obj: object, message: str) -> None:
    with pytest.raises(ignition.IgnitionError) as exc:
        parse(obj)
    assert str(exc.value) == message


def test_not_json() -> None:
    with pytest.raises(NestosError) as exc:
        ignition.parse_file("x.ign", b"{not json")
    text = format_chain(exc.value)
    assert text.startswith("Error: parsing Ignition config x.ign\n\nCaused by:\n    Expecting")


def test_unknown_and_too_new_keys_warn_and_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    obj = {
        "ignition": {"version": "3.2.0", "bogus": 1},
        "kernelArguments": {"shouldExist": ["a"]},  # 3.3+
        "passwd": {"users": [{"name": "a", "shouldExist": False, "xx": 1}]},  # 3.4+
        "storage": {"luks": [{"name": "r", "device": "/dev/x", "discard": True}]},  # 3.4+
    }
    parsed = ignition.parse_file("f.ign", json.dumps(obj).encode())
    assert capsys.readouterr().err.splitlines() == [
        "Warning parsing f.ign: unused key: $.kernelArguments",
        "Warning parsing f.ign: unused key: $.ignition.bogus",
        "Warning parsing f.ign: unused key: $.passwd.users[0].shouldExist",
        "Warning parsing f.ign: unused key: $.passwd.users[0].xx",
        "Warning parsing f.ign: unused key: $.storage.luks[0].discard",
    ]
    assert parsed.config == {
        "ignition": {"version": "3.2.0"},
        "passwd": {"users": [{"name": "a"}]},
        "storage": {"luks": [{"device": "/dev/x", "name": "r"}]},
    }


def test_nulls_are_dropped_and_deep_nesting_refused() -> None:
    parsed = parse({"ignition": {"version": "3.0.0", "config": None}, "storage": None})
    assert parsed.config == {"ignition": {"version": "3.0.0"}}
    deep: object = ["x"]
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ignition.IgnitionError):
        parse({"ignition": {"version": "3.3.0"}, "passwd": {"users": deep}})


def test_resource_is_gzip_level_9_data_url_and_deterministic() -> None:
    res = ignition.resource(b"hello\n")
    assert list(res) == ["compression", "source"]
    assert res["compression"] == "gzip"
    assert res["source"].startswith("data:;base64,")
    raw = base64.b64decode(res["source"][len("data:;base64,") :])
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\0\0\0\0"  # no timestamp: same inputs, same bytes
    assert raw[8] == 2  # XFL=2: maximum compression
    assert gzip.decompress(raw) == b"hello\n"
    assert ignition.resource(b"hello\n") == res
    assert ignition.decode_resource(res) == b"hello\n"


def test_generated_config_shape_and_key_order() -> None:
    gen = ignition.GeneratedConfig()
    gen.merge.append(b"M")
    gen.certificate_authorities.append(b"C")
    gen.add_file("/a", b"A", 0o700)
    gen.add_unit("u.service", "[Unit]")
    text = gen.serialize()
    assert text.endswith(b"\n") and b"\n" not in text[:-1]
    obj = json.loads(text)
    assert list(obj) == ["ignition", "storage", "systemd"]
    assert list(obj["ignition"]) == ["config", "security", "version"]
    assert obj["ignition"]["version"] == "3.3.0"
    [f] = obj["storage"]["files"]
    assert list(f) == ["contents", "mode", "overwrite", "path"]
    assert (f["mode"], f["overwrite"], f["path"]) == (448, None, "/a")
    [u] = obj["systemd"]["units"]
    assert u == {"contents": "[Unit]", "enabled": True, "mask": None, "name": "u.service"}
    assert text.index(b'"overwrite":null') > 0
    with pytest.raises(NestosError, match=r"^config already specifies path /a$"):
        gen.add_file("/a", b"", 0o600)
    with pytest.raises(NestosError, match=r"^config already specifies unit u\.service$"):
        gen.add_unit("u.service", "")


def test_minimal_generated_config() -> None:
    assert ignition.GeneratedConfig().serialize() == b'{"ignition":{"version":"3.3.0"}}\n'


@pytest.mark.skipif(shutil.which("ignition-validate") is None, reason="ignition not installed")
def test_real_ignition_validates_generated_config(tmp_path: Path) -> None:
    gen = ignition.GeneratedConfig()
    gen.merge.append(parse(FULL_33).serialize())
    gen.certificate_authorities.append(b"-----BEGIN CERTIFICATE-----\n")
    gen.add_file("/usr/local/bin/x", b"#!/bin/sh\n", 0o700)
    gen.add_unit("x.service", "[Service]\nExecStart=/bin/true\n")
    path = tmp_path / "gen.ign"
    path.write_bytes(gen.serialize())
    proc = subprocess.run(["ignition-validate", str(path)], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and it rejects what we reject, so the check above means something
    path.write_bytes(b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"mode":"x"}]}}')
    proc = subprocess.run(["ignition-validate", str(path)], capture_output=True, check=False)
    assert proc.returncode != 0

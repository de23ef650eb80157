"""Stream metadata: URL resolution, models, lookup, list-stream table
(docs/compat.md#stream-metadata, #list-stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestos_inst.errors import FormatError, NestosError, chain
from nestos_inst.net.stream import Selection, format_table, parse_stream, stream_url


def doc(**formats: Any) -> dict[str, Any]:
    return {"architectures": {"x86_64": {"artifacts": {"metal": {"formats": formats}}}}}


DISK = {"disk": {"location": "http://h/a.raw.xz", "signature": "http://h/a.raw.xz.sig"}}


@pytest.mark.parametrize(
    ("base", "stream", "url"),
    [
        ("https://h/streams/", "stable", "https://h/streams/stable.json"),
        ("https://h/a/b", "stable", "https://h/a/stable.json"),
        ("https://h/a/b/", "2403-LTS", "https://h/a/b/2403-LTS.json"),
        ("http://h", "next", "http://h/next.json"),
    ],
)
def test_stream_url_rfc3986(base: str, stream: str, url: str) -> None:
    assert stream_url(stream, base) == url


def test_stream_url_refuses_other_schemes() -> None:
    with pytest.raises(NestosError, match="unsupported stream URL"):
        stream_url("stable", "file:///etc/")


def test_lookup_and_unknown_keys_ignored() -> None:
    d = doc(**{"raw.xz": DISK})
    d["stream"] = "stable"
    d["architectures"]["x86_64"]["images"] = {"aws": {}}
    s = parse_stream(json.dumps(d).encode())
    art = s.artifacts("x86_64", "metal", "raw.xz")["disk"]
    assert art.location == "http://h/a.raw.xz"
    assert art.sha256 is None


@pytest.mark.parametrize(
    ("arch", "platform", "fmt"),
    [("aarch64", "metal", "raw.xz"), ("x86_64", "qemu", "raw.xz"), ("x86_64", "metal", "iso")],
)
def test_missing_selection(arch: str, platform: str, fmt: str) -> None:
    s = parse_stream(json.dumps(doc(**{"raw.xz": DISK})).encode())
    with pytest.raises(NestosError) as info:
        s.artifacts(arch, platform, fmt)
    assert str(info.value) == (
        f"couldn't find architecture {arch}, platform {platform}, format {fmt} in stream metadata"
    )


def test_malformed_json() -> None:
    with pytest.raises(FormatError) as info:
        parse_stream(b"{not json")
    assert chain(info.value)[0] == "decoding stream metadata"


def test_missing_field_names_its_path() -> None:
    bad = doc(**{"raw.xz": {"disk": {"location": "http://h/a"}}})
    with pytest.raises(FormatError) as info:
        parse_stream(json.dumps(bad).encode())
    assert chain(info.value) == [
        "decoding stream metadata",
        "architectures/x86_64/artifacts/metal/formats/raw.xz/disk: missing field `signature`",
    ]


def test_bad_sha256_rejected() -> None:
    bad = doc(**{"raw.xz": {"disk": {**DISK["disk"], "sha256": "xyz"}}})
    with pytest.raises(FormatError) as info:
        parse_stream(json.dumps(bad).encode())
    assert "formats/raw.xz/disk/sha256" in chain(info.value)[1]


def test_descriptions() -> None:
    sel = Selection("stable", "x86_64", "metal", "raw.xz", "https://h/s/", custom_base=False)
    assert sel.description("NestOS") == (
        "Downloading NestOS stable x86_64 metal image (raw.xz) and signature"
    )
    sel = Selection("stable", "x86_64", "metal", "raw.xz", "https://h/s/", custom_base=True)
    assert sel.description("NestOS") == (
        "Downloading x86_64 metal image (raw.xz) and signature referenced from "
        "https://h/s/stable.json"
    )


def test_table_layout() -> None:
    rows = [("x86_64", "metal", "raw.xz"), ("aarch64", "digitalocean", "qcow2.gz")]
    assert format_table(sorted(rows)) == (
        "Architecture  Platform      Format\n"
        "aarch64       digitalocean  qcow2.gz\n"
        "x86_64        metal         raw.xz\n"
    )


@pytest.mark.compat
def test_fcos_stream_rows(upstream: Path) -> None:
    raw = (upstream / "stream" / "fcos-stream.json").read_bytes()
    s = parse_stream(raw)
    ref = json.loads(raw)
    expected = sorted(
        (a, p, f)
        for a, av in ref["architectures"].items()
        for p, pv in av["artifacts"].items()
        for f in pv["formats"]
    )
    assert s.rows() == expected
    assert ("x86_64", "metal", "4k.raw.xz") in expected
    lines = format_table(s.rows()).splitlines()
    assert lines[0].startswith("Architecture  Platform")
    assert all(line == line.rstrip() for line in lines)
    assert len(lines) == len(expected) + 1
    pxe = s.artifacts("x86_64", "metal", "pxe")
    assert sorted(pxe) == ["initramfs", "kernel", "rootfs"]
    assert pxe["kernel"].sha256 is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "architectures",
                    "artifacts",
                    "formats",
                    "disk",
                    "location",
                    "signature",
                    "sha256",
                    "x86_64",
                    "metal",
                    "raw.xz",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_parser_only_raises_format_error(value: object) -> None:
    try:
        parse_stream(json.dumps(value).encode())
    except FormatError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_parser_bytes_only_raise_format_error(data: bytes) -> None:
    try:
        parse_stream(data)
    except FormatError:
        pass

"""Console specs (docs/compat.md#consoles) and Ignition digests (docs/compat.md#ignition-hash)."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nestos_inst.errors import NestosError, VerifyError, format_chain
from nestos_inst.install.console import (
    ConsoleError,
    console_hint,
    grub_commands,
    parse_console,
)
from nestos_inst.install.ignition import IgnitionHash, check_ignition_url, check_json


@pytest.mark.parametrize(
    ("spec", "norm", "cmd", "term"),
    [
        ("tty0", "tty0", None, "console"),
        ("hvc0", "hvc0", None, "console"),
        ("ttysclp0", "ttysclp0", None, "console"),
        ("ttyS1", "ttyS1,9600n8", "serial --unit=1 --speed=9600 --word=8 --parity=no", "serial"),
        (
            "ttyAMA1",
            "ttyAMA1,9600n8",
            "serial --unit=1 --speed=9600 --word=8 --parity=no",
            "serial",
        ),
        (
            "ttyS1,1234567e5",
            "ttyS1,1234567e5",
            "serial --unit=1 --speed=1234567 --word=5 --parity=even",
            "serial",
        ),
        ("ttyS3,17", "ttyS3,17n8", "serial --unit=3 --speed=17 --word=8 --parity=no", "serial"),
        ("ttyS2,5o", "ttyS2,5o8", "serial --unit=2 --speed=5 --word=8 --parity=odd", "serial"),
    ],
)
def test_valid_consoles(spec: str, norm: str, cmd: str | None, term: str) -> None:
    con = parse_console(spec)
    assert str(con) == norm
    assert con.karg == f"console={norm}"
    assert con.grub_command() == cmd
    assert con.terminal == term


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo", "invalid or unsupported console argument"),
        ("/dev/tty0", 'spec should not start with "/dev/"'),
        ("/dev/ttyS0", 'spec should not start with "/dev/"'),
        ("console=tty0", 'spec should not start with "console="'),
        ("console=ttyS0", 'spec should not start with "console="'),
        *[
            (s, "invalid or unsupported console argument")
            for s in [
                "ztty0", "zttyS0", "tty0z", "ttyS0z", "tty1", "hvc1", "ttysclp1", "ttyS0,",
                "ttyS0,z", "ttyS0,115200p8", "ttyS0,115200n4", "ttyS0,115200n8r", "ttyB0",
                "ttyS9999999999999999999", "ttyS0,999999999999999999999", "ttyS256",
                "ttyS٣",
            ]
        ],
    ],
)  # fmt: skip
def test_invalid_consoles(spec: str, message: str) -> None:
    with pytest.raises(ConsoleError, match="^" + message.replace("(", r"\(") + "$"):
        parse_console(spec)


def test_grub_command_list() -> None:
    cons = [parse_console(s) for s in ("ttyS0,115200", "tty0", "ttyS1")]
    assert grub_commands(cons) == [
        "serial --unit=0 --speed=115200 --word=8 --parity=no",
        "serial --unit=1 --speed=9600 --word=8 --parity=no",
        "terminal_input console serial",
        "terminal_output console serial",
    ]
    assert grub_commands([parse_console("tty0")]) == [
        "terminal_input console",
        "terminal_output console",
    ]
    assert grub_commands([]) == []


def test_console_hint_wraps_without_splitting_pairs() -> None:
    out = io.StringIO()
    kargs = ["console=ttyS0,115200n8", "quiet", "console=tty0", "console=ttyAMA3,9600"]
    assert console_hint(kargs, stream=out)
    text = out.getvalue()
    assert text.startswith("\nNote: consider using ")
    assert text.endswith("\n\n")
    body = text.strip("\n").split("\n")
    assert all(len(line) <= 80 for line in body)
    joined = " ".join(body)
    assert (
        '"--console ttyS0,115200n8 --console tty0 --console ttyAMA3,9600n8" instead of '
        '"--append-karg console=ttyS0,115200n8 --append-karg console=tty0 '
        '--append-karg console=ttyAMA3,9600"' in joined
    )
    for line in body:
        assert not line.rstrip().endswith(("--console", "--append-karg"))


def test_console_hint_silent_cases() -> None:
    out = io.StringIO()
    assert not console_hint(["quiet"], stream=out)
    assert not console_hint(["console=ttyS0", "console=bogus"], stream=out)
    assert out.getvalue() == ""


@given(st.text(max_size=30))
def test_fuzz_console_parser(spec: str) -> None:
    try:
        con = parse_console(spec)
    except ConsoleError:
        return
    assert parse_console(str(con)) == con


# ---- Ignition digests ----------------------------------------------------------------

SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
SHA512_ABC = (
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
)


@pytest.mark.parametrize("text", [f"sha256-{SHA256_ABC}", f"sha512-{SHA512_ABC.upper()}"])
def test_hash_vectors(text: str) -> None:
    h = IgnitionHash.parse(text)
    h.verify(b"abc")
    assert str(h) == text.lower()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "failed to detect hash-type and digest in ''"),
        ("foo-bar", "unknown hash type 'foo'"),
        ("-bar", "failed to detect hash-type and digest in '-bar'"),
        ("sha512", "failed to detect hash-type and digest in 'sha512'"),
        ("sha512-", "wrong digest length (0)"),
        ("sha512-00", "wrong digest length (8)"),
        ("sha256-zz", "decoding hex digest"),
        ("sha256-0", "decoding hex digest"),
    ],
)
def test_invalid_hashes(text: str, message: str) -> None:
    with pytest.raises(NestosError) as exc:
        IgnitionHash.parse(text)
    assert str(exc.value) == message


def test_hash_mismatch_message() -> None:
    h = IgnitionHash.parse(f"sha256-{SHA256_ABC}")
    with pytest.raises(VerifyError) as exc:
        h.verify(b"abd")
    text = format_chain(exc.value)
    assert "failed to validate Ignition configuration digest" in text
    assert f"but expected '{SHA256_ABC}'" in text


@given(st.text(max_size=140))
def test_fuzz_hash_parser(text: str) -> None:
    try:
        IgnitionHash.parse(text)
    except NestosError:
        pass


def test_ignition_url_rules() -> None:
    check_ignition_url("https://example.com/c.ign", has_hash=False, insecure=False)
    check_ignition_url("http://example.com/c.ign", has_hash=True, insecure=False)
    check_ignition_url("http://example.com/c.ign", has_hash=False, insecure=True)
    with pytest.raises(NestosError, match="refusing to fetch Ignition config over HTTP"):
        check_ignition_url("http://example.com/c.ign", has_hash=False, insecure=False)
    with pytest.raises(NestosError, match="unknown protocol for URL 'ftp://x/y'"):
        check_ignition_url("ftp://x/y", has_hash=True, insecure=True)


def test_ignition_must_be_json() -> None:
    check_json(b'{"ignition": {"version": "9.9.9"}}')
    check_json(b"[]")
    with pytest.raises(NestosError, match="parsing specified Ignition config"):
        check_json(b"{not json")

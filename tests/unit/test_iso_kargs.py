"""The karg editor (docs/compat.md#karg-editor vectors) and the slot encoding
(docs/compat.md#karg-areas)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nestos_inst.errors import FormatError, NestosError
from nestos_inst.formats.kargs import decode_area, encode_area, modify_kargs

BASE = "foo bar foobar"
CONSOLE = "foo mitigations=auto,nosmt console=tty0 bar console=ttyS0,115200n8 baz"


@pytest.mark.parametrize(
    ("current", "delete", "result"),
    [
        (BASE, ["foo"], "bar foobar"),
        (BASE, ["bar"], "foo foobar"),
        (BASE, ["foobar"], "foo bar"),
        (BASE, ["foo bar"], "foobar"),
        (BASE, ["bar", "foo"], "foobar"),
        ("foo=val bar baz=val", ["   foo=val"], "bar baz=val"),
        ("foo=val bar baz=val", ["baz=val  "], "foo=val bar"),
        ("a a", ["a"], "a"),
    ],
)
def test_delete(current: str, delete: list[str], result: str) -> None:
    assert modify_kargs(current, delete=delete) == result


def test_combined_vectors() -> None:
    assert (
        modify_kargs(
            CONSOLE,
            delete=["mitigations=auto,nosmt", "console=ttyS0,115200n8"],
            append=["console=ttyS1,115200n8  "],
            append_if_missing=["bar", "console=ttyS1,115200n8", "boo"],
        )
        == "foo console=tty0 bar baz console=ttyS1,115200n8 boo"
    )
    assert (
        modify_kargs(
            CONSOLE,
            append=["console=ttyS1,115200n8"],
            replace=["mitigations=auto,nosmt=auto"],
            delete=["console=ttyS0,115200n8"],
        )
        == "foo mitigations=auto console=tty0 bar baz console=ttyS1,115200n8"
    )


@pytest.mark.parametrize("bad", ["foo", "a=b", "a=b=c=d", "=b=c"])
def test_bad_replace(bad: str) -> None:
    with pytest.raises(NestosError, match="Wrong input, format should be: KEY=OLD=NEW"):
        modify_kargs("a=b", replace=[bad])


def test_no_ops_normalizes() -> None:
    assert modify_kargs("  a   b ") == "a   b"


def test_area_round_trip() -> None:
    area = encode_area("a b", 10)
    assert area == b"a b\n######"
    assert decode_area(area) == "a b"
    nul = encode_area("a b", 6, "\0", "\0")
    assert nul == b"a b\0\0\0"
    assert decode_area(nul, "\0", "\0") == "a b"
    assert encode_area("abcd", 5) == b"abcd\n"


def test_area_errors() -> None:
    with pytest.raises(FormatError, match="kargs too large for area: 6 vs 5"):
        encode_area("abcde", 5)
    with pytest.raises(FormatError, match="invalid UTF-8 in karg area"):
        decode_area(b"\xff\xfe\n###")


@given(st.text(alphabet="ab= ", max_size=30), st.lists(st.text(alphabet="ab=", max_size=4)))
def test_append_then_delete(current: str, args: list[str]) -> None:
    # Appending then deleting unique, non-empty args restores the normalized string.
    args = [a for a in dict.fromkeys(args) if a and f" {a} " not in f" {current} "]
    appended = modify_kargs(current, append=args)
    if all(f" {a} " not in f" {b} " for a in args for b in args if a != b):
        assert modify_kargs(appended, delete=args) == current.strip()

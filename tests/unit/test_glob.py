"""Glob semantics of Rust's glob crate (compat-spec §3.3, §7.4)."""

from __future__ import annotations

import pytest

from nestos_inst.errors import FormatError, format_chain
from nestos_inst.formats.glob import compile_glob, compile_globs


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("*hello", "gzip/hello", True),
        ("uncompressed-*", "uncompressed-1/hello", True),
        ("gzip/*", "gzip/a/b", True),
        ("*/hello", "a/b/hello", True),
        ("*", "", True),
        ("*", "a/b/c", True),
        ("z", "z", True),
        ("z", "zz", False),
        ("c?t", "cat", True),
        ("c?t", "c/t", True),
        ("c?t", "ct", False),
        ("k[!e]tteh", "kitteh", True),
        ("k[!e]tteh", "ketteh", False),
        ("[a-c]x", "bx", True),
        ("[a-c]x", "dx", False),
        ("[c-a]x", "bx", False),
        ("[!c-a]x", "bx", True),
        ("[]]", "]", True),
        ("[!]]", "]", False),
        ("[!]]", "a", True),
        ("[abc-]", "-", True),
        ("[?]", "?", True),
        ("[?]", "a", False),
        ("a.b", "axb", False),
        ("a+b(c)", "a+b(c)", True),
        ("**", "any/thing", True),
        ("**/test", "test", True),
        ("**/test", "one/two/test", True),
        ("**/test", "onetest", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/xb", False),
        ("a/**", "a/x/y", True),
        ("a/**", "a", False),
        ("some/**/**/needle.txt", "some/one/needle.txt", True),
        ("*.txt", "dir/.hidden.txt", True),
        ("é*", "été", True),
        ("x\ny", "x\ny", True),
        ("?", "\n", True),
    ],
)
def test_matches(pattern: str, text: str, expected: bool) -> None:
    assert compile_glob(pattern)(text) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("***", "near position 2: wildcards are either regular `*` or recursive `**`"),
        ("a/***", "near position 4: wildcards are either regular `*` or recursive `**`"),
        ("a**", "near position 0: recursive wildcards must form a single path component"),
        ("**a", "near position 2: recursive wildcards must form a single path component"),
        ("a/**b", "near position 4: recursive wildcards must form a single path component"),
        ("[", "near position 0: invalid range pattern"),
        ("[a", "near position 0: invalid range pattern"),
        ("x[]", "near position 1: invalid range pattern"),
        ("[!]", "near position 0: invalid range pattern"),
        ("[!a", "near position 0: invalid range pattern"),
    ],
)
def test_invalid(pattern: str, message: str) -> None:
    with pytest.raises(FormatError) as info:
        compile_glob(pattern)
    text = format_chain(info.value)
    assert text.startswith(f"Error: invalid glob '{pattern}'")
    assert f"Pattern syntax error {message}" in text


def test_set() -> None:
    both = compile_globs(["gzip*", "xz*"])
    assert both("gzip/hello") and both("xz/world") and not both("zstd/hello")
    assert not compile_globs([])("anything")
    with pytest.raises(FormatError):
        compile_globs(["ok", "***"])

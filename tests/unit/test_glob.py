"""Glob semantics of Rust's glob crate (docs/compat.md#initrd-reader, #saved-partitions)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        # vectors documented for the glob crate
        ("a*b*c", "abc", True),
        ("a*b*c", "abcd", False),
        ("abc*abc*abc", "abcabcabcabcabcabcabc", True),
        ("abc*abc*abc", "abcabcabcabcabcabcabca", False),
        ("a*a*a*a*a*a*a*a*a", "a" * 31, True),
        ("a*b[xyz]c*d", "abxcdbxcddd", True),
        ("/**/test", "/one/two/test", True),
        ("/**/test", "/test", True),
        ("/**/test", "/notthis", False),
        ("**/.*", ".abc", True),
        ("**/.*", "abc/.abc", True),
        ("**/.*", "ab.c", False),
        ("**/.*", "abc/ab.c", False),
        ("**", "", True),
        ("**/", "]", True),
        ("a/**/", "a/b", True),
        ("a[!0-9]b", "a_b", True),
        ("a[!0-9]b", "a5b", False),
        ("[1a-z23]", "q", True),
        ("[1a-z23]", "2", True),
        ("[-abc]", "-", True),
        ("[a-c-]", "-", True),
        ("[a-c-]", "d", False),
        ("[2-1]", "1", False),
        ("[-]", "-", True),
        ("[!-]", "-", False),
        ("*some/path/to/hello.txt", "a/bigger/some/path/to/hello.txt", True),
        ("*some/path/to/hello.txt", "some/other/path/to/hello.txt", False),
        ("_[[]_[]]_[?]_[*]_!_", "_[_]_?_*_!_", True),
        ("aBc", "abc", False),
        ("abc[/]def", "abc/def", True),
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
        ("a/bc**", "near position 3: recursive wildcards must form a single path component"),
        ("a/*****", "near position 4: wildcards are either regular `*` or recursive `**`"),
        ("a/b**c**d", "near position 2: recursive wildcards must form a single path component"),
        ("abc[def", "near position 3: invalid range pattern"),
        ("abc[!", "near position 3: invalid range pattern"),
        ("abc[]", "near position 3: invalid range pattern"),
        ("abc[!]", "near position 3: invalid range pattern"),
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


# --- differential test: the regex translation against a direct token interpreter ----


def _tokens(pattern: str) -> list[tuple[str, object]]:
    """Tokenise a pattern already known to be valid (compile_glob accepted it)."""
    out: list[tuple[str, object]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "?":
            out.append(("any", None))
            i += 1
        elif c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < len(pattern):  # swallow the `/` that must follow
                    i += 1
                out.append(("rec", None))
            else:
                out.append(("seq", None))
                i += 1
        elif c == "[":
            neg = pattern[i + 1] == "!"
            start = i + 2 if neg else i + 1
            end = pattern.index("]", start + 1)
            spec = pattern[start:end]
            ranges, j = [], 0
            while j < len(spec):
                if j + 2 < len(spec) and spec[j + 1] == "-":
                    ranges.append((spec[j], spec[j + 2]))
                    j += 3
                else:
                    ranges.append((spec[j], spec[j]))
                    j += 1
            out.append(("neg" if neg else "set", ranges))
            i = end + 1
        else:
            out.append(("chr", c))
            i += 1
    return out


def _interpret(tokens: list[tuple[str, object]], text: str, after_sep: bool = True) -> bool:
    if not tokens:
        return not text
    kind, arg = tokens[0]
    if kind == "seq":
        return any(_interpret(tokens[1:], text[k:]) for k in range(len(text) + 1))
    if kind == "rec":
        # empty, or resume right after any `/`; a trailing `**` takes everything
        if len(tokens) == 1:
            return True
        starts = [0] if after_sep else []
        starts += [k + 1 for k, ch in enumerate(text) if ch == "/"]
        return any(_interpret(tokens[1:], text[k:]) for k in starts)
    if not text:
        return False
    ch = text[0]
    if kind == "any":
        ok = True
    elif kind == "chr":
        ok = ch == arg
    else:
        inside = any(lo <= ch <= hi for lo, hi in arg)  # type: ignore[attr-defined]
        ok = inside if kind == "set" else not inside
    return ok and _interpret(tokens[1:], text[1:], ch == "/")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab/*?[]!-", max_size=10), st.text(alphabet="ab/-]!", max_size=8))
def test_regex_matches_interpreter(pattern: str, text: str) -> None:
    try:
        match = compile_glob(pattern)
    except FormatError:
        return
    assert match(text) == _interpret(_tokens(pattern), text)

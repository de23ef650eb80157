"""Shell-style globs with the semantics of Rust's `glob` crate (default MatchOptions).

Upstream filters initrd members and saved partition labels with that crate, so we
accept and reject the same patterns: `*` also matches `/`, `**` must be a whole path
component, `***` is invalid, and an unclosed `[` is invalid. fnmatch differs on all
of these, hence this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..errors import FormatError

_WILDCARDS = "wildcards are either regular `*` or recursive `**`"
_RECURSIVE = "recursive wildcards must form a single path component"
_RANGE = "invalid range pattern"


def _syntax_error(pattern: str, pos: int, msg: str) -> FormatError:
    err = FormatError(f"invalid glob '{pattern}'")
    err.__cause__ = FormatError(f"Pattern syntax error near position {pos}: {msg}")
    return err


def _char_class(spec: str, negate: bool) -> str:
    """Regex for `[...]`/`[!...]`; `a-z` is a range only with a char on each side."""
    parts: list[str] = []
    i = 0
    while i < len(spec):
        if i + 3 <= len(spec) and spec[i + 1] == "-":
            lo, hi = spec[i], spec[i + 2]
            if lo <= hi:  # an inverted range matches nothing, as in the crate
                parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
            i += 3
        else:
            parts.append(re.escape(spec[i]))
            i += 1
    if not parts:
        return "." if negate else "(?!)"
    return f"[{'^' if negate else ''}{''.join(parts)}]"


def glob_regex(pattern: str) -> str:
    """Translate a pattern to an equivalent regex (fullmatch, DOTALL); FormatError if invalid."""
    out: list[str] = []
    n = len(pattern)
    i = 0
    while i < n:
        c = pattern[i]
        if c == "?":
            out.append(".")
            i += 1
        elif c == "*":
            start = i
            while i < n and pattern[i] == "*":
                i += 1
            count = i - start
            if count > 2:
                raise _syntax_error(pattern, start + 2, _WILDCARDS)
            if count == 1:
                out.append(".*")
                continue
            # `**` must be a whole component: at the start or after `/` ...
            if start != 0 and pattern[start - 1] != "/":
                raise _syntax_error(pattern, start - 1, _RECURSIVE)
            # ... and followed by `/` (which it swallows) or the end of the pattern.
            if i == n:
                out.append(".*")
            elif pattern[i] == "/":
                i += 1
                # A trailing `**/` leaves nothing to anchor on: like `**`, it matches all.
                out.append(".*" if i == n else "(?:.*/)?")
            else:
                raise _syntax_error(pattern, i, _RECURSIVE)
        elif c == "[":
            if i + 4 <= n and pattern[i + 1] == "!":
                end = pattern.find("]", i + 3)
                if end >= 0:
                    out.append(_char_class(pattern[i + 2 : end], negate=True))
                    i = end + 1
                    continue
            elif i + 3 <= n and pattern[i + 1] != "!":
                end = pattern.find("]", i + 2)
                if end >= 0:
                    out.append(_char_class(pattern[i + 1 : end], negate=False))
                    i = end + 1
                    continue
            raise _syntax_error(pattern, i, _RANGE)
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a whole string matches `pattern`."""
    regex = re.compile(glob_regex(pattern), re.DOTALL)
    return lambda text: regex.fullmatch(text) is not None


def compile_globs(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Matches when any pattern matches; an empty sequence matches nothing."""
    if not patterns:
        return lambda _text: False
    regex = re.compile("|".join(f"(?:{glob_regex(p)})" for p in patterns), re.DOTALL)
    return lambda text: regex.fullmatch(text) is not None

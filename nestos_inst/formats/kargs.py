"""The kernel-argument editor (docs/compat.md#karg-editor) and the fixed-size karg slot encoding
(docs/compat.md#karg-areas).

The editor is deliberately plain substring surgery, quoting-unaware, because that is
what upstream does and byte-identical results depend on it. Shared with `install`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import FormatError, NestosError

_REPLACE = re.compile(r"^([^=]+)=([^=]+)=([^=]+)$")
# C0 controls (newline, tab, ESC...), DEL and C1 controls. A newline in a karg would
# start a new line in grub.cfg, isolinux.cfg or the BLS entry: a command injection.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """`text` safe to print on one line: controls and undecodable bytes as escapes."""
    raw = text.encode("utf-8", "surrogateescape")
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif _CONTROL.match(ch):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def check_text(text: str, what: str) -> None:
    """Refuse control characters and bytes that are not UTF-8 (from argv or a file)."""
    if _CONTROL.search(text):
        raise NestosError(f"{what} '{shown(text)}' contains a control character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NestosError(f"{what} '{shown(text)}' is not valid UTF-8") from None


def check_karg(karg: str) -> None:
    """A kernel argument we are asked to add, delete or substitute."""
    check_text(karg, "kernel argument")


def check_platform(platform: str) -> None:
    """A platform ID becomes `ignition.platform.id=<id>`: one word, no `=`."""
    check_text(platform, "platform ID")
    if not platform or any(c.isspace() for c in platform) or "=" in platform:
        raise NestosError(
            f"invalid platform ID '{shown(platform)}': expected one word without '=' or spaces"
        )


def parse_replace(spec: str) -> tuple[str, str, str]:
    """KEY=OLD=NEW → (KEY, OLD, NEW); upstream reports anything else as a runtime error."""
    m = _REPLACE.match(spec)
    if m is None:
        raise NestosError("Wrong input, format should be: KEY=OLD=NEW")
    return m.group(1), m.group(2), m.group(3)


def modify_kargs(
    current: str,
    *,
    delete: Sequence[str] = (),
    append: Sequence[str] = (),
    append_if_missing: Sequence[str] = (),
    replace: Sequence[str] = (),
) -> str:
    """Apply delete → append → append_if_missing → replace, always in that order."""
    # Validate first so a bad -r changes nothing even if it came last.
    for karg in (*delete, *append, *append_if_missing, *replace):
        check_karg(karg)
    replacements = [parse_replace(r) for r in replace]
    s = f" {current} "
    for d in delete:
        s = s.replace(f" {d.strip()} ", " ")
    for a in append:
        s += a.strip() + " "
    for a in append_if_missing:
        if f" {a.strip()} " not in s:
            s += a.strip() + " "
    for key, old, new in replacements:
        s = s.replace(f" {key}={old} ", f" {key}={new} ")
    return s.strip()


def decode_area(data: bytes, pad: str = "#", end: str = "\n") -> str:
    """Kargs held in one slot: strip pad chars, then end chars, then whitespace."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("invalid UTF-8 in karg area") from exc
    return text.rstrip(pad).rstrip(end).strip()


def encode_area(kargs: str, size: int, pad: str = "#", end: str = "\n") -> bytes:
    """`<kargs><end><pad...>` exactly `size` bytes long."""
    body = kargs.strip().encode("utf-8")
    if len(body) >= size:
        raise FormatError(f"kargs too large for area: {len(body) + 1} vs {size}")
    out = body + end.encode("utf-8")
    pad_b = pad.encode("utf-8")
    fill = size - len(out)
    if fill < 0:
        raise FormatError(f"kargs too large for area: {len(out)} vs {size}")
    if len(pad_b) != 1:
        raise FormatError(f"karg area pad character {pad!r} is not a single byte")
    return out + pad_b * fill

"""Console specs for kernel and GRUB (docs/compat.md#consoles).

One spec configures both the kernel (`console=` karg) and the bootloader (GRUB
`serial`/`terminal_*` commands), which is why install offers `--console` rather than
asking users to hand-write both.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from ..errors import NestosError
from ..report import write

_SERIAL = re.compile(r"(ttyS|ttyAMA)(\d+)(?:,(\d+)(?:([noe])([5-8])?)?)?")
_GRAPHICAL = frozenset({"tty0", "hvc0", "ttysclp0"})
_PARITY = {"n": "no", "o": "odd", "e": "even"}
_U8 = 0xFF
_U32 = 0xFFFFFFFF


class ConsoleError(NestosError):
    """A console spec that does not parse."""


@dataclass(frozen=True)
class Console:
    """A parsed console: graphical (`tty0`) or serial (`ttyS0,115200n8`)."""

    prefix: str  # "ttyS"/"ttyAMA" for serial, the whole name for graphical
    port: int | None = None
    speed: int = 9600
    parity: str = "n"
    bits: int = 8

    @property
    def serial(self) -> bool:
        return self.port is not None

    def __str__(self) -> str:
        if not self.serial:
            return self.prefix
        return f"{self.prefix}{self.port},{self.speed}{self.parity}{self.bits}"

    @property
    def karg(self) -> str:
        return f"console={self}"

    @property
    def terminal(self) -> str:
        return "serial" if self.serial else "console"

    def grub_command(self) -> str | None:
        if not self.serial:
            return None
        return (
            f"serial --unit={self.port} --speed={self.speed} --word={self.bits} "
            f"--parity={_PARITY[self.parity]}"
        )


def parse_console(spec: str) -> Console:
    """Parse a spec; errors carry upstream's exact texts."""
    if spec.startswith("console="):
        raise ConsoleError('spec should not start with "console="')
    if spec.startswith("/dev/"):
        raise ConsoleError('spec should not start with "/dev/"')
    if spec in _GRAPHICAL:
        return Console(spec)
    m = _SERIAL.fullmatch(spec)
    if m is None or not spec.isascii():
        raise ConsoleError("invalid or unsupported console argument")
    prefix, port_s, speed_s, parity, bits_s = m.groups()
    port = int(port_s)
    speed = int(speed_s) if speed_s is not None else 9600
    if port > _U8 or speed > _U32:
        raise ConsoleError("invalid or unsupported console argument")
    return Console(prefix, port, speed, parity or "n", int(bits_s) if bits_s else 8)


def grub_commands(consoles: Sequence[Console]) -> list[str]:
    """Serial setup commands in console order, then the terminal_input/output lines."""
    cmds = [c for c in (con.grub_command() for con in consoles) if c is not None]
    terms = " ".join(sorted({con.terminal for con in consoles}))
    if consoles:
        cmds += [f"terminal_input {terms}", f"terminal_output {terms}"]
    return cmds


def console_hint(
    kargs: Sequence[str],
    *,
    option: str = "--console",
    karg_option: str = "--append-karg",
    stream: TextIO | None = None,
) -> bool:
    """Suggest --console when every `console=` karg is a valid spec; True if printed."""
    specs = [k[len("console=") :] for k in kargs if k.startswith("console=")]
    if not specs:
        return False
    try:
        parsed = [parse_console(s) for s in specs]
    except ConsoleError:
        return False
    new = " ".join(f"{option} {c}" for c in parsed)
    old = " ".join(f"{karg_option} console={s}" for s in specs)
    text = (
        f'Note: consider using "{new}" instead of "{old}" to configure both kernel '
        "and bootloader consoles."
    )
    message = "\n" + _wrap_pairs(text, 80) + "\n\n"
    if stream is None:
        write(message)
    else:
        stream.write(message)
        stream.flush()
    return True


def _wrap_pairs(text: str, width: int) -> str:
    """Wrap at `width`, keeping each `--opt value` pair on one line."""
    # Glue option/value pairs with a no-break placeholder so the wrapper keeps them whole.
    glue = "\x00"
    words = text.split(" ")
    joined: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w.lstrip('"').startswith("--") and i + 1 < len(words):
            joined.append(w + glue + words[i + 1])
            i += 2
        else:
            joined.append(w)
            i += 1
    wrapped = textwrap.fill(
        " ".join(joined), width=width, break_long_words=False, break_on_hyphens=False
    )
    return wrapped.replace(glue, " ")

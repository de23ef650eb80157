"""Short (`-h`) and long (`--help`) help, as upstream's command line has them.

`-h` prints the usual one-line-per-option summary. `--help` prints every option on its
own line followed by an indented paragraph: the long text registered with explain()
(the install options take theirs from the options table), else the short help, then
`[default: x]`. Defaults are written into the short help strings by the commands
themselves (always as `[default: x]`), so both forms agree.

Only argparse's public surface is used: actions as add_argument() returns them, the
formatter's add_argument()/add_text() hooks, and the documented PARSER/SUPPRESS
constants.
"""

from __future__ import annotations

import argparse
import contextlib
import textwrap
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

WIDTH = 80
LONG_INDENT = 8  # paragraph indent below the option line (inside the 2-space section)

_LONG: weakref.WeakKeyDictionary[argparse.Action, str] = weakref.WeakKeyDictionary()


def explain(action: argparse.Action, text: str) -> argparse.Action:
    """Register `text` (paragraphs separated by blank lines) as `action`'s long help."""
    if text:
        _LONG[action] = text
    return action


def long_text(action: argparse.Action) -> str:
    """The long help of `action`: registered text, else its short help."""
    text = _LONG.get(action)
    if text is None:
        text = action.help if isinstance(action.help, str) else ""
    return text


def invocation(action: argparse.Action) -> str:
    """`-s, --stream NAME` / `DEST_DEVICE` / `[initrd]`, as the short help shows it."""
    metavar = action.metavar if isinstance(action.metavar, str) else None
    if not action.option_strings:
        name = metavar or action.dest
        if action.nargs == "?":
            return f"[{name}]"
        if action.nargs == "*":
            return f"[{name} ...]"
        if action.nargs == "+":
            return f"{name} [{name} ...]"
        return name
    flags = ", ".join(action.option_strings)
    if action.nargs == 0:
        return flags
    return f"{flags} {metavar or action.dest.upper()}"


class LongFormatter(argparse.RawDescriptionHelpFormatter):
    """--help: one block per option (invocation line, then its paragraphs)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=WIDTH, max_help_position=30)

    def add_argument(self, action: argparse.Action) -> None:
        if action.help == argparse.SUPPRESS or action.nargs == argparse.PARSER:
            super().add_argument(action)  # hidden options; the COMMAND list as usual
            return
        body = long_text(action).replace("%(default)s", str(action.default))
        width = WIDTH - 2 - LONG_INDENT
        paragraphs = [
            textwrap.fill(
                " ".join(p.split()), width, break_on_hyphens=False, break_long_words=False
            )
            for p in body.split("\n\n")
            if p.strip()
        ]
        block = invocation(action) + "\n"
        if paragraphs:
            block += textwrap.indent("\n\n".join(paragraphs), " " * LONG_INDENT) + "\n"
        # add_text() treats "%" as a format character: escape the literal ones.
        super().add_text(block.replace("%", "%%"))


class ShortHelp(argparse.Action):
    """`-h`: the summary."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "Print help (see more with '--help')")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        parser.print_help()
        parser.exit()


class LongHelp(argparse.Action):
    """`--help`: every option with its paragraph."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "Print help (see a summary with '-h')")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print_long_help(parser)
        parser.exit()


def print_long_help(parser: argparse.ArgumentParser) -> None:
    """Print `parser`'s help with LongFormatter."""
    with formatted_by(parser, LongFormatter):
        parser.print_help()


class FormatterFactory(Protocol):
    """What argparse calls to make a help formatter (a HelpFormatter class will do)."""

    def __call__(self, *, prog: str) -> argparse.HelpFormatter: ...


@contextlib.contextmanager
def formatted_by(parser: argparse.ArgumentParser, factory: FormatterFactory) -> Iterator[None]:
    """Format `parser`'s help with `factory` inside the block (its documented
    `formatter_class` setting), restoring its own formatter after: one parser serves
    the short help, the long help and the man pages."""
    saved = parser.formatter_class
    parser.formatter_class = factory
    try:
        yield
    finally:
        parser.formatter_class = saved

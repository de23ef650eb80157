"""Man pages and the Markdown command reference, generated from the parsers themselves.

`pack man -C DIR` writes nestos-installer.8 and one page per visible command
(nestos-installer-iso-kargs-show.8, ...); `pack commands-reference` prints
docs/commands.md. Both read what `--help` shows: usage, description, every option with
its long paragraph (cli/help.py) and the subcommands, so they cannot drift from the
command line. Only the standard library is needed, so a package build can run them
from the source tree before any dependency is installed.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from .help import explain, formatted_by, invocation, long_text

if TYPE_CHECKING:
    from . import Entry, Registry

PROG = "nestos-installer"
SECTION = "8"


@dataclass
class Section:
    heading: str
    actions: list[argparse.Action] = field(default_factory=list)


@dataclass
class Page:
    """What one parser's help is made of."""

    path: str  # "" for the top level, else "iso kargs show"
    summary: str
    usage: str  # on one line
    usage_lines: str  # as -h wraps it
    description: str
    sections: list[Section]
    commands: list[tuple[str, str]]  # visible subcommands (name, summary)

    @property
    def name(self) -> str:
        return "-".join([PROG, *self.path.split()]) if self.path else PROG

    @property
    def command(self) -> str:
        return f"{PROG} {self.path}".strip()


class _Capture(argparse.HelpFormatter):
    """Records the option sections a parser's format_help() lays out."""

    def __init__(self, prog: str, sink: list[Section]) -> None:
        super().__init__(prog, width=80)
        self._sink = sink

    def start_section(self, heading: str | None) -> None:
        self._sink.append(Section(heading or ""))
        super().start_section(heading)

    def add_argument(self, action: argparse.Action) -> None:
        if action.help != argparse.SUPPRESS and action.nargs != argparse.PARSER and self._sink:
            self._sink[-1].actions.append(action)
        super().add_argument(action)


def help_sections(parser: argparse.ArgumentParser) -> list[Section]:
    """The option sections `parser`'s help shows, each with its visible actions."""
    sink: list[Section] = []

    def factory(prog: str) -> argparse.HelpFormatter:
        return _Capture(prog, sink)

    with formatted_by(parser, factory):
        parser.format_help()
    return [s for s in sink if s.actions]


def pages(reg: Registry) -> list[Page]:
    """The top level, then every visible command and group, in registration order."""
    hidden = [e.path for e in reg.entries if e.hidden]
    visible = [
        e for e in reg.entries if not any(e.path == h or e.path.startswith(h + " ") for h in hidden)
    ]
    out = [_page("", reg.root.description or PROG, reg.root, visible)]
    out += [_page(e.path, e.help, e.parser, visible) for e in visible]
    return out


def _page(path: str, summary: str, parser: argparse.ArgumentParser, visible: list[Entry]) -> Page:
    depth = len(path.split()) if path else 0
    children = [
        (e.path.split()[-1], e.help)
        for e in visible
        if len(e.path.split()) == depth + 1 and (not path or e.path.startswith(path + " "))
    ]
    wrapped = parser.format_usage().removeprefix("usage: ").rstrip("\n")
    return Page(
        path=path,
        summary=summary,
        usage=" ".join(wrapped.split()),
        usage_lines="\n".join(
            ln[len("usage: ") :] if ln.startswith(" ") else ln for ln in wrapped.split("\n")
        ),
        description=(parser.description or "").strip(),
        sections=help_sections(parser),
        commands=children,
    )


# ---- troff --------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Escape for troff: backslashes, dashes, and control characters at line starts."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + ln if ln.startswith((".", "'")) else ln for ln in text.split("\n"))


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def _default_text(action: argparse.Action, text: str) -> str:
    return text.replace("%(default)s", str(action.default))


def render_man(page: Page) -> str:
    title = page.name.upper()
    lines = [
        f'.TH "{title}" "{SECTION}" "" "{PROG} {__version__}" ""',
        ".SH NAME",
        f"{_roff(page.name)} \\- {_roff(page.summary)}",
        ".SH SYNOPSIS",
        f".B {_roff(page.command)}",
        _roff(page.usage.removeprefix(page.command).strip()),
    ]
    if page.description:
        lines.append(".SH DESCRIPTION")
        for i, para in enumerate(_paragraphs(page.description)):
            if i:
                lines.append(".PP")
            lines.append(_roff(para))
    for section in page.sections:
        lines.append(f'.SH "{_roff(section.heading.upper())}"')
        for action in section.actions:
            lines += [".TP", _man_invocation(action)]
            for i, para in enumerate(_paragraphs(_default_text(action, long_text(action)))):
                if i:
                    lines.append(".IP")
                lines.append(_roff(para))
    if page.commands:
        lines.append(".SH COMMANDS")
        for name, summary in page.commands:
            child = f"{page.name}-{name}"
            see_child = f"(see \\fB{_roff(child)}\\fR({SECTION}))"
            lines += [".TP", f"\\fB{_roff(name)}\\fR", f"{_roff(summary)} {see_child}"]
    lines += [".SH SEE ALSO"]
    see = [PROG] if page.path else []
    if page.path and len(page.path.split()) > 1:
        see.append("-".join([PROG, *page.path.split()[:-1]]))
    see += [f"{page.name}-{name}" for name, _ in page.commands]
    lines.append(", ".join(f"\\fB{_roff(s)}\\fR({SECTION})" for s in see) or "gpg(1)")
    return "\n".join(lines) + "\n"


def _man_invocation(action: argparse.Action) -> str:
    text = invocation(action)
    flags, _, value = text.partition(" ") if action.option_strings else ("", "", text)
    if not action.option_strings:
        return f"\\fI{_roff(value)}\\fR"
    if action.nargs == 0:
        return ", ".join(f"\\fB{_roff(f)}\\fR" for f in action.option_strings)
    names = ", ".join(f"\\fB{_roff(f)}\\fR" for f in action.option_strings)
    del flags
    return f"{names} \\fI{_roff(value.rpartition(' ')[2] or value)}\\fR"


def write_man_pages(reg: Registry, directory: Path) -> list[Path]:
    """Write every page into `directory` (created if needed); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for page in pages(reg):
        path = directory / f"{page.name}.{SECTION}"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render_man(page))
        os.replace(tmp, path)
        written.append(path)
    return written


# ---- Markdown -------------------------------------------------------------------------


def render_markdown(reg: Registry) -> str:
    out = [
        "# Command reference",
        "",
        "Generated from the command-line definitions by",
        "`nestos-installer pack commands-reference` (a test keeps this file in sync). The",
        "same text is in the man pages (`man nestos-installer-install`) and in `--help`;",
        "`-h` prints a summary. Hidden commands (`pack`, `dev`, `service`) are internal.",
        "",
    ]
    for page in pages(reg):
        level = "#" * min(2 + len(page.path.split()) - (1 if page.path else 0), 4)
        out += [f"{level} `{page.command}`", "", page.summary + ("." if page.path else ""), ""]
        out += ["```", page.usage_lines, "```", ""]
        if page.description and page.description.strip() != page.summary.strip():
            out += [*(p + "\n" for p in _paragraphs(page.description))]
        for section in page.sections:
            out += [f"**{section.heading[:1].upper() + section.heading[1:]}**", ""]
            for action in section.actions:
                body = " ".join(_paragraphs(_default_text(action, long_text(action))))
                out.append(f"* `{invocation(action)}`: {body}")
            out.append("")
        if page.commands:
            out += ["**Commands**", ""]
            out += [f"* `{name}`: {summary}" for name, summary in page.commands]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def register(reg: Registry) -> None:
    p = reg.command("pack man", "Generate man pages", _man_cmd(reg), hidden=True)
    explain(
        p.add_argument(
            "-C", "--directory", metavar="PATH", default=".", help="Output directory [default: .]"
        ),
        "Directory to write the man pages to, created if needed: nestos-installer.8 and "
        "one page per visible command (nestos-installer-iso-kargs-show.8, ...). Existing "
        "pages are replaced.\n\n[default: .]",
    )
    reg.command(
        "pack commands-reference",
        "Print the Markdown command reference (docs/commands.md)",
        _md_cmd(reg),
        hidden=True,
    )


def _every_command(reg: Registry) -> Registry:
    """`reg` if it holds every command, else the full tree (a command line naming `pack`
    builds only the modules with `pack` commands; the pages document all of them)."""
    if reg.complete:
        return reg
    from . import build_registry

    return build_registry()


def _man_cmd(reg: Registry) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        write_man_pages(_every_command(reg), Path(args.directory))
        return 0

    return run


def _md_cmd(reg: Registry) -> Callable[[argparse.Namespace], int]:
    import sys

    def run(args: argparse.Namespace) -> int:
        sys.stdout.write(render_markdown(_every_command(reg)))
        return 0

    return run

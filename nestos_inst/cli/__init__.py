"""The command tree. Each module in MODULES owns its commands and registers them.

Modules register only commands that work; groups appear once something is in them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .common import Formatter, Handler, Parser, add_command

# Order = order in `--help`.
MODULES = ("install", "download", "customize", "iso", "pxe", "osmet", "service", "man")

# The modules that register commands under each top-level word (a test keeps this equal
# to what the modules register). A command line that names one of these words builds
# only their commands: a start then imports and builds one command's parsers instead of
# all fifty (and none of the ISO/PXE modules an install does not use).
WORDS: dict[str, tuple[str, ...]] = {
    "install": ("install",),
    "download": ("download",),
    "list-stream": ("download",),
    "iso": ("customize", "iso"),
    "pxe": ("customize", "pxe"),
    "dev": ("iso", "pxe", "osmet"),
    "pack": ("install", "iso", "osmet", "man"),
    "service": ("service",),
}

GROUP_HELP = {
    "iso": ("Commands to manage a live ISO image", False),
    "iso ignition": ("Embed an Ignition config in a live ISO image", False),
    "iso network": ("Embed network settings in a live ISO image", False),
    "iso kargs": ("Modify kernel args in a live ISO image", False),
    "iso extract": ("Commands to extract files from a live ISO image", False),
    "pxe": ("Commands to manage a live PXE image", False),
    "pxe ignition": ("Wrap an Ignition config in an initrd image", False),
    "pxe network": ("Wrap network settings in an initrd image", False),
    "pack": ("Commands to pack artifacts at build time", True),
    "dev": ("Development commands", True),
    "dev show": ("Print information about an artifact", True),
    "dev extract": ("Extract data from an artifact", True),
    "service": ("Commands run by systemd in service mode", True),
}


@dataclass(frozen=True)
class Entry:
    """One command or group, for the man pages and the command reference."""

    path: str  # "iso kargs show"
    help: str
    hidden: bool
    parser: Parser
    group: bool


class Registry:
    """Creates command groups on first use so empty groups never show up, and keeps
    the list of every command (man pages, docs/commands.md are generated from it)."""

    def __init__(self, root: Parser) -> None:
        self.root = root
        self.complete = True  # every module's commands (build_registry may build fewer)
        self.entries: list[Entry] = []
        self._parsers: dict[str, Parser] = {"": root}
        self._subs: dict[str, argparse._SubParsersAction] = {}  # type: ignore[type-arg]
        self._subs[""] = root.add_subparsers(
            title="subcommands", metavar="COMMAND", parser_class=Parser
        )

    def _add(
        self, path: str, help: str, hidden: bool, group: bool, **kwargs: Any
    ) -> argparse.ArgumentParser:
        parent, _, name = path.rpartition(" ")
        parser = add_command(self.group(parent), name, help, hidden=hidden, **kwargs)
        assert isinstance(parser, Parser)
        if hidden:
            self._parsers[parent].hidden_commands.add(name)
        self._parsers[path] = parser
        self.entries.append(Entry(path, help, hidden, parser, group))
        return parser

    def group(self, path: str) -> argparse._SubParsersAction:  # type: ignore[type-arg]
        """Subparsers of the group `path` (e.g. "iso kargs"), creating parents."""
        if path in self._subs:
            return self._subs[path]
        name = path.rpartition(" ")[2]
        help_text, hidden = GROUP_HELP.get(path, (f"{name} commands", False))
        parser = self._add(path, help_text, hidden, True)

        def show_usage(_: argparse.Namespace) -> int:
            parser.print_help()
            return 2

        parser.set_defaults(func=show_usage)
        sub = parser.add_subparsers(title="subcommands", metavar="COMMAND", parser_class=Parser)
        self._subs[path] = sub
        return sub

    def command(
        self,
        path: str,
        help: str,
        handler: Handler,
        *,
        hidden: bool = False,
        description: str | None = None,
        populate: Callable[[argparse.ArgumentParser], None] | None = None,
    ) -> argparse.ArgumentParser:
        """Add command `path` ("iso kargs show") with its handler; `populate` adds its
        arguments on first use (see Parser)."""
        return self._add(
            path,
            help,
            hidden,
            False,
            description=description,
            handler=handler,
            populate=populate,
        )


def build_registry(modules: Sequence[str] = MODULES) -> Registry:
    """Every command of `modules` (default: all of MODULES), registered in MODULES order."""
    root = Parser(
        prog="nestos-installer",
        description="Installer for NestOS (and CoreOS-layout media)",
        formatter_class=Formatter,
    )
    root.add_argument(
        "-V",
        "--version",
        action="version",
        version=f"nestos-installer {__version__}",
        help="Print version",
    )
    reg = Registry(root)
    reg.complete = all(name in modules for name in MODULES)
    for name in MODULES:
        if name not in modules:
            continue
        module = importlib.import_module(f".{name}", __package__)
        module.register(reg)
    return reg


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: when its first argument names a command word (WORDS),
    only the modules with commands under that word; otherwise every command (so
    `--help`, an unknown command and option-first command lines see them all)."""
    first = argv[0] if argv else None
    if first is not None and first in WORDS:
        return build_registry(WORDS[first]).root
    return build_registry().root

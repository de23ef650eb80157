"""The command tree. Each module in MODULES owns its commands and registers them.

Modules register only commands that work; groups appear once something is in them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from .. import __version__
from .common import Formatter, Handler, Parser, add_command

# Order = order in `--help`.
MODULES = ("install", "download", "customize", "iso", "pxe", "osmet", "service")

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


class Registry:
    """Creates command groups on first use so empty groups never show up."""

    def __init__(self, root: argparse.ArgumentParser) -> None:
        self._subs: dict[str, argparse._SubParsersAction] = {}  # type: ignore[type-arg]
        self._subs[""] = root.add_subparsers(
            title="subcommands", metavar="COMMAND", parser_class=Parser
        )

    def group(self, path: str) -> argparse._SubParsersAction:  # type: ignore[type-arg]
        """Subparsers of the group `path` (e.g. "iso kargs"), creating parents."""
        if path in self._subs:
            return self._subs[path]
        parent, _, name = path.rpartition(" ")
        parent_sub = self.group(parent)
        help_text, hidden = GROUP_HELP.get(path, (f"{name} commands", False))
        parser = add_command(parent_sub, name, help_text, hidden=hidden)

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
        parent, _, name = path.rpartition(" ")
        return add_command(
            self.group(parent),
            name,
            help,
            hidden=hidden,
            description=description,
            handler=handler,
            populate=populate,
        )


def build_parser() -> argparse.ArgumentParser:
    root = Parser(
        prog="nestos-installer",
        description="Installer for NestOS (and CoreOS-layout media)",
        formatter_class=Formatter,
    )
    root.add_argument(
        "-V", "--version", action="version", version=f"nestos-installer {__version__}"
    )
    reg = Registry(root)
    for name in MODULES:
        module = importlib.import_module(f".{name}", __package__)
        module.register(reg)
    return root

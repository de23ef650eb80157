"""Shared argparse plumbing: 80-column help, hidden commands, handler dispatch."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ..errors import NestosError
from .help import explain

Handler = Callable[[argparse.Namespace], int | None]


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help text that never exceeds 80 columns, whatever $COLUMNS says."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=80, max_help_position=30)


class Parser(argparse.ArgumentParser):
    """ArgumentParser with our formatter, `-h` (summary) / `--help` (long help, see
    cli/help.py), clap-like `error:` usage errors and hidden subcommands.

    `populate`, if given, adds the arguments on first use (parsing or help), so a
    command whose argument table is expensive to import costs nothing until it runs.
    """

    def __init__(
        self,
        *args: Any,
        populate: Callable[[argparse.ArgumentParser], None] | None = None,
        **kwargs: Any,
    ) -> None:
        from .help import LongHelp, ShortHelp

        kwargs.setdefault("formatter_class", Formatter)
        kwargs["add_help"] = False
        super().__init__(*args, **kwargs)
        self._populate = populate
        # Names of hidden subcommands: left out of "invalid choice" lists too.
        self.hidden_commands: set[str] = set()
        self.add_argument("-h", action=ShortHelp)
        self.add_argument("--help", action=LongHelp)

    def _ready(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._ready()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._ready()
        return super().format_usage()

    def format_help(self) -> str:
        """Help without hidden subcommands (argparse 3.11 lists them as ==SUPPRESS==)."""
        self._ready()
        text = super().format_help()
        return "".join(
            line.rstrip() + "\n"
            for line in text.splitlines()
            if line.strip().split(" ")[-1] != argparse.SUPPRESS
        )

    def error(self, message: str) -> Any:
        if self.hidden_commands and "invalid choice" in message:
            message = re.sub(r"\(choose from [^)]*\)", self._visible_choices, message)
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)

    def _visible_choices(self, match: re.Match[str]) -> str:
        names = re.findall(r"'([^']*)'", match.group(0))
        shown = [f"'{n}'" for n in names if n not in self.hidden_commands]
        return "(choose from " + ", ".join(shown) + ")"


def add_command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help: str,
    *,
    hidden: bool = False,
    description: str | None = None,
    handler: Handler | None = None,
    populate: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """Add a subcommand; hidden ones parse normally but stay out of --help."""
    extra: dict[str, Any] = {} if populate is None else {"populate": populate}
    if hidden:
        # A SUPPRESSed help marks the command hidden; Parser.format_help drops it.
        parser: argparse.ArgumentParser = sub.add_parser(
            name,
            help=argparse.SUPPRESS,
            description=description or help,
            formatter_class=Formatter,
            **extra,
        )
    else:
        parser = sub.add_parser(
            name, help=help, description=description or help, formatter_class=Formatter, **extra
        )
    if handler is not None:
        parser.set_defaults(func=handler)
    # The deepest command parsed: unknown arguments are reported with its usage.
    parser.set_defaults(command_parser=parser)
    return parser


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    """`--profile nestos|coreos`: whose names and keys to use where no media tells."""
    from ..profile import BY_NAME, DEFAULT

    explain(
        parser.add_argument(
            "--profile",
            choices=sorted(BY_NAME),
            default=DEFAULT.name,
            metavar="NAME",
            help="Naming and trusted keys: nestos or coreos [default: %(default)s]",
        ),
        "Which distribution's conventions to follow where the media cannot tell: "
        "nestos (NestOS names, e.g. etc/nestos-firstboot-network/, the NestOS stream "
        "server, the NestOS key directories) or coreos (the CoreOS layout upstream "
        "coreos-installer writes, the Fedora CoreOS stream server, and the Fedora "
        "signing keys upstream trusts).\n\n[default: %(default)s]",
    )


def restore_sigpipe() -> None:
    """`show`-style commands die silently on a closed pipe, like upstream."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def binary_stdout(refuse_tty: bool = True) -> BinaryIO:
    """stdout for binary data; refuses a terminal (docs/compat.md#iso-output-modes)."""
    if refuse_tty and os.isatty(sys.stdout.fileno()):
        raise NestosError("Refusing to write binary data to terminal")
    return sys.stdout.buffer


class OutputError(NestosError):
    """Writing to stdout failed (full disk, closed pipe, I/O error)."""


class _GuardedStdout(io.RawIOBase):
    """fd 1 as a raw stream whose failures are `Error: writing to stdout` errors.

    Python reports a failed write to stdout as a traceback (or, at exit, as "Exception
    ignored" and status 120). Every byte we print, argparse's `--help` included, goes
    through here instead; after the first failure further output is dropped, so the
    one error line is all the user sees."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self.failed = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, b: Any) -> int:
        if self.failed:
            return len(memoryview(b))
        try:
            return os.write(self._fd, b)
        except OSError as exc:
            self.failed = True
            raise OutputError("writing to stdout") from exc


@contextlib.contextmanager
def guarded_stdout() -> Iterator[None]:
    """Route `sys.stdout` through `_GuardedStdout` for the duration (when it is fd 1;
    a caller that swapped in its own stdout, such as an in-process test, keeps it)."""
    old = sys.stdout
    try:
        is_fd1 = old is not None and old.fileno() == 1
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        is_fd1 = False
    if not is_fd1:
        yield
        return
    try:
        old.flush()
    except OSError:
        pass
    raw = _GuardedStdout(1)
    new = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=old.encoding,
        errors=old.errors,
        line_buffering=bool(old.line_buffering),
    )
    try:
        with contextlib.redirect_stdout(new):  # the stdlib's way to swap sys.stdout
            yield
    finally:
        try:
            new.flush()
        except Exception:  # noqa: S110 - main() already reported any failure
            pass
        raw.failed = True  # whatever is left when the wrapper is collected is moot

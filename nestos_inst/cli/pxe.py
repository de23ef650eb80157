"""`pxe ignition/network wrap/unwrap` and the hidden `dev show/extract initrd`
(docs/compat.md#pxe-commands).

Wrapped outputs are small xz initrds meant to be listed after the live initramfs;
the unwrap/show commands read any concatenation of raw or compressed archives.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import NestosError, context
from ..formats.glob import compile_globs
from ..formats.kargs import check_text
from ..io.files import (
    IGNITION_LIMIT,
    KEYFILE_LIMIT,
    SECRET_MODE,
    Created,
    read_limited,
    refuse_existing,
    write_file,
)
from ..profile import BY_NAME
from .common import add_profile_option, binary_stdout, restore_sigpipe
from .help import explain
from .output import (
    add_directory_option,
    add_keyfile_option,
    print_path,
    write_keyfiles,
)

if TYPE_CHECKING:
    from . import Registry

IGNITION_MEMBER = "config.ign"


@contextmanager
def open_input(path: str | None) -> Iterator[BinaryIO]:
    """The named file, or stdin for None and `-`."""
    if path is None or path == "-":
        yield sys.stdin.buffer
        return
    with context(f"opening {path}"):
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the with-context
    with f:
        yield f


def read_members(path: str | None, patterns: Sequence[str] | None) -> dict[str, bytes]:
    """Decode an initrd file (stdin for None/`-`) keeping members matching `patterns`."""
    from ..formats.initrd import read_initrd_stream

    if patterns is not None:
        compile_globs(patterns)  # reject bad globs before touching the input
    with open_input(path) as f, context(f"reading initrd {_display(path)}"):
        return read_initrd_stream(f, patterns)


def _display(path: str | None) -> str:
    return "from stdin" if path is None or path == "-" else path


def write_output(data: bytes, output: str | None) -> None:
    """Write to stdout (never a TTY) or replace `output` whole, 0600 (the wrapped
    config or keyfiles may hold secrets); a failed write leaves an old file as it was."""
    if output is None:
        out = binary_stdout()
        out.write(data)
        out.flush()
        return
    write_file(output, data, mode=SECRET_MODE)


def _ignition_wrap(args: argparse.Namespace) -> int:
    from ..formats.initrd import write_initrd

    if args.output is None:
        binary_stdout()  # refuse a terminal before waiting on stdin
    config = read_limited(args.ignition_file, IGNITION_LIMIT)
    write_output(write_initrd({IGNITION_MEMBER: config}), args.output)
    return 0


def _ignition_unwrap(args: argparse.Namespace) -> int:
    restore_sigpipe()
    members = read_members(args.initrd, [IGNITION_MEMBER])
    if IGNITION_MEMBER not in members:
        raise NestosError("couldn't find Ignition config in archive")
    out = sys.stdout.buffer
    out.write(members[IGNITION_MEMBER])
    out.flush()
    return 0


def _network_wrap(args: argparse.Namespace) -> int:
    from ..formats.initrd import write_initrd

    if args.output is None:
        binary_stdout()
    members: dict[str, bytes] = {}
    for path in args.keyfile:
        name = Path(path).name
        if name in ("", ".", ".."):
            raise NestosError(f"path {path} has no filename")
        check_text(name, "keyfile name")
        member = f"{BY_NAME[args.profile].initrd_network_dir}/{name}"
        if member in members:
            raise NestosError(f"multiple input files named '{name}'")
        members[member] = read_limited(path, KEYFILE_LIMIT)
    write_output(write_initrd(members), args.output)
    return 0


def _network_unwrap(args: argparse.Namespace) -> int:
    from ..formats.initrd import network_members, network_patterns

    if args.directory is None:
        restore_sigpipe()
    _profile, members = network_members(read_members(args.initrd, network_patterns()))
    if not members:
        raise NestosError("No embedded network settings.")
    write_keyfiles(members, args.directory)
    return 0


def _dev_show(args: argparse.Namespace) -> int:
    from ..formats.initrd import list_initrd

    restore_sigpipe()
    patterns = args.globs or ["*"]
    compile_globs(patterns)  # reject bad globs before touching the input
    # Names only: member data is skipped piece by piece, never held.
    with open_input(args.initrd) as f, context(f"reading initrd {_display(args.initrd)}"):
        names = list_initrd(f, patterns)
    out = sys.stdout.buffer
    out.write(b"".join(os.fsencode(name) + b"\n" for name in names))
    out.flush()
    return 0


def check_traversal(path: str) -> None:
    """Refuse absolute paths and `..` components, which would escape the target dir."""
    if path.startswith("/") or ".." in path.split("/"):
        raise NestosError(f"path {path} contains path traversal")


def extraction_targets(names: Sequence[str], directory: str) -> dict[str, str]:
    """Member name → path under `directory`, all checked before anything is written:
    no traversal, no two members for one path (`a` and `./a`), no member that is
    both a file and a parent directory of another, no existing file in the way."""
    targets: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in names:
        check_traversal(name)
        rel = os.path.normpath(name)
        if rel in (".", ""):
            raise NestosError(f"archive member '{name}' has no file name")
        if rel in owner:
            raise NestosError(
                f"archive members '{owner[rel]}' and '{name}' would both be extracted to "
                f"{os.path.join(directory, rel)}"
            )
        owner[rel] = name
        targets[name] = os.path.join(directory, rel)
    for rel, name in owner.items():
        parent = os.path.dirname(rel)
        while parent:
            if parent in owner:
                raise NestosError(
                    f"archive member '{owner[parent]}' is a file, but '{name}' needs it "
                    "to be a directory"
                )
            parent = os.path.dirname(parent)
    refuse_existing(list(targets.values()))
    return targets


def _dev_extract(args: argparse.Namespace) -> int:
    from ..formats.initrd import stage_initrd

    patterns = args.globs or ["*"]
    compile_globs(patterns)
    directory = args.directory
    written: list[str] = []
    with Created() as created:
        created.makedirs(directory)
        # Members are streamed into a private staging directory first (memory
        # independent of their sizes, files 0600 since data may be secret); only once
        # the whole archive has been read and every target checked does anything
        # appear under its own name.
        with context(f"creating a staging directory in {directory}"):
            stage = tempfile.mkdtemp(prefix=".nestos-installer-extract-", dir=directory)
        try:
            with open_input(args.initrd) as f, context(f"reading initrd {_display(args.initrd)}"):
                staged = stage_initrd(f, patterns, stage, check_name=check_traversal)
            targets = extraction_targets(sorted(staged), directory)
            for path in sorted(staged):
                target = targets[path]
                created.makedirs(os.path.dirname(target) or ".")
                with context(f"creating {target}"):
                    os.link(staged[path], target)  # create-new: never replaces a file
                created.add(target)
                written.append(target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    if args.verbose:
        for target in written:
            print_path(target)
    return 0


WRAP_OUTPUT_DOC = (
    "Write the archive to PATH instead of stdout. PATH is written through a temporary "
    "file with mode 0600 (the contents may hold secrets) and replaced only once complete; "
    "on failure an existing PATH is left as it was. Without -o the archive goes to "
    "stdout, which is refused when stdout is a terminal."
)
READ_DOC = (
    "The initrd to read, or - for stdin: any concatenation of cpio archives, each "
    "uncompressed or compressed with gzip, xz or zstd, such as the live initramfs "
    "followed by wrapped add-ons."
)
GLOB_DOC = (
    "Shell-style patterns for the member paths to {what}; * also matches /, ? one "
    "character, [a-z] a class, ** only as a whole path component. Without any pattern "
    "every regular file is {what_past}."
)


def register(reg: Registry) -> None:
    """Register this module's working commands."""
    p = reg.command(
        "pxe ignition wrap", "Wrap an Ignition config in an initrd image", _ignition_wrap
    )
    explain(
        p.add_argument(
            "-i",
            "--ignition-file",
            metavar="PATH",
            help="Ignition config to wrap [default: stdin]",
        ),
        "The Ignition config to wrap, stored as given (it is not validated) as config.ign "
        "in an xz-compressed cpio archive. List that archive after the live initramfs on "
        "the PXE initrd line and the live system's Ignition finds the config at boot. "
        "Without this option the config is read from stdin.\n\n[default: stdin]",
    )
    explain(
        p.add_argument("-o", "--output", metavar="PATH", help="Write to a file instead of stdout"),
        WRAP_OUTPUT_DOC,
    )

    p = reg.command(
        "pxe ignition unwrap",
        "Show the wrapped Ignition config in an initrd image",
        _ignition_unwrap,
    )
    explain(
        p.add_argument("initrd", metavar="INITRD", nargs="?", help="initrd image [default: stdin]"),
        READ_DOC + " When several archives hold config.ign the last one wins, as in the "
        "kernel.\n\n[default: stdin]",
    )

    p = reg.command("pxe network wrap", "Wrap network settings in an initrd image", _network_wrap)
    add_keyfile_option(
        p,
        "A NetworkManager keyfile (NAME.nmconnection) for the live system; repeat the option "
        "for several. Each is stored as etc/nestos-firstboot-network/NAME "
        "(etc/coreos-firstboot-network/NAME with --profile coreos) in an xz-compressed cpio "
        "archive, from where the live initramfs hands it to NetworkManager. Two files with "
        "the same name are refused.",
    )
    add_profile_option(p)
    explain(
        p.add_argument("-o", "--output", metavar="PATH", help="Write to a file instead of stdout"),
        WRAP_OUTPUT_DOC,
    )

    p = reg.command(
        "pxe network unwrap",
        "Extract wrapped network settings from an initrd image",
        _network_unwrap,
    )
    add_directory_option(p)
    explain(
        p.add_argument("initrd", metavar="INITRD", nargs="?", help="initrd image [default: stdin]"),
        READ_DOC + " Keyfiles under etc/nestos-firstboot-network/ are used when there are "
        "any, else those under etc/coreos-firstboot-network/.\n\n[default: stdin]",
    )

    p = reg.command("dev show initrd", "Show contents of an initrd image", _dev_show, hidden=True)
    explain(
        p.add_argument("initrd", metavar="INITRD", help="initrd path, or - for stdin"), READ_DOC
    )
    explain(
        p.add_argument("globs", metavar="GLOB", nargs="*", help="Glob patterns of files to show"),
        GLOB_DOC.format(what="list", what_past="listed") + " Paths are printed sorted, one "
        "per line.",
    )

    p = reg.command(
        "dev extract initrd", "Extract contents of an initrd image", _dev_extract, hidden=True
    )
    explain(
        p.add_argument(
            "-C", "--directory", metavar="PATH", default=".", help="Output directory [default: .]"
        ),
        "Directory to extract into, created if needed; each member lands at "
        "PATH/<member path>, with its parent directories. Members with an absolute path or "
        "a .. component are refused, and existing files are never overwritten; all "
        "members are checked before the first file is written, and files get mode "
        "0600.\n\n[default: .]",
    )
    explain(
        p.add_argument("-v", "--verbose", action="store_true", help="Print extracted paths"),
        "Print each written path (PATH/<member path>), one per line.",
    )
    explain(
        p.add_argument("initrd", metavar="INITRD", help="initrd path, or - for stdin"), READ_DOC
    )
    explain(
        p.add_argument(
            "globs", metavar="GLOB", nargs="*", help="Glob patterns of files to extract"
        ),
        GLOB_DOC.format(what="extract", what_past="extracted"),
    )

"""`install`: argparse generated from the options table (nestos_inst/install/options.py).

Only options actually given end up in the namespace (defaults are SUPPRESSed), so the
command line becomes one merge layer on top of the config files, exactly like any
other layer (docs/compat.md#install-config-files). Values arrive parsed (each option's
one parser runs as the argparse type), and the model takes them as they are.

The table lives on the pydantic model, so the install parser is filled in only when
it is used (LazyParser): other commands and `--help` start without pydantic.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .help import explain

if TYPE_CHECKING:
    from ..install.config import ArgumentLayer
    from ..install.options import Option
    from . import Registry

DESCRIPTION = """\
Install NestOS to a disk (or to a disk image file).

The image comes from a stream (default), --image-url, --image-file or,
on the live system, the offline osmet data. Its signature is verified
while it is written; the first MiB (the partition table) is written
last, after verification. On failure the partition table is wiped
(saved partitions are kept) unless --preserve-on-error.
"""


def _arg_type(opt: Option) -> Callable[[str], Any]:
    """argparse type: the option's one parser; a bad value is a usage error (exit 2)."""
    from ..install.options import parse_value

    def parse(text: str) -> Any:
        try:
            return parse_value(opt.value, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = opt.value.name  # argparse names the type in some messages
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every install option from the table, plus -c/--config-file."""
    from ..install.options import OPTIONS, groups

    explain(
        parser.add_argument(
            "-c",
            "--config-file",
            action="append",
            metavar="PATH",
            default=[],
            help="YAML config file with install options (repeatable)",
        ),
        "Read install options from a YAML file whose keys are the long option names "
        "without the dashes (image-url: ..., append-karg: [...]; see pack example-config). "
        "Repeatable: lists accumulate across the files and then the command line, while for "
        "single values later files override earlier ones and the command line overrides "
        "them all. The merged options are printed (Running with arguments: ...) before the "
        "install. DEST_DEVICE may come from a file.",
    )
    advanced = parser.add_argument_group("Advanced Options")
    exclusive = {name: parser.add_mutually_exclusive_group() for name in groups()}
    for opt in OPTIONS:
        if opt.kind == "positional":
            explain(
                parser.add_argument(
                    opt.field,
                    nargs="?",
                    metavar=opt.metavar,
                    help=opt.help,
                    default=argparse.SUPPRESS,
                ),
                opt.doc,
            )
            continue
        target: Any = parser
        if opt.group is not None:
            target = exclusive[opt.group]
        elif opt.advanced:
            target = advanced
        _add(target, opt)


def _add(target: Any, opt: Option) -> None:
    names = [n for n in (opt.short, opt.flag) if n]
    kwargs: dict[str, Any] = {
        "dest": opt.field,
        "default": argparse.SUPPRESS,
        "help": argparse.SUPPRESS if opt.hidden else opt.help,
    }
    if opt.kind == "flag":
        kwargs["action"] = "store_true"
    else:
        kwargs["metavar"] = opt.metavar
        kwargs["action"] = "append" if opt.kind == "list" else "store"
        if opt.value.usage_error:
            kwargs["type"] = _arg_type(opt)
    explain(target.add_argument(*names, **kwargs), _long_help(opt))
    # Aliases are accepted but never shown (upstream's hidden clap aliases): each is an
    # option of its own with the same destination, in the same exclusive group, so
    # `--ignition X` works and conflicts like `--ignition-file X` does.
    for alias in opt.aliases:
        target.add_argument(alias, **{**kwargs, "help": argparse.SUPPRESS})


def _long_help(opt: Option) -> str:
    """--help's paragraph: the option's doc, then its default as -h would show it."""
    text = opt.doc or opt.help
    shown = opt.shown_default or ("" if opt.default in (None, False, (), "") else str(opt.default))
    quoted = re.search(r"`([^`]*)`", shown)  # the docs' form: "— (`stable`)"
    if quoted:
        shown = quoted.group(1)
    if shown and "[default:" not in text:
        text += f"\n\n[default: {shown}]"
    return text


def cli_layer(args: argparse.Namespace) -> ArgumentLayer:
    """The options given on the command line, by field name (already parsed)."""
    from ..install.config import ArgumentLayer
    from ..install.options import BY_FIELD

    out = ArgumentLayer()
    for name, value in vars(args).items():
        if name in BY_FIELD:
            out[name] = value
    return out


def handle(args: argparse.Namespace) -> int:
    from ..install.config import load_config_file, merge_layers
    from ..install.main import install
    from ..profile import NESTOS

    files: list[str] = list(args.config_file)
    layers: list[Mapping[str, Any]] = [load_config_file(f) for f in files]
    origins = [f"config file {f}" for f in files]
    layers.append(cli_layer(args))
    origins.append("command line")
    cfg = merge_layers(layers, origins)
    if files:
        sys.stdout.write("Running with arguments: " + " ".join(cfg.to_args()) + "\n")
        sys.stdout.flush()
    install(cfg, profile=NESTOS)
    return 0


def register(reg: Registry) -> None:
    parser = reg.command(
        "install",
        "Install NestOS to a disk",
        _checked_handler,
        description=DESCRIPTION,
        populate=add_arguments,
    )
    parser.set_defaults(_parser=parser)
    reg.command(
        "pack example-config",
        "Print an example install config file",
        _example_config,
        hidden=True,
    )


def _example_config(args: argparse.Namespace) -> int:
    from ..install.options import example_config

    sys.stdout.write(example_config())
    return 0


def _checked_handler(args: argparse.Namespace) -> int:
    """DEST_DEVICE is required unless a config file may supply it (clap rule)."""
    if not args.config_file and getattr(args, "dest_device", None) is None:
        parser: argparse.ArgumentParser = args._parser
        parser.error("the following arguments are required: DEST_DEVICE")
    return handle(args)

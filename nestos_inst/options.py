"""The one declarative table of `install` options.

Every install option is described exactly once here: its CLI flag and short form, its
config-file (YAML) key, the pydantic field it fills, its help text, its kind and its
default. argparse, the config-file parser, the `Running with arguments:` line, the
example config and the docs are all generated from this table, so they cannot drift.
Order = upstream's struct order (compat-spec §7.9), which fixes serialization order.
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["single", "list", "flag", "positional"]

DEFAULT_NETWORK_DIR = "/etc/NetworkManager/system-connections/"


def default_architecture() -> str:
    """`uname -m`, the upstream default for `--architecture`."""
    return _platform.machine() or "x86_64"


@dataclass(frozen=True)
class Option:
    """One install option; `field` is the pydantic field name, `key` the YAML key."""

    field: str
    kind: Kind
    help: str
    short: str | None = None
    metavar: str | None = None
    default: Any = None
    in_config: bool = True  # accepted as a config-file key
    hidden: bool = False  # accepted on the CLI but not shown in --help
    advanced: bool = False  # listed under "Advanced Options"
    comma_split: bool = False  # list values may be comma-separated
    aliases: tuple[str, ...] = ()  # extra hidden long flags
    example: Any = None  # value used in the generated example config
    cli: bool = True  # has a CLI flag (False: only reachable through merge layers)

    @property
    def key(self) -> str:
        return self.field.replace("_", "-")

    @property
    def flag(self) -> str:
        return "--" + self.key


OPTIONS: tuple[Option, ...] = (
    Option(
        "stream",
        "single",
        "Stream to install the image from (e.g. stable)",
        short="-s",
        metavar="NAME",
        example="stable",
    ),
    Option(
        "image_url",
        "single",
        "Manually specify the image URL",
        short="-u",
        metavar="URL",
        example="https://example.com/nestos-metal.raw.xz",
    ),
    Option(
        "image_file",
        "single",
        "Manually specify a local image file",
        short="-f",
        metavar="PATH",
        example="/run/media/iso/image.raw.xz",
    ),
    Option(
        "ignition_file",
        "single",
        "Embed an Ignition config from a file",
        short="-i",
        metavar="PATH",
        aliases=("--ignition",),
        example="/path/to/config.ign",
    ),
    Option(
        "ignition_url",
        "single",
        "Embed an Ignition config from a URL",
        short="-I",
        metavar="URL",
        example="https://example.com/config.ign",
    ),
    Option(
        "ignition_hash",
        "single",
        "Digest (type-value) of the Ignition config (sha256 or sha512)",
        metavar="DIGEST",
        example="sha512-" + "0" * 128,
    ),
    Option(
        "architecture",
        "single",
        "Target CPU architecture",
        short="-a",
        metavar="NAME",
        default=None,  # resolved at run time: uname -m
        example="x86_64",
    ),
    Option(
        "platform",
        "single",
        "Override the Ignition platform ID",
        short="-p",
        metavar="NAME",
        example="qemu",
    ),
    Option(
        "console",
        "list",
        "Kernel and bootloader console (e.g. ttyS0,115200n8)",
        metavar="SPEC",
        example=["tty0", "ttyS0,115200n8"],
    ),
    Option(
        "firstboot_args",
        "single",
        "Additional first-boot kernel arguments",
        metavar="ARGS",
        in_config=False,
        hidden=True,
    ),
    Option(
        "append_karg",
        "list",
        "Append default kernel arg",
        metavar="ARG",
        example=["nosmt"],
    ),
    Option(
        "delete_karg",
        "list",
        "Delete default kernel arg",
        metavar="ARG",
        example=["mitigations=auto,nosmt"],
    ),
    Option(
        "copy_network",
        "flag",
        "Copy network config from install environment",
        short="-n",
        default=False,
        example=True,
    ),
    Option(
        "network_dir",
        "single",
        f"Source directory for --copy-network [default: {DEFAULT_NETWORK_DIR}]",
        metavar="PATH",
        default=DEFAULT_NETWORK_DIR,
        example="/etc/NetworkManager/system-connections/",
    ),
    Option(
        "save_partlabel",
        "list",
        "Save partitions with this label glob",
        metavar="LABEL",
        comma_split=True,
        example=["data*"],
    ),
    Option(
        "save_partindex",
        "list",
        "Save partitions with this number or range",
        metavar="ID",
        comma_split=True,
        example=["5-"],
    ),
    Option(
        "offline",
        "flag",
        "Force offline installation",
        default=False,
        advanced=True,
        example=True,
    ),
    Option(
        "insecure",
        "flag",
        "Allow unsigned image",
        default=False,
        advanced=True,
        example=True,
    ),
    Option(
        "insecure_ignition",
        "flag",
        "Allow Ignition URL without HTTPS or hash",
        default=False,
        advanced=True,
        example=True,
    ),
    Option(
        "stream_base_url",
        "single",
        "Base URL for stream metadata",
        metavar="URL",
        advanced=True,
        example="https://nestos.org.cn/NestOS-release/streams/",
    ),
    Option(
        "preserve_on_error",
        "flag",
        "Don't clear partition table on error",
        default=False,
        advanced=True,
        example=True,
    ),
    Option(
        "fetch_retries",
        "single",
        'Fetch retries, or string "infinite"',
        metavar="N",
        default=0,
        advanced=True,
        example=3,
    ),
    Option(
        "secure_ipl",
        "flag",
        "Enable IBM Secure IPL (s390x)",
        default=False,
        advanced=True,
        example=True,
    ),
    # --- beyond upstream ---------------------------------------------------------
    Option(
        "keyring",
        "list",
        "Also trust the armored public keys in this file",
        metavar="FILE",
        advanced=True,
        example=["/etc/nestos/keys/distributor.asc"],
    ),
    Option(
        "dry_run",
        "flag",
        "Print the install plan and write nothing",
        default=False,
        in_config=False,
        advanced=True,
    ),
    Option(
        "osmet_dir",
        "list",
        "Look for osmet files in this directory",
        metavar="DIR",
        in_config=False,
        hidden=True,
    ),
    Option(
        "ostree_repo",
        "single",
        "OSTree repository holding osmet objects",
        metavar="DIR",
        in_config=False,
        hidden=True,
    ),
    Option(
        "dest_device",
        "positional",
        "Destination device (a block device, or a regular file to build a disk image)",
        metavar="DEST_DEVICE",
        example="/dev/vda",
    ),
)

BY_FIELD: dict[str, Option] = {o.field: o for o in OPTIONS}
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}
CONFIG_KEYS: tuple[str, ...] = tuple(o.key for o in OPTIONS if o.in_config)

# Upstream's conflicting pairs (clap `conflicts_with`).
CONFLICTS: tuple[tuple[str, str], ...] = (
    ("stream", "image_url"),
    ("stream", "image_file"),
    ("image_url", "image_file"),
    ("ignition_file", "ignition_url"),
)


def iter_options(*, config_only: bool = False) -> Iterator[Option]:
    for opt in OPTIONS:
        if config_only and not opt.in_config:
            continue
        yield opt


def example_config() -> str:
    """An example YAML config: every config-file key, commented out, with its help."""
    lines = [
        "# nestos-installer install config (YAML). Every key is optional; keys are the",
        "# long option names. Files in installer.d/ are applied in name order, then the",
        "# command line: lists accumulate, single values are last-wins.",
        "",
    ]
    for opt in iter_options(config_only=True):
        lines.append(f"# {opt.help}")
        ex = opt.example
        if opt.kind == "list":
            lines.append(f"# {opt.key}:")
            lines.extend(f"#   - {_yaml_scalar(v)}" for v in ex or [])
        elif opt.kind == "flag":
            lines.append(f"# {opt.key}: true")
        else:
            lines.append(f"# {opt.key}: {_yaml_scalar(ex)}")
        lines.append("")
    return "\n".join(lines)


def _yaml_scalar(value: Any) -> str:
    text = str(value)
    if text and (text[0] in "!&*{}[]|>'\"%@`#,?:-" or ": " in text or " #" in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text

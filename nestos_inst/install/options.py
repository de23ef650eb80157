"""The `install` options, each declared exactly once.

One field of InstallConfig per option: its type, its default, and an `Opt` carrying the
CLI flag and short form, help text, metavar, value type, exclusive group, kernel
argument and example. Everything else is derived from these declarations: argparse
(nestos_inst.cli.install), pydantic validation (this model), the YAML keys of config
files, the service's kernel-argument names (nestos_inst.service.cmdline), the
`Running with arguments:` line, the example config (`pack example-config`) and the
option list in docs/install.md. Field order is upstream's struct order
(docs/compat.md#install-config-files), which fixes serialization order.

Each value type has one parser (ValueType.parse), used for command-line text, YAML
scalars and kernel arguments alike; the model keeps the parsed value (an IgnitionHash,
Console objects, a retry count), so nothing downstream parses a validated string again.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import platform as _platform
import typing
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from ..errors import NestosError, flat_chain
from ..formats.kargs import check_karg, check_platform, check_text
from ..net.retries import INFINITE, FetchRetries, parse_fetch_retries
from .console import Console, parse_console
from .ignition import IgnitionHash

if TYPE_CHECKING:
    from pydantic import BaseModel

Kind = Literal["single", "list", "flag", "positional"]

DEFAULT_NETWORK_DIR = "/etc/NetworkManager/system-connections/"


def default_architecture() -> str:
    """`uname -m`, the upstream default for `--architecture`."""
    return _platform.machine() or "x86_64"


# ---- value types: one parser each ------------------------------------------------------


def check_url(url: str) -> str:
    """Reject strings that are not absolute URLs, as upstream's URL type does."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not (parts.netloc or parts.scheme == "file"):
        raise ValueError(f"invalid URL '{url}': relative URL without a base")
    if parts.scheme in ("http", "https") and not parts.path:
        return urllib.parse.urlunsplit(parts._replace(path="/"))
    return url


@dataclass(frozen=True)
class ValueType:
    """How text becomes a value: `parse` raises ValueError or NestosError with the
    user-facing reason. Values that are not text (already parsed on the command line,
    or by an earlier layer) pass through unchanged.

    `usage_error`: a bad value on the command line is a usage error (exit 2, reported
    by the argument parser, as upstream's value parsers do); otherwise it is found
    while the merged configuration is validated (exit 1, `Error: ...`).
    """

    name: str
    parse: Callable[[str], Any]
    usage_error: bool = True


def _text(v: str) -> str:
    return v


def _checked(check: Callable[[str], None]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        check(text)
        return text

    return parse


def _firstboot(text: str) -> None:
    check_text(text, "first-boot kernel arguments")


def parse_fetch_timeout(text: str) -> float:
    """The network layer's parser for `--fetch-timeout` (imported when first used:
    it lives with httpx, which the command line does not load up front)."""
    from ..net.http import parse_timeout

    return parse_timeout(text)


TEXT = ValueType("text", _text)
PLATFORM = ValueType("platform", _checked(check_platform), usage_error=False)
KARG = ValueType("karg", _checked(check_karg), usage_error=False)
KARGS_TEXT = ValueType("kargs", _checked(_firstboot), usage_error=False)
URL = ValueType("url", check_url)
DIGEST = ValueType("digest", IgnitionHash.parse)
CONSOLE = ValueType("console", parse_console)
RETRIES = ValueType("retries", parse_fetch_retries)
TIMEOUT = ValueType("timeout", parse_fetch_timeout)


def parse_value(vtype: ValueType, text: str) -> Any:
    """One value through its type's parser; failures become ValueError(one line)."""
    try:
        return vtype.parse(text)
    except NestosError as exc:
        raise ValueError(flat_chain(exc)) from None


# ---- the declaration record ------------------------------------------------------------


@dataclass(frozen=True)
class Opt:
    """What the model's type and default do not say about an option.

    `field` and `default` are filled in from the model field the Opt annotates.
    """

    kind: Kind
    help: str
    value: ValueType = TEXT
    short: str | None = None
    metavar: str | None = None
    in_config: bool = True  # accepted as a config-file key
    hidden: bool = False  # accepted on the CLI but not shown in --help
    advanced: bool = False  # listed under "Advanced Options"
    group: str | None = None  # options of one group exclude each other
    karg: str | None = None  # `<prefix>.<karg>` sets it in service mode
    aliases: tuple[str, ...] = ()  # extra hidden long flags
    example: Any = None  # value used in the generated example config
    doc: str = ""  # long --help paragraph (empty: `help` is all there is to say)
    shown_default: str = ""  # the default as docs show it, when not the plain value
    field: str = ""
    default: Any = None

    @property
    def key(self) -> str:
        return self.field.replace("_", "-")

    @property
    def flag(self) -> str:
        return "--" + self.key


Option = Opt  # the name the rest of the code base uses for one table row


def _kebab(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class InstallConfig:
    """Everything `install` needs, validated and normalized; immutable once built.

    The fields below are the options table: add an option here and it appears on the
    command line, in config files, in the example config and in the docs. Built by
    install/config.py from layers checked by `coerce` (arguments: the installer's
    and the kernel's command line) or by the pydantic model derived from this table
    (`validation_model()`: config files). A plain dataclass, so that an install from
    arguments alone starts without importing pydantic.
    """

    stream: Annotated[
        str | None,
        Opt(
            "single",
            "Stream to install the image from (e.g. stable)",
            shown_default="— (`stable`)",
            short="-s",
            metavar="NAME",
            group="source",
            karg="stream",
            example="stable",
            doc=(
                "Install the newest image of this stream, found in the stream metadata at the "
                "stream base URL (see --stream-base-url). The default stream is stable. Cannot be "
                "combined with --image-url or --image-file."
            ),
        ),
    ] = None
    image_url: Annotated[
        str | None,
        Opt(
            "single",
            "Manually specify the image URL",
            value=URL,
            short="-u",
            metavar="URL",
            group="source",
            karg="image_url",
            example="https://example.com/nestos-metal.raw.xz",
            doc=(
                "Install the image at this URL instead of looking one up in a stream. Its "
                "signature is fetched from the same URL with .sig appended to the path and must "
                "verify unless --insecure is given. Only http:// and https:// URLs are accepted."
            ),
        ),
    ] = None
    image_file: Annotated[
        str | None,
        Opt(
            "single",
            "Manually specify a local image file",
            short="-f",
            metavar="PATH",
            group="source",
            example="/run/media/iso/image.raw.xz",
            doc=(
                "Install a local image file (compressed with xz, gzip or zstd, or raw). A "
                "signature in FILE.sig next to it is verified; without one, --insecure is "
                "required."
            ),
        ),
    ] = None
    ignition_file: Annotated[
        str | None,
        Opt(
            "single",
            "Embed an Ignition config from a file",
            short="-i",
            metavar="PATH",
            group="ignition",
            aliases=("--ignition",),
            example="/path/to/config.ign",
            doc=(
                "Copy this Ignition config to the installed system's /boot/ignition/config.ign "
                "(mode 0600), where Ignition reads it on first boot. The file must contain JSON."
            ),
        ),
    ] = None
    ignition_url: Annotated[
        str | None,
        Opt(
            "single",
            "Embed an Ignition config from a URL",
            value=URL,
            short="-I",
            metavar="URL",
            group="ignition",
            example="https://example.com/config.ign",
            doc=(
                "Fetch an Ignition config from this URL and install it like --ignition-file. "
                "https:// is required unless --ignition-hash is given (or --insecure-ignition, "
                "not recommended)."
            ),
        ),
    ] = None
    ignition_hash: Annotated[
        IgnitionHash | None,
        Opt(
            "single",
            "Digest (type-value) of the Ignition config (sha256 or sha512)",
            value=DIGEST,
            metavar="DIGEST",
            example="sha512-" + "0" * 128,
            doc=(
                "Check the Ignition config against this digest before anything is written, as "
                "type-value with type sha256 or sha512, e.g. sha512-0123abcd..."
            ),
        ),
    ] = None
    architecture: Annotated[
        str | None,
        Opt(  # None: resolved at run time (uname -m)
            "single",
            "Target CPU architecture",
            shown_default="`uname -m`",
            short="-a",
            metavar="NAME",
            example="x86_64",
            doc=(
                "CPU architecture of the image to pick from the stream metadata. Defaults to the "
                "architecture of the running machine."
            ),
        ),
    ] = None
    platform: Annotated[
        str | None,
        Opt(
            "single",
            "Override the Ignition platform ID",
            shown_default="— (`metal`)",
            value=PLATFORM,
            short="-p",
            metavar="NAME",
            karg="platform_id",
            example="qemu",
            doc=(
                "Set the Ignition platform ID of the installed system (for example qemu or metal) "
                "in its boot entries, and apply the console settings the image lists for that "
                "platform."
            ),
        ),
    ] = None
    console: Annotated[
        tuple[Console, ...],
        Opt(
            "list",
            "Kernel and bootloader console (e.g. ttyS0,115200n8)",
            value=CONSOLE,
            metavar="SPEC",
            example=["tty0", "ttyS0,115200n8"],
            doc=(
                "A kernel and GRUB console for the installed system, in the kernel's console= "
                "syntax without the console= prefix (tty0, ttyS0,115200n8). Repeat the option for "
                "several consoles; the last one becomes /dev/console."
            ),
        ),
    ] = ()
    firstboot_args: Annotated[
        str | None,
        Opt(
            "single",
            "Additional first-boot kernel arguments",
            value=KARGS_TEXT,
            metavar="ARGS",
            in_config=False,
            hidden=True,
            doc=(
                "Kernel arguments added for the first boot only (network settings for Ignition, "
                "for example)."
            ),
        ),
    ] = None
    append_karg: Annotated[
        tuple[str, ...],
        Opt(
            "list",
            "Append default kernel arg",
            value=KARG,
            metavar="ARG",
            example=["nosmt"],
            doc=(
                "Add a kernel argument to the installed system's default kernel command line. "
                "Repeatable."
            ),
        ),
    ] = ()
    delete_karg: Annotated[
        tuple[str, ...],
        Opt(
            "list",
            "Delete default kernel arg",
            value=KARG,
            metavar="ARG",
            example=["mitigations=auto,nosmt"],
            doc=(
                "Remove a kernel argument from the installed system's default kernel command "
                "line. Repeatable."
            ),
        ),
    ] = ()
    copy_network: Annotated[
        bool,
        Opt(
            "flag",
            "Copy network config from install environment",
            short="-n",
            example=True,
            doc=(
                "Copy the NetworkManager keyfiles of the running system (see --network-dir) to "
                "the installed system, which uses them on its first boot."
            ),
        ),
    ] = False
    network_dir: Annotated[
        str,
        Opt(
            "single",
            f"Source directory for --copy-network [default: {DEFAULT_NETWORK_DIR}]",
            metavar="PATH",
            example=DEFAULT_NETWORK_DIR,
            doc="Where --copy-network reads NetworkManager keyfiles from.",
        ),
    ] = DEFAULT_NETWORK_DIR
    save_partlabel: Annotated[
        tuple[str, ...],
        Opt(
            "list",
            "Save partitions with this label glob",
            metavar="LABEL",
            karg="save_partlabel",
            example=["data*"],
            doc=(
                "Keep existing partitions whose label matches this glob (for example data*) "
                "instead of overwriting them. Repeatable; values may also be comma-separated."
            ),
        ),
    ] = ()
    save_partindex: Annotated[
        tuple[str, ...],
        Opt(
            "list",
            "Save partitions with this number or range",
            metavar="ID",
            karg="save_partindex",
            example=["5-"],
            doc=(
                "Keep existing partitions with this number, or a range such as 5- or 2-4. "
                "Repeatable; values may also be comma-separated."
            ),
        ),
    ] = ()
    offline: Annotated[
        bool,
        Opt(
            "flag",
            "Force offline installation",
            advanced=True,
            example=True,
            doc=(
                "Install only from the image data on the live media (osmet), never from the "
                "network; fail when there is none for this disk's sector size and architecture."
            ),
        ),
    ] = False
    insecure: Annotated[
        bool,
        Opt(
            "flag",
            "Allow unsigned image",
            advanced=True,
            example=True,
            doc=(
                "Do not verify the image signature at all: neither a missing signature nor a "
                "present one is checked. Use only for images from a trusted source, such as a "
                "local build."
            ),
        ),
    ] = False
    insecure_ignition: Annotated[
        bool,
        Opt(
            "flag",
            "Allow Ignition URL without HTTPS or hash",
            advanced=True,
            example=True,
            doc="Allow --ignition-url over plain HTTP without --ignition-hash.",
        ),
    ] = False
    stream_base_url: Annotated[
        str | None,
        Opt(
            "single",
            "Base URL for stream metadata",
            shown_default="NestOS streams",
            value=URL,
            metavar="URL",
            advanced=True,
            example="https://nestos.org.cn/NestOS-release/streams/",
            doc=(
                "Fetch stream metadata from this base URL (STREAM.json is appended) instead of "
                "the profile's default server."
            ),
        ),
    ] = None
    preserve_on_error: Annotated[
        bool,
        Opt(
            "flag",
            "Don't clear partition table on error",
            advanced=True,
            example=True,
            doc=(
                "On failure, leave the partially written disk as it is instead of wiping its "
                "partition table (useful for debugging)."
            ),
        ),
    ] = False
    fetch_retries: Annotated[
        FetchRetries,
        Opt(
            "single",
            'Fetch retries, or string "infinite"',
            value=RETRIES,
            metavar="N",
            advanced=True,
            example=3,
            doc=(
                "How many times to retry a failed download (stream metadata, signature, image), "
                "waiting longer after each failure; infinite never gives up. Interrupted "
                "transfers resume where they stopped."
            ),
        ),
    ] = 0
    secure_ipl: Annotated[
        bool,
        Opt(
            "flag",
            "Enable IBM Secure IPL (s390x)",
            advanced=True,
            example=True,
            doc="Enable IBM Secure IPL on s390x. Refused on other architectures.",
        ),
    ] = False
    # --- beyond upstream ---------------------------------------------------------
    keyring: Annotated[
        tuple[str, ...],
        Opt(
            "list",
            "Also trust the armored public keys in this file",
            metavar="FILE",
            advanced=True,
            example=["/etc/nestos/keys/distributor.asc"],
            doc=(
                "Also trust the armored OpenPGP public keys in this file for this install, after "
                "the keys in the key directories (/usr/share/nestos-installer/keys.d/ and "
                "/etc/nestos-installer/keys.d/). Repeatable."
            ),
        ),
    ] = ()
    fetch_timeout: Annotated[
        float | None,
        Opt(
            "single",
            "Seconds to wait for a connection or for more data",
            value=TIMEOUT,
            metavar="SECS",
            advanced=True,
            shown_default="`300`",
            example=600,
        ),
    ] = None
    dry_run: Annotated[
        bool,
        Opt(
            "flag",
            "Print the install plan and write nothing",
            in_config=False,
            advanced=True,
            doc=(
                "Check everything (options, source, signature availability, target, partitions to "
                "keep) and print what would be done; write nothing."
            ),
        ),
    ] = False
    osmet_dir: Annotated[
        tuple[str, ...],
        Opt(
            "list",
            "Look for osmet files in this directory",
            metavar="DIR",
            in_config=False,
            hidden=True,
        ),
    ] = ()
    ostree_repo: Annotated[
        str | None,
        Opt(
            "single",
            "OSTree repository holding osmet objects",
            metavar="DIR",
            in_config=False,
            hidden=True,
        ),
    ] = None
    dest_device: Annotated[
        str | None,
        Opt(
            "positional",
            "Destination device (a block device, or a regular file to build a disk image)",
            metavar="DEST_DEVICE",
            example="/dev/vda",
            doc=(
                "The disk to install to, or a regular file: an existing file is overwritten and "
                "grows to the image's size (/boot edits on a file need root, for the loop "
                "device)."
            ),
        ),
    ] = None

    # --- derived values ---------------------------------------------------------

    @property
    def effective_architecture(self) -> str:
        return self.architecture or default_architecture()

    @property
    def retries(self) -> int | None:
        """--fetch-retries as the network layer counts it: None means no limit."""
        return None if self.fetch_retries == INFINITE else int(self.fetch_retries)

    def to_args(self) -> list[str]:
        """The argv upstream would rebuild from this config (its serialization)."""
        args: list[str] = []
        tail: list[str] = []
        for opt in OPTIONS:
            value = getattr(self, opt.field)
            out = tail if opt.field == "firstboot_args" else args
            if opt.kind == "flag":
                if value:
                    out.append(opt.flag)
            elif opt.kind == "list":
                for item in value:
                    out += [opt.flag, str(item)]
            elif opt.kind == "positional":
                if value is not None:
                    out.append(value)
            elif value is not None and not is_default(opt, value):
                out += [opt.flag, str(value)]
        return args + tail

    def to_yaml_dict(self) -> dict[str, Any]:
        """Only non-default config-file keys, in struct order (for example configs)."""
        out: dict[str, Any] = {}
        for opt in OPTIONS:
            if not opt.in_config:
                continue
            value = getattr(self, opt.field)
            if opt.kind == "flag":
                if value:
                    out[opt.key] = True
            elif opt.kind == "list":
                if value:
                    out[opt.key] = [str(v) for v in value]
            elif value is not None and not is_default(opt, value):
                out[opt.key] = value if isinstance(value, str | int) else str(value)
        return out


# ---- one validator for every field, driven by the field's Opt ---------------------------


def coerce(field: str, v: Any) -> Any:
    """The value of `field` as the model keeps it (ValueError: the reason, one line).

    Every layer passes through it: the pydantic model's one validator calls it for
    config files, install/config.py calls it directly for arguments (the command
    line, whose values argparse already ran through the same parsers, and the
    kernel command line).
    """
    opt = BY_FIELD[field]
    if opt.kind == "flag":
        if not isinstance(v, bool):
            raise ValueError("expected a boolean (true/false)")
        return v
    if opt.kind == "list":
        if isinstance(v, str | bytes) or not isinstance(v, list | tuple):
            raise ValueError("expected a list of strings")
        return tuple(_scalar(opt, item, "expected a list of strings") for item in v)
    if v is None or isinstance(v, list | dict | tuple):
        return v  # None: unset; containers: pydantic's own type error
    return _scalar(opt, v, "expected a string, found a boolean")


def _scalar(opt: Opt, v: Any, bad: str) -> Any:
    """A YAML scalar, CLI text or already-parsed value, through the option's parser."""
    if isinstance(v, bool) or v is None or isinstance(v, list | dict | tuple):
        raise ValueError(bad)
    if isinstance(v, int | float):
        v = str(v)
    if isinstance(v, str):
        return parse_value(opt.value, v)
    return v  # parsed already (the command line, a merged layer) or left to pydantic


# Each field's declared type, its Opt included (Annotated metadata).
_HINTS: dict[str, Any] = typing.get_type_hints(InstallConfig, include_extras=True)


def _table() -> tuple[Opt, ...]:
    out = []
    for f in dataclasses.fields(InstallConfig):
        opt = next(m for m in _HINTS[f.name].__metadata__ if isinstance(m, Opt))
        out.append(replace(opt, field=f.name, default=f.default))
    return tuple(out)


OPTIONS: tuple[Opt, ...] = _table()
BY_FIELD: dict[str, Opt] = {o.field: o for o in OPTIONS}
CONFIG_KEYS: tuple[str, ...] = tuple(o.key for o in OPTIONS if o.in_config)


@functools.cache
def validation_model() -> type[BaseModel]:
    """The pydantic model of one layer of config-file or kernel-argument values, built
    from the options table on first use (importing pydantic and building a validator
    for thirty fields is a tenth of a second): same fields, types and defaults as
    InstallConfig, YAML keys as aliases, unknown keys refused, `coerce` for every
    field."""
    from pydantic import ConfigDict, create_model, field_validator
    from pydantic_core.core_schema import ValidationInfo

    def check(cls: type, v: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        return coerce(info.field_name, v)

    fields: dict[str, Any] = {o.field: (_HINTS[o.field], o.default) for o in OPTIONS}
    return create_model(
        "InstallConfig",
        __config__=ConfigDict(
            frozen=True,
            extra="forbid",
            populate_by_name=True,
            alias_generator=_kebab,
            arbitrary_types_allowed=True,
        ),
        __validators__={"coerce": field_validator("*", mode="before")(check)},
        **fields,
    )


def groups() -> dict[str, list[Opt]]:
    """Exclusive groups, members in table order."""
    out: dict[str, list[Opt]] = {}
    for opt in OPTIONS:
        if opt.group is not None:
            out.setdefault(opt.group, []).append(opt)
    return out


# Pairs that conflict (clap `conflicts_with`), derived from the groups.
CONFLICTS: tuple[tuple[str, str], ...] = tuple(
    (a.field, b.field)
    for members in groups().values()
    for a, b in itertools.combinations(members, 2)
)


def default_of(opt: Opt) -> Any:
    if opt.field == "architecture":
        return default_architecture()
    return opt.default


def is_default(opt: Opt, value: Any) -> bool:
    return bool(value == default_of(opt))


def iter_options(*, config_only: bool = False) -> Iterator[Opt]:
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


def options_table() -> str:
    """The Markdown table of config-file keys in docs/config-file.md (a test keeps the
    two equal; print this to regenerate it)."""
    rows = ["| key | option | value | default | meaning |", "|---|---|---|---|---|"]
    for opt in iter_options(config_only=True):
        if opt.kind == "positional":
            flag = str(opt.metavar)
        else:
            flag = f"`{opt.flag}`" + (f" / `{opt.short}`" if opt.short else "")
        if opt.kind == "list":
            value = "list of strings"
        elif opt.kind == "flag":
            value = "`true`"
        elif opt.value is RETRIES:
            value = "number or `infinite`"
        elif opt.value is TIMEOUT:
            value = "seconds"
        else:
            value = "string"
        if opt.shown_default:
            default = opt.shown_default
        elif opt.kind == "flag":
            default = "off"
        elif opt.default is None or opt.default == ():
            default = "—"
        else:
            default = f"`{opt.default}`"
        rows.append(f"| `{opt.key}` | {flag} | {value} | {default} | {opt.help} |")
    return "\n".join(rows) + "\n"


def _yaml_scalar(value: Any) -> str:
    text = str(value)
    if text and (text[0] in "!&*{}[]|>'\"%@`#,?:-" or ": " in text or " #" in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text

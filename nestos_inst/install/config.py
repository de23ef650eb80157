"""The install configuration model and the layer merge of compat-spec §7.9.

Upstream merges config files by re-serializing everything to argv and re-parsing. We
merge typed layers directly (files, kernel command line, CLI), with the same visible
semantics: lists accumulate in layer order, single values are last-wins, flags can only
be turned on, a value equal to the default never overrides anything, and two
destination devices are an error. `to_args()` still renders the argv upstream would
build, for the `Running with arguments:` line.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import NestosError, flat_chain
from ..formats.kargs import check_karg, check_platform, check_text, shown
from ..io.files import CONFIG_FILE_LIMIT, read_limited
from ..options import (
    BY_FIELD,
    CONFIG_KEYS,
    CONFLICTS,
    DEFAULT_NETWORK_DIR,
    OPTIONS,
    Option,
    default_architecture,
)
from .console import normalize_console
from .ignition import normalize_hash

FetchRetries = int | Literal["infinite"]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class InstallConfig(BaseModel):
    """Everything `install` needs, validated and normalized; immutable once built."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=_kebab,
    )

    stream: str | None = None
    image_url: str | None = None
    image_file: str | None = None
    ignition_file: str | None = None
    ignition_url: str | None = None
    ignition_hash: str | None = None
    architecture: str | None = None
    platform: str | None = None
    console: tuple[str, ...] = ()
    firstboot_args: str | None = None
    append_karg: tuple[str, ...] = ()
    delete_karg: tuple[str, ...] = ()
    copy_network: bool = False
    network_dir: str = DEFAULT_NETWORK_DIR
    save_partlabel: tuple[str, ...] = ()
    save_partindex: tuple[str, ...] = ()
    offline: bool = False
    insecure: bool = False
    insecure_ignition: bool = False
    stream_base_url: str | None = None
    preserve_on_error: bool = False
    fetch_retries: FetchRetries = 0
    secure_ipl: bool = False
    keyring: tuple[str, ...] = ()
    dry_run: bool = False
    osmet_dir: tuple[str, ...] = ()
    ostree_repo: str | None = None
    dest_device: str | None = None

    # --- value coercion: YAML scalars such as `3` are accepted as strings ------------

    @field_validator(
        "stream",
        "image_url",
        "image_file",
        "ignition_file",
        "ignition_url",
        "ignition_hash",
        "architecture",
        "platform",
        "firstboot_args",
        "network_dir",
        "stream_base_url",
        "ostree_repo",
        "dest_device",
        mode="before",
    )
    @classmethod
    def _scalar_as_str(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("expected a string, found a boolean")
        if isinstance(v, int | float):
            return str(v)
        return v

    @field_validator(
        "console",
        "append_karg",
        "delete_karg",
        "save_partlabel",
        "save_partindex",
        "keyring",
        "osmet_dir",
        mode="before",
    )
    @classmethod
    def _list_of_str(cls, v: Any) -> Any:
        if isinstance(v, str | bytes) or not isinstance(v, list | tuple):
            raise ValueError("expected a list of strings")
        out = []
        for item in v:
            if isinstance(item, bool) or item is None or isinstance(item, list | dict):
                raise ValueError("expected a list of strings")
            out.append(str(item) if isinstance(item, int | float) else item)
        return tuple(out)

    @field_validator(
        "copy_network",
        "offline",
        "insecure",
        "insecure_ignition",
        "preserve_on_error",
        "secure_ipl",
        "dry_run",
        mode="before",
    )
    @classmethod
    def _strict_bool(cls, v: Any) -> Any:
        if not isinstance(v, bool):
            raise ValueError("expected a boolean (true/false)")
        return v

    @field_validator("console")
    @classmethod
    def _consoles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(normalize_console(s) for s in v)
        except NestosError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("platform")
    @classmethod
    def _platform(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_platform(v)
            except NestosError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("append_karg", "delete_karg")
    @classmethod
    def _kargs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        try:
            for karg in v:
                check_karg(karg)
        except NestosError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("firstboot_args")
    @classmethod
    def _firstboot(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_text(v, "first-boot kernel arguments")
            except NestosError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("ignition_hash")
    @classmethod
    def _hash(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return normalize_hash(v)
        except NestosError as exc:
            raise ValueError(flat_chain(exc)) from None

    @field_validator("image_url", "ignition_url", "stream_base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        return check_url(v)

    @field_validator("fetch_retries", mode="before")
    @classmethod
    def _retries(cls, v: Any) -> Any:
        return parse_fetch_retries(v)

    # --- derived values ---------------------------------------------------------

    @property
    def effective_architecture(self) -> str:
        return self.architecture or default_architecture()

    def to_args(self) -> list[str]:
        """The argv upstream would rebuild from this config (§7.9 serialization)."""
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
                    out += [opt.flag, item]
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
                    out[opt.key] = list(value)
            elif value is not None and not is_default(opt, value):
                out[opt.key] = value
        return out


def check_url(url: str) -> str:
    """Reject strings that are not absolute URLs, as upstream's URL type does."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not (parts.netloc or parts.scheme == "file"):
        raise ValueError(f"invalid URL '{url}': relative URL without a base")
    if parts.scheme in ("http", "https") and not parts.path:
        return urllib.parse.urlunsplit(parts._replace(path="/"))
    return url


def parse_fetch_retries(v: Any) -> FetchRetries:
    """`N` (non-negative) or the string `infinite`."""
    if isinstance(v, bool):
        raise ValueError('expected a number or "infinite"')
    if isinstance(v, int):
        n = v
    elif isinstance(v, str):
        if v == "infinite":
            return "infinite"
        if not v.isdigit() or not v.isascii():
            raise ValueError(f"invalid fetch retries '{v}': expected a number or \"infinite\"")
        n = int(v)
    else:
        raise ValueError('expected a number or "infinite"')
    if n < 0:
        raise ValueError(f"invalid fetch retries '{v}': expected a number or \"infinite\"")
    return n


def default_of(opt: Option) -> Any:
    if opt.field == "architecture":
        return default_architecture()
    return opt.default


def is_default(opt: Option, value: Any) -> bool:
    return bool(value == default_of(opt))


def _render_validation(exc: ValidationError) -> NestosError:
    """pydantic errors as one NestosError naming each offending key."""
    lines = []
    for err in exc.errors():
        loc = err.get("loc", ())
        key = _kebab(str(loc[0])) if loc else "?"
        if err.get("type") == "extra_forbidden":
            lines.append(f"unknown field `{key}`")
            continue
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        lines.append(f"invalid value for `{key}`: {msg}")
    return NestosError("\n".join(lines))


def _refuse_undecodable(layer: Mapping[str, Any]) -> None:
    """Values from argv or /proc/cmdline may hold bytes that are not UTF-8 (Python
    keeps them as lone surrogates); name the key instead of failing inside pydantic."""
    for key, value in layer.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    name = _kebab(str(key))
                    raise NestosError(
                        f"invalid value for `{name}`: '{shown(item)}' is not valid UTF-8"
                    ) from None


def validate_layer(layer: Mapping[str, Any], origin: str) -> InstallConfig:
    """One layer alone (a file, the kernel command line, the CLI)."""
    try:
        _refuse_undecodable(layer)
    except NestosError as exc:
        raise NestosError(f"parsing {origin}") from exc
    try:
        return InstallConfig.model_validate(dict(layer))
    except ValidationError as exc:
        raise NestosError(f"parsing {origin}") from _render_validation(exc)


def merge_layers(
    layers: Sequence[Mapping[str, Any]], origins: Sequence[str] | None = None
) -> InstallConfig:
    """Fold layers (lowest precedence first) into one InstallConfig (§7.9 semantics).

    Keys may be YAML keys (`image-url`) or field names (`image_url`). Lists accumulate
    in layer order; single values are last-wins; flags only turn on; a value equal to
    the default is dropped; a second destination device is an error.
    """
    names = list(origins) if origins is not None else []
    names += [f"configuration layer {i + 1}" for i in range(len(names), len(layers))]
    merged: dict[str, Any] = {}
    dest_from: str | None = None
    for layer, origin in zip(layers, names, strict=False):
        part = validate_layer(layer, origin)
        for field in sorted(part.model_fields_set, key=_FIELD_ORDER.__getitem__):
            opt = BY_FIELD[field]
            value = getattr(part, field)
            if opt.kind == "list":
                merged[field] = tuple(merged.get(field, ())) + tuple(value)
            elif opt.kind == "flag":
                if value:
                    merged[field] = True
            elif opt.kind == "positional":
                if value is None:
                    continue
                if dest_from is not None:
                    raise NestosError("reprocessing command-line arguments") from NestosError(
                        "the argument '[DEST_DEVICE]' cannot be used multiple times "
                        f"(given in {dest_from} and in {origin})"
                    )
                dest_from = origin
                merged[field] = value
            elif value is not None and not is_default(opt, value):
                merged[field] = value
    cfg = InstallConfig.model_validate(merged)
    check_conflicts(cfg, "reprocessing command-line arguments")
    return cfg


_FIELD_ORDER = {opt.field: i for i, opt in enumerate(OPTIONS)}


def check_conflicts(cfg: InstallConfig, context: str) -> None:
    for a, b in CONFLICTS:
        if getattr(cfg, a) is not None and getattr(cfg, b) is not None:
            oa, ob = BY_FIELD[a], BY_FIELD[b]
            raise NestosError(context) from NestosError(
                f"the argument '{ob.flag} <{ob.metavar}>' cannot be used with "
                f"'{oa.flag} <{oa.metavar}>'"
            )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Parse one YAML config file into a layer; errors name the file and the key."""
    context = f"parsing config file {path}"
    text = read_limited(path, CONFIG_FILE_LIMIT, message=f"opening config file {path}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NestosError(context) from NestosError(str(exc))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NestosError(context) from NestosError("expected a mapping of option names to values")
    for key in data:
        if not isinstance(key, str) or key not in CONFIG_KEYS:
            raise NestosError(context) from NestosError(f"unknown field `{key}`")
    validate_layer(data, f"config file {path}")
    return dict(data)

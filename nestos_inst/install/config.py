"""Merging install configuration layers (files, kernel command line, CLI).

Upstream merges config files by re-serializing everything to argv and re-parsing. We
merge typed layers directly, with the same visible semantics
(docs/compat.md#install-config-files): lists accumulate in layer order, single values
are last-wins, flags can only be turned on, a value equal to the default never
overrides anything, and two destination devices are an error. The options themselves,
their types and their parsers are declared once, in nestos_inst.install.options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, NestosError
from ..formats.kargs import shown
from ..io.files import CONFIG_FILE_LIMIT, read_limited
from .options import (
    BY_FIELD,
    CONFIG_KEYS,
    CONFLICTS,
    OPTIONS,
    InstallConfig,
    coerce,
    is_default,
    validation_model,
)

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "ArgumentLayer",
    "InstallConfig",
    "check_conflicts",
    "load_config_file",
    "merge_layers",
    "validate_layer",
]


class ArgumentLayer(dict[str, Any]):
    """A layer of arguments: the installer's command line (values argparse already ran
    through the options' parsers) or the kernel command line (text), keyed by field
    or YAML key. Arguments can only be text, flags or lists of text; for those the
    options' own validator (`options.coerce`) gives the pydantic model's results and
    messages (a property test compares both routes), so such a layer is checked by it
    alone and an install from arguments never imports pydantic. Config files, whose
    YAML can hold anything, always go through the model."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


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
    return InstallConfig(**_checked(layer, origin))


def _checked(layer: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """The values `layer` sets, by field name, validated and parsed."""
    try:
        _refuse_undecodable(layer)
    except NestosError as exc:
        raise NestosError(f"parsing {origin}") from exc
    if isinstance(layer, ArgumentLayer):
        return _checked_arguments(layer, origin)
    from pydantic import ValidationError

    try:
        part = validation_model().model_validate(dict(layer))
    except ValidationError as exc:
        raise NestosError(f"parsing {origin}") from _render_validation(exc)
    return {field: getattr(part, field) for field in part.model_fields_set}


def _checked_arguments(layer: ArgumentLayer, origin: str) -> dict[str, Any]:
    """validation_model()'s checks for an ArgumentLayer: the same validator, the same
    message for each offending key (pydantic's order: table order, then unknown keys)."""
    given = {_field_name(key): value for key, value in layer.items()}
    out: dict[str, Any] = {}
    lines = []
    for opt in OPTIONS:
        if opt.field in given:
            try:
                out[opt.field] = coerce(opt.field, given[opt.field])
            except ValueError as exc:
                lines.append(f"invalid value for `{opt.key}`: {exc}")
    lines += [f"unknown field `{_kebab(key)}`" for key in given if key not in BY_FIELD]
    if lines:
        raise NestosError(f"parsing {origin}") from NestosError("\n".join(lines))
    return out


def _field_name(key: object) -> str:
    """A layer's key (field name or YAML key) as the field name."""
    name = str(key)
    return name if name in BY_FIELD else name.replace("-", "_")


def merge_layers(
    layers: Sequence[Mapping[str, Any]], origins: Sequence[str] | None = None
) -> InstallConfig:
    """Fold layers (lowest precedence first) into one InstallConfig.

    Keys may be YAML keys (`image-url`) or field names (`image_url`). Lists accumulate
    in layer order; single values are last-wins; flags only turn on; a value equal to
    the default is dropped; a second destination device is an error.
    """
    names = list(origins) if origins is not None else []
    names += [f"configuration layer {i + 1}" for i in range(len(names), len(layers))]
    merged: dict[str, Any] = {}
    dest_from: str | None = None
    for layer, origin in zip(layers, names, strict=False):
        part = _checked(layer, origin)
        for field in sorted(part, key=_FIELD_ORDER.__getitem__):
            opt = BY_FIELD[field]
            value = part[field]
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
    cfg = InstallConfig(**merged)  # every value was checked with its layer
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
    from ..formats import yamldoc  # PyYAML: only when there is a file to read

    context = f"parsing config file {path}"
    text = read_limited(path, CONFIG_FILE_LIMIT, message=f"opening config file {path}")
    try:
        data = yamldoc.load(text)
    except FormatError as exc:
        raise NestosError(context) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NestosError(context) from NestosError("expected a mapping of option names to values")
    for key in data:
        if not isinstance(key, str) or key not in CONFIG_KEYS:
            raise NestosError(context) from NestosError(f"unknown field `{key}`")
    validate_layer(data, f"config file {path}")
    return dict(data)

"""Ignition spec 3.x configs: parse and check user fragments, build the generated one.

User fragments (`--dest-ignition`, `--live-ignition`) must be real Ignition configs of
a stable 3.x spec: a typo'd key or a wrong type found at boot, inside the live system,
would cost the user an install. So each fragment is checked against the key schema of
its own spec version here: a wrong type or a missing required key is an error, a key
that version does not know is a warning (`Warning parsing <path>: unused key: $.a.b`)
and is dropped, exactly as Ignition itself would ignore it. What we embed is the
normalised fragment (compact JSON, keys sorted, unknown keys and nulls dropped), not
the user's bytes.

The generated config (the live system's config and, with several fragments or a CA,
the destination's) always uses spec 3.3.0: the newest spec that every Ignition still
shipped by the distributions we boot reads (Debian 12 ships Ignition 2.14). Resources
are embedded as gzip'd `data:` URLs so that the config needs no network.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import NestosError
from ..report import say

GENERATED_VERSION = "3.3.0"
# Stable spec versions (minor numbers) and the experimental one Ignition accepts.
_STABLE = {f"3.{n}.0": n for n in range(6)}
_EXPERIMENTAL = {"3.6.0-experimental": 6}

_S, _I, _B = "string", "integer", "boolean"


def _list(item: str) -> str:
    return f"[{item}]"


# Object name -> key -> (type, first spec minor that has it). Types are _S/_I/_B, an
# object name, or `[T]` for a list of T. Keys within an object are in the order the
# normalised output uses (alphabetical, as Ignition's own generated types).
_F = dict[str, tuple[str, int]]
_NODE: _F = {
    "group": ("NodeOwner", 0),
    "overwrite": (_B, 0),
    "path": (_S, 0),
    "user": ("NodeOwner", 0),
}
SCHEMA: dict[str, _F] = {
    "Config": {
        "ignition": ("Ignition", 0),
        "kernelArguments": ("KernelArguments", 3),
        "passwd": ("Passwd", 0),
        "storage": ("Storage", 0),
        "systemd": ("Systemd", 0),
    },
    "Ignition": {
        "config": ("IgnitionConfig", 0),
        "proxy": ("Proxy", 1),
        "security": ("Security", 0),
        "timeouts": ("Timeouts", 0),
        "version": (_S, 0),
    },
    "IgnitionConfig": {"merge": (_list("Resource"), 0), "replace": ("Resource", 0)},
    "Proxy": {"httpProxy": (_S, 1), "httpsProxy": (_S, 1), "noProxy": (_list(_S), 1)},
    "Security": {"tls": ("Tls", 0)},
    "Tls": {"certificateAuthorities": (_list("Resource"), 0)},
    "Timeouts": {"httpResponseHeaders": (_I, 0), "httpTotal": (_I, 0)},
    "Resource": {
        "compression": (_S, 0),
        "httpHeaders": (_list("HttpHeader"), 1),
        "source": (_S, 0),
        "verification": ("Verification", 0),
    },
    "HttpHeader": {"name": (_S, 1), "value": (_S, 1)},
    "Verification": {"hash": (_S, 0)},
    "KernelArguments": {"shouldExist": (_list(_S), 3), "shouldNotExist": (_list(_S), 3)},
    "Passwd": {"groups": (_list("Group"), 0), "users": (_list("User"), 0)},
    "Group": {
        "gid": (_I, 0),
        "name": (_S, 0),
        "passwordHash": (_S, 0),
        "shouldExist": (_B, 4),
        "system": (_B, 0),
    },
    "User": {
        "gecos": (_S, 0),
        "groups": (_list(_S), 0),
        "homeDir": (_S, 0),
        "name": (_S, 0),
        "noCreateHome": (_B, 0),
        "noLogInit": (_B, 0),
        "noUserGroup": (_B, 0),
        "passwordHash": (_S, 0),
        "primaryGroup": (_S, 0),
        "shell": (_S, 0),
        "shouldExist": (_B, 4),
        "sshAuthorizedKeys": (_list(_S), 0),
        "system": (_B, 0),
        "uid": (_I, 0),
    },
    "Storage": {
        "directories": (_list("Directory"), 0),
        "disks": (_list("Disk"), 0),
        "files": (_list("File"), 0),
        "filesystems": (_list("Filesystem"), 0),
        "links": (_list("Link"), 0),
        "luks": (_list("Luks"), 2),
        "raid": (_list("Raid"), 0),
    },
    "Disk": {"device": (_S, 0), "partitions": (_list("Partition"), 0), "wipeTable": (_B, 0)},
    "Partition": {
        "guid": (_S, 0),
        "label": (_S, 0),
        "number": (_I, 0),
        "resize": (_B, 2),
        "shouldExist": (_B, 0),
        "sizeMiB": (_I, 0),
        "startMiB": (_I, 0),
        "typeGuid": (_S, 0),
        "wipePartitionEntry": (_B, 0),
    },
    "Filesystem": {
        "device": (_S, 0),
        "format": (_S, 0),
        "label": (_S, 0),
        "mountOptions": (_list(_S), 1),
        "options": (_list(_S), 0),
        "path": (_S, 0),
        "uuid": (_S, 0),
        "wipeFilesystem": (_B, 0),
    },
    "Raid": {
        "devices": (_list(_S), 0),
        "level": (_S, 0),
        "name": (_S, 0),
        "options": (_list(_S), 0),
        "spares": (_I, 0),
    },
    "NodeOwner": {"id": (_I, 0), "name": (_S, 0)},
    "File": {
        "append": (_list("Resource"), 0),
        "contents": ("Resource", 0),
        "group": ("NodeOwner", 0),
        "mode": (_I, 0),
        "overwrite": (_B, 0),
        "path": (_S, 0),
        "user": ("NodeOwner", 0),
    },
    "Directory": {**_NODE, "mode": (_I, 0)},
    "Link": {**_NODE, "hard": (_B, 0), "target": (_S, 0)},
    "Luks": {
        "cex": ("Cex", 5),
        "clevis": ("Clevis", 2),
        "device": (_S, 2),
        "discard": (_B, 4),
        "keyFile": ("Resource", 2),
        "label": (_S, 2),
        "name": (_S, 2),
        "openOptions": (_list(_S), 4),
        "options": (_list(_S), 2),
        "uuid": (_S, 2),
        "wipeVolume": (_B, 2),
    },
    "Cex": {"enabled": (_B, 5)},
    "Clevis": {
        "custom": ("ClevisCustom", 2),
        "tang": (_list("Tang"), 2),
        "threshold": (_I, 2),
        "tpm2": (_B, 2),
    },
    "ClevisCustom": {"config": (_S, 2), "needsNetwork": (_B, 2), "pin": (_S, 2)},
    "Tang": {"advertisement": (_S, 4), "thumbprint": (_S, 2), "url": (_S, 2)},
    "Systemd": {"units": (_list("Unit"), 0)},
    "Unit": {
        "contents": (_S, 0),
        "dropins": (_list("Dropin"), 0),
        "enabled": (_B, 0),
        "mask": (_B, 0),
        "name": (_S, 0),
    },
    "Dropin": {"contents": (_S, 0), "name": (_S, 0)},
}
# Keys Ignition refuses to do without (its Go types make them non-optional).
REQUIRED: dict[str, tuple[str, ...]] = {
    "Config": ("ignition",),
    "Ignition": ("version",),
    "File": ("path",),
    "Directory": ("path",),
    "Link": ("path",),
    "Disk": ("device",),
    "Filesystem": ("device",),
    "Raid": ("name",),
    "Luks": ("name",),
    "User": ("name",),
    "Group": ("name",),
    "Unit": ("name",),
    "Dropin": ("name",),
    "HttpHeader": ("name",),
    "Tang": ("url",),
}
_MAX_DEPTH = 32


class IgnitionError(NestosError):
    """A fragment that is not an Ignition config we can embed."""


@dataclass
class ParsedConfig:
    """A checked fragment: its spec version, the normalised object, unused keys."""

    version: str
    config: dict[str, Any]
    unused: list[str] = field(default_factory=list)

    def serialize(self) -> bytes:
        return to_json(self.config)


def to_json(obj: Any) -> bytes:
    """Compact JSON plus a newline: the form every embedded config takes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def _type_name(spec: str) -> str:
    if spec.startswith("["):
        return "a list"
    return {"string": "a string", "integer": "an integer", "boolean": "a boolean"}.get(
        spec, "an object"
    )


class _Checker:
    """Walks a config against the schema of one spec minor version."""

    def __init__(self, minor: int) -> None:
        self.minor = minor
        self.unused: list[str] = []

    def value(self, value: Any, spec: str, path: str, depth: int) -> Any:
        """The normalised value, or IgnitionError naming `path`."""
        if depth > _MAX_DEPTH:
            raise IgnitionError(f"{path}: nested too deeply")
        if spec == _S:
            ok = isinstance(value, str)
        elif spec == _I:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif spec == _B:
            ok = isinstance(value, bool)
        elif spec.startswith("["):
            if not isinstance(value, list):
                raise IgnitionError(f"{path}: expected a list")
            item = spec[1:-1]
            return [self.value(v, item, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        else:
            return self.object(value, spec, path, depth)
        if not ok:
            raise IgnitionError(f"{path}: expected {_type_name(spec)}")
        return value

    def object(self, value: Any, name: str, path: str, depth: int) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise IgnitionError(f"{path}: expected an object")
        fields = SCHEMA[name]
        out: dict[str, Any] = {}
        for key in value:
            known = fields.get(key)
            if known is None or known[1] > self.minor:
                self.unused.append(f"{path}.{key}")
        for key, (spec, since) in fields.items():
            if since > self.minor or key not in value or value[key] is None:
                continue
            out[key] = self.value(value[key], spec, f"{path}.{key}", depth + 1)
        for key in REQUIRED.get(name, ()):
            if key not in out:
                raise IgnitionError(f"{path}: missing field `{key}`")
        return out


def check_config(data: bytes) -> ParsedConfig:
    """Check raw bytes as an Ignition 3.x config; raise IgnitionError on failure."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise IgnitionError(str(exc)) from None
    if not isinstance(obj, dict):
        raise IgnitionError("expected a JSON object")
    ign = obj.get("ignition")
    version = ign.get("version") if isinstance(ign, dict) else None
    if not isinstance(version, str):
        raise IgnitionError("$.ignition.version: missing field `version`")
    minor = _STABLE.get(version, _EXPERIMENTAL.get(version))
    if minor is None:
        raise IgnitionError(f"unsupported config version {version!r}")
    checker = _Checker(minor)
    config = checker.object(obj, "Config", "$", 0)
    return ParsedConfig(version, config, checker.unused)


def parse_file(path: str, data: bytes) -> ParsedConfig:
    """A fragment read from `path`; unused keys are reported as warnings."""
    try:
        parsed = check_config(data)
    except IgnitionError as exc:
        raise NestosError(f"parsing Ignition config {path}") from exc
    for key in parsed.unused:
        say(f"Warning parsing {path}: unused key: {key}")
    return parsed


# ---- generated config ------------------------------------------------------------------


def resource(data: bytes) -> dict[str, Any]:
    """An inline resource: gzip (level 9, no timestamp) in a base64 `data:` URL."""
    payload = base64.b64encode(gzip.compress(data, compresslevel=9, mtime=0)).decode("ascii")
    return {"compression": "gzip", "source": f"data:;base64,{payload}"}


def decode_resource(res: dict[str, Any]) -> bytes:
    """The bytes of an inline resource (inverse of `resource`; used by tests and docs)."""
    source = res["source"]
    prefix = "data:;base64,"
    if not isinstance(source, str) or not source.startswith(prefix):
        raise IgnitionError(f"not an inline base64 resource: {source!r}")
    raw = base64.b64decode(source[len(prefix) :], validate=True)
    return gzip.decompress(raw) if res.get("compression") == "gzip" else raw


@dataclass
class GeneratedConfig:
    """A spec 3.3.0 config assembled from parts, serialised with a fixed key order."""

    merge: list[bytes] = field(default_factory=list)
    certificate_authorities: list[bytes] = field(default_factory=list)
    files: list[tuple[str, bytes, int]] = field(default_factory=list)  # path, data, mode
    units: list[tuple[str, str]] = field(default_factory=list)  # name, contents

    def add_file(self, path: str, data: bytes, mode: int) -> None:
        if any(p == path for p, _, _ in self.files):
            raise NestosError(f"config already specifies path {path}")
        self.files.append((path, data, mode))

    def add_unit(self, name: str, contents: str) -> None:
        if any(n == name for n, _ in self.units):
            raise NestosError(f"config already specifies unit {name}")
        self.units.append((name, contents))

    def to_object(self) -> dict[str, Any]:
        ignition: dict[str, Any] = {}
        if self.merge:
            ignition["config"] = {"merge": [resource(c) for c in self.merge]}
        if self.certificate_authorities:
            ignition["security"] = {
                "tls": {
                    "certificateAuthorities": [resource(c) for c in self.certificate_authorities]
                }
            }
        ignition["version"] = GENERATED_VERSION
        root: dict[str, Any] = {"ignition": ignition}
        if self.files:
            root["storage"] = {
                "files": [
                    {"contents": resource(data), "mode": mode, "overwrite": None, "path": path}
                    for path, data, mode in self.files
                ]
            }
        if self.units:
            root["systemd"] = {
                "units": [
                    {"contents": text, "enabled": True, "mask": None, "name": name}
                    for name, text in self.units
                ]
            }
        return root

    def serialize(self) -> bytes:
        return to_json(self.to_object())


# ---- small helpers shared with the builder ---------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def versions() -> Sequence[str]:
    """Spec versions accepted for user fragments (for help texts and docs)."""
    return [*_STABLE, *_EXPERIMENTAL]

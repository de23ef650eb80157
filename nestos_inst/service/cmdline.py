"""Kernel command line → one install-config layer (docs/compat.md#service-kernel-arguments,
#service-flow).

The service never builds an argv: each `nestos.inst.*` / `coreos.inst.*` karg maps
straight to a config key (kebab-case, as in installer.d YAML files), so the result is
merged with the config files by the install helper exactly like another file that comes
last. Both prefixes are read; when both name the same setting the `nestos.` one wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NestosError
from ..install.options import OPTIONS
from ..io.files import CMDLINE_LIMIT, read_limited
from ..profile import ALL, Profile

# First-boot-only network kargs (kernel + dracut); brand-specific ones come from profiles.
NETWORK_KARGS = (
    "ipv6.disable",
    "net.ifnames",
    "net.naming-scheme",
    "ip",
    "ifname",
    "rd.route",
    "bootdev",
    "BOOTIF",
    "rd.bootif",
    "nameserver",
    "rd.peerdns",
    "biosdevname",
    "vlan",
    "bond",
    "team",
    "bridge",
    "rd.net.timeout.carrier",
)

# s390x device kargs that must persist in the installed system's boot entry.
PERSISTENT_KARGS = ("rd.dasd", "rd.zfcp", "rd.znet", "zfcp.allow_lun_scan", "cio_ignore")

# Value-carrying kargs → config key, declared with each option (Opt.karg).
_VALUE_KARGS = tuple((opt.karg, opt.key) for opt in OPTIONS if opt.karg)
_LIST_KEYS = frozenset(opt.key for opt in OPTIONS if opt.karg and opt.kind == "list")
_FALSE = frozenset({"", "0", "no", "off"})
_PARTINDEX = re.compile(r"^(\d+|\d*-\d*)(,(\d+|\d*-\d*))*$")


class KargError(NestosError):
    """A kernel argument has a value the installer cannot use."""


def _name(arg: str) -> str:
    return arg.split("=", 1)[0]


@dataclass(frozen=True)
class Cmdline:
    """A kernel command line, split the way the upstream shell tools split it."""

    args: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Cmdline:
        return cls(tuple(text.split()))

    @classmethod
    def read(cls, path: str | Path = "/proc/cmdline") -> Cmdline:
        raw = read_limited(path, CMDLINE_LIMIT, message=f"reading kernel command line {path}")
        text = raw.decode("utf-8", errors="surrogateescape")
        return cls.parse(text)

    def lookup(self, name: str) -> str | None:
        """Value of the last `name` / `name=value` argument; a bare flag is its own value."""
        found: str | None = None
        for arg in self.args:
            key, eq, value = arg.partition("=")
            if key == name:
                found = value if eq else arg
        return found

    def flag(self, name: str) -> bool:
        value = self.lookup(name)
        return value is not None and value not in _FALSE

    def matching(self, names: Iterable[str]) -> list[str]:
        """Arguments (in command-line order) whose name is one of `names`."""
        wanted = frozenset(names)
        return [a for a in self.args if _name(a) in wanted]


@dataclass(frozen=True)
class Karg:
    """The effective value of one installer karg and the exact text it came from."""

    name: str  # full name, e.g. "coreos.inst.image_url"
    value: str

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


@dataclass
class KargConfig:
    """What the command line asks of the installer."""

    layer: dict[str, Any] = field(default_factory=dict)
    # config key → karg that set it, so later errors can name the karg
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    install_dev: str | None = None
    skip_reboot: bool = False
    secure_ipl: bool = False
    # profiles whose prefix appeared on the command line (NestOS first)
    profiles_seen: list[Profile] = field(default_factory=list)


class _Reader:
    """Looks a setting up under every profile's prefix; earlier profiles win."""

    def __init__(self, cmdline: Cmdline, profiles: Sequence[Profile]) -> None:
        self.cmdline = cmdline
        self.profiles = profiles

    def get(self, suffix: str) -> Karg | None:
        for p in self.profiles:
            name = f"{p.karg_prefix}.{suffix}"
            value = self.cmdline.lookup(name)
            if value is not None:
                return Karg(name, value)
        return None

    def flag(self, suffix: str) -> Karg | None:
        """The deciding karg if the boolean is true, else None."""
        karg = self.get(suffix)
        if karg is None or karg.value in _FALSE:
            return None
        return karg


def install_device(cmdline: Cmdline, profiles: Sequence[Profile] = ALL) -> str | None:
    """Non-empty install_dev value (raw, before the /dev/ fix-up), if any."""
    karg = _Reader(cmdline, profiles).get("install_dev")
    if karg is None or not karg.value:
        return None
    return karg.value


def flag_set(cmdline: Cmdline, suffix: str, profiles: Sequence[Profile] = ALL) -> bool:
    """A boolean installer karg (e.g. "skip_reboot") under either prefix."""
    return _Reader(cmdline, profiles).flag(suffix) is not None


def parse_kargs(cmdline: Cmdline, profiles: Sequence[Profile] = ALL) -> KargConfig:
    """Translate the command line into a config layer (keys as in installer.d YAML)."""
    r = _Reader(cmdline, profiles)
    out = KargConfig()
    out.profiles_seen = [
        p for p in profiles if any(a.startswith(p.karg_prefix) for a in cmdline.args)
    ]

    def put(key: str, value: Any, karg: Karg | str) -> None:
        out.layer[key] = value
        out.sources[key] = str(karg)

    for p in profiles:
        if cmdline.lookup(p.karg_prefix) == "yes":
            out.warnings.append(f'"{p.legacy_karg}" is deprecated and no longer has any effect.')
        legacy_base = cmdline.lookup(f"{p.karg_prefix}.stream_base_url")
        if legacy_base is not None:
            out.warnings.append(
                f'"{p.karg_prefix}.stream_base_url" is not supported and is ignored.'
            )

    dev = r.get("install_dev")
    if dev is not None and dev.value:
        value = dev.value
        if "/" not in value:
            out.warnings.append(f'The "{dev}" syntax is deprecated.')
            value = f"/dev/{value}"
            out.warnings.append(f'Use "{dev.name}={value}" instead.')
        elif not value.startswith("/"):
            raise KargError(f'invalid kernel argument "{dev}": not an absolute device path')
        out.install_dev = value
        put("dest-device", value, dev)

    ign = r.get("ignition_url")
    if ign is not None and ign.value and ign.value != "skip":
        put("ignition-url", ign.value, ign)
        # HTTP without a hash has always been allowed from the command line.
        put("insecure-ignition", True, ign)

    persistent = cmdline.matching(PERSISTENT_KARGS)
    if persistent:
        put("append-karg", persistent, ", ".join(persistent))
    net_names = list(NETWORK_KARGS)
    for p in profiles:
        net_names += [p.no_persist_ip_karg, p.force_persist_ip_karg]
    network = cmdline.matching(net_names)
    if network:
        # Upstream's exact shape: "rd.neednet=1 " then each arg followed by a space.
        value = "rd.neednet=1 " + "".join(f"{a} " for a in network)
        put("firstboot-args", value, " ".join(network))

    for suffix, key in _VALUE_KARGS:
        karg = r.get(suffix)
        if karg is None or not karg.value:
            continue
        if suffix == "save_partindex" and not _PARTINDEX.match(karg.value):
            raise KargError(
                f'invalid kernel argument "{karg}": expected comma-separated '
                "indexes or ranges (e.g. 5,7-)"
            )
        put(key, [karg.value] if key in _LIST_KEYS else karg.value, karg)

    insecure = r.flag("insecure")
    if insecure is not None:
        put("insecure", True, insecure)
    secure_ipl = r.flag("secure_ipl")
    if secure_ipl is not None:
        out.secure_ipl = True
        put("secure-ipl", True, secure_ipl)
    out.skip_reboot = r.flag("skip_reboot") is not None

    put("fetch-retries", "infinite", "(service default)")
    return out

"""The customize options turned into initrd members: the processing order and gating.

`build()` reads and checks every input (Ignition fragments, installer configs,
keyfiles, nmstate states, CA bundles, hook scripts), refuses options the OS image's
features.json does not allow, and returns the members of the small archive the live
initramfs receives: `config.ign` (the generated live Ignition config, when anything
needs one) and the first-boot network keyfiles. It writes nothing; the media commands
do that afterwards, so any failure leaves every file as it was.

The order below is a contract: it fixes the order of the generated files, units and
installer.d numbers (docs/customize.md).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import NestosError
from ..formats.embed import CONFIG_MEMBER, Features
from ..install.config import load_config_file, merge_layers, validate_layer
from ..install.console import ConsoleError, console_hint, parse_console
from ..io import files
from ..profile import Profile
from ..report import say
from . import ignition, keyfile, nmstate

TOOL = "nestos-installer"
HOOK_DIR = "/usr/local/bin"
HOOK_MODE = 0o700
SECRET_MODE = 0o600
# Inputs end up inside a 256 KiB ISO area or a PXE initrd; each kind is read with the
# bound the rest of the program uses for it (io.files), scripts like Ignition configs.
LIMITS = {
    "Ignition config": files.IGNITION_LIMIT,
    "keyfile": files.KEYFILE_LIMIT,
    "CA certificate": files.KEYRING_LIMIT,
    "installer config": files.CONFIG_FILE_LIMIT,
    "pre-install script": files.IGNITION_LIMIT,
    "post-install script": files.IGNITION_LIMIT,
}
# Characters systemd accepts in a unit name (no templates: a hook is a plain unit).
_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\-]+")

NO_NETWORK = "This OS image does not support customizing network settings."
NO_INSTALLER = "This OS image does not support customizing installer configuration."
NO_CONSOLE = "This OS image does not support customizing the destination console."
NO_LIVE_KARGS = "This OS image does not support customizing live kernel arguments."


@dataclass
class Options:
    """Every customize option, in command-line form (paths and strings)."""

    dest_ignition: list[str] = field(default_factory=list)
    dest_device: str | None = None
    dest_console: list[str] = field(default_factory=list)
    dest_karg_append: list[str] = field(default_factory=list)
    dest_karg_delete: list[str] = field(default_factory=list)
    network_keyfile: list[str] = field(default_factory=list)
    network_nmstate: list[str] = field(default_factory=list)
    ignition_ca: list[str] = field(default_factory=list)
    pre_install: list[str] = field(default_factory=list)
    post_install: list[str] = field(default_factory=list)
    installer_config: list[str] = field(default_factory=list)
    live_ignition: list[str] = field(default_factory=list)
    # ISO only
    live_karg_append: list[str] = field(default_factory=list)
    live_karg_delete: list[str] = field(default_factory=list)
    live_karg_replace: list[str] = field(default_factory=list)

    @property
    def live_kargs(self) -> bool:
        return bool(self.live_karg_append or self.live_karg_delete or self.live_karg_replace)


@dataclass
class Result:
    """What the live initramfs gets, plus facts the commands and tests look at."""

    members: dict[str, bytes]
    live_config: bytes | None = None
    dest_config: bytes | None = None
    installer_yaml: bytes | None = None
    installs: bool = False


def read_input(path: str, what: str) -> bytes:
    """A whole input file, bounded; errors name the file and what it was for."""
    return files.read_limited(path, LIMITS[what], message=f"reading {what} {path}")


def base_name(path: str, what: str) -> str:
    """The file name part of `path`, refused if it could smuggle in a path or a line."""
    name = os.path.basename(path)
    if name in ("", ".", "..") or ignition.has_control(name):
        raise NestosError(f"{what} path {path!r} has no usable file name")
    return name


def check_ca(path: str, data: bytes) -> None:
    """The bundle must hold PEM certificates OpenSSL can load."""
    try:
        text = data.decode("ascii")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=text)
    except (UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
        raise NestosError(f"parsing CA certificate {path}") from NestosError(str(exc))


def hook_unit(profile: Profile, command: str, typ: str, name: str) -> str:
    """The systemd unit running a pre- or post-install script (exact text: docs)."""
    prefix = profile.unit_prefix
    if typ == "pre":
        after, before, required_by = (
            f"{prefix}-pre.target",
            f"{prefix}.service",
            f"{prefix}.service",
        )
    else:
        after, before, required_by = f"{prefix}.service", f"{prefix}.target", f"{prefix}.target"
    lines = [
        f"# Generated by {TOOL} {command} customize",
        "",
        "[Unit]",
        f"Description={typ.capitalize()}-Install Script ({name})",
        f"Documentation={profile.customize_doc}",
        f"After={after}",
        f"Before={before}",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={HOOK_DIR}/{typ}-install-{name}",
        "RemainAfterExit=true",
        "StandardOutput=kmsg+console",
        "StandardError=kmsg+console",
        "",
        "[Install]",
        f"RequiredBy={required_by}",
    ]
    return "\n".join(lines)


def installer_yaml(layer: dict[str, Any]) -> bytes:
    """The installer.d YAML of a layer: only non-default keys, in option order."""
    values = validate_layer(layer, "generated installer config").to_yaml_dict()
    return yaml.safe_dump(
        values, sort_keys=False, default_flow_style=False, allow_unicode=True
    ).encode("utf-8")


class _Builder:
    def __init__(self, opts: Options, features: Features, profile: Profile, command: str) -> None:
        self.opts = opts
        self.features = features
        self.profile = profile
        self.command = command
        self.live: ignition.GeneratedConfig | None = None
        self.members: dict[str, bytes] = {}
        self.installer: dict[str, Any] = {}
        self.user_layers: list[tuple[str, dict[str, Any]]] = []
        self.copy_network = False
        self.installer_d = 0

    def live_config(self) -> ignition.GeneratedConfig:
        if self.live is None:
            self.live = ignition.GeneratedConfig()
        return self.live

    def next_installer_file(self, name: str) -> str:
        path = f"{self.profile.installer_config_dir}/{self.installer_d:04d}-{name}"
        self.installer_d += 1
        return path

    def add_keyfile(self, name: str, data: bytes, duplicate: str) -> None:
        member = f"{self.profile.initrd_network_dir}/{name}"
        if member in self.members:
            raise NestosError(duplicate)
        self.members[member] = data
        self.copy_network = True

    def run(self) -> Result:
        o = self.opts
        # 1. destination Ignition fragments
        dest = [ignition.parse_file(p, read_input(p, "Ignition config")) for p in o.dest_ignition]
        # 2. destination device
        if o.dest_device is not None:
            self.installer["dest-device"] = o.dest_device
        # 3. destination consoles
        consoles = []
        for spec in o.dest_console:
            if not self.features.installer_config_directives.get("console", False):
                raise NestosError(NO_CONSOLE)
            try:
                consoles.append(str(parse_console(spec)))
            except ConsoleError as exc:
                raise NestosError(f"parsing console {spec!r}") from exc
        if consoles:
            self.installer["console"] = consoles
        # 4.-5. destination kernel arguments
        console_hint(
            o.dest_karg_append,
            option="--dest-console",
            karg_option="--dest-karg-append",
        )
        if o.dest_karg_append:
            self.installer["append-karg"] = list(o.dest_karg_append)
        if o.dest_karg_delete:
            self.installer["delete-karg"] = list(o.dest_karg_delete)
        # 6. keyfiles
        for path in o.network_keyfile:
            if not self.features.live_initrd_network:
                raise NestosError(NO_NETWORK)
            name = base_name(path, "keyfile")
            data = read_input(path, "keyfile")
            try:
                keyfile.check_keyfile(name, data)
            except NestosError as exc:
                raise NestosError(f"parsing keyfile {path}") from exc
            self.add_keyfile(name, data, f"config already specifies keyfile {name}")
        # 7. nmstate states
        for path in o.network_nmstate:
            if not self.features.live_initrd_network:
                raise NestosError(NO_NETWORK)
            for name, data in nmstate.generate_keyfiles(path):
                try:
                    keyfile.check_keyfile(name, data)
                except NestosError as exc:
                    raise NestosError(
                        f"checking keyfile {name} generated from nmstate file {path}"
                    ) from exc
                member = f"{self.profile.initrd_network_dir}/{name}"
                self.add_keyfile(name, data, f"config already specifies keyfile {member}")
        # 8. CA bundles
        cas = []
        for path in o.ignition_ca:
            data = read_input(path, "CA certificate")
            check_ca(path, data)
            cas.append(data)
            self.live_config().certificate_authorities.append(data)
        # 9. hook scripts
        for typ, paths in (("pre", o.pre_install), ("post", o.post_install)):
            for path in paths:
                name = base_name(path, f"{typ}-install script")
                if not _UNIT_CHARS.fullmatch(name):
                    raise NestosError(
                        f"{typ}-install script name '{name}' can't be part of a systemd unit "
                        'name (use letters, digits, ":", "_", "." and "-")'
                    )
                data = read_input(path, f"{typ}-install script")
                live = self.live_config()
                live.add_file(f"{HOOK_DIR}/{typ}-install-{name}", data, HOOK_MODE)
                live.add_unit(
                    f"{typ}-install-{name}.service",
                    hook_unit(self.profile, self.command, typ, name),
                )
        # 10. installer config files
        for path in o.installer_config:
            name = base_name(path, "installer config")
            try:
                layer = load_config_file(path)
            except NestosError as exc:
                raise NestosError(f"parsing installer config {path}") from exc
            if not self.features.installer_config:
                raise NestosError(NO_INSTALLER)
            data = read_input(path, "installer config")
            self.user_layers.append((path, layer))
            self.live_config().add_file(self.next_installer_file(name), data, SECRET_MODE)
        # 11. live Ignition fragments
        for path in o.live_ignition:
            parsed = ignition.parse_file(path, read_input(path, "Ignition config"))
            self.live_config().merge.append(parsed.serialize())
        return self.finish(dest, cas)

    def finish(self, dest: Sequence[ignition.ParsedConfig], cas: Sequence[bytes]) -> Result:
        result = Result(self.members)
        if dest:
            if len(dest) == 1 and not cas:
                dest_bytes = dest[0].serialize()
            else:
                generated = ignition.GeneratedConfig(
                    merge=[d.serialize() for d in dest], certificate_authorities=list(cas)
                )
                dest_bytes = generated.serialize()
            self.live_config().add_file(self.profile.dest_ignition, dest_bytes, SECRET_MODE)
            self.installer["ignition-file"] = self.profile.dest_ignition
            result.dest_config = dest_bytes
        installs = bool(self.installer or self.user_layers)
        if installs and self.copy_network:
            self.installer["copy-network"] = True
        if self.installer and not self.features.installer_config:
            raise NestosError(NO_INSTALLER)
        if installs:
            self.check_combined()
            device = self.installer.get("dest-device")
            if device is not None:
                say(f"Boot media will automatically install to {device} without confirmation.")
            else:
                say("Boot media will automatically run installer.")
            result.installs = True
        if self.installer:
            data = installer_yaml(self.installer)
            path = self.next_installer_file("customize.yaml")
            self.live_config().add_file(path, data, SECRET_MODE)
            result.installer_yaml = data
        if self.live is not None:
            result.live_config = self.live.serialize()
            self.members[CONFIG_MEMBER] = result.live_config
        return result

    def check_combined(self) -> None:
        """The installer at boot merges every installer.d file: that must work too."""
        layers = [layer for _, layer in self.user_layers]
        origins = [f"installer config {path}" for path, _ in self.user_layers]
        if self.installer:
            layers.append(self.installer)
            origins.append("customize options")
        try:
            merge_layers(layers, origins)
        except NestosError as exc:
            raise NestosError("checking the combined installer configuration") from exc


def build(opts: Options, features: Features, profile: Profile, command: str) -> Result:
    """Check every input and return the live initramfs members (see module docs)."""
    return _Builder(opts, features, profile, command).run()

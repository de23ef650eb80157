"""NestOS vs CoreOS naming (docs/nestos-profile.md).

Every brand-specific path, kernel argument, directory and file name the installer
reads or writes comes from a Profile here. Other modules name a brand only in wording:
the program's name, help texts, and upstream's fixed messages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Every brand-specific name the installer reads or writes."""

    name: str
    os_name: str  # human wording in messages ("NestOS", "Fedora CoreOS")
    karg_prefix: str  # "nestos.inst"
    legacy_karg: str  # "nestos.inst=yes"
    installer_config_dir: str
    dest_ignition: str  # where `customize` puts the destination's Ignition config
    customize_doc: str  # Documentation= of the hook units `customize` generates
    iso_dir: str  # "NESTOS" (ISO9660 name of /nestos)
    live_initramfs_marker: str
    initrd_features: str
    initrd_network_dir: str  # members etc/<x>-firstboot-network/<file>
    boot_network_dir: str  # /boot/<x>-firstboot-network
    platforms_json: str  # path on /boot
    osmet_dir: str
    liveiso_karg: str
    live_rootfs_url_karg: str
    no_persist_ip_karg: str
    force_persist_ip_karg: str
    unit_prefix: str  # "nestos-installer"
    stream_base_url: str
    default_stream: str
    temp_prefix: str  # for `-o PATH` temp files
    # Brand in media messages ("Unrecognized CoreOS ISO image." is upstream's exact
    # text, which its test scripts look for on CoreOS media).
    media_name: str = "CoreOS"


NESTOS = Profile(
    name="nestos",
    os_name="NestOS",
    karg_prefix="nestos.inst",
    legacy_karg="nestos.inst=yes",
    installer_config_dir="/etc/nestos/installer.d",
    dest_ignition="/etc/nestos/dest.ign",
    customize_doc="file:/usr/share/doc/nestos-installer/customize.md",
    iso_dir="NESTOS",
    live_initramfs_marker="etc/nestos-live-initramfs",
    initrd_features="etc/nestos/features.json",
    initrd_network_dir="etc/nestos-firstboot-network",
    boot_network_dir="nestos-firstboot-network",
    platforms_json="nestos/platforms.json",
    osmet_dir="/run/nestos-installer/osmet",
    liveiso_karg="nestos.liveiso",
    live_rootfs_url_karg="nestos.live.rootfs_url",
    no_persist_ip_karg="nestos.no_persist_ip",
    force_persist_ip_karg="nestos.force_persist_ip",
    unit_prefix="nestos-installer",
    stream_base_url="https://nestos.org.cn/NestOS-release/streams/",
    default_stream="stable",
    temp_prefix=".nestos-installer-temp-",
    media_name="NestOS",
)

COREOS = Profile(
    name="coreos",
    os_name="Fedora CoreOS",
    karg_prefix="coreos.inst",
    legacy_karg="coreos.inst=yes",
    installer_config_dir="/etc/coreos/installer.d",
    dest_ignition="/etc/coreos/dest.ign",
    customize_doc="https://coreos.github.io/coreos-installer/customizing-install/",
    iso_dir="COREOS",
    live_initramfs_marker="etc/coreos-live-initramfs",
    initrd_features="etc/coreos/features.json",
    initrd_network_dir="etc/coreos-firstboot-network",
    boot_network_dir="coreos-firstboot-network",
    platforms_json="coreos/platforms.json",
    osmet_dir="/run/coreos-installer/osmet",
    liveiso_karg="coreos.liveiso",
    live_rootfs_url_karg="coreos.live.rootfs_url",
    no_persist_ip_karg="coreos.no_persist_ip",
    force_persist_ip_karg="coreos.force_persist_ip",
    unit_prefix="coreos-installer",
    stream_base_url="https://builds.coreos.fedoraproject.org/streams/",
    default_stream="stable",
    temp_prefix=".coreos-installer-temp-",
)

DEFAULT = NESTOS

# Lookup order when a live system may carry either brand (NestOS first: it wins).
ALL: tuple[Profile, ...] = (NESTOS, COREOS)

BY_NAME: dict[str, Profile] = {p.name: p for p in ALL}

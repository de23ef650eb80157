#!/bin/bash
# dracut module: nestos-installer service mode inside an initramfs, so a PXE live
# initramfs (or a dedicated install initramfs) can install unattended from
# nestos.inst.* kernel arguments and /etc/nestos/installer.d.
#
# Environment (all optional):
#   NESTOS_INSTALLER_PYTHON   interpreter that has nestos-installer and its
#                             dependencies importable (default: /usr/bin/python3)
#   NESTOS_INSTALLER_SRCROOT  root the units/scripts were installed under (staging
#                             tree of `make install DESTDIR=...`; default: /)

check() {
    # Only when asked for explicitly (-a nestos-installer): it adds Python.
    return 255
}

depends() {
    echo systemd
}

installkernel() {
    # The image is written to local disks; /boot is ext4 (or xfs).
    hostonly='' instmods -o ext4 xfs crc32c_generic virtio_blk virtio_pci \
        nvme ahci sd_mod
}

install() {
    local py="${NESTOS_INSTALLER_PYTHON:-/usr/bin/python3}"
    local src="${NESTOS_INSTALLER_SRCROOT:-}"
    local private=/usr/lib/nestos-installer/python
    local base kind from to
    local -a libs=()

    # The interpreter the launcher uses (a venv's python resolves to its base).
    base=$("$py" -c 'import os, sys; print(os.path.realpath(sys._base_executable))') || return 1
    inst_binary "$base" /usr/bin/python3 || return 1

    # stdlib (same paths) + nestos_inst and its dependencies (private dir). Trees are
    # copied without shared objects, which dracut then installs with their libraries.
    while IFS=$'\t' read -r kind from to; do
        if [[ $kind == so ]]; then
            libs+=("$from" "$to")
        elif [[ -d $from ]]; then
            mkdir -p "${initdir}${to}"
            tar -C "$from" --exclude='*.so' --exclude='*.so.*' -cf - . \
                | tar -C "${initdir}${to}" -xf - || return 1
        elif [[ $from != *.so ]]; then
            mkdir -p "${initdir}${to%/*}"
            cp -a "$from" "${initdir}${to}" || return 1
        fi
    done < <("$py" "$moddir/python-files.py") || return 1
    # dracut-install only follows the libraries of *executable* files, and Python
    # extensions are mode 644: take their (transitive) libraries from ldd.
    local -a deps=()
    while ((${#libs[@]})); do
        inst_library "${libs[0]}" "${libs[1]}" || return 1
        mapfile -t -O "${#deps[@]}" deps < <(ldd "${libs[0]}" 2>/dev/null \
            | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p')
        libs=("${libs[@]:2}")
    done
    if ((${#deps[@]})); then
        inst_multiple $(printf "%s\n" "${deps[@]}" | sort -u) || return 1
    fi
    "$base" -m compileall -q -j 0 --invalidation-mode unchecked-hash -s "$initdir" \
        "${initdir}${private}" >/dev/null || :

    local launcher="${initdir}/usr/bin/nestos-installer"
    mkdir -p "${launcher%/*}"
    cat > "$launcher" <<LAUNCHER
#!/usr/bin/python3 -s
import sys
sys.path.insert(0, "$private")
from nestos_inst.__main__ import main
sys.exit(main())
LAUNCHER
    chmod 755 "$launcher"

    # Tools the installer runs (optional ones may be absent on some hosts).
    inst_multiple -o gpg gpgv gpgconf gpg-agent sfdisk sgdisk blkid lsblk partx wipefs \
        blockdev findmnt mount umount udevadm sync lvm mdadm zipl chreipl vmcp \
        dd cat echo sh bash grep dirname mkdir rm ln ls sulogin

    # Where `make install` put them (PREFIX=/usr), under an optional staging root.
    local unitsrc="${src}/usr/lib/systemd/system"
    local unit
    for unit in nestos-installer.service nestos-installer.target \
        nestos-installer-pre.target nestos-installer-post.target \
        nestos-installer-reboot.service nestos-installer-noreboot.service \
        nestos-installer-secure-ipl-reboot.service \
        nestos-installer-disable-device-auto-activation.service; do
        inst_simple "${unitsrc}/${unit}" "${systemdsystemunitdir}/${unit}"
    done
    inst_script "${src}/usr/lib/systemd/system-generators/nestos-installer-generator" \
        "${systemdutildir}/system-generators/nestos-installer-generator"
    inst_script "${src}/usr/libexec/nestos-installer-service" \
        /usr/libexec/nestos-installer-service
    inst_script "${src}/usr/libexec/nestos-installer-disable-device-auto-activation" \
        /usr/libexec/nestos-installer-disable-device-auto-activation
}

#!/bin/bash
# Live initramfs of the e2e harness: /root.ext4 -> /sysroot, /config.ign -> Ignition.

check() {
    return 255
}

depends() {
    echo systemd systemd-initrd
}

installkernel() {
    hostonly='' instmods loop ext4 crc32c_generic
}

install() {
    # Debian's ignition package ships the binary inside its own dracut module dir.
    inst_simple /usr/lib/dracut/modules.d/30ignition/ignition /usr/bin/ignition
    inst_multiple mount umount losetup modprobe mkdir cat sed ln rm sh cp chmod
    inst_script "$moddir/setfiles" /usr/sbin/setfiles
    inst_script "$moddir/nestos-e2e-live-root" /usr/bin/nestos-e2e-live-root
    inst_script "$moddir/nestos-e2e-live-ignition" /usr/bin/nestos-e2e-live-ignition
    inst_simple "$moddir/nestos-e2e-live-root.service" \
        "$systemdsystemunitdir/nestos-e2e-live-root.service"
    inst_simple "$moddir/nestos-e2e-live-ignition.service" \
        "$systemdsystemunitdir/nestos-e2e-live-ignition.service"
    mkdir -p "$initdir$systemdsystemunitdir/initrd-root-fs.target.requires" \
        "$initdir$systemdsystemunitdir/initrd.target.wants"
    ln_r "$systemdsystemunitdir/nestos-e2e-live-root.service" \
        "$systemdsystemunitdir/initrd-root-fs.target.requires/nestos-e2e-live-root.service"
    ln_r "$systemdsystemunitdir/nestos-e2e-live-ignition.service" \
        "$systemdsystemunitdir/initrd.target.wants/nestos-e2e-live-ignition.service"
}

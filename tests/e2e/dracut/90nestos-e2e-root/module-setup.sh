#!/bin/bash
# Live root extras of the e2e harness: DHCP on the NIC before the installer runs.

check() {
    return 255
}

depends() {
    echo systemd
}

installkernel() {
    hostonly='' instmods virtio_net virtio_pci virtio_blk ext4 crc32c_generic
}

install() {
    inst_simple /bin/busybox /usr/bin/busybox
    inst_multiple ip modprobe sleep poweroff journalctl systemctl python3
    inst_script "$moddir/nestos-e2e-network" /usr/bin/nestos-e2e-network
    inst_script "$moddir/nestos-e2e-dhcp-event" /usr/bin/nestos-e2e-dhcp-event
    inst_simple "$moddir/nestos-e2e-network.service" \
        "$systemdsystemunitdir/nestos-e2e-network.service"
    inst_simple "$moddir/e2e-network.conf" \
        "$systemdsystemunitdir/nestos-installer.service.d/e2e-network.conf"
}

#!/bin/bash
# SPDX-License-Identifier: MIT
# The VM itself: modules load, the scratch disk is usable.
. /vm/lib.sh
for m in ext4 loop nbd ublk_drv virtio_blk; do
    if module_loaded $m; then pass "module $m loaded"; else fail "module $m not loaded"; fi
done
ok "scratch disk writable" dd if=/dev/zero of=$T/f bs=1M count=8 oflag=direct
finish

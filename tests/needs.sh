# SPDX-License-Identifier: MIT
# What a test may need that a machine can lack. A test that cannot run here says
# `skip NEED REASON` (tests/assert.sh); a skip is honest only when this machine
# lacks NEED, so skip and tests/run ask has_need. Add a key here with its probe.

# has_need NEED: 0 if this machine has NEED, 1 if it lacks it, 2 if NEED is unknown.
has_need() {
    case $1 in
    kmod-load) # a kernel that takes modules, and CAP_SYS_MODULE (bit 16) to load them
        [ -e /proc/modules ] && [ "$(cat /proc/sys/kernel/modules_disabled 2>/dev/null)" = 0 ] &&
            [ $((0x$(awk '$1 == "CapEff:" {print $2}' /proc/self/status) >> 16 & 1)) = 1 ] ;;
    ublk) [ -e /dev/ublk-control ] || { has_need kmod-load && modprobe -nq ublk_drv; } ;;
    kernel-nbd) [ -e /sys/module/nbd ] || [ -e /dev/nbd0 ] || { has_need kmod-load && modprobe -nq nbd; } ;;
    no-kernel-nbd) ! has_need kernel-nbd ;; # for checks of what happens without it
    no-vdisk-ko) [ ! -e /dev/vdisk-control ] ;;
    no-ublk) [ ! -e /dev/ublk-control ] ;;
    clang) command -v clang >/dev/null ;;
    cap-sys-resource) [ $((0x$(awk '$1 == "CapEff:" {print $2}' /proc/self/status) >> 24 & 1)) = 1 ] ;; # online resize2fs
    testdata) [ -d "$(testdata_dir)" ] ;;
    *) return 2 ;;
    esac
}

# The real-world images of shared/testdata (outside the repository, see its MANIFEST.md).
testdata_dir() {
    local root=${ROOT:-/nonexistent}
    if [ -n "${VDISK_SHARED:-}" ]; then echo "$VDISK_SHARED/testdata/images"
    elif [ -d "$root/../shared/testdata/images" ]; then echo "$root/../shared/testdata/images"
    else echo "$root/../../shared/testdata/images"; fi # a worktree under wt/ sits one deeper
}

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Debian packages (issue 13): dpkg-buildpackage -us -uc builds vdisk,
# libvdisk0, libvdisk-dev and vdisk-dkms; lintian finds no errors; installed on
# this machine, the user's cycle runs from the installed binary only (open,
# mkfs, mount, write, close, reopen, verify), a C program builds against the
# installed libvdisk, DKMS builds vdisk.ko from the installed source; removed,
# nothing is left but the user's images and /etc/vdisk/disks (a conffile).
# Takes about two minutes (a release build and a module build).
. "$(dirname "$0")/../lib.sh"
PKGS="vdisk libvdisk0 libvdisk-dev vdisk-dkms"
for tool in dpkg-buildpackage dh lintian dkms scdoc; do
    command -v $tool >/dev/null || { fail "$tool missing (scripts/install-deps deb)"; finish; }
done
if dpkg-query -W -f='${Status}' vdisk 2>/dev/null | grep -q 'install ok installed'; then
    fail "vdisk is installed on this machine already: not touching it"
    finish
fi
version=$(sed -n "s/.*version : '\(.*\)'.*/\1/p" "$ROOT/meson.build" | head -1)
eq "debian/changelog has the project's version" "$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -SVersion)" "$version"

# --- build from a copy of the tree (what git has, plus what is not committed yet) ---
src=$T/vdisk-$version
mkdir -p "$src"
(cd "$ROOT" && git ls-files -co --exclude-standard | grep -v '^tests/out/' | tar -cf - -T -) | tar -xf - -C "$src"
(cd "$src" && nice dpkg-buildpackage -us -uc >"$T/build.log" 2>&1) && pass "dpkg-buildpackage -us -uc" ||
    { fail "dpkg-buildpackage: $(tail -20 "$T/build.log")"; finish; }
for p in vdisk libvdisk0 libvdisk-dev; do
    [ -f "$T/${p}_${version}_amd64.deb" ] && pass "built $p" || fail "no $p .deb: $(ls "$T")"
done
[ -f "$T/vdisk-dkms_${version}_all.deb" ] && pass "built vdisk-dkms" || fail "no vdisk-dkms .deb"
dpkg-deb -e "$T/vdisk-dkms_${version}_all.deb" "$T/dkms-ctl"
grep -q "dkms remove" "$T/dkms-ctl/prerm" 2>/dev/null && grep -q "common.postinst\|dkms" "$T/dkms-ctl/postinst" 2>/dev/null &&
    pass "vdisk-dkms registers with DKMS (postinst) and unregisters (prerm)" || fail "vdisk-dkms has no DKMS maintainer scripts"
lintian --fail-on error "$T/vdisk_${version}_amd64.changes" >"$T/lintian.log" 2>&1 &&
    pass "lintian: no errors" || fail "lintian: $(grep '^E:' "$T/lintian.log" | head -10)"
grep -q '^W:' "$T/lintian.log" && echo "note: lintian warnings: $(grep '^W:' "$T/lintian.log" | head -5)"
dpkg-deb -c "$T/vdisk_${version}_amd64.deb" | grep ' ./etc/vdisk/disks$' >/dev/null && pass "/etc/vdisk/disks is in vdisk" || fail "no /etc/vdisk/disks"
dpkg-deb -e "$T/vdisk_${version}_amd64.deb" "$T/ctl"
grep -qx /etc/vdisk/disks "$T/ctl/conffiles" && pass "/etc/vdisk/disks is a conffile" || fail "conffiles: $(cat "$T/ctl/conffiles")"

# --- install on this machine ---
at_exit "dpkg --purge $PKGS"
debs=("$T/vdisk_${version}_amd64.deb" "$T/libvdisk0_${version}_amd64.deb" "$T/libvdisk-dev_${version}_amd64.deb" "$T/vdisk-dkms_${version}_all.deb")
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >"$T/install.log" 2>&1 &&
    pass "apt-get install the four packages" || { fail "install: $(tail -10 "$T/install.log")"; finish; }
P=/usr/sbin:/usr/bin:/sbin:/bin
eq "vdisk on PATH is the installed one" "$(PATH=$P command -v vdisk)" /usr/sbin/vdisk
eq "it is the packaged version" "$(PATH=$P vdisk --version)" "vdisk $version"
ok "man vdisk-open" sh -c "MANPAGER=cat man vdisk-open | grep -q -- --all-persistent"
ok "man libvdisk" sh -c "MANPAGER=cat man 3 libvdisk | grep -q vdisk_open"
ok "man vdisk-qcow2" sh -c "MANPAGER=cat man 5 vdisk-qcow2 | grep -q 'NOT SUPPORTED'"
[ -f /usr/share/bash-completion/completions/vdisk ] && pass "bash completion installed" || fail "no completion"
for u in vdisk-persistent.service vdisk@.service; do
    [ -f /lib/systemd/system/$u ] && pass "$u installed" || fail "no /lib/systemd/system/$u"
done
[ -f /lib/udev/rules.d/99-vdisk.rules ] && pass "udev rule installed" || fail "no udev rule"

# the user's cycle, from the installed binary only
export VDISK_RUN_DIR=$T/run
img=$T/user.img
dev=$(PATH=$P vdisk open "$img" 64) && pass "vdisk open (installed) -> $dev" || { fail "installed vdisk open"; finish; }
at_exit "PATH=$P vdisk close --all"
mkdir -p "$T/mnt"
ok "mkfs.ext4" mkfs.ext4 -q "$dev"
ok "mount" mount "$dev" "$T/mnt"
head -c 3M /dev/urandom >"$T/mnt/data"
sum=$(md5sum <"$T/mnt/data")
ok "umount" umount "$T/mnt"
ok "vdisk close (installed)" env PATH=$P vdisk close "$img"
dev=$(PATH=$P vdisk open "$img") && pass "vdisk reopen (installed)" || fail "reopen"
ok "fsck clean" fsck.ext4 -fn "$dev"
mount -o ro "$dev" "$T/mnt" && eq "the data is back" "$(md5sum <"$T/mnt/data")" "$sum"
umount "$T/mnt"
ok "vdisk close again" env PATH=$P vdisk close "$img"

# a C program against the installed libvdisk
printf '#include <vdisk/vdisk.h>\n#include <stdio.h>\nint main(void){for(const char*const*f=vdisk_formats();*f;f++)puts(*f);return 0;}\n' >"$T/f.c"
ok "cc with pkg-config against the installed libvdisk" sh -c "cc -o '$T/f' '$T/f.c' \$(pkg-config --cflags --libs vdisk)"
eq "it runs with the installed libvdisk.so.0" "$("$T/f" | sort | tr '\n' ' ')" "$(PATH=$P vdisk formats | sort | tr '\n' ' ')"

# DKMS: the module builds from the installed source, for a kernel whose headers are here
[ -f /usr/src/vdisk-$version/dkms.conf ] && pass "the module source is in /usr/src/vdisk-$version" || fail "no dkms source"
kver=$(ls -d /lib/modules/*/build 2>/dev/null | sed -n 's|/lib/modules/\(.*\)/build|\1|p' | sort -V | tail -1)
if [ -n "$kver" ]; then
    nice dkms build -m vdisk -v "$version" -k "$kver" >"$T/dkms.log" 2>&1 && pass "dkms build for $kver" ||
        fail "dkms build for $kver: $(tail -20 "$T/dkms.log")"
    ls /var/lib/dkms/vdisk/"$version"/"$kver"/*/module/vdisk.ko* >/dev/null 2>&1 && pass "DKMS made vdisk.ko" ||
        fail "no vdisk.ko from DKMS"
else
    fail "no kernel headers under /lib/modules/*/build for DKMS to build against"
fi

# --- remove: nothing left but the user's image and the conffile ---
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq $PKGS >"$T/remove.log" 2>&1 && pass "apt-get remove" ||
    fail "remove: $(tail -5 "$T/remove.log")"
for f in /usr/sbin/vdisk /usr/share/man/man8/vdisk.8.gz /usr/include/vdisk /usr/src/vdisk-$version \
    /var/lib/dkms/vdisk /lib/systemd/system/vdisk-persistent.service /lib/systemd/system/vdisk@.service \
    /lib/udev/rules.d/99-vdisk.rules \
    /usr/share/bash-completion/completions/vdisk; do
    [ -e "$f" ] && fail "left after remove: $f" || pass "removed: $f"
done
ls /usr/lib/x86_64-linux-gnu/libvdisk* >/dev/null 2>&1 && fail "libvdisk left" || pass "removed: libvdisk"
[ -f /etc/vdisk/disks ] && pass "/etc/vdisk/disks stays (a conffile)" || fail "/etc/vdisk/disks gone on remove"
[ -f "$img" ] && pass "the user's image stays" || fail "the user's image is gone"
ok "dpkg --purge" dpkg --purge $PKGS
[ -e /etc/vdisk/disks ] && fail "/etc/vdisk/disks left after purge" || pass "purge removes /etc/vdisk/disks"
finish

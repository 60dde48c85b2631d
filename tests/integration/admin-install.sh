#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vdisk as admins get it (issue 13): `meson install` into a destdir puts
# everything in Debian's places; a C program builds against the installed
# libvdisk with pkg-config and runs; the man pages render without groff
# warnings and list exactly the options --help prints; bash completion
# completes commands, options, formats, ways and open disks.
. "$(dirname "$0")/../lib.sh"
export VDISK_RUN_DIR=$T/run
at_exit "$VDISK" close --all
for tool in scdoc pkg-config groff; do
    command -v $tool >/dev/null || { fail "$tool missing (scripts/install-deps build)"; finish; }
done

# --- meson install --destdir, from a build of its own (prefix /usr, as Debian) ---
meson setup --prefix=/usr --sysconfdir=/etc --buildtype=release -Dman=enabled "$T/b" "$ROOT" >"$T/setup.log" 2>&1 &&
    ninja -C "$T/b" >"$T/build.log" 2>&1 && pass "a /usr build" || { fail "build: $(tail -5 "$T/setup.log" "$T/build.log")"; finish; }
ok "meson install --destdir" meson install -C "$T/b" --destdir "$T/root" --quiet
R=$T/root
for f in usr/sbin/vdisk usr/include/vdisk/vdisk.h usr/lib/x86_64-linux-gnu/pkgconfig/vdisk.pc \
    usr/share/man/man8/vdisk.8 usr/share/man/man8/vdisk-open.8 usr/share/man/man8/vdisk-persist.8 \
    usr/share/man/man3/libvdisk.3 usr/share/man/man5/vdisk-qcow2.5 usr/share/man/man5/vdisk-raw.5 \
    usr/share/man/man5/vdisk-iso.5 usr/share/bash-completion/completions/vdisk \
    usr/lib/udev/rules.d/99-vdisk.rules usr/lib/systemd/system/vdisk-persistent.service \
    usr/lib/systemd/system/vdisk@.service usr/share/man/man8/vdisk-supervise.8 etc/vdisk/disks; do
    [ -e "$R/$f" ] && pass "installed /$f" || fail "not installed: /$f (have: $(cd "$R" && find . -type f | head -30))"
done
libdir=$R/usr/lib/x86_64-linux-gnu
so=$(readelf -d "$libdir/libvdisk.so" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
eq "libvdisk.so has a versioned SONAME" "$so" libvdisk.so.0
[ -L "$libdir/libvdisk.so" ] && [ -L "$libdir/libvdisk.so.0" ] && pass "the .so and .so.0 links" || fail "so links: $(ls -l "$libdir")"
nm -D --defined-only "$libdir/libvdisk.so.0" | awk '{print $3}' | grep -v '^vdisk_' | grep -v '^VDISK_0$' >"$T/exported"
[ -s "$T/exported" ] && fail "exports more than vdisk_*: $(head -5 "$T/exported")" || pass "only vdisk_* exported"
grep -q "ExecStart=/usr/sbin/vdisk open --all-persistent" "$R/usr/lib/systemd/system/vdisk-persistent.service" &&
    pass "the boot unit runs the installed vdisk" || fail "unit: $(cat "$R/usr/lib/systemd/system/vdisk-persistent.service")"
if command -v systemd-analyze >/dev/null; then
    # the installed unit, pointed at the destdir's binary
    mkdir -p "$T/units"
    for u in vdisk-persistent.service vdisk@.service; do
        sed "s|/usr/sbin/vdisk|$R/usr/sbin/vdisk|" "$R/usr/lib/systemd/system/$u" >"$T/units/$u"
    done
    cp "$T/units/vdisk@.service" "$T/units/vdisk@5f40751cd9dded3d.service"
    ok "systemd-analyze verify the units" systemd-analyze verify --man=no "$T/units/vdisk-persistent.service" \
        "$T/units/vdisk@5f40751cd9dded3d.service"
fi
ok "the installed vdisk runs" "$R/usr/sbin/vdisk" --version
grep -q "^vdisk $(sed -n "s/.*version : '\(.*\)'.*/\1/p" "$ROOT/meson.build" | head -1)$" "$T/.out" &&
    pass "--version is the project's version" || fail "--version: $(cat "$T/.out")"

# --- pkg-config: a small C program against the installed libvdisk ---
cat >"$T/prog.c" <<'C'
#include <stdio.h>
#include <vdisk/vdisk.h>

int main(int argc, char **argv)
{
    struct vdisk_image *img;
    char buf[4];

    if (argc != 2 || vdisk_create(argv[1], "qcow2", 1 << 20, NULL) < 0 ||
        vdisk_open(argv[1], NULL, 0, NULL, &img) < 0) {
        fprintf(stderr, "%s\n", vdisk_last_error());
        return 1;
    }
    if (vdisk_write(img, "abc", 4, 4096, 0) < 0 || vdisk_read(img, buf, 4, 4096) < 0)
        return 1;
    printf("%s %llu\n", buf, (unsigned long long)vdisk_get_size(img));
    return vdisk_close(img) < 0;
}
C
export PKG_CONFIG_SYSROOT_DIR=$R PKG_CONFIG_PATH=$libdir/pkgconfig
ok "pkg-config --cflags --libs vdisk" pkg-config --cflags --libs vdisk
flags=$(pkg-config --cflags --libs vdisk)
ok "a C program builds with pkg-config's flags" cc -Wall -o "$T/prog" "$T/prog.c" $flags
readelf -d "$T/prog" | grep -q 'NEEDED.*libvdisk.so.0' && pass "it links libvdisk.so.0" || fail "prog is not linked to libvdisk.so.0"
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH
eq "it runs: writes and reads a qcow2 image" "$(LD_LIBRARY_PATH=$libdir "$T/prog" "$T/p.qcow2")" "abc 1048576"
ok "qemu-img check passes the image it wrote" qemu-img check -q "$T/p.qcow2"
eq "qemu-io reads what it wrote" "$(qemu-io -f qcow2 -r -c 'read -P 0x61 4096 1' "$T/p.qcow2" | grep -c 'read 1/1')" 1
ok "pkg-config --static lists the private libraries" sh -c "PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --static --libs vdisk | grep -q -- -lz"

# --- man pages: render without warnings, and the same options as --help ---
for m in "$R"/usr/share/man/man*/*; do
    w=$(LC_ALL=C.UTF-8 groff -ww -man -Tutf8 -z "$m" 2>&1)
    [ -z "$w" ] && pass "$(basename "$m") renders without warnings" || fail "$(basename "$m"): $w"
done
ok "man -l renders vdisk(8)" sh -c "man -l '$R/usr/share/man/man8/vdisk.8' >/dev/null 2>&1 || MANPAGER=cat man -l '$R/usr/share/man/man8/vdisk.8' >/dev/null"
help_opts() { "$VDISK" "$1" --help | grep -oE '(^|[ [|,])--?[A-Za-z][-A-Za-z]*' | grep -oE -- '--?[A-Za-z][-A-Za-z]*' | sort -u; }
man_opts() {
    awk '/^# /{s=($0=="# OPTIONS")} s && /^\*-/' "$ROOT/man/vdisk-$1.8.scd" | grep -oE -- '--?[A-Za-z][-A-Za-z]*' | sort -u
}
# the commands, as vdisk --help lists them
commands=$("$VDISK" --help | awk '/^commands:/{s=1; next} s && /^  [a-z]/{print $1} s && !/^  /{s=0}')
[ "$(echo "$commands" | wc -l)" -ge 13 ] && pass "vdisk --help lists the commands" || fail "commands: $commands"
for c in $commands; do
    h=$(help_opts "$c" | tr '\n' ' ') m=$(man_opts "$c" | tr '\n' ' ')
    eq "vdisk-$c(8) lists the options of vdisk $c --help" "$m" "$h"
done
eq "a page per command" "$(ls "$ROOT"/man/vdisk-*.8.scd | sed 's|.*/vdisk-||; s|\.8\.scd$||' | sort | tr '\n' ' ')" \
    "$(echo "$commands" | sort | tr '\n' ' ')"
for f in $("$VDISK" formats); do
    [ -f "$ROOT/man/formats/vdisk-$f.5.scd" ] && pass "format $f has a page" || fail "no man/formats/vdisk-$f.5.scd"
done

# --- bash completion, driven as bash drives it ---
if [ -f /usr/share/bash-completion/bash_completion ]; then
    dev=$("$VDISK" open "$T/c.img" 4) || fail "open for completion"
    id=$("$VDISK" list --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
    touch "$T/x.qcow2" "$T/y.txt"
    # complete LINE: the words bash would offer at the end of LINE
    complete_line() {
        PATH=$(dirname "$VDISK"):$PATH bash -c '
            . /usr/share/bash-completion/bash_completion
            . "$1"
            COMP_LINE=$2 COMP_POINT=${#2}
            read -ra COMP_WORDS <<<"$2"
            [[ $2 == *" " ]] && COMP_WORDS+=("")
            COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
            _vdisk vdisk "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf "%s\n" "${COMPREPLY[@]}"' _ "$ROOT/data/vdisk.bash" "$1" | sort | tr '\n' ' '
    }
    eq "vdisk <TAB>: commands" "$(complete_line 'vdisk ')" "$(echo "$commands" | sort | tr '\n' ' ')"
    eq "vdisk c<TAB>" "$(complete_line 'vdisk c')" "check close commit convert create "
    eq "vdisk open --<TAB>: its options" "$(complete_line 'vdisk open --')" "--all-persistent --format --help --key-file --key-stdin --no-direct --options --overlay --partition --persist --ram --read-only --snapshot --snapshot-dir --via "
    eq "vdisk open --via <TAB>: the ways" "$(complete_line 'vdisk open --via ')" "auto fuse kmod loop nbd ublk "
    eq "vdisk create -f <TAB>: the formats" "$(complete_line 'vdisk create -f ')" "$("$VDISK" formats | sort | tr '\n' ' ')"
    c=$(complete_line 'vdisk close ')
    [[ $c == *"$dev "* && $c == *"$id "* && $c == *"$T/c.img "* ]] && pass "vdisk close <TAB>: open devices, ids, images" ||
        fail "close completion: $c"
    c=$(complete_line "vdisk info $T/")
    [[ $c == *"$T/x.qcow2 "* && $c != *y.txt* ]] && pass "vdisk info <TAB>: image files by extension" || fail "info completion: $c"
    eq "vdisk persist <TAB>" "$(complete_line 'vdisk persist ')" "add list remove "
    "$VDISK" close --all
else
    fail "bash-completion is not installed (scripts/install-deps build)"
fi
finish

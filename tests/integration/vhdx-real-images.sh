#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Real VHDX images made by Hyper-V, Disk2vhd and QEMU (shared/testdata/images,
# see its MANIFEST.md): libvdisk reads each with the MANIFEST's md5, never
# changes the file on a read-only open, and tells the creator and log state.
# The dirty-log image must have its log replayed first: its md5 is the one
# after replay (7-Zip, which skips logs, reads other bytes). Runtime: ~40 s.
. "$(dirname "$0")/../lib.sh"
IO=$BUILD/tests/tools/vdisk-test-io
export VDISK_RUN_DIR=$T/run
DATA=$(testdata_dir)
[ -d "$DATA" ] || skip_all testdata "$DATA is absent: the real-image checks cannot run"
[ -x "$IO" ] || { fail "$IO not built"; finish; }

# manifest_md5 FILE: the expected md5 of the guest bytes.
manifest_md5() { grep "^| $1 " "$DATA/MANIFEST.md" | grep -o '[0-9a-f]\{32\}' | head -1; }

while IFS='|' read -r file size creator log; do
    img=$T/${file%.bz2}
    bzip2 -dc "$DATA/$file" >"$img" || { fail "$file: decompress"; continue; }
    before=$(md5sum <"$img")
    eq "$file: probed as vhdx" "$("$VDISK" info "$img" | sed -n 's/^format: //p')" vhdx
    eq "$file: virtual size" "$("$VDISK" info "$img" | sed -n 's/^virtual size: //p')" "$size"
    "$VDISK" info "$img" >"$T/info" 2>&1
    eq "$file: creator" "$(sed -n 's/^creator: //p' "$T/info")" "$creator"
    eq "$file: log state" "$(sed -n 's/^log state: //p' "$T/info")" "$log"
    eq "$file: md5 of the guest bytes (MANIFEST)" "$("$IO" dump "$img" - | md5sum | cut -d' ' -f1)" \
        "$(manifest_md5 "$file")"
    eq "$file: a read-only open leaves the file's bytes alone" "$(md5sum <"$img")" "$before"
    # a crashed writer may have left unused space (leaks, exit 3): never corruption
    "$VDISK" check "$img" >"$T/check" 2>&1
    rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 3 ] && pass "$file: vdisk check finds no corruption (exit $rc)" ||
        fail "$file: vdisk check exit $rc: $(head -c 300 "$T/check")"
    rm -f "$img"
done <<'EOF'
iotest-dynamic-1G.vhdx.bz2|1073741824|Microsoft Windows 6.2.9200.16384|clean
test-disk2vhd.vhdx.bz2|268435456|d2v|clean
iotest-dirtylog-10G-4M.vhdx.bz2|10737418240|QEMU v1.6.50|replayed in memory
EOF

# The dirty log: what a reader that skips it sees is wrong (7-Zip), what QEMU replays is ours.
img=$T/dirty.vhdx
bzip2 -dc "$DATA/iotest-dirtylog-10G-4M.vhdx.bz2" >"$img"
"$IO" dump "$img" - | head -c 32M >"$T/ours.raw"
if command -v 7zz >/dev/null; then
    7zz x -so -tvhdx "$img" 2>/dev/null | head -c 32M >"$T/7z.raw"
    ok "dirty log: 7-Zip (no replay) reads other bytes than the replayed image" \
        fails cmp -s "$T/ours.raw" "$T/7z.raw"
fi
eq "dirty log: info --json says dirty" \
    "$("$VDISK" info --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dirty"])')" True
fails_with "dirty log: qemu-img refuses a read-only open" "log that needs to be replayed" \
    qemu-img convert -f vhdx -O raw "$img" "$T/q.raw"
cp --sparse=always "$img" "$T/qemu.vhdx"
ok "dirty log: qemu-img check -r all replays it" qemu-img check -q -r all "$T/qemu.vhdx"
qemu-img convert -f vhdx -O raw "$T/qemu.vhdx" "$T/q.raw" && head -c 32M "$T/q.raw" >"$T/q32.raw"
ok "dirty log: QEMU's replay equals vdisk's in-memory replay" cmp -s "$T/ours.raw" "$T/q32.raw"
# a writable open replays to disk and clears the log
echo f | "$IO" -f vhdx script "$img" || fail "dirty log: writable open"
eq "dirty log: after a writable open the log is clean" \
    "$("$VDISK" info "$img" | sed -n 's/^log state: //p')" clean
ok "dirty log: qemu-img check clean after vdisk's replay" qemu-img check -q "$img"
ok "dirty log: qemu-img compare equal to QEMU's replay" qemu-img compare -q "$img" "$T/qemu.vhdx"
finish

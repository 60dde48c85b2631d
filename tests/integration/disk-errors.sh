#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Bad input to open, close and create, for --via loop and --via fuse: a non-zero
# exit, a message that says what is wrong, and nothing left behind (no file, no
# record, no loop device, no mount, no server). A few seconds.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/disk-lib.bash"

# refused DESC REGEX IMAGE CMD...: CMD fails with REGEX and leaves nothing behind.
refused() {
    local d=$1 re=$2 img=$3
    shift 3
    fails_with "$d" "$re" "$@"
    nothing_left "$d" "$img"
}

mkdir "$T/dir"
echo data >"$T/notdir"
for via in ${VIAS:-loop fuse}; do
    img=$T/$via-new.img
    for size in 0 -1 junk 12abc 99999999999999999T 0x10 1e3 0.1K; do
        refused "$via: open with size '$size'" "size|invalid|too large|usage" "$img" \
            "$VDISK" open --via "$via" "$img" "$size"
        [ -e "$img" ] && fail "$via: size '$size' left $img" || pass "$via: size '$size' created no file"
    done
    refused "$via: create with size '-1'" "invalid|usage" "$img" "$VDISK" create "$img" -1
    refused "$via: create overflowing size" "too large" "$img" "$VDISK" create "$img" 99999999999999999T
    [ -e "$img" ] && fail "$via: failed creates left $img" || pass "$via: failed creates left no file"

    "$VDISK" create "$T/$via.img" 16 || fail "$via: create"
    refused "$via: existing image with a different size" "16777216 bytes, not the" "$T/$via.img" \
        "$VDISK" open --via "$via" "$T/$via.img" 32
    eq "$via: the image kept its size" "$(stat -c %s "$T/$via.img")" $((16 << 20))
    refused "$via: a directory" "is a directory" "$T/dir" "$VDISK" open --via "$via" "$T/dir"
    refused "$via: /dev/null" "not a regular file or block device" "$T/none" \
        "$VDISK" open --via "$via" /dev/null
    refused "$via: a path through a file" "Not a directory" "$T/notdir/x.img" \
        "$VDISK" open --via "$via" "$T/notdir/x.img"
    refused "$via: a missing directory" "No such file or directory" "$T/nodir/x.img" \
        "$VDISK" open --via "$via" "$T/nodir/x.img" 16
    refused "$via: read-only open of a missing image" "does not exist" "$T/missing.img" \
        "$VDISK" open -r --via "$via" "$T/missing.img"
    refused "$via: closing what is not open" "not open" "$T/$via.img" "$VDISK" close "$T/$via.img"
    refused "$via: closing a device nobody opened" "not open" "$T/none" "$VDISK" close /dev/loop-control

    # a second open of an open image is refused and disturbs nothing
    dev=$("$VDISK" open --via "$via" "$T/$via.img") || fail "$via: open"
    echo "first open" | dd of="$dev" bs=4k conv=sync oflag=direct status=none
    fails_with "$via: second open of the same image" "already open as $dev" \
        "$VDISK" open --via "$via" "$T/$via.img"
    other=$([ "$via" = loop ] && echo fuse || echo loop)
    fails_with "$via: second open through the other via" "already open as $dev" \
        "$VDISK" open --via "$other" "$T/$via.img"
    eq "$via: still one record" "$(ls "$VDISK_RUN_DIR" | grep -c '\.rec$')" 1
    eq "$via: first disk still serves" "$(dd if="$dev" bs=4k count=1 iflag=direct status=none | tr -d '\0')" \
        "first open"
    ok "$via: close" "$VDISK" close "$T/$via.img"
    refused "$via: closing twice" "not open" "$T/$via.img" "$VDISK" close "$T/$via.img"
done

# usage errors
fails_with "open without an image" "usage" "$VDISK" open
fails_with "open with too many arguments" "usage" "$VDISK" open "$T/a.img" 1 2
fails_with "misspelt via" "unknown way" \
    "$VDISK" open --via fusee "$T/a.img"
finish

# SPDX-License-Identifier: MIT
# Sourced by benchmarks that time buffered I/O (page cache). On a VM whose
# host takes back the guest's free pages (virtio-balloon free page reporting,
# as on this project's machines: /sys/module/page_reporting), a page that was
# reported costs a host fault at its next touch (~7 us: touching 2 GiB took
# 3.3-4.8 s), and which tool gets such pages for its page cache is luck: a
# 1 GiB `vdisk convert -t unsafe` took 0.28-1.33 s in one series. So, while
# the benchmark runs, pages stay unreported for a minute after they are freed
# (min_free_ms, and only 4 MiB blocks: page_reporting_order), restored on exit;
# and warm_memory touches and frees memory before each timed run, for every
# tool alike. HOLD_PAGES=0 leaves the settings alone; WARM=0 skips the touch.

PR=/sys/module/page_reporting/parameters
WARM=${WARM:-2G}
HELD_PAGES=""

# hold_free_pages: defer page reporting until restore_free_pages (call it on exit)
hold_free_pages() {
    [ "${HOLD_PAGES:-1}" = 1 ] && [ -w "$PR/min_free_ms" ] || return 0
    HELD_PAGES="$(cat "$PR/min_free_ms") $(cat "$PR/page_reporting_order")"
    echo 60000 >"$PR/min_free_ms" && echo 10 >"$PR/page_reporting_order" &&
        echo "   free page reporting held for the run (min_free_ms 60000, order 10; were $HELD_PAGES)"
}

# restore_free_pages: the settings hold_free_pages found
restore_free_pages() {
    [ -n "$HELD_PAGES" ] || return 0
    set -- $HELD_PAGES
    echo "$1" >"$PR/min_free_ms"
    echo "$2" >"$PR/page_reporting_order"
    HELD_PAGES=""
}

# warm_memory: touch WARM bytes of memory and free them
warm_memory() {
    [ "$WARM" = 0 ] || dd if=/dev/zero of=/dev/null bs="$WARM" count=1 status=none
}

# SPDX-License-Identifier: MIT
# Shared by the in-guest tests (tests/vm/tests/*.sh, run by bash as root in
# the VM, cwd a fresh directory on the ext4 scratch disk /work/<test>).
# Assertions print "PASS: …" / "FAIL: …" lines; cleanups run at exit.
set -u
VDISK=${VDISK:-/bin/vdisk}
NAME=$(basename "$0" .sh)
T=$PWD
FAILS=0
CLEANUPS=()
export VDISK_RUN_DIR=$T/run

# Run "$@" at exit, last registered first.
at_exit() { CLEANUPS=("$*" "${CLEANUPS[@]}"); }
_run_cleanups() { for c in "${CLEANUPS[@]}"; do eval "$c" >/dev/null 2>&1 || true; done; }
trap _run_cleanups EXIT

pass() { echo "PASS: $NAME: $*"; }
fail() { echo "FAIL: $NAME: $*"; FAILS=$((FAILS + 1)); }

# ok DESC CMD...: CMD exits 0.
ok() {
    local d=$1; shift
    if "$@" >"$T/.out" 2>"$T/.err"; then pass "$d"; else
        fail "$d (exit $?: $(head -c 300 "$T/.err"))"; fi
}

# fails DESC CMD...: CMD exits non-zero.
fails() {
    local d=$1; shift
    if "$@" >"$T/.out" 2>"$T/.err"; then fail "$d (succeeded)"; else pass "$d"; fi
}

# fails_with DESC REGEX CMD...: CMD exits non-zero and stderr matches REGEX.
fails_with() {
    local d=$1 re=$2; shift 2
    if "$@" >"$T/.out" 2>"$T/.err"; then fail "$d (succeeded)"; return; fi
    if grep -Eq -- "$re" "$T/.err"; then pass "$d"; else
        fail "$d (stderr: $(head -c 300 "$T/.err"), wanted /$re/)"; fi
}

# eq DESC GOT WANT
eq() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (got '$2', want '$3')"; fi; }

# module_loaded NAME: true if module NAME is loaded.
module_loaded() { grep -q "^$1 " /proc/modules; }

# load_vdisk: load vdisk.ko unless loaded.
load_vdisk() { module_loaded vdisk || insmod /lib/modules/vdisk.ko; }

# finish: the exit status says whether any assertion failed.
finish() { exit $((FAILS > 0)); }

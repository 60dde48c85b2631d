# SPDX-License-Identifier: MIT
# Assertions shared by the host tests (tests/lib.sh) and the in-guest tests
# (tests/vm/lib.sh): each prints a "PASS: …", "FAIL: …" or "SKIP: [need:NEED] …"
# line that the runners count. Needs T (a scratch directory); TEST_PREFIX, if set,
# starts every message. Cleanups registered with at_exit run when the test exits.
FAILS=0
CLEANUPS=()
. "$(dirname "${BASH_SOURCE[0]}")/needs.sh"

# Run "$@" at exit, last registered first.
at_exit() { CLEANUPS=("$*" "${CLEANUPS[@]}"); }
_run_cleanups() { for c in "${CLEANUPS[@]}"; do eval "$c" >/dev/null 2>&1 || true; done; }

pass() { echo "PASS: ${TEST_PREFIX:-}$*"; }
fail() { echo "FAIL: ${TEST_PREFIX:-}$*"; FAILS=$((FAILS + 1)); }

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

# fails_with DESC REGEX CMD...: CMD exits non-zero, and its stderr matches REGEX.
fails_with() {
    local d=$1 re=$2; shift 2
    if "$@" >"$T/.out" 2>"$T/.err"; then fail "$d (succeeded)"; return; fi
    if grep -Eq -- "$re" "$T/.err"; then pass "$d"; else
        fail "$d (stderr: $(head -c 300 "$T/.err"), wanted /$re/)"; fi
}

# eq DESC GOT WANT
eq() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 (got '$2', want '$3')"; fi; }

# skip NEED REASON: what follows cannot be checked here, because this machine lacks
# NEED (a key of tests/needs.sh). A skip of something this machine has is a failure.
skip() {
    has_need "$1"
    case $? in
    0) fail "skipped but this machine has $1: $2" ;;
    1) echo "SKIP: [need:$1] ${TEST_PREFIX:-}$2" ;;
    *) fail "skip for an unknown need '$1': $2" ;;
    esac
}

# skip_all NEED REASON: skip the rest of the script (exit 77 once skipped).
skip_all() { skip "$@"; [ "$FAILS" -gt 0 ] && exit 1; exit 77; }

# Finish the script: exit status says whether any assertion failed.
finish() { exit $((FAILS > 0)); }

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Before and after in one run: a bench script run with an older vdisk binary and
# with this tree's, alternately, ROUNDS times each (old first in odd rounds, new
# first in even ones), so that drift on a shared machine hits both alike. The
# spread of one binary over its own rounds is the run-to-run noise to quote.
# Usage: bench/ab.sh OLD_VDISK SCRIPT [ARGS...]   Env: ROUNDS (2), OUT (log dir).
# Example: git worktree add /tmp/old <commit> && (cd /tmp/old && meson setup build &&
#          ninja -C build) && bench/ab.sh /tmp/old/build/tools/vdisk/vdisk bench/nbd.sh 5
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NEW=${VDISK:-$ROOT/build/tools/vdisk/vdisk}
OLD=${1:?usage: bench/ab.sh OLD_VDISK SCRIPT [ARGS...]}
SCRIPT=${2:?usage: bench/ab.sh OLD_VDISK SCRIPT [ARGS...]}
shift 2
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-$(mktemp -d /var/tmp/vdisk-ab.XXXXXX)}
mkdir -p "$OUT"
name=$(basename "$SCRIPT" .sh)
[ -x "$OLD" ] && [ -x "$NEW" ] || { echo "ab: $OLD or $NEW is not executable" >&2; exit 1; }
echo "ab: $name, $ROUNDS rounds; old $OLD, new $NEW; logs in $OUT; load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    order=(old new)
    [ $((r % 2)) -eq 0 ] && order=(new old)
    for which in "${order[@]}"; do
        bin=$NEW
        [ "$which" = old ] && bin=$OLD
        echo "== round $r: $which"
        VDISK=$bin "$SCRIPT" "$@" 2>&1 | tee "$OUT/$name.$which.$r.log"
    done
done

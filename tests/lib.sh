# SPDX-License-Identifier: MIT
# Shared by the shell tests: the assertions of tests/assert.sh, a scratch
# directory T, and cleanup on exit.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
VDISK=${VDISK:-$BUILD/tools/vdisk/vdisk}
T=$(mktemp -d /tmp/vdisk-test.XXXXXX)
. "$ROOT/tests/assert.sh"
trap '_run_cleanups; rm -rf "$T"' EXIT

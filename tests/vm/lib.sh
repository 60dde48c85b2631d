# SPDX-License-Identifier: MIT
# Shared by the in-guest tests (tests/vm/tests/*.sh, run by bash as root in
# the VM, cwd a fresh directory on the ext4 scratch disk /work/<test>).
# Assertions come from tests/assert.sh (copied to /vm/assert.sh); cleanups run at exit.
set -u
VDISK=${VDISK:-/bin/vdisk}
NAME=$(basename "$0" .sh)
T=$PWD
export VDISK_RUN_DIR=$T/run
[ -f /vm/env ] && . /vm/env # BENCH_*, VMT_* from the host
TEST_PREFIX="$NAME: "
. /vm/assert.sh
trap _run_cleanups EXIT

# module_loaded NAME: true if module NAME is loaded.
module_loaded() { grep -q "^$1 " /proc/modules; }

# load_vdisk: load vdisk.ko unless loaded.
load_vdisk() { module_loaded vdisk || insmod /lib/modules/vdisk.ko; }


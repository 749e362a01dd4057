#!/usr/bin/env bash
# Issue 17: `prune --compile` against the eager walk, in ONE device call (about 5 minutes on an H200):
# LLaMA-7B shapes, random fp16 weights, 128 x 2048 calibration, 2:4, all 32 blocks, block offload. One process
# per mode prunes METHODS in turn (the second on the first's output, as prune_time_compare.sh does), saving
# block 0's masks after each run; the table gives seconds (compile time included), speed-up, peak GPU memory
# and how many of block 0's mask bits agree. The compiled walk runs twice: cold (inductor compiles every graph),
# then warm (a new process whose graphs come from inductor's on-disk cache, as for every later prune on that
# machine).
#
#   bash benchmarks/pruning/issue17_compile_h200.sh            # device call from the repo root; results in $OUT
#   bash benchmarks/pruning/issue17_compile_h200.sh --tiny     # CPU test of the script (tiny shapes)
#   METHODS="wanda++@2:4@loop_norms=ro" bash benchmarks/pruning/issue17_compile_h200.sh
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
RESULTS=${OUT:-${TMPDIR:-/tmp}/issue17_compile}
METHODS=${METHODS:-wanda wanda++}
ARGS=(--layers 32 --nsamples 128 --seqlen 2048 --micro-batch 8)
if [ "${1:-}" = "--tiny" ]; then
  ARGS=(--tiny --device cpu --layers 2 --nsamples 8 --seqlen 64 --micro-batch 4)
fi
mkdir -p "$RESULTS"
cd "$REPO" || exit 2
START=$(date +%s)
for mode in eager compile compile-warm; do
  flag=(); [ "$mode" != eager ] && flag=(--compile)
  echo "== $mode: $METHODS ($(( $(date +%s) - START )) s so far)" >&2
  # shellcheck disable=SC2086  # METHODS is a list of runs
  PYTHONUNBUFFERED=1 PYTHONPATH="$REPO" timeout "${STEP_LIMIT:-280}" $PY -P -m benchmarks.pruning.prune_time_7b \
    "${ARGS[@]}" --methods $METHODS "${flag[@]}" --tag "$mode" --output "$RESULTS/rows.jsonl" \
    --save-masks "$RESULTS/masks" 2> >(grep -v 'block/s\]\|s/block\]' >&2) || echo "$mode: exit $?" >&2
done
for mode in compile compile-warm; do
  PYTHONPATH="$REPO" $PY -P -m benchmarks.pruning.prune_time_table "$RESULTS/rows.jsonl" --masks "$RESULTS/masks" \
    --tags eager "$mode" --markdown "$RESULTS/table-$mode.md"
done
echo "== done in $(( $(date +%s) - START )) s" >&2

#!/usr/bin/env bash
# Issue 17, the Wanda / Wanda++ round, in ONE H200 device call (about 6 minutes; bounded at 60+350+105+75 s):
#   1. tests/test_gpu.py's overlapped-copy tests (side stream + worker thread against synchronous copies);
#   2. old against new prune time for wanda and wanda++ (paper defaults), all 32 blocks, masks compared
#      (prune_time_compare.sh --only "wanda wanda++", time budget 340 s);
#   3. the per-phase table of 4 blocks for wanda, wanda++ and wanda++ with loop_norms=ro (no profiler trace);
#   4. new wanda once more with synchronous copies (--no-overlap): how much of the gain is the overlap.
#
#   bash benchmarks/pruning/prune_time_compare.sh --pack OLD        # here first: .carry/wandapp-OLD.tar.gz
#   bash benchmarks/pruning/issue17_wanda_h200.sh OLD                # device call from the repo root, carry .carry
#   bash benchmarks/pruning/issue17_wanda_h200.sh OLD --tiny         # CPU test of the script (tiny shapes, /tmp)
#
# Results: benchmarks/results/h200_prune_time_compare_wanda.{jsonl,md}, h200_profile_block_7b_v3.txt,
# issue17_gpu_tests.txt, all copied to $OUT when set.
set -uo pipefail
OLD=${1:?usage: $0 OLD_SHA}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
RESULTS=$REPO/benchmarks/results
COMPARE=(--budget 340); PROFILE=(--layers 4); SYNC=(--layers 32 --nsamples 128 --seqlen 2048 --micro-batch 8)
if [ "${2:-}" = "--tiny" ]; then
  RESULTS=${TMPDIR:-/tmp}/issue17_tiny; mkdir -p "$RESULTS"
  COMPARE=(--tiny); PROFILE=(--layers 2 --device cpu --shape tiny --nsamples 8 --seqlen 64 --micro-batch 4)
  SYNC=(--tiny --device cpu --layers 4 --nsamples 8 --seqlen 64)
fi
cd "$REPO" || exit 2
START=$(date +%s)

echo "== 1. overlapped-copy tests on the GPU" >&2
if $PY -c "import pytest" 2>/dev/null; then
  PYTHONPATH="$REPO" timeout 60 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "overlapped or shuttle" \
    2>&1 | tail -15 | tee "$RESULTS/issue17_gpu_tests.txt"
else
  echo "pytest is not installed here: tests skipped" | tee "$RESULTS/issue17_gpu_tests.txt"
fi

echo "== 2. old ($OLD) against new: wanda, wanda++ ($(( $(date +%s) - START )) s so far)" >&2
PYTHONUNBUFFERED=1 bash benchmarks/pruning/prune_time_compare.sh "$OLD" --only "wanda wanda++" "${COMPARE[@]}" \
  --name h200_prune_time_compare_wanda

echo "== 3. per-phase table, 4 blocks ($(( $(date +%s) - START )) s so far)" >&2
PYTHONPATH="$REPO" timeout 105 $PY -P -m benchmarks.pruning.profile_block_7b "${PROFILE[@]}" --no-profiler \
  --methods wanda wanda++ 'wanda++@2:4@loop_norms=ro' --output "$RESULTS/h200_profile_block_7b_v3.txt" \
  2> >(grep -v 'block/s\]\|s/block\]' >&2)

echo "== 4. new wanda with synchronous copies: the overlap's share ($(( $(date +%s) - START )) s so far)" >&2
PYTHONPATH="$REPO" timeout 75 $PY -P -m benchmarks.pruning.prune_time_7b "${SYNC[@]}" --methods wanda --no-overlap \
  --tag new-sync --output "$RESULTS/h200_prune_time_compare_wanda_sync.jsonl" 2> >(grep -v 'block/s\]\|s/block\]' >&2)

if [ -n "${OUT:-}" ]; then
  cp "$RESULTS"/issue17_gpu_tests.txt "$RESULTS"/h200_profile_block_7b_v3.txt \
     "$RESULTS"/h200_prune_time_compare_wanda.* "$RESULTS"/h200_prune_time_compare_wanda_sync.jsonl "$OUT"/ 2>/dev/null
fi
echo "== done in $(( $(date +%s) - START )) s" >&2

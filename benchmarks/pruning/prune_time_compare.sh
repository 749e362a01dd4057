#!/usr/bin/env bash
# Old-vs-new prune time in ONE device call: the wandapp of commit OLD against this working tree, through the same
# harness (python -m benchmarks.pruning.prune_time_7b, this tree's), on the LLaMA-7B shapes of issue 17.
#
#   bash benchmarks/pruning/prune_time_compare.sh --pack OLD      # here: .carry/wandapp-OLD.tar.gz (device has no .git)
#   bash benchmarks/pruning/prune_time_compare.sh OLD [--tiny]    # on the H200 (carry .carry), or a CPU harness test
#   ... OLD --only "wanda wanda++"                                  # only these methods (both sides; ~5 min on the H200)
#
# Old: wanda, sparsegpt on the first 8 of 32 blocks (about 8.8 s a block; extrapolated per block, the table says
# so), wanda++ with the paper's defaults, magnitude. New: the same, sparsegpt on all 32 blocks, plus gblm if this tree
# has it (before magnitude).
# Every run prunes the model the runs before it left (same order on both sides), and block 0's masks are compared
# after each run. Rows: benchmarks/results/$NAME.jsonl (+ .md table), copied to $OUT when set. A time budget
# (--budget, default 530 s) stops a side's process before the device's 10-minute limit; the rows so far stay.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
[ $# -ge 1 ] || { echo "usage: $0 [--pack] OLD_SHA [--tiny] [--only 'METHOD ...'] [--budget S] [--name NAME]" >&2; exit 2; }
if [ "$1" = "--pack" ]; then
  sha=${2:?usage: $0 --pack OLD_SHA}
  mkdir -p "$REPO/.carry"
  git -C "$REPO" archive --format=tar "$sha" wandapp | gzip > "$REPO/.carry/wandapp-$sha.tar.gz" || exit 2
  echo "$REPO/.carry/wandapp-$sha.tar.gz ($(du -h "$REPO/.carry/wandapp-$sha.tar.gz" | cut -f1)); carry .carry in the device call"
  exit 0
fi
OLD=$1; shift
TINY=0; BUDGET=530; NAME=""; OLD_BLOCKS=8; ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --tiny) TINY=1 ;;
    --only) ONLY=$2; shift ;;  # e.g. "wanda wanda++": only these methods, on both sides
    --budget) BUDGET=$2; shift ;;
    --name) NAME=$2; shift ;;
    --old-sparsegpt-blocks) OLD_BLOCKS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
START=$(date +%s)
WORK=$(mktemp -d)
mkdir -p "$WORK/old" "$WORK/masks"
if git -C "$REPO" cat-file -e "$OLD^{commit}" 2>/dev/null; then
  git -C "$REPO" archive --format=tar "$OLD" wandapp | tar -x -C "$WORK/old"
elif ls "$REPO"/.carry/wandapp-"$OLD"*.tar.gz >/dev/null 2>&1; then
  tar -xzf "$(ls "$REPO"/.carry/wandapp-"$OLD"*.tar.gz | head -1)" -C "$WORK/old"
else
  echo "no commit $OLD here and no .carry/wandapp-$OLD.tar.gz: run '$0 --pack $OLD' first and carry .carry" >&2
  exit 2
fi
[ -f "$WORK/old/wandapp/walker.py" ] || { echo "the old code has no wandapp/walker.py" >&2; exit 2; }

if [ $TINY = 1 ]; then
  COMMON=(--tiny --device cpu --layers 4 --nsamples 8 --seqlen 64)
  OLD_BLOCKS=2; WPP='wanda++@2:4@ro_rounds=1,ro_samples=2'; NAME=${NAME:-tiny_prune_time_compare}
  RESULTS=${TMPDIR:-/tmp}/$NAME
else
  COMMON=(--layers 32 --nsamples 128 --seqlen 2048 --micro-batch 8)
  WPP='wanda++'; NAME=${NAME:-h200_prune_time_compare}
  RESULTS=$REPO/benchmarks/results
fi
mkdir -p "$RESULTS"
ROWS=$WORK/rows.jsonl
HAS_GBLM=$(cd "$WORK" && PYTHONPATH="$REPO" $PY -P -c "from wandapp.methods import METHODS; print(int('gblm' in METHODS))" 2>/dev/null || echo 0)
NEW_RUNS=(wanda sparsegpt "$WPP"); [ "$HAS_GBLM" = 1 ] && NEW_RUNS+=(gblm)
NEW_RUNS+=(magnitude); OLD_RUNS=(wanda sparsegpt "$WPP" magnitude)  # magnitude last: the others' runs as before
keep() {  # the runs among "$@" whose method is in --only (all without it)
  local run; for run in "$@"; do
    if [ -z "$ONLY" ] || [[ " $ONLY " == *" ${run%%@*} "* ]]; then printf '%s\n' "$run"; fi
  done
}
mapfile -t OLD_RUNS < <(keep "${OLD_RUNS[@]}"); mapfile -t NEW_RUNS < <(keep "${NEW_RUNS[@]}")
[ ${#NEW_RUNS[@]} -gt 0 ] || { echo "--only '$ONLY' keeps no run" >&2; exit 2; }

side() {  # tag, PYTHONPATH, runs...
  local tag=$1 path=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ $left -lt 30 ]; then echo "== $tag: skipped, ${left}s of the budget left" >&2; return; fi
  echo "== $tag (wandapp from ${path%%:*}; ${left}s of the budget left): $*" >&2
  (cd "$REPO" && PYTHONPATH="$path" timeout "$left" $PY -P -m benchmarks.pruning.prune_time_7b "${COMMON[@]}" \
     --methods "$@" --limit "sparsegpt=$LIMIT" --tag "$tag" --output "$ROWS" --save-masks "$WORK/masks") \
     2> >(grep -v 'block/s\]\|s/block\]' >&2)
  local rc=$?
  [ $rc = 0 ] || echo "== $tag: exit $rc (124: stopped at the time budget)" >&2
}
[ ${#OLD_RUNS[@]} -gt 0 ] && LIMIT=$OLD_BLOCKS side old "$WORK/old:$REPO" "${OLD_RUNS[@]}"
LAYERS=$([ $TINY = 1 ] && echo 4 || echo 32)
LIMIT=$LAYERS side new "$REPO" "${NEW_RUNS[@]}"

STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)
OLD_SHA=$OLD $PY - "$ROWS" "$RESULTS/$NAME.jsonl" "$STAMP" <<'PYEOF'
import json, os, sys
rows, out, stamp = sys.argv[1], sys.argv[2], sys.argv[3]
with open(out, "a") as f:
    for line in open(rows) if os.path.exists(rows) else []:
        if line.strip():
            row = json.loads(line)
            row.update(compare_run=stamp, old_sha=os.environ["OLD_SHA"])
            f.write(json.dumps(row) + "\n")
PYEOF
(cd "$REPO" && PYTHONPATH="$REPO" $PY -P -m benchmarks.pruning.prune_time_table "$ROWS" --masks "$WORK/masks" \
   --markdown "$RESULTS/$NAME.md")
if [ -n "${OUT:-}" ]; then cp "$RESULTS/$NAME.jsonl" "$RESULTS/$NAME.md" "$OUT"/ 2>/dev/null; fi
echo "rows: $RESULTS/$NAME.jsonl; table: $RESULTS/$NAME.md; $(( $(date +%s) - START )) s in all" >&2
rm -rf "$WORK"

#!/usr/bin/env bash
# SmolLM2 perplexity after pruning, an old commit's wandapp against this tree's, in one device call (issue 17's
# "quality unchanged" check). The GPU machine has no gguf package and a call carries at most 64 MiB, so the GGUF
# travels in two parts over two calls (the machine stays warm between them):
#
#   here:  bash benchmarks/pruning/quality_compare.sh pack OLD [MIRROR]   # .carry/q1 (GGUF part 1, gguf wheel, data)
#                                                                         # and .carry/q2 (part 2, OLD's wandapp/)
#   call 1 (carry [".carry/q1"]):  bash benchmarks/pruning/quality_compare.sh stash
#   call 2 (carry [".carry/q2"]):  bash benchmarks/pruning/quality_compare.sh run [RUNS...]
#   later calls on the still-warm machine (the stash stays; no carry): run again, e.g. with other SIDES.
#
# OLD_PATCH=FILE at pack time also ships OLD with FILE applied, as the side `old_patched` (e.g. one fix of OLD's
# that is not in the code under test, to see whether it alone explains a difference). SIDES picks and orders the
# sides a run measures: "old new" by default, "old old_patched new" when a patch was packed.
#   CPU test of the whole path:    DEVICE=cpu ARGS="--dtype float32 --nsamples 2 --seqlen 64 --max-windows 2" \
#                                  bash benchmarks/pruning/quality_compare.sh local [RUNS...]
#
# `run` writes $OUT/quality_old.jsonl and $OUT/quality_new.jsonl (benchmarks.pruning.quality rows, appended as
# each run finishes, so a side stopped by its time limit still returns what it measured) and the printed tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
STASH=${STASH:-/root/quality_compare}
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
RUNS_DEFAULT=("wanda++@2:4" "wanda++@2:4@preset=tuned")  # the presets issue 17 names
die() { echo "quality_compare: $*" >&2; exit 2; }

pack() {
    local old=${1:?OLD commit} mirror=${2:-../shared/data} gguf half
    git check-ignore -q .carry/ || die ".carry/ is not git-ignored"
    gguf=$(PYTHONPATH=. "${PYTHON_HERE:-.venv/bin/python}" -c \
        "from wandapp.models import embedded_gguf; print(embedded_gguf('smollm2'))")
    rm -rf .carry/q1 .carry/q2 && mkdir -p .carry/q1/data .carry/q2
    half=$(( $(stat -c %s "$gguf") / 2 ))
    head -c "$half" "$gguf" > .carry/q1/gguf.part1
    tail -c +"$((half + 1))" "$gguf" > .carry/q2/gguf.part2
    sha256sum "$gguf" | cut -d' ' -f1 > .carry/q1/gguf.sha256
    cp -r "$mirror/wikitext2" "$mirror/c4" .carry/q1/data/
    "${PYTHON_HERE:-.venv/bin/python}" -m pip download -q --no-deps gguf -d .carry/q1/wheels
    git archive "$old" wandapp | gzip > .carry/q2/old.tar.gz
    echo "$old" > .carry/q2/old.ref
    if [ -n "${OLD_PATCH:-}" ]; then
        cp "$OLD_PATCH" .carry/q2/old.patch
        local tmp; tmp=$(mktemp -d); tar -xzf .carry/q2/old.tar.gz -C "$tmp"
        patch -d "$tmp" -p1 --dry-run -s < "$OLD_PATCH" || die "$OLD_PATCH does not apply to $old"
        rm -rf "$tmp"
    fi
    du -sh .carry/q1 .carry/q2
}

stash() {
    mkdir -p "$STASH"
    cp -r .carry/q1/. "$STASH/"
    echo "stashed: $(ls "$STASH")"
}

assemble() {  # the GGUF, the gguf package and OLD's wandapp (and OLD patched), under $STASH; once per machine
    [ -f "$STASH/assembled" ] && return 0
    [ -f "$STASH/gguf.part1" ] || die "no part 1 in $STASH: run 'stash' with .carry/q1 first"
    [ -f .carry/q2/gguf.part2 ] || die "no .carry/q2: carry it in the call after 'stash'"
    cat "$STASH/gguf.part1" .carry/q2/gguf.part2 > "$STASH/$GGUF_NAME"
    [ "$(sha256sum "$STASH/$GGUF_NAME" | cut -d' ' -f1)" = "$(cat "$STASH/gguf.sha256")" ] || die "GGUF checksum"
    python -m pip install -q --no-deps --target "$STASH/site" "$STASH"/wheels/*.whl
    rm -rf "$STASH/old" "$STASH/old_patched" && mkdir -p "$STASH/old" && tar -xzf .carry/q2/old.tar.gz -C "$STASH/old"
    if [ -f .carry/q2/old.patch ]; then
        cp -r "$STASH/old" "$STASH/old_patched" && patch -d "$STASH/old_patched" -p1 -s < .carry/q2/old.patch
    fi
    touch "$STASH/assembled"
}

side() {  # NAME PYTHONPATH-prefix MODEL DATA OUTDIR RUNS...
    local name=$1 path=$2 model=$3 data=$4 out=$5; shift 5
    # shellcheck disable=SC2086
    PYTHONPATH=$path PYTHONUNBUFFERED=1 timeout "${SIDE_LIMIT:-270}" python -P -m benchmarks.pruning.quality \
        --model "$model" --data-dir "$data" --device "${DEVICE:-cuda}" ${ARGS:-} --output "$out/quality_$name.jsonl" \
        --runs "$@" 2>&1 | grep -v '%|' | tail -"${TAIL:-12}" | tee "$out/quality_$name.txt" || true
}

compare() {  # MODEL DATA OLDTREE OUTDIR RUNS...; OLDTREE_patched is the side old_patched
    local model=$1 data=$2 old=$3 out=$4 name sides; shift 4
    [ $# -gt 0 ] || set -- "${RUNS_DEFAULT[@]}"
    sides=${SIDES:-old $([ -d "${old}_patched" ] && echo old_patched) new}
    for name in $sides; do
        case $name in
            old) side old "$old:${EXTRA_PATH:-}:." "$model" "$data" "$out" "$@" ;;
            old_patched) [ -d "${old}_patched" ] || die "no patched OLD: pack with OLD_PATCH"
                         side old_patched "${old}_patched:${EXTRA_PATH:-}:." "$model" "$data" "$out" "$@" ;;
            new) side new "${EXTRA_PATH:-}:." "$model" "$data" "$out" "$@" ;;
            *) die "unknown side $name (old, old_patched, new)" ;;
        esac
    done
}

case ${1:-} in
    pack) shift; pack "$@" ;;
    stash) stash ;;
    run) shift; assemble; EXTRA_PATH=$STASH/site compare "$STASH/$GGUF_NAME" "$STASH/data" "$STASH/old" "${OUT:?}" "$@" ;;
    local) shift; tmp=$(mktemp -d); mkdir "$tmp/old"; git archive "${OLD:-4f5ea66}" wandapp | tar -x -C "$tmp/old"
           if [ -n "${OLD_PATCH:-}" ]; then
               cp -r "$tmp/old" "$tmp/old_patched" && patch -d "$tmp/old_patched" -p1 -s < "$OLD_PATCH"
           fi
           compare smollm2 "${MIRROR:-../shared/data}" "$tmp/old" "${OUT:-$tmp}" "$@"; echo "rows in ${OUT:-$tmp}" ;;
    *) die "usage: quality_compare.sh pack OLD [MIRROR] | stash | run [RUNS...] | local [RUNS...]" ;;
esac

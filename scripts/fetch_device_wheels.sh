#!/usr/bin/env bash
# Download into .whl/ (git-ignored) exactly the wheels that the lent GPU machine lacks for the workflow: snakemake,
# lm-eval, datasets, gguf, jsonschema and every package they need that the device image does not hold, at the
# versions of the local venv (`pip freeze`), for Python 3.12 on manylinux x86_64. Sdist-only packages (rouge-score,
# sqlitedict, word2number: pure Python) are built into wheels here. Prints each wheel and the total size.
#   scripts/fetch_device_wheels.sh [VENV_PYTHON]        (default: .venv/bin/python, else /work/main/.venv/bin/python)
# The device then installs them with scripts/device_workflow.sh (pip install --no-index --no-deps --target).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-}
if [ -z "$PY" ]; then
    for cand in .venv/bin/python /work/main/.venv/bin/python; do [ -x "$cand" ] && PY=$cand && break; done
fi
[ -x "${PY:-}" ] || { echo "fetch_device_wheels: no venv python (pass one)" >&2; exit 2; }
git check-ignore -q .whl/ || { echo "fetch_device_wheels: .whl/ is not git-ignored" >&2; exit 2; }

# The device image's packages (/work/.library/device/KINDS.md, "Python packages already there", read 2026-11-17):
# carried again they would shadow the image's builds (torch, numpy, pandas ... stay the image's).
DEVICE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp"
# Left out on purpose: PuLP (36 MB; only snakemake's ILP scheduler imports it: the device runs --scheduler greedy).
SKIP="pulp"
ROOTS="snakemake lm-eval datasets evaluate gguf jsonschema"

pins=$("$PY" - "$ROOTS" "$DEVICE_HAS" "$SKIP" <<'EOF'
import re, sys
from importlib.metadata import PackageNotFoundError, distribution
from packaging.markers import default_environment
from packaging.requirements import Requirement

norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
roots, device, skip = (set(map(norm, a.split())) for a in sys.argv[1:4])
env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython", "extra": ""}
seen, todo, pins = set(), list(roots), {}
while todo:
    name = todo.pop()
    if name in seen or name in skip or (name in device and name not in roots):
        continue
    seen.add(name)
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        sys.exit(f"fetch_device_wheels: {name} is needed but not installed in the venv")
    pins[norm(dist.metadata["Name"])] = dist.version
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            todo.append(norm(req.name))
print("\n".join(f"{n}=={v}" for n, v in sorted(pins.items())))
EOF
)
mkdir -p .whl
for pin in $pins; do
    name=${pin%%==*}
    if ls .whl/ 2>/dev/null | tr 'A-Z-' 'a-z_' | grep -q "^$(echo "$name" | tr 'A-Z-' 'a-z_')-${pin##*==}-"; then
        continue  # already fetched
    fi
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin" 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps -w .whl "$pin" \
    || { echo "fetch_device_wheels: no wheel for $pin" >&2; exit 1; }
done
ls -1 .whl
echo "wheels: $(ls .whl | wc -l), $(du -sh .whl | cut -f1) in all"

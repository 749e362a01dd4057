"""`wandapp prune --stream` against the in-memory path on a LLaMA-13B-shaped model with random fp16 weights.

Writes the model as sharded safetensors (one shard per block, as save_pretrained's index expects) into --workdir on
the device's disk, then, for each method, runs `wandapp prune` twice as a child process, --no-stream and --stream,
and records per run: the child's wall time (load + prune + save), the prune phase (prune_report wall_time_s), the
child's own peak RSS (VmHWM at its exit; os.wait4's ru_maxrss is kept beside it, but Linux copies the parent's
peak into it at exec, so it reads ~27 GB after this process wrote the model), peak GPU memory (prune_report), and
whether the outputs are bitwise equal. The last rows project the full model and LLaMA-70B from the per-block
figures (project_70b.py). One JSON line per row.

    python -m benchmarks.pruning.stream_13b --blocks 10 --output benchmarks/results/h200_stream_13b.jsonl
    python -m benchmarks.pruning.stream_13b --blocks 40 --methods wanda --modes stream --output ...   # full 13B
    python -m benchmarks.pruning.stream_13b --shape tiny --device cpu --nsamples 4 --seqlen 32 --output t.jsonl

The full 13B (--blocks 40, ~26 GB) costs about 4x the time of --blocks 10; each output is hashed and deleted
before the next run, so the disk holds the source and one output at most. `--modes stream` (or memory) runs one
path alone, without the bitwise comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.pruning.project_70b import SHAPES, Shape, per_block, project

REPO = Path(__file__).resolve().parents[2]


def llama_config(shape: Shape, blocks: int):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=blocks,
                       num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
                       max_position_embeddings=4096, tie_word_embeddings=shape.tied, bos_token_id=1, eos_token_id=2)


def write_random_model(folder: Path, shape: Shape, blocks: int, device: torch.device, seed: int = 0) -> float:
    """A save_pretrained-style folder: config, a small tokenizer, one shard per block plus one for the rest.
    Weights are drawn on `device` (fast on a GPU), block by block, so CPU memory holds one block. Returns bytes."""
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from wandapp.stream import INDEX_NAME

    folder.mkdir(parents=True, exist_ok=True)
    config = llama_config(shape, blocks)
    config.dtype = "float16"
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(folder)
    write_tokenizer(folder, shape.vocab)
    with torch.device("meta"):
        names = {k: v.shape for k, v in LlamaForCausalLM(config).state_dict().items()}
    if shape.tied:
        names.pop("lm_head.weight", None)
    groups = [[k for k in names if k.startswith(f"model.layers.{i}.")] for i in range(blocks)]
    groups.append([k for k in names if not k.startswith("model.layers.")])
    gen = torch.Generator(device).manual_seed(seed)
    weight_map, total = {}, 0
    for n, keys in enumerate(groups, 1):
        tensors = {}
        for k in keys:
            t = torch.empty(names[k], dtype=torch.float16, device=device)
            t.fill_(1.0) if "norm" in k else t.normal_(0, 0.02, generator=gen)
            tensors[k] = t.cpu()
        file = f"model-{n:05d}-of-{len(groups):05d}.safetensors"
        save_file(tensors, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, file))
        total += sum(t.numel() * 2 for t in tensors.values())
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def write_tokenizer(folder: Path, vocab: int) -> None:
    """A word-level tokenizer over `vocab` made-up words: prune needs one to load, calibration is given as ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)


# Runs the CLI in-process and records VmHWM when it exits: the child's own peak, save included (prune_report's
# figure is taken before the save).
CHILD = """import atexit, runpy, sys
from wandapp.runinfo import peak_cpu_rss_bytes
peak_file = sys.argv[1]
atexit.register(lambda: open(peak_file, "w").write(str(peak_cpu_rss_bytes())))
sys.argv = ["wandapp", *sys.argv[2:]]
runpy.run_module("wandapp", run_name="__main__")
"""


def run_prune(args, source: Path, calib: Path, out: Path, method: str, stream: bool) -> dict:
    """One `wandapp prune` child: wall time, its own peak RSS (VmHWM), wait4's figure, its prune_report figures."""
    peak_file = out.with_name(out.name + ".peak_rss")
    cmd = [sys.executable, "-c", CHILD, str(peak_file), "prune", "--model", str(source), "--method", method,
           "--sparsity", args.sparsity, "--calibration", str(calib), "--device", args.device, "--dtype", "float16",
           "--micro-batch", str(args.micro_batch), "--stream" if stream else "--no-stream", "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    total = time.perf_counter() - start
    err = child.stderr.read()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"wandapp {' '.join(cmd[4:])} failed ({child.returncode}):\n{err[-3000:]}")
    report = json.loads((out / "prune_report.json").read_text())
    peak = int(peak_file.read_text())
    peak_file.unlink()
    return {"total_s": round(total, 2), "prune_s": report["wall_time_s"], "peak_rss_bytes": peak,
            "wait4_maxrss_bytes": usage.ru_maxrss * 1024, "peak_gpu_bytes": report["peak_gpu_mem_bytes"],
            "sparsity_overall": report["sparsity_overall"]}


def weight_digests(folder: Path) -> dict[str, str]:
    """A digest of every tensor's bytes, one tensor at a time: outputs are compared by digest, so each can be deleted
    before the next run (the full 13B source and two outputs would not fit a 64 GB disk). xxh3-128 where the xxhash
    package is there (the device image has it; ~9x sha256's speed here), else sha256."""
    from safetensors import safe_open

    try:
        from xxhash import xxh3_128 as digest
    except ImportError:
        from hashlib import sha256 as digest
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                out[k] = f"{t.dtype}{tuple(t.shape)}" + digest(t.contiguous().view(torch.uint8).numpy()).hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-13b", choices=list(SHAPES))
    ap.add_argument("--blocks", type=int, default=None, help="decoder blocks to write (default: the shape's)")
    ap.add_argument("--methods", nargs="+", default=["wanda", "wanda++"])
    ap.add_argument("--modes", nargs="+", default=["memory", "stream"], choices=["memory", "stream"],
                    help="paths to run (default both, compared bitwise); one alone: e.g. the full 13B streamed only")
    ap.add_argument("--sparsity", default="2:4")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workdir", default="/tmp/wandapp-stream-bench", help="scratch folder on the device's disk")
    ap.add_argument("--keep", action="store_true", help="keep the written model (and skip writing it next time)")
    ap.add_argument("--output", required=True, help="JSONL, appended")
    args = ap.parse_args()

    from wandapp.codeversion import stage_code_hash
    from wandapp.data import save_calibration

    shape = SHAPES[args.shape]
    blocks = args.blocks or shape.blocks
    work = Path(args.workdir)
    source, calib = work / f"{args.shape}-{blocks}", work / "calib.safetensors"
    device = torch.device(args.device)
    start = time.perf_counter()
    if not (source / "config.json").is_file():
        nbytes = write_random_model(source, shape, blocks, device)
    else:
        nbytes = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    write_s = time.perf_counter() - start
    ids = torch.randint(3, shape.vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    save_calibration(calib, ids, {"source": "random"})
    common = {"shape": {k: getattr(shape, k) for k in Shape.__dataclass_fields__} | {"blocks": blocks},
              "shape_name": args.shape, "blocks": blocks, "nsamples": args.nsamples, "seqlen": args.seqlen,
              "sparsity": args.sparsity, "micro_batch": args.micro_batch, "model_bytes": nbytes,
              "write_model_s": round(write_s, 1), "device": args.device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "code": stage_code_hash("prune")}
    with open(args.output, "a") as log:
        def emit(row):
            row = {**row, "elapsed_s": round(time.perf_counter() - start, 1)}  # since the model write began
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()

        both = set(args.modes) == {"memory", "stream"}
        for method in args.methods:
            runs, digests = {}, {}
            for mode in args.modes:
                out = work / f"out-{mode}"
                shutil.rmtree(out, ignore_errors=True)
                runs[mode] = {"kind": "run", "method": method, "mode": mode, **common,
                              **run_prune(args, source, calib, out, method, mode == "stream")}
                if both:
                    digests[mode] = weight_digests(out)
                shutil.rmtree(out, ignore_errors=True)
            equal = digests["memory"] == digests["stream"] if both else None
            for mode in args.modes:
                emit({**runs[mode], "bitwise_equal": equal})
            if both:
                m, s = runs["memory"], runs["stream"]
                emit({"kind": "compare", "method": method, "blocks": blocks, "bitwise_equal": equal,
                      "stream_peak_rss_gb": round(s["peak_rss_bytes"] / 1e9, 2),
                      "memory_peak_rss_gb": round(m["peak_rss_bytes"] / 1e9, 2),
                      "total_time_ratio": round(s["total_s"] / m["total_s"], 3),
                      "prune_time_ratio": round(s["prune_s"] / m["prune_s"], 3)})
            # start-up and finishing, the same for both paths: what the streamed run spends outside its walk
            fixed = per_block(runs["stream"])["fixed_s"] if "stream" in runs else None
            for row in runs.values():
                full = Shape(**{**common["shape"], "blocks": shape.blocks})
                for name, target in ((f"{args.shape}-full", full), ("llama-70b", SHAPES["llama-70b"])):
                    emit({"kind": "projection", "target_name": name, **project(row, target, fixed)})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Prune time and peak GPU memory on a LLaMA-7B-shaped model with random weights (timing only).

32 blocks, hidden 4096, MLP 11008, 128 x 2048 calibration tokens, fp16 weights kept in CPU memory; the walker
moves one block at a time to the GPU (the default `wandapp prune` mode). Prints one JSON line per method.
A method may carry settings as in quality.py: METHOD[@SPARSITY[@key=value,...]]. Any method of
wandapp.methods runs, gblm too (its time includes the full-model gradient pass; gradient_chunk=N trades memory).

    python -m benchmarks.pruning.prune_time_7b --methods wanda wanda++ sparsegpt gblm 'wanda++@2:4@loop_norms=ro' \\
        --output t.jsonl

--limit RUN=BLOCKS prunes only the first BLOCKS blocks for that run (a slow method timed on part of the model);
--tag labels the rows (prune_time_compare.sh: old/new); --tiny and --device cpu test the harness without a GPU.
The rows name the wandapp they imported, so one harness can time an older checkout (PYTHONPATH=OLD python -P -m).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

import wandapp
from benchmarks.pruning.runs import parse_run
from wandapp.codeversion import stage_code_hash
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method
from wandapp.walker import prune_model

SHAPES = {  # LLaMA-7B; quarter: a quarter of its widths (a CPU profile); tiny: a harness test on the CPU
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
               vocab_size=32000, max_position_embeddings=2048),
    "quarter": dict(hidden_size=1024, intermediate_size=2752, num_attention_heads=8, num_key_value_heads=8,
                    vocab_size=32000, max_position_embeddings=2048),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                 vocab_size=32000, max_position_embeddings=2048),
}


def random_llama(device: torch.device, layers: int, dtype=torch.float16, shape: str = "7b") -> LlamaForCausalLM:
    cfg = LlamaConfig(num_hidden_layers=layers, **SHAPES[shape])
    with torch.device("meta"):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    model = model.to_empty(device=device)  # initialise on the GPU: filling 6.7B weights on the CPU takes minutes
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0, 0.02)
    try:  # its buffers are not parameters
        model.model.rotary_emb = LlamaRotaryEmbedding(cfg, device=device)
    except TypeError:  # transformers versions whose constructor takes no device
        model.model.rotary_emb = LlamaRotaryEmbedding(cfg).to(device)
    model.config.use_cache = False
    return model.eval()


def save_block_snapshot(model, path: str, run: str, rows: int = 64) -> None:
    """Block 0's prune masks (bit-packed) and its linears' first `rows` weight rows, for prune_time_table.py."""
    import numpy as np

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    snap = {"run": run, "masks": {}, "rows": {}}
    for name, module in model.model.layers[0].named_modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight.detach()
            snap["masks"][name] = torch.from_numpy(np.packbits((w == 0).cpu().numpy(), axis=None))
            snap["rows"][name] = w[:rows].float().cpu()
    torch.save(snap, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["wanda", "wanda++", "sparsegpt"])
    ap.add_argument("--sparsity", default="2:4")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--keep-on-device", action="store_true", help="whole model on the GPU instead of block by block")
    ap.add_argument("--output", default=None)
    ap.add_argument("--limit", nargs="*", default=[], metavar="RUN=BLOCKS",
                    help="prune only the first BLOCKS blocks for RUN (the row says so; per_block_s extrapolates)")
    ap.add_argument("--tag", default=None, help="a label for the rows, e.g. old or new")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="hidden 64, MLP 128: tests the harness (on the CPU too)")
    ap.add_argument("--no-overlap", action="store_true",
                    help="synchronous block copies (the walker's ResidentWeights(overlap=False)): the overlap's share")
    ap.add_argument("--compile", action="store_true", help="the walk's passes through torch.compile (prune --compile)")
    ap.add_argument("--save-masks", default=None, metavar="DIR",
                    help="after each run, save block 0's masks and first weight rows (old-vs-new comparison)")
    args = ap.parse_args()
    limits = {k: int(v) for k, v in (item.rsplit("=", 1) for item in args.limit)}

    torch.manual_seed(0)  # the same random model in every process
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    model = random_llama(device, args.layers, dtype, "tiny" if args.tiny else "7b")
    if not args.keep_on_device:
        model.to("cpu")
    all_blocks = model.model.layers
    ids = torch.randint(0, 32000, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    saved: list[str] = []
    for run in args.methods:
        name, sparsity, hyper, preset = parse_run(run)
        sparsity = sparsity or args.sparsity
        method = build_method(name, SparsityPattern.parse(sparsity), preset, **hyper)
        blocks = min(limits.get(run, args.layers), args.layers)
        model.model.layers = all_blocks[:blocks]
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            weights = None
            if args.no_overlap:  # only this tree's walker has the switch
                from wandapp.walker import ResidentWeights
                weights = ResidentWeights(device, offload=not args.keep_on_device, overlap=False)
            options = {"compile": True} if args.compile else {}  # only this tree's walker has the option
            logs = prune_model(model, ids, method, device, offload=not args.keep_on_device,
                               micro_batch=args.micro_batch, weights=weights, **options)
        finally:
            model.model.layers = all_blocks
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        row = {"method": name, "run": run, "sparsity": sparsity, "layers": args.layers, "blocks_pruned": blocks,
               "nsamples": args.nsamples, "seqlen": args.seqlen, "prune_s": round(seconds, 1),
               "per_block_s": round(seconds / blocks, 3),
               "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
               "keep_on_device": args.keep_on_device, "gpu": torch.cuda.get_device_name() if cuda else "cpu",
               "torch": torch.__version__, "hyperparameters": method.hyperparameters(),
               "code": stage_code_hash("prune"), "wandapp": os.path.dirname(wandapp.__file__),
               "shape": "tiny" if args.tiny else "7b"}
        if args.tag:
            row["tag"] = args.tag
        if args.no_overlap:
            row["overlap"] = False
        if args.compile:
            row["compile"] = True
        loops = sorted({log["column_loop"] for log in logs or [] if isinstance(log, dict) and "column_loop" in log})
        if loops:
            row["column_loop"] = "+".join(loops)
        staged = [log["staged_statistics"] for log in logs or []
                  if isinstance(log, dict) and "staged_statistics" in log]
        if staged:  # blocks whose statistics ran stage by stage (0.79 forwards a prune) rather than hooked
            row["staged_blocks"] = sum(staged)
        if args.save_masks:
            save_block_snapshot(model, os.path.join(args.save_masks, f"{args.tag or 'run'}-{len(saved)}.pt"), run)
            saved.append(run)
        print(json.dumps(row), flush=True)
        if args.output:
            with open(args.output, "a") as f:
                f.write(json.dumps(row) + "\n")

if __name__ == "__main__":
    main()

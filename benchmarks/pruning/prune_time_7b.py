"""Prune time and peak GPU memory on a LLaMA-7B-shaped model with random weights (timing only).

32 blocks, hidden 4096, MLP 11008, 128 x 2048 calibration tokens, fp16 weights kept in CPU memory; the walker
moves one block at a time to the GPU (the default `wandapp prune` mode). Prints one JSON line per method.
A method may carry settings as in quality.py: METHOD[@SPARSITY[@key=value,...]].

    python -m benchmarks.pruning.prune_time_7b --methods wanda wanda++ sparsegpt 'wanda++@2:4@loop_norms=ro' --output t.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from benchmarks.pruning.quality import parse_run
from wandapp.codeversion import stage_code_hash
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method
from wandapp.walker import prune_model


def random_llama(device: torch.device, layers: int, dtype=torch.float16) -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=2048)
    with torch.device("meta"):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    model = model.to_empty(device=device)  # initialise on the GPU: filling 6.7B weights on the CPU takes minutes
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0, 0.02)
    model.model.rotary_emb = LlamaRotaryEmbedding(cfg, device=device)  # its buffers are not parameters
    model.config.use_cache = False
    return model.eval()


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
    args = ap.parse_args()

    device = torch.device("cuda")
    model = random_llama(device, args.layers)
    if not args.keep_on_device:
        model.to("cpu")
    ids = torch.randint(0, 32000, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    for run in args.methods:
        name, sparsity, hyper, preset = parse_run(run)
        sparsity = sparsity or args.sparsity
        method = build_method(name, SparsityPattern.parse(sparsity), preset, **hyper)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        prune_model(model, ids, method, device, offload=not args.keep_on_device, micro_batch=args.micro_batch)
        torch.cuda.synchronize()
        row = {"method": name, "run": run, "sparsity": sparsity, "layers": args.layers, "nsamples": args.nsamples,
               "seqlen": args.seqlen, "prune_s": round(time.perf_counter() - start, 1),
               "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
               "keep_on_device": args.keep_on_device, "gpu": torch.cuda.get_device_name(),
               "torch": torch.__version__, "hyperparameters": method.hyperparameters(),
               "code": stage_code_hash("prune")}
        print(json.dumps(row), flush=True)
        if args.output:
            with open(args.output, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""Run a `wandapp export` sparse-24-bitmask checkpoint in vLLM and time prefill and decode.

NOT VERIFIED: needs envs/vllm.yaml (vLLM <= 0.18.x, the last with 2:4 support) on a Hopper GPU; no such
environment existed where this was written. Usage:
    python -m benchmarks.kernels.vllm_24 --model pruned-24 [--dense-model pruned-dense] [--prompt-len 2048]
"""

from __future__ import annotations

import argparse
import json
import time


def time_model(path: str, prompt_len: int, batch: int, new_tokens: int) -> dict:
    from vllm import LLM, SamplingParams

    llm = LLM(model=path, dtype="float16", max_model_len=prompt_len + new_tokens, enforce_eager=False)
    prompts = [{"prompt_token_ids": list(range(100, 100 + prompt_len))} for _ in range(batch)]
    prefill = SamplingParams(max_tokens=1, temperature=0.0)
    decode = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    llm.generate(prompts, prefill)  # warm-up
    t0 = time.perf_counter()
    llm.generate(prompts, prefill)
    prefill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    llm.generate(prompts, decode)
    total_s = time.perf_counter() - t0
    return dict(model=path, batch=batch, prompt_len=prompt_len, prefill_ms=prefill_s * 1000,
                decode_tokens_per_s=batch * new_tokens / max(total_s - prefill_s, 1e-9))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="sparse-24-bitmask folder from `wandapp export`")
    ap.add_argument("--dense-model", help="the same model saved dense, for the comparison")
    ap.add_argument("--prompt-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()
    rows = [time_model(m, args.prompt_len, args.batch, args.new_tokens) for m in (args.model, args.dense_model) if m]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

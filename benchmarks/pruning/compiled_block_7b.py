"""How much faster would a compiled LLaMA-7B block make Wanda's and Wanda++'s passes? (issue 17's open targets)

One LLaMA-7B-shaped block on the GPU, random fp16 weights, 128 x 2048 calibration inputs. Times, with CUDA events
(best of --repeat, after one warm-up that also compiles):

- the propagation pass (no grad, micro-batches of 8): eager, `torch.compile(block)`, and eager with only the
  element-wise parts compiled (the two RMSNorms and the MLP; attention and q/k/v/o stay eager);
- Wanda's statistics pass written without hooks (the dense block up to down_proj's input, the squared column
  norms of the four linear inputs): eager and compiled;
- Wanda++'s batch-1 forward + backward (a regional-gradient-like step over --grad-samples samples): eager and
  compiled;

the relative difference of each compiled variant's outputs from eager, and the eager pass's GPU time by kernel
kind (GEMM, attention, everything else) from torch.profiler: the ceiling of what fusing the element-wise work
can save. Nothing here changes wandapp; it measures whether a compiled block is worth building.

    python -m benchmarks.pruning.compiled_block_7b --output $OUT/compiled_block.txt
    python -m benchmarks.pruning.compiled_block_7b --device cpu --shape tiny --nsamples 4 --seqlen 32   # harness
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from benchmarks.pruning.one_block import block_zero, timed
from wandapp.staged import block_output


def first_and_best(run, repeat: int, cuda: bool) -> tuple[float, float, object]:
    """Seconds of the first call (which compiles), best of `repeat` after it, and the first call's result."""
    t0 = time.perf_counter()
    got = run()
    return time.perf_counter() - t0, timed(run, repeat, cuda), got


def kernel_kind(name: str) -> str:
    low = name.lower()
    if any(k in low for k in ("flash", "fmha", "attention", "sdpa")):
        return "attention"
    if any(k in low for k in ("gemm", "cutlass", "nvjet", "sm90_xmma", "cublas", "matmul")):
        return "gemm"
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--grad-samples", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    out = io.StringIO()

    def say(*parts):
        print(*parts, flush=True)
        print(*parts, file=out)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model, _, block, hidden, kwargs = block_zero(device, args.shape, args.nsamples, args.seqlen)
    gpu = torch.cuda.get_device_name() if cuda else "cpu"
    say(f"torch={torch.__version__} gpu={gpu} attn={model.config._attn_implementation} "
        f"{args.nsamples}x{args.seqlen} micro-batch {args.micro_batch}")

    def propagate(fn):
        def run():
            with torch.no_grad():
                return torch.cat([block_output(fn(hidden[s : s + args.micro_batch], **kwargs))
                                  for s in range(0, args.nsamples, args.micro_batch)])
        return run

    full = torch.compile(block)

    class PartlyCompiled(torch.nn.Module):  # the same block, its norms and MLP compiled, attention eager
        def __init__(self, block):
            super().__init__()
            self.block = block
            self.ln1 = torch.compile(block.input_layernorm)
            self.ln2 = torch.compile(block.post_attention_layernorm)
            self.mlp = torch.compile(block.mlp)

        def forward(self, x, **kw):
            h = x + block_output(self.block.self_attn(hidden_states=self.ln1(x), **kw))
            return h + self.mlp(self.ln2(h))

    partly = PartlyCompiled(block)
    ref = propagate(block)()
    variants = {"eager": block, "compiled block": full, "compiled norms + MLP": partly}
    for label, fn in variants.items():
        warm, best, got = first_and_best(propagate(fn), args.repeat, cuda)
        diff = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
        say(f"propagation  {label:22s} {best:.4f} s   first run {warm:.1f} s   rel diff {diff:.2e}")

    # Wanda's statistics pass without hooks (traceable): the dense block up to down_proj's input, and the
    # squared column norms of the four inputs the linears read. Its eager time is not `collect`'s (it sums the
    # norms in float32 on separate kernels); the compiled time is the figure that counts.
    def stats_forward(x, position_embeddings, **_):
        att = block.self_attn
        n1 = block.input_layernorm(x)
        b, t, _h = n1.shape
        shape = (b, t, -1, att.head_dim)
        q = att.q_proj(n1).view(shape).transpose(1, 2)
        k = att.k_proj(n1).view(shape).transpose(1, 2)
        v = att.v_proj(n1).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        a = a.transpose(1, 2).reshape(b, t, -1)
        h = x + att.o_proj(a)
        n2 = block.post_attention_layernorm(h)
        m = block.mlp.act_fn(block.mlp.gate_proj(n2)) * block.mlp.up_proj(n2)
        return [z.float().pow(2).sum(dim=(0, 1)) for z in (n1, a, n2, m)], h, m

    def stats_pass(fn):
        def run():
            with torch.no_grad():
                sums = None
                for s in range(0, args.nsamples, args.micro_batch):
                    got = fn(hidden[s : s + args.micro_batch], **kwargs)[0]
                    sums = got if sums is None else [a + b for a, b in zip(sums, got)]
                return sums

        return run

    with torch.no_grad():  # the rewrite is the block: its down_proj of m, plus h, is the block's output
        _, h, m = stats_forward(hidden[: args.micro_batch], **kwargs)
        out_ref = block_output(block(hidden[: args.micro_batch], **kwargs))
        rewrite = ((h + block.mlp.down_proj(m) - out_ref).float().norm() / out_ref.float().norm()).item()
    say(f"statistics rewrite against the block's own forward: rel diff {rewrite:.2e}")
    ref_stats = stats_pass(stats_forward)()
    for label, fn in (("eager", stats_forward), ("compiled", torch.compile(stats_forward))):
        warm, best, got = first_and_best(stats_pass(fn), args.repeat, cuda)
        diff = max(((g - r).norm() / r.norm()).item() for g, r in zip(got, ref_stats))
        say(f"statistics   {label:22s} {best:.4f} s   first run {warm:.1f} s   rel diff {diff:.2e}")

    params = [p for p in block.parameters() if p.dim() == 2]

    def grad_steps(fn):
        def run():
            for s in range(args.grad_samples):
                y = block_output(fn(hidden[s : s + 1], **kwargs))
                loss = y.float().pow(2).mean()
                grads = torch.autograd.grad(loss, params)
                del grads
        return run

    for p in block.parameters():
        p.requires_grad_(True)
    for label, fn in (("eager", block), ("compiled block", full)):
        warm, best, _ = first_and_best(grad_steps(fn), args.repeat, cuda)
        say(f"fwd+bwd x{args.grad_samples}  {label:22s} {best:.4f} s   first run {warm:.1f} s")
    for p in block.parameters():
        p.requires_grad_(False)

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda) as prof:
        propagate(block)()
        if cuda:
            torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", 0) if cuda else 0
        if us and ev.device_type == torch.autograd.DeviceType.CUDA:
            kinds[kernel_kind(ev.key)] = kinds.get(kernel_kind(ev.key), 0.0) + us / 1e6
    total = sum(kinds.values()) or float("nan")
    say("eager propagation, GPU time by kernel kind: " + ", ".join(
        f"{k} {v:.4f} s ({v / total:.0%})" for k, v in sorted(kinds.items())))
    sort = "device_time_total" if cuda else "cpu_time_total"
    say(prof.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=80))
    if args.output:
        with open(args.output, "w") as f:
            f.write(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())

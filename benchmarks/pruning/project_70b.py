"""Project prune time, peak CPU memory and peak GPU memory to other LLaMA shapes from measured per-block figures.

Input: the rows `stream_13b.py` writes (one per method and mode, measured on `blocks` blocks of a shape). Model:
- time = fixed + blocks x per-block time, and a block's time scales with its parameter count (every method's work
  on a block, Wanda's statistics, Wanda++'s RO steps, is linear in the block's weights for a fixed token count;
  attention's seq^2 term is a few percent at 2048 tokens and is ignored);
- streamed peak CPU = runtime + the tensors outside the blocks + 3 blocks (the one on the device keeps its CPU
  copy, the next one read ahead, the last one being written); in-memory peak CPU = runtime + the whole model; the
  runtime (Python, torch, CUDA context) is what the measurement leaves after those terms;
- peak GPU = calibration activations (inputs and outputs of a block: 2 x nsamples x seqlen x hidden, fp16) + a part
  proportional to the block (the block, its gradients or float32 copies, the method's statistics).

    python -m benchmarks.pruning.project_70b benchmarks/results/h200_stream_13b.jsonl
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

GB = 1e9


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    blocks: int
    heads: int
    kv_heads: int
    vocab: int = 32000
    tied: bool = False

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    def block_params(self) -> int:
        h = self.hidden
        return 2 * h * h + 2 * h * self.kv_dim + 3 * h * self.intermediate + 2 * h  # q,o; k,v; MLP; two norms

    def outside_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden  # embeddings, head, final norm

    def params(self) -> int:
        return self.blocks * self.block_params() + self.outside_params()


SHAPES = {
    "llama-13b": Shape(hidden=5120, intermediate=13824, blocks=40, heads=40, kv_heads=40),
    "llama-70b": Shape(hidden=8192, intermediate=28672, blocks=80, heads=64, kv_heads=8),
    "tiny": Shape(hidden=64, intermediate=128, blocks=4, heads=4, kv_heads=2, vocab=512),
}
BYTES = 2  # fp16


def activation_bytes(shape: Shape, nsamples: int, seqlen: int) -> int:
    return 2 * nsamples * seqlen * shape.hidden * BYTES


def per_block(row: dict, fixed_s: float | None = None) -> dict:
    """A measured row reduced to figures per block and fixed parts, in the row's own shape. `fixed_s`: the start-up
    and finishing time that does not grow with the model (default: what a streamed row spends outside its walk)."""
    shape = Shape(**row["shape"])
    block = shape.block_params() * BYTES
    outside = shape.outside_params() * BYTES
    resident = 3 * block + outside if row["mode"] == "stream" else row["blocks"] * block + outside
    act = activation_bytes(shape, row["nsamples"], row["seqlen"]) if row.get("peak_gpu_bytes") else 0
    outside_walk = max(row["total_s"] - row["prune_s"], 0.0)
    if fixed_s is None:
        fixed_s = outside_walk if row["mode"] == "stream" else 0.0
    return {
        "prune_s_per_block": row["prune_s"] / row["blocks"],
        "fixed_s": min(fixed_s, outside_walk),
        # in memory, loading and saving the whole model happen outside the walk and grow with it
        "io_s_per_block": max(outside_walk - fixed_s, 0.0) / row["blocks"],
        "runtime_rss_bytes": max(row["peak_rss_bytes"] - resident, 0),
        "gpu_bytes_per_block_param": max((row.get("peak_gpu_bytes") or 0) - act, 0) / shape.block_params(),
    }


def project(row: dict, target: Shape, fixed_s: float | None = None) -> dict:
    """The row's run projected onto `target` (all its blocks, same tokens and method); `fixed_s` as in per_block
    (for an in-memory row, pass the streamed row's, so that only its load and save scale with the model)."""
    shape = Shape(**row["shape"])
    f = per_block(row, fixed_s)
    scale = target.block_params() / shape.block_params()
    prune_s = target.blocks * f["prune_s_per_block"] * scale
    total_s = f["fixed_s"] + prune_s + target.blocks * f["io_s_per_block"] * scale
    if row["mode"] == "stream":
        cpu = f["runtime_rss_bytes"] + 3 * target.block_params() * BYTES + target.outside_params() * BYTES
    else:
        cpu = f["runtime_rss_bytes"] + target.params() * BYTES
    gpu = None
    if row.get("peak_gpu_bytes"):
        gpu = (activation_bytes(target, row["nsamples"], row["seqlen"])
               + f["gpu_bytes_per_block_param"] * target.block_params())
    return {"method": row["method"], "mode": row["mode"], "target": asdict(target),
            "target_params_b": round(target.params() / 1e9, 2), "from_blocks": row["blocks"],
            "prune_s": round(prune_s, 1), "total_s": round(total_s, 1), "peak_cpu_gb": round(cpu / GB, 2),
            "peak_gpu_gb": None if gpu is None else round(gpu / GB, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", help="JSONL from stream_13b.py (rows with kind 'run')")
    ap.add_argument("--targets", nargs="+", default=["llama-13b", "llama-70b"], choices=list(SHAPES))
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.rows) if line.strip()]
    runs = [r for r in rows if r.get("kind") == "run"]
    for row in runs:
        fixed = stream_fixed_s(runs, row)
        for name in args.targets:
            print(json.dumps({"kind": "projection", "target_name": name, **project(row, SHAPES[name], fixed)}))


def stream_fixed_s(runs: list[dict], row: dict) -> float | None:
    """The fixed time of the streamed run of the same method and size, which an in-memory row's projection uses."""
    twin = [r for r in runs if r["mode"] == "stream" and r["method"] == row["method"] and r["blocks"] == row["blocks"]]
    return per_block(twin[-1])["fixed_s"] if twin else None


if __name__ == "__main__":
    main()

"""Milliseconds per block of the mask functions, the current ones against those they replaced
(tests/masks_reference.py), on one block's linear shapes; checks both give the same masks first.

    python -m benchmarks.pruning.mask_speed --device cuda                  # LLaMA-7B shapes
    OMP_NUM_THREADS=2 python -m benchmarks.pruning.mask_speed --device cpu --shape smollm2
"""

from __future__ import annotations

import argparse
import time

import torch

from tests import masks_reference
from wandapp.masks import nm_mask, unstructured_mask

SHAPES = {  # (rows, cols) of one block's linears: q, k, v, o, gate, up, down
    "7b": [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)],
    "smollm2": [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)],
}
RUNS = {  # name: (current, replaced)
    "unstructured 0.5": (lambda s: unstructured_mask(s, 0.5), lambda s: masks_reference.unstructured_mask(s, 0.5)),
    "2:4": (lambda s: nm_mask(s, 2, 4), lambda s: masks_reference.nm_mask(s, 2, 4)),
    "4:8": (lambda s: nm_mask(s, 4, 8), lambda s: masks_reference.nm_mask(s, 4, 8)),
}


def milliseconds(fn, scores, device, repeat: int) -> float:
    for _ in range(2):
        [fn(s) for s in scores]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeat):
        [fn(s) for s in scores]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeat * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    scores = [torch.rand(s, generator=gen).to(device) for s in SHAPES[args.shape]]
    tied = [(s * 8).round() for s in scores]
    for name, (new, old) in RUNS.items():
        assert all(torch.equal(new(s), old(s)) for s in scores + tied), f"{name}: the masks differ"
    print(f"{args.shape} shapes on {device} (torch {torch.__version__}, {torch.get_num_threads()} threads); "
          "masks equal (random and tied scores)")
    print("| mask | replaced ms | current ms | speed-up |\n|---|---|---|---|")
    for name, (new, old) in RUNS.items():
        t_old, t_new = milliseconds(old, scores, device, args.repeat), milliseconds(new, scores, device, args.repeat)
        print(f"| {name} | {t_old:.2f} | {t_new:.2f} | {t_old / t_new:.2f}x |")


if __name__ == "__main__":
    main()

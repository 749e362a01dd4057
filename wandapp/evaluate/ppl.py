"""Perplexity by the standard protocol (Wanda/SparseGPT): one token stream, non-overlapping windows of seqlen
(the tail dropped), each window scored on its own, logits upcast to float32 before the cross-entropy,
ppl = exp(mean over windows of the mean token NLL)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..adapter import DecoderAdapter
from ..errors import WandappError
from ..walker import on_device, walk_blocks


def windows(tokens: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    n = tokens.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise WandappError(f"evaluation text has {tokens.numel()} tokens, fewer than one window of {seqlen}")
    return tokens[: n * seqlen].view(n, seqlen)


def window_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of each window, computed in float32."""
    b, t, v = logits.shape
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, v).float(), ids[:, 1:].reshape(-1), reduction="none")
    return loss.view(b, t - 1).mean(1)


@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, seqlen: int, device: torch.device, max_windows: int | None = None,
               batch_size: int = 1, layerwise: bool = False) -> dict:
    """layerwise: run block by block with only one block on `device` (models larger than the accelerator)."""
    ids = windows(tokens, seqlen, max_windows)
    nlls = []
    if layerwise:
        adapter = DecoderAdapter.from_model(model)
        hidden = walk_blocks(model, ids, lambda ctx: None, device, offload=True, micro_batch=batch_size,
                             desc="perplexity")
        with on_device([adapter.norm, adapter.lm_head], device):
            for s in range(0, ids.shape[0], batch_size):
                h = adapter.norm(hidden[s : s + batch_size].to(device))
                nlls.append(window_nll(adapter.lm_head(h), ids[s : s + batch_size].to(device)).cpu())
    else:
        model.to(device)
        for s in tqdm(range(0, ids.shape[0], batch_size), desc="perplexity", unit="batch"):
            batch = ids[s : s + batch_size].to(device)
            nlls.append(window_nll(model(batch, use_cache=False).logits, batch).cpu())
    nll = torch.cat(nlls)
    return {"ppl": math.exp(nll.mean().item()), "windows": ids.shape[0], "tokens": ids.numel(), "seqlen": seqlen}

"""The mask functions as they were before the selection rewrite (d5ce8c6 and earlier), kept verbatim so that
tests/test_masks.py can check the current ones give the same masks."""

import torch


def unstructured_mask(score: torch.Tensor, ratio: float) -> torch.Tensor:
    rows, cols = score.shape
    k = int(cols * ratio)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        idx = torch.sort(score, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, idx, True)
    return mask


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    place = torch.zeros(groups.shape, dtype=torch.uint8, device=score.device)
    position = torch.arange(m, device=score.device)
    for i in range(m):
        other = groups[:, :, i : i + 1]
        place += (other < groups) | ((other == groups) & (i < position))
    return (place < m - n).reshape(rows, cols)

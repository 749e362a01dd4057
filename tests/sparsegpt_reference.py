"""SparseGPT's column loop and Hessian as they were at 4f5ea66, kept verbatim so tests can check the faster code
gives the same masks and updates."""

import torch

from wandapp.methods.sparsegpt import _inverse_hessian_factor


@torch.no_grad()
def sparsegpt_prune_4f5ea66(weight, H, pattern, blocksize=128, percdamp=0.01):
    W = weight.detach().clone().float() if weight.dtype != torch.float64 else weight.detach().clone()
    H = H.clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Hinv = _inverse_hessian_factor(H, percdamp)
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        M1 = torch.zeros_like(W1, dtype=torch.bool)
        if not pattern.is_nm and pattern.ratio > 0:
            score = (W1.square() / d.square().unsqueeze(0)).flatten()
            k = int(score.numel() * pattern.ratio)
            M1.view(-1)[torch.sort(score, stable=True).indices[:k]] = True
        for i in range(i2 - i1):
            if pattern.is_nm and i % pattern.m == 0:
                g = W1[:, i : i + pattern.m].square() / d[i : i + pattern.m].square().unsqueeze(0)
                drop = torch.sort(g, dim=1, stable=True).indices[:, : pattern.m - pattern.n]
                M1[:, i : i + pattern.m].scatter_(1, drop, True)
            w = W1[:, i]
            q = w.masked_fill(M1[:, i], 0.0)
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        mask[:, i1:i2] = M1
    return W, mask


def hessian_4f5ea66(batches):
    """H = (2/N) sum x x^T as the running rescaled mean the reference keeps."""
    H, nsamples = None, 0
    for x in batches:
        b = x.shape[0] if x.dim() == 3 else 1
        t = x.reshape(-1, x.shape[-1]).float()
        if H is None:
            H = torch.zeros(t.shape[1], t.shape[1])
        H *= nsamples / (nsamples + b)
        nsamples += b
        t = t * (2 / nsamples) ** 0.5
        H.addmm_(t.T, t)
    return H

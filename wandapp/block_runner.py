"""How a block's forward passes run: eagerly (the default) or through torch.compile (`wandapp prune --compile`).

Compiling fuses a block's element-wise work (RMSNorm, rotary, SiLU, casts: about a third of an eager LLaMA-7B
block's GPU time, docs/pruning-speed.md) but rounds differently from eager PyTorch: a block's outputs move by
~1e-3 relative, so later blocks see other inputs and may keep other weights. Hence a named option, off by default.

One runner serves a whole walk. Its functions take the modules as arguments, so torch.compile traces each once
per input shape, grad mode and dtype and every block reuses the trace (parameters are graph inputs, not
constants): the compile time is paid once a run, not once a block.

The stage functions run a pre-norm block's parts (adapter.BlockParts) and hand back the inputs of o_proj and
down_proj by *tapping* them: the linear is swapped for the identity during the call, so the attention (MLP)
returns what that linear would have read. A tapped call computes the same values as the untapped one stopped by
a hook (staged.input_of), and, unlike a hook that raises, torch.compile can trace it. BlockContext checks once a
block that a tap gives the linear's input before it relies on one.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from .staged import block_output


class BlockRunner:
    def __init__(self, compile: bool = False, backend: str | Callable = "inductor"):
        self.compile = compile
        # Structural checks and hooked forwards always run eagerly: a compiled runner keeps one eager twin.
        self.eager = BlockRunner() if compile else self
        wrap = (lambda fn: torch.compile(fn, dynamic=False, backend=backend)) if compile else (lambda fn: fn)
        # One function per kind of pass: torch.compile keeps its traces per function (a few per shape and dtype).
        self._block, self._norm, self._mlp = wrap(_block), wrap(_norm), wrap(_mlp)
        self._attention, self._residual_norm, self._residual_linear = (
            wrap(_attention), wrap(_residual_norm), wrap(_residual_linear))

    def block(self, block: nn.Module, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """The block's output hidden states."""
        return block_output(self._block(block, x, kwargs))

    def norm(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self._norm(norm, x)

    def mlp(self, mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self._mlp(mlp, x)

    def attention_input_of(self, attn: nn.Module, o_name: str, normed: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """What attention's output projection `o_name` reads for `normed` (the attention output before it)."""
        with tapped(attn, o_name):
            return self._attention(attn, normed, kwargs)

    def residual_norm(self, o_proj: nn.Module, norm: nn.Module, x: torch.Tensor,
                      a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h = x + o_proj(a) and norm(h): the residual after attention and the MLP's normed input."""
        return self._residual_norm(o_proj, norm, x, a)

    def mlp_input_of(self, mlp: nn.Module, down_name: str, normed: torch.Tensor) -> torch.Tensor:
        """What the MLP's last linear `down_name` reads for `normed` (act(gate) * up in a Llama MLP)."""
        with tapped(mlp, down_name):
            return self._mlp(mlp, normed)

    def residual_linear(self, linear: nn.Module, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """h + linear(a): the block's output from the residual and down_proj's input."""
        return self._residual_linear(linear, h, a)


@contextlib.contextmanager
def tapped(parent: nn.Module, name: str) -> Iterator[None]:
    """`parent.<name>` replaced by the identity for the duration (then put back, the same module)."""
    linear = getattr(parent, name)
    setattr(parent, name, nn.Identity())
    try:
        yield
    finally:
        setattr(parent, name, linear)


def _block(block, x, kwargs):
    return block(x, **kwargs)


def _norm(norm, x):
    return norm(x)


def _mlp(mlp, x):
    return mlp(x)


def _attention(attn, normed, kwargs):
    return block_output(attn(hidden_states=normed, **kwargs))


def _residual_norm(o_proj, norm, x, a):
    h = x + o_proj(a)
    return h, norm(h)


def _residual_linear(linear, h, a):
    return h + linear(a)

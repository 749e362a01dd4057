"""wandapp.methods.rmsprop: the mirrored optimiser against torch.optim.RMSprop (bitwise, with and without 16-bit
compute copies), the choice between the fused and the mirrored one, and (CUDA + Triton only) the fused kernel
against torch.optim.RMSprop, including sizes that do not fill the last 4096-element block, a gradient-less
parameter and a non-contiguous gradient."""

import pytest
import torch

from wandapp.methods import rmsprop as rms
from wandapp.methods.rmsprop import FusedRMSprop, MirroredRMSprop, rmsprop

cuda_triton = pytest.mark.skipif(not torch.cuda.is_available() or rms.triton is None, reason="needs CUDA and Triton")
FUSED_ERROR = "the fused RMSprop needs Triton and contiguous CUDA tensors with float32 masters"


def grads_for(shapes, steps, seed=0, device="cpu"):
    gen = torch.Generator(device=device).manual_seed(seed)
    return [[torch.randn(s, generator=gen, device=device) for s in shapes] for _ in range(steps)]


def masters(shapes, seed=1, device="cpu"):
    gen = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(s, generator=gen, device=device) for s in shapes]


def test_mirrored_rmsprop_takes_torchs_default_rmsprop_steps_bitwise():
    """No copies: the same tensors, lr, alpha 0.99, eps 1e-8 as torch.optim.RMSprop(params, lr)."""
    shapes = [(5, 7), (3,)]
    ours = [p.requires_grad_(True) for p in masters(shapes)]
    ref = [p.detach().clone().requires_grad_(True) for p in ours]
    opt, plain = MirroredRMSprop(ours, 0.05), torch.optim.RMSprop(ref, lr=0.05)
    assert opt.params == ours and opt.copies is None
    for step in grads_for(shapes, 6):
        for a, b, g in zip(ours, ref, step):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        plain.step()
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0], masters(shapes)[0])  # it did move


def test_mirrored_rmsprop_with_bf16_copies_steps_the_masters_and_refreshes_the_copies():
    """Gradients are read from the bfloat16 copies (as float32), the float32 masters take torch's step, and each
    copy is then the bfloat16 rounding of its master; a copy without a gradient leaves its master alone."""
    shapes = [(4, 6), (9,), (2, 3)]
    ps = masters(shapes)
    cs = [p.to(torch.bfloat16).requires_grad_(True) for p in ps]
    ref = [p.clone().requires_grad_(True) for p in ps]
    frozen = ps[2].clone()
    opt, plain = rmsprop(ps, 0.01, copies=cs), torch.optim.RMSprop(ref[:2], lr=0.01)
    assert isinstance(opt, MirroredRMSprop) and opt.copies == cs
    for step in grads_for(shapes, 5):
        for c, r, g in zip(cs, ref, step[:2]):
            c.grad = g.to(torch.bfloat16)
            r.grad = c.grad.float()
        opt.step()
        plain.step()
        assert cs[2].grad is None and ps[2].grad is None
    for p, c in zip(ps, cs):
        assert p.dtype == torch.float32 and c.dtype == torch.bfloat16
        assert torch.equal(c, p.to(torch.bfloat16))
    for p, r in zip(ps[:2], ref[:2]):
        assert torch.equal(p, r)
    assert torch.equal(ps[2], frozen)


def test_a_copy_without_gradient_comes_first():
    """The gradient-less copy first in the list: the others still step (the loop does not stop at it)."""
    ps = masters([(3,), (4,)])
    cs = [p.clone().requires_grad_(True) for p in ps]
    before = [p.clone() for p in ps]
    opt = rmsprop(ps, 0.1, copies=cs)
    cs[1].grad = torch.ones(4)
    opt.step()
    assert torch.equal(ps[0], before[0]) and torch.equal(cs[0], before[0])
    expected = before[1] - 0.1 * 1 / ((1 - 0.99) ** 0.5 + 1e-8)  # first step: v = 0.01 g^2
    torch.testing.assert_close(ps[1], expected, rtol=1e-6, atol=0)
    assert torch.equal(cs[1], ps[1])


@pytest.mark.parametrize("with_copies", [False, True])
def test_zero_grad_clears_the_gradients_the_passes_fill(with_copies):
    """zero_grad clears the copies' gradients when there are copies, else the masters'; both optimisers."""
    for cls in (MirroredRMSprop, FusedRMSprop):
        ps = [p.requires_grad_(True) for p in masters([(3, 2), (5,)])]
        cs = [p.detach().clone().requires_grad_(True) for p in ps] if with_copies else None
        opt = cls(ps, 0.1, copies=cs)
        for t in cs or ps:
            t.grad = torch.ones_like(t)
        opt.zero_grad()
        assert all(t.grad is None for t in cs or ps), cls.__name__


def test_fused_rmsprop_state_starts_at_zero_and_a_step_without_gradients_changes_nothing():
    """FusedRMSprop builds on any device (its kernel only runs on CUDA): running squares start at zero, and with
    no gradient at all a step launches nothing and leaves the weights as they were."""
    ps = masters([(3, 5), (4,)])
    before = [p.clone() for p in ps]
    opt = FusedRMSprop(ps, 0.1)
    assert [v.shape for v in opt.square_avg] == [p.shape for p in ps]
    assert all(v.dtype == torch.float32 and not v.any() for v in opt.square_avg)
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before))


def test_on_cpu_the_mirrored_optimiser_is_chosen_and_fused_true_refuses(monkeypatch):
    ps = masters([(2, 2)])
    assert type(rmsprop(ps, 0.1)) is MirroredRMSprop
    assert type(rmsprop(ps, 0.1, fused=False)) is MirroredRMSprop
    with pytest.raises(RuntimeError) as e:
        rmsprop(ps, 0.1, fused=True)
    assert str(e.value) == FUSED_ERROR
    # A CUDA build of torch (Triton installed) on a machine without a GPU: CPU tensors still get the mirrored one
    monkeypatch.setattr(rms, "triton", object())
    cs = [p.to(torch.bfloat16) for p in ps]
    assert type(rmsprop(ps, 0.1)) is MirroredRMSprop
    assert type(rmsprop(ps, 0.1, copies=cs)) is MirroredRMSprop
    with pytest.raises(RuntimeError, match="^the fused RMSprop needs Triton"):
        rmsprop(ps, 0.1, copies=cs, fused=True)


def test_lr_reaches_the_optimiser():
    ps = [torch.zeros(3)]
    opt = rmsprop(ps, 0.25)
    ps[0].grad = torch.full((3,), 2.0)
    opt.step()
    torch.testing.assert_close(ps[0], torch.full((3,), -0.25 / ((1 - 0.99) ** 0.5 + 1e-8 / 2.0)), rtol=1e-6, atol=0)


# ---- CUDA + Triton only: the fused kernel ----

SHAPES = [(7,), (5, 19661), (4096,), (256, 384)]  # 98305 = 24 * 4096 + 1 elements: a 25th, one-element block


@cuda_triton
def test_fused_is_chosen_for_contiguous_float32_cuda_masters_only():
    ps = masters([(64, 64)], device="cuda")
    assert type(rmsprop(ps, 0.1)) is FusedRMSprop
    assert type(rmsprop(ps, 0.1, copies=[p.to(torch.bfloat16) for p in ps])) is FusedRMSprop
    assert type(rmsprop(ps, 0.1, fused=False)) is MirroredRMSprop
    half = [p.half() for p in ps]  # 16-bit masters: torch's optimiser
    assert type(rmsprop(half, 0.1)) is MirroredRMSprop
    strided = [p.t() for p in ps]  # a non-contiguous master
    assert type(rmsprop(strided, 0.1)) is MirroredRMSprop
    strided_copy = [p.to(torch.bfloat16).t() for p in ps]  # contiguous masters, a non-contiguous copy
    assert type(rmsprop(ps, 0.1, copies=strided_copy)) is MirroredRMSprop
    assert type(rmsprop([p.cpu() for p in ps], 0.1)) is MirroredRMSprop  # a CPU master
    for bad in (half, strided):
        with pytest.raises(RuntimeError) as e:
            rmsprop(bad, 0.1, fused=True)
        assert str(e.value) == FUSED_ERROR
    with pytest.raises(RuntimeError):
        rmsprop(ps, 0.1, copies=strided_copy, fused=True)


@cuda_triton
def test_fused_rmsprop_matches_torch_on_partial_blocks_with_a_gradientless_parameter():
    """The gradient-less parameter comes first and must not stop the others; 98305 elements need 25 blocks of
    4096 (the last element is in the 25th); the last parameter's gradient is a non-contiguous (transposed) view."""
    ps = masters(SHAPES, device="cuda")
    init = [p.clone() for p in ps]
    ref = [p.clone().requires_grad_(True) for p in ps[1:]]
    opt, plain = rmsprop(ps, 3e-3), torch.optim.RMSprop(ref, lr=3e-3)
    assert type(opt) is FusedRMSprop
    for step in grads_for(SHAPES, 8, device="cuda"):
        step[-1] = step[-1].t().contiguous().t()  # same values, column-major
        assert not step[-1].is_contiguous()
        for p, r, g in zip(ps[1:], ref, step[1:]):
            p.grad, r.grad = g, g.clone()
        opt.step()
        plain.step()
    assert torch.equal(ps[0], init[0])
    for p, r, p0 in zip(ps[1:], ref, init[1:]):
        torch.testing.assert_close(p, r.detach(), rtol=1e-5, atol=1e-6)  # FMA order may differ
        assert p.flatten()[-1] != p0.flatten()[-1]  # the last element (a partial block for 98305) moved too


@cuda_triton
def test_fused_rmsprop_with_bf16_copies_writes_each_copy_and_reads_its_gradient():
    ps = masters(SHAPES, device="cuda")
    cs = [p.to(torch.bfloat16).requires_grad_(True) for p in ps]
    ref = [p.clone().requires_grad_(True) for p in ps]
    opt, plain = rmsprop(ps, 1e-2, copies=cs), torch.optim.RMSprop(ref, lr=1e-2)
    assert type(opt) is FusedRMSprop
    for step in grads_for(SHAPES, 6, device="cuda"):
        for c, r, g in zip(cs, ref, step):
            c.grad = g.to(torch.bfloat16)
            r.grad = c.grad.float()
        opt.step()
        plain.step()
    for p, c, r in zip(ps, cs, ref):
        torch.testing.assert_close(p, r.detach(), rtol=1e-5, atol=1e-6)  # FMA order may differ
        assert torch.equal(c, p.to(torch.bfloat16))
    opt.zero_grad()
    assert all(c.grad is None for c in cs)

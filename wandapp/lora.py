"""LoRA recovery of a pruned model that keeps its sparsity exactly (Wanda's lora_ft recipe, on C4).

The LoRA delta B@A is dense, so merging it fills every pruned weight. The zeros of the pruned linears are recorded
before training and written back after the merge (a masked write, so they are +0.0), which keeps the pattern
(e.g. 2:4) exact; the report gives the sparsity of every linear at each stage and the held-out loss before
training, with the unmerged adapter, and after merge + re-mask.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .adapter import DecoderAdapter
from .errors import WandappError
from .evaluate.ppl import perplexity
from .masks import apply_mask, follows_nm
from .prune_report import overall_sparsity, sparsity_by_linear


@dataclass(frozen=True)
class LoraSettings:
    """Defaults are Wanda's lora_ft: rank 8, alpha 16, dropout 0.05 on q_proj/v_proj, AdamW lr 1e-4, 5 warm-up steps,
    linear decay, no weight decay. Wanda trained 1 epoch of 30000 blocks of 1024 tokens at batch 128 (~234 steps)."""

    steps: int = 200
    seqlen: int = 1024
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 5
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0

    @property
    def blocks_needed(self) -> int:
        return self.steps * self.batch_size * self.grad_accum


# ---------------------------------------------------------------- masks

def pruned_masks(model) -> dict[str, torch.Tensor]:
    """True where a prunable linear's weight is exactly zero; kept on the CPU (a bool per weight)."""
    return {name: (lin.weight == 0).cpu() for name, lin in DecoderAdapter.from_model(model).all_linears().items()}


def reapply_masks(model, masks: dict[str, torch.Tensor]) -> None:
    linears = DecoderAdapter.from_model(model).all_linears()
    with torch.no_grad():
        for name, mask in masks.items():
            apply_mask(linears[name].weight, mask.to(linears[name].weight.device))


def nm_patterns(model) -> dict[str, bool]:
    """Whether every prunable linear follows 2:4 / 4:8 (what sparse kernels need)."""
    linears = DecoderAdapter.from_model(model).all_linears().values()
    return {f"{n}:{m}": all(follows_nm(lin.weight, n, m) for lin in linears) for n, m in ((2, 4), (4, 8))}


def mask_check(model, masks: dict[str, torch.Tensor]) -> dict:
    """How many recorded zeros are no longer zero (0 means the sparsity was kept exactly)."""
    linears = DecoderAdapter.from_model(model).all_linears()
    nonzero = sum(int((linears[n].weight[m.to(linears[n].weight.device)] != 0).sum()) for n, m in masks.items())
    return {"pruned_weights": sum(int(m.sum()) for m in masks.values()), "pruned_weights_nonzero": nonzero}


# ---------------------------------------------------------------- data

def training_blocks(documents: list[str], tokenizer, seqlen: int, count: int, seed: int) -> tuple[torch.Tensor, dict]:
    """run_clm's group_texts: documents (shuffled once by `seed`) tokenized, joined with EOS and cut into blocks of
    `seqlen`; only as many documents as `count` blocks need are tokenized. Too few blocks: epochs repeat, reshuffled."""
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    used = 0
    for i in order:
        if len(stream) >= count * seqlen:
            break
        stream += tokenizer(documents[i])["input_ids"] + eos
        used += 1
    n = len(stream) // seqlen
    if n == 0:
        raise WandappError(f"training text has {len(stream)} tokens, fewer than one block of seqlen={seqlen}")
    blocks = torch.tensor(stream[: n * seqlen], dtype=torch.long).view(n, seqlen)
    gen = torch.Generator().manual_seed(seed)
    epochs = [blocks[torch.randperm(n, generator=gen)] for _ in range(math.ceil(count / n))]
    info = {"documents_used": used, "unique_blocks": n, "epochs": round(count / n, 3), "tokens_seen": count * seqlen}
    return torch.cat(epochs)[:count], info


# ---------------------------------------------------------------- training

def add_lora(model, settings: LoraSettings):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.targets), bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise WandappError(f"cannot add LoRA to {', '.join(settings.targets)}: {str(e).splitlines()[0]}") from e


def train(peft_model, blocks: torch.Tensor, settings: LoraSettings, device: torch.device) -> list[float]:
    """AdamW on the adapters only; returns the loss of every optimizer step."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, min(settings.warmup_steps, settings.steps), settings.steps)
    # float16 weights need loss scaling, as Trainer(fp16=True) does; bfloat16 and float32 do not.
    half = next(peft_model.parameters()).dtype == torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=half)
    peft_model.train()
    losses = []
    micro = blocks.view(settings.steps, settings.grad_accum, settings.batch_size, -1)
    bar = tqdm(range(settings.steps), desc="lora", unit="step")
    for step in bar:
        total = 0.0
        for ids in micro[step]:
            ids = ids.to(device)
            loss = peft_model(input_ids=ids, labels=ids, use_cache=False).loss.float() / settings.grad_accum
            scaler.scale(loss).backward()
            total += loss.item()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(total):
            raise WandappError(f"LoRA training diverged at step {step + 1} (loss {total}); lower --lr or use bfloat16")
        losses.append(round(total, 5))
        bar.set_postfix(loss=f"{total:.4f}")
    peft_model.eval()
    return losses


def mean_loss(losses: list[float], part: float = 0.1) -> tuple[float, float]:
    """Mean loss over the first and the last `part` of the steps (single steps are noisy)."""
    k = max(1, int(len(losses) * part))
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def recover(model, tokenizer, documents: list[str], settings: LoraSettings, device: torch.device,
            eval_tokens: torch.Tensor | None = None, eval_windows: int = 0, adapter_dir=None):
    """Train LoRA on a pruned model, merge, re-apply the pruned zeros. Returns (merged model, report dict).

    `eval_tokens`/`eval_windows`: held-out perplexity on that many windows of `settings.seqlen` before training,
    with the unmerged adapter, and after merge + re-mask. `adapter_dir`: also save the unmerged adapter there."""
    if settings.steps < 1 or settings.batch_size < 1 or settings.grad_accum < 1 or settings.seqlen < 2:
        raise WandappError("--steps, --batch-size and --grad-accum must be >= 1 and --seqlen >= 2")
    torch.manual_seed(settings.seed)
    masks = pruned_masks(model)
    before, patterns_before = sparsity_by_linear(model), nm_patterns(model)
    blocks, data_info = training_blocks(documents, tokenizer, settings.seqlen, settings.blocks_needed, settings.seed)

    def ppl(m) -> float | None:
        if eval_tokens is None or eval_windows < 1:
            return None
        return perplexity(m, eval_tokens, settings.seqlen, device, eval_windows, settings.batch_size)["ppl"]

    report: dict = {"settings": {**asdict(settings), "targets": list(settings.targets)}, "data": data_info}
    report["ppl_before"] = ppl(model)
    peft_model = add_lora(model.to(device), settings)
    report["trainable_params"] = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    losses = train(peft_model, blocks, settings, device)
    report["ppl_adapter"] = ppl(peft_model)
    if adapter_dir is not None:
        peft_model.save_pretrained(adapter_dir)
    merged = peft_model.merge_and_unload()
    after_merge = sparsity_by_linear(merged)
    reapply_masks(merged, masks)
    after = sparsity_by_linear(merged)
    report["ppl_after"] = ppl(merged)
    first, last = mean_loss(losses)
    report.update(
        train_loss_first=round(first, 5), train_loss_last=round(last, 5), train_losses=losses,
        sparsity={stage: round(overall_sparsity(by_linear, merged), 6)
                  for stage, by_linear in (("before", before), ("merged", after_merge), ("remasked", after))},
        sparsity_by_linear={n: {"before": before[n], "merged": after_merge[n], "remasked": after[n]} for n in before},
        mask={**mask_check(merged, masks), "patterns_before": patterns_before, "patterns_after": nm_patterns(merged)},
    )
    return merged, report

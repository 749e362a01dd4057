"""`wandapp lora`: LoRA recovery of a pruned model on C4; writes a merged model that keeps the pruned zeros."""

from __future__ import annotations

from .common import (
    add_data_option,
    add_folder_output,
    add_model_options,
    check_model,
    check_output,
    device_and_dtype,
    require_at_least,
)


def register(sub) -> None:
    from ..lora import LoraSettings

    d = LoraSettings()
    p = sub.add_parser(
        "lora", help="LoRA recovery of a pruned model that keeps its sparsity",
        description="Fine-tune LoRA adapters (Wanda's recipe: C4 text, rank 8, alpha 16, dropout 0.05 on q_proj and "
                    "v_proj, AdamW lr 1e-4) on a pruned model, merge them and write the pruned zeros back, so the "
                    "saved model keeps the sparsity (and any 2:4 pattern) exactly. Writes a save_pretrained folder "
                    "with lora_report.json (losses, sparsity of every linear before/after merge/after re-mask).")
    add_model_options(p, "pruned model: save_pretrained folder or hub id (from `wandapp prune`)")
    add_folder_output(p)
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps}; Wanda: ~234)")
    p.add_argument("--seqlen", type=int, default=d.seqlen,
                   help=f"tokens per training block and evaluation window (default {d.seqlen}, as Wanda)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"blocks per forward pass (default {d.batch_size})")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum,
                   help=f"forward passes per optimizer step (default {d.grad_accum}; Wanda: effective batch 128)")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr:g})")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help=f"linear warm-up steps, then linear decay to 0 (default {d.warmup_steps})")
    p.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank r (default {d.rank})")
    p.add_argument("--alpha", type=int, default=d.alpha, help=f"LoRA alpha; the delta is scaled by alpha/r "
                                                                 f"(default {d.alpha})")
    p.add_argument("--dropout", type=float, default=d.dropout, help=f"LoRA dropout (default {d.dropout:g})")
    p.add_argument("--targets", default=",".join(d.targets),
                   help=f"comma-separated module names that get adapters (default {','.join(d.targets)})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed for data order, LoRA init, dropout "
                                                              f"(default {d.seed})")
    p.add_argument("--eval-windows", type=int, default=0,
                   help="held-out C4 perplexity on this many windows of --seqlen before training, with the "
                        "adapter, and after merge + re-mask (default 0: skip)")
    p.add_argument("--keep-adapter", action="store_true",
                   help="also save the unmerged adapter (peft format) in OUTPUT/adapter")
    add_data_option(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..data import c4_train_documents, data_root, eval_tokens
    from ..io import atomic_dir, write_json
    from ..lora import LoraSettings, recover
    from ..models import load_model, save_model
    from ..runinfo import measured, versions

    check_output(args, folder=True)
    require_at_least(args, steps=1, seqlen=2, batch_size=1, grad_accum=1, lr=0, warmup_steps=0, rank=1, alpha=1,
                     dropout=0, eval_windows=0)
    device, dtype = device_and_dtype(args)
    settings = LoraSettings(
        steps=args.steps, seqlen=args.seqlen, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        warmup_steps=args.warmup_steps, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()), seed=args.seed)
    root = data_root(args.data_dir)
    documents = c4_train_documents(root)  # fail on missing data before loading the model
    model, tokenizer = load_model(check_model(args), dtype, device)
    held_out, label = eval_tokens("c4", tokenizer, root) if args.eval_windows > 0 else (None, None)
    with atomic_dir(args.output, overwrite=args.overwrite) as tmp:
        with measured(device) as info:
            merged, report = recover(model, tokenizer, documents, settings, device, held_out, args.eval_windows,
                                     tmp / "adapter" if args.keep_adapter else None)
        save_model(merged, tokenizer, tmp)
        report = {"model": args.model, "dtype": dtype, "device": str(device), "eval_text": label, **report,
                  **info, "versions": versions()}
        write_json(tmp / "lora_report.json", report)
    sp, mask = report["sparsity"], report["mask"]
    print(f"train loss {report['train_loss_first']:.4f} -> {report['train_loss_last']:.4f} over {settings.steps} steps")
    if report["ppl_before"] is not None:
        print(f"held-out C4 ppl {report['ppl_before']:.3f} -> adapter {report['ppl_adapter']:.3f} -> "
              f"merged+re-masked {report['ppl_after']:.3f}")
    print(f"sparsity {sp['before']:.4f} -> merged {sp['merged']:.4f} -> re-masked {sp['remasked']:.4f}; "
          f"pruned weights nonzero after re-mask: {mask['pruned_weights_nonzero']}")

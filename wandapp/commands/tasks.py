"""`wandapp tasks`: zero-shot accuracy on lm-eval tasks, from the local mirror or the hub, written as JSON."""

from __future__ import annotations

DEFAULT_TASKS = "boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa"


def register(sub) -> None:
    p = sub.add_parser(
        "tasks",
        help="zero-shot accuracy on downstream tasks with lm-evaluation-harness",
        description="Evaluate a model with lm-evaluation-harness (lm-eval's own prompts and metrics) and write "
        "acc / acc_norm with sample counts per task as JSON. With --data-dir (or $WANDAPP_DATA_DIR) the tasks "
        "read tasks/<task>/<split>.jsonl[.gz] from that mirror; otherwise lm-eval downloads them from the hub.",
    )
    p.add_argument("--model", required=True, help="hub id, save_pretrained folder, .gguf file, or 'smollm2'")
    p.add_argument(
        "--tasks",
        default=DEFAULT_TASKS,
        help=f"comma-separated lm-eval task names (default: the paper's seven, {DEFAULT_TASKS}); with a mirror, "
        "these plus piqa read local files, any other lm-eval task (e.g. mrpc, wic, mmlu) comes from the hub",
    )
    p.add_argument("--num-fewshot", type=int, default=0, help="in-context examples per question (default 0)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples of each task (quick runs)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (default float32)")
    p.add_argument("--data-dir", default=None, help="local data mirror (default $WANDAPP_DATA_DIR, else the hub)")
    p.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling (default 0)")
    p.add_argument("--output", required=True, help="JSON file to write (replaced atomically)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..data import data_root
    from ..errors import WandappError
    from ..evaluate.tasks import check_tasks, evaluate_tasks, parse_task_list
    from ..io import write_json
    from ..models import load_model

    if args.batch_size < 1 or args.num_fewshot < 0:
        raise WandappError("--batch-size must be >= 1 and --num-fewshot >= 0")
    tasks = parse_task_list(args.tasks)
    root = data_root(args.data_dir)
    check_tasks(tasks, root)  # before the (possibly long) model load
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    result = evaluate_tasks(
        model, tokenizer, tasks, root=root, num_fewshot=args.num_fewshot, limit=args.limit,
        batch_size=args.batch_size, seed=args.seed,
    )
    write_json(args.output, {"model": args.model, "dtype": args.dtype, "device": args.device, **result})
    for task, row in result["tasks"].items():
        norm = f"  acc_norm {row['acc_norm']:.4f}" if "acc_norm" in row else ""
        print(f"{task:<14} acc {row['acc']:.4f}{norm}  (n={row['n']})")

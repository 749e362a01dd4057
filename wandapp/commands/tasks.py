"""`wandapp tasks`: zero-shot accuracy on lm-eval tasks, from the local mirror or the hub, written as JSON."""

from __future__ import annotations

from ..evaluate.tasks import MIRROR_TASKS, PAPER_TASKS
from .common import (
    add_data_option,
    add_file_output,
    add_model_options,
    check_model,
    check_output,
    device_and_dtype,
    require_at_least,
)

DEFAULT_TASKS = ",".join(PAPER_TASKS)


def register(sub) -> None:
    p = sub.add_parser(
        "tasks",
        help="zero-shot accuracy on downstream tasks with lm-evaluation-harness",
        description="Evaluate a model with lm-evaluation-harness (lm-eval's own prompts and metrics) and write "
        "acc / acc_norm with sample counts per task as JSON. With --data-dir (or $WANDAPP_DATA_DIR) the tasks "
        "read tasks/<task>/<split>.jsonl[.gz] from that mirror; otherwise lm-eval downloads them from the hub.",
    )
    add_model_options(p)
    p.add_argument(
        "--tasks",
        default=DEFAULT_TASKS,
        help=f"comma-separated lm-eval task names (default: the Wanda++ paper's nine, {DEFAULT_TASKS}; mmlu is "
        "the 57-subject group, one accuracy plus each subject's in the JSON); with a mirror every task must be one "
        f"of {', '.join(MIRROR_TASKS)}; without one, any lm-eval task comes from the hub",
    )
    p.add_argument("--num-fewshot", type=int, default=0, help="in-context examples per question (default 0)")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate only the first N examples of each task (quick runs)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    add_data_option(p)
    p.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling (default 0)")
    add_file_output(p, "JSON file to write")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..data import data_root
    from ..evaluate.tasks import check_tasks, evaluate_tasks, parse_task_list
    from ..io import write_json
    from ..models import load_model
    from ..runinfo import measured, versions

    check_output(args, folder=False)
    require_at_least(args, batch_size=1, num_fewshot=0, limit=1)
    device, dtype = device_and_dtype(args)
    tasks = parse_task_list(args.tasks)
    root = data_root(args.data_dir)
    check_tasks(tasks, root)  # before the (possibly long) model load
    model, tokenizer = load_model(check_model(args), dtype, device)
    with measured(device) as info:
        result = evaluate_tasks(
            model, tokenizer, tasks, root=root, num_fewshot=args.num_fewshot, limit=args.limit,
            batch_size=args.batch_size, seed=args.seed,
        )
    out = {"model": args.model, "dtype": dtype, "device": str(device), **result, **info, "versions": versions()}
    write_json(args.output, out)
    for task, row in result["results"].items():
        norm = f"  acc_norm {row['acc_norm']:.4f}" if "acc_norm" in row else ""
        print(f"{task:<14} acc {row['acc']:.4f}{norm}  (n={row['n']})")

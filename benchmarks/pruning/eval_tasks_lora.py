"""Zero-shot accuracy (7 lm-eval tasks) of dense / Wanda / SparseGPT / Wanda++ at 2:4, and LoRA recovery of Wanda and
Wanda++ at 2:4 with WikiText-2 / held-out C4 perplexity before and after (GPU benchmark; Markdown tables at the end).

Every step is one `wandapp` command run as a subprocess, so this measures exactly what users run. Results go to
WORK/metrics/<model>/{tasks,lora,ppl_wikitext2}.json; a step whose JSON exists is skipped, so a stopped run resumes.
Stages: prune (dense copy + the three 2:4 models), tasks, lora (+ ppl and tasks of the LoRA models), table.

    python -m benchmarks.pruning.eval_tasks_lora --base smollm2 --data-dir DATA --work W --stages prune,tasks
    python -m benchmarks.pruning.eval_tasks_lora --base smollm2 --data-dir DATA --work W --stages prune,lora
    python -m benchmarks.pruning.eval_tasks_lora --work W --stages table    # also over folders gathered from both runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRUNED = {"wanda": "wanda", "sparsegpt": "sparsegpt", "wanda++": "wanda++"}  # model name -> --method
LORA_OF = ("wanda", "wanda++")
TASKS = "boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa"
PAPER_LORA = "Paper (LLaMA-7B, 2:4, WikiText-2): Wanda 11.59 -> 8.23, Wanda++ 9.43 -> 6.88 after LoRA."


def wandapp(*argv: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "wandapp", *argv]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


def common(args) -> list[str]:
    return ["--device", args.device, "--data-dir", str(args.data_dir)]


def stage_prune(args, models: Path) -> None:
    if not (models / "dense").exists():
        wandapp("convert", "--model", args.base, "--dtype", args.dtype, "--output", str(models / "dense"))
    for name, method in PRUNED.items():
        if not (models / name).exists():
            wandapp("prune", "--model", str(models / "dense"), "--method", method, "--sparsity", "2:4",
                    "--dtype", args.dtype, *common(args), *args.prune_args.split(), "--output", str(models / name))


def stage_tasks(args, models: Path, metrics: Path, names) -> None:
    for name in names:
        out = metrics / name / "tasks.json"
        if not out.exists():
            limit = ["--limit", str(args.limit)] if args.limit else []
            wandapp("tasks", "--model", str(models / name), "--tasks", TASKS, "--batch-size", str(args.batch_size),
                    "--dtype", args.dtype, *limit, *common(args), "--output", str(out))


def ppl(args, models: Path, metrics: Path, name: str) -> None:
    out = metrics / name / "ppl_wikitext2.json"
    if not out.exists():
        windows = ["--max-windows", str(args.ppl_max_windows)] if args.ppl_max_windows else []
        wandapp("ppl", "--model", str(models / name), "--dataset", "wikitext2", "--dtype", args.dtype, *windows,
                *common(args), "--output", str(out))


def stage_lora(args, models: Path, metrics: Path) -> None:
    for name in LORA_OF:
        tuned = f"{name}+lora"
        ppl(args, models, metrics, name)
        report = metrics / tuned / "lora.json"
        if not report.exists():
            wandapp("lora", "--model", str(models / name), "--steps", str(args.lora_steps),
                    "--seqlen", str(args.lora_seqlen), "--batch-size", str(args.lora_batch),
                    "--grad-accum", str(args.lora_grad_accum), "--dtype", args.lora_dtype,
                    "--eval-windows", str(args.eval_windows), *common(args), "--output", str(models / tuned))
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text((models / tuned / "lora_report.json").read_text())
        ppl(args, models, metrics, tuned)
        if not args.no_lora_tasks:
            stage_tasks(args, models, metrics, [tuned])


# ---------------------------------------------------------------- tables

def load(metrics: Path, name: str, kind: str) -> dict | None:
    path = metrics / name / f"{kind}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(x, digits=2, scale=1.0) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


def tasks_table(metrics: Path) -> str:
    names = [n for n in ["dense", *PRUNED, *(f"{m}+lora" for m in LORA_OF)] if load(metrics, n, "tasks")]
    if not names:
        return "(no tasks.json found)"
    tasks = TASKS.split(",")
    lines = ["| model (2:4) | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
    for name in names:
        res = load(metrics, name, "tasks")["results"]
        accs = [res.get(t, {}).get("acc") for t in tasks]
        mean = sum(a for a in accs if a is not None) / max(1, sum(a is not None for a in accs))
        lines.append(f"| {name} | " + " | ".join(fmt(a, 1, 100) for a in accs) + f" | {fmt(mean, 1, 100)} |")
    first = load(metrics, names[0], "tasks")
    counts = ", ".join(f"{t} {first['results'][t]['n']}" for t in tasks if t in first["results"])
    return "\n".join(lines) + f"\n\nacc (%), zero-shot, lm-eval {first['versions'].get('lm_eval')}; n: {counts}."


def lora_table(metrics: Path) -> str:
    lines = ["| method (2:4) | WikiText-2 ppl pruned | after LoRA | change | held-out C4 ppl before | adapter | "
             "merged + re-masked | train loss | steps x blocks x seqlen | epochs | sparsity kept | time (s) |",
             "|---" * 12 + "|"]
    for name in LORA_OF:
        rep = load(metrics, f"{name}+lora", "lora")
        if rep is None:
            continue
        before, after = (load(metrics, n, "ppl_wikitext2") for n in (name, f"{name}+lora"))
        b, a = (x["ppl"] if x else None for x in (before, after))
        change = f"{(a / b - 1) * 100:+.0f}%" if a and b else "–"
        s = rep["settings"]
        kept = rep["mask"]["pruned_weights_nonzero"] == 0 and rep["mask"]["patterns_after"]["2:4"]
        lines.append(
            f"| {name} | {fmt(b)} | {fmt(a)} | {change} | {fmt(rep['ppl_before'])} | {fmt(rep['ppl_adapter'])} | "
            f"{fmt(rep['ppl_after'])} | {rep['train_loss_first']:.3f} -> {rep['train_loss_last']:.3f} | "
            f"{s['steps']} x {s['batch_size'] * s['grad_accum']} x {s['seqlen']} | {rep['data']['epochs']} | "
            f"{'yes (2:4)' if kept else 'NO'} | {rep['wall_time_s']:.0f} |")
    return "\n".join(lines) + "\n\n" + PAPER_LORA


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2", help="dense model: hub id, folder, .gguf or 'smollm2'")
    ap.add_argument("--data-dir", type=Path, default=None, help="local data mirror (tasks/, c4/, wikitext2/)")
    ap.add_argument("--work", type=Path, required=True, help="folder for models/ and metrics/")
    ap.add_argument("--stages", default="prune,tasks,lora,table", help="comma-separated: prune,tasks,lora,table")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16", help="dtype for pruning, tasks and ppl")
    ap.add_argument("--batch-size", type=int, default=32, help="lm-eval batch size")
    ap.add_argument("--limit", type=int, default=None, help="examples per task (smoke tests only; default all)")
    ap.add_argument("--ppl-max-windows", type=int, default=None, help="WikiText-2 windows (smoke tests only)")
    ap.add_argument("--prune-args", default="", help="extra `wandapp prune` options, e.g. '--preset tuned'")
    ap.add_argument("--lora-steps", type=int, default=200)
    ap.add_argument("--lora-seqlen", type=int, default=1024)
    ap.add_argument("--lora-batch", type=int, default=8)
    ap.add_argument("--lora-grad-accum", type=int, default=2)
    ap.add_argument("--lora-dtype", default="float32",
                    help="float32 (default) keeps the float16 pruned weights exact; bfloat16 would round them")
    ap.add_argument("--eval-windows", type=int, default=32, help="held-out C4 windows for the LoRA before/after ppl")
    ap.add_argument("--no-lora-tasks", action="store_true", help="skip the tasks of the LoRA-tuned models")
    args = ap.parse_args()
    stages = set(args.stages.split(","))
    args.work = args.work.resolve()  # the subprocesses run in the repository root
    models, metrics = args.work / "models", args.work / "metrics"
    if stages - {"table"} and args.data_dir is None:
        ap.error("--data-dir is needed for prune/tasks/lora (the GPU machine has no hub access)")
    if args.data_dir is not None:
        args.data_dir = args.data_dir.resolve()
    start = time.perf_counter()
    if "prune" in stages:
        stage_prune(args, models)
    if "tasks" in stages:
        stage_tasks(args, models, metrics, ["dense", *PRUNED])
    if "lora" in stages:
        stage_lora(args, models, metrics)
    print(f"\ntotal {time.perf_counter() - start:.0f} s\n")
    print("## Zero-shot accuracy\n\n" + tasks_table(metrics) + "\n\n## LoRA recovery\n\n" + lora_table(metrics))


if __name__ == "__main__":
    main()

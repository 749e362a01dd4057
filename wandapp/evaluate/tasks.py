"""Zero-shot downstream accuracy with lm-evaluation-harness, on an in-memory model.

Task data comes from a local mirror (`tasks/<task>/<split>.jsonl[.gz]`, HF field names) when one is given: each
packaged lm-eval task is re-pointed at the local file through a generated YAML that `include:`s the packaged one, so
prompts, choices and metrics stay lm-eval's own. Without a mirror, lm-eval loads its datasets from the hub.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, WandappError

log = logging.getLogger(__name__)

PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
LOCAL_PREFIX = "wandapp_local_"
METRICS = ("acc", "acc_norm")


@dataclass(frozen=True)
class LocalTask:
    """Which local file stands in for which split of a packaged lm-eval task."""

    eval_split: str  # the split lm-eval evaluates
    eval_file: str  # relative to <data root>/tasks/<task>/
    fewshot_file: str | None = None  # a second split to draw few-shot examples from, when the mirror has one
    fewshot_split: str = "validation"


LOCAL_TASKS = {
    "boolq": LocalTask("validation", "validation.super_glue.jsonl"),  # lm-eval's boolq is super_glue's layout
    "rte": LocalTask("validation", "validation.jsonl"),  # GLUE RTE
    "hellaswag": LocalTask("validation", "validation.jsonl.gz"),
    "winogrande": LocalTask("validation", "validation.jsonl"),
    "arc_easy": LocalTask("test", "test.jsonl", "validation.jsonl"),
    "arc_challenge": LocalTask("test", "test.jsonl", "validation.jsonl"),
    "openbookqa": LocalTask("test", "test.jsonl", "validation.jsonl"),
    "piqa": LocalTask("validation", "validation.jsonl"),
}


def parse_task_list(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise WandappError("no tasks given")
    if len(set(names)) != len(names):
        raise WandappError(f"task listed twice in {text!r}")
    return names


def local_task_files(task: str, root: Path) -> dict[str, Path]:
    """{split: absolute file} of a task in the mirror; DataError naming the file when the evaluated one is missing."""
    spec = LOCAL_TASKS[task]
    folder = (root / "tasks" / task).resolve()
    evaluated = _plain_or_gz(folder / spec.eval_file)
    if evaluated is None:
        raise DataError(f"missing task file: {folder / spec.eval_file}")
    files = {spec.eval_split: evaluated}
    fewshot = _plain_or_gz(folder / spec.fewshot_file) if spec.fewshot_file else None
    if fewshot is not None:
        files[spec.fewshot_split] = fewshot
    return files


def _plain_or_gz(path: Path) -> Path | None:
    """The file, or its gzip-compressed copy (smaller to ship to a GPU machine)."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def check_tasks(tasks: list[str], root: Path | None) -> None:
    """Fail before any model is loaded: local files present, other names known to lm-eval."""
    if root is not None:
        for task in tasks:
            if task in LOCAL_TASKS:
                local_task_files(task, root)
    if root is None or any(t not in LOCAL_TASKS for t in tasks):
        from lm_eval.tasks import TaskManager

        _check_known(tasks, TaskManager())


def _check_known(tasks: list[str], manager) -> None:
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise WandappError(
            f"unknown task(s) {', '.join(unknown)}; local ones: {', '.join(LOCAL_TASKS)} (others from lm-eval's "
            "registry via the hub, e.g. mrpc, wic, mmlu)"
        )


def local_task_yaml(task: str, packaged_yaml: str, root: Path, cache_dir: Path) -> str:
    """A task config that includes the packaged YAML and swaps its hub dataset for the local JSONL file(s)."""
    files = local_task_files(task, root)
    splits = {s: (s if s in files else None) for s in ("train", "validation", "test")}
    data_files = "".join(f"\n      {split}: {_quote(path)}" for split, path in files.items())
    # Absolute paths only: lm-eval resolves relative data_files against the working directory, not the YAML.
    return (
        f"include: {_quote(packaged_yaml)}\n"
        f"task: {LOCAL_PREFIX}{task}\n"
        "tag: []\n"  # keep the local copy out of the packaged task's groups
        "dataset_path: json\n"
        "dataset_name: null\n"
        "dataset_kwargs:\n"
        f"  cache_dir: {_quote(cache_dir.resolve())}\n"
        f"  data_files:{data_files}\n"
        f"training_split: {splits['train'] or 'null'}\n"
        f"validation_split: {splits['validation'] or 'null'}\n"
        f"test_split: {splits['test'] or 'null'}\n"
    )


def _quote(path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


# Where lm-eval keeps each local task's YAML (checked, and found by a text scan if a release moves one).
PACKAGED_YAML = {
    "boolq": "super_glue/boolq/default.yaml",
    "rte": "glue/rte/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "piqa": "piqa/piqa.yaml",
}


def packaged_task_yaml(task: str) -> Path | None:
    """The packaged YAML that defines `task`, without a TaskManager: indexing lm-eval's ~14,000 task YAMLs took
    most of a quick `wandapp tasks` job's start-up (about 8 s of parsing on a 2-core machine, twice)."""
    import lm_eval.tasks

    tasks_dir = Path(lm_eval.tasks.__file__).parent
    defines = re.compile(rf"^task:\s*['\"]?{re.escape(task)}['\"]?\s*$", re.M)
    known = tasks_dir / PACKAGED_YAML.get(task, "-")
    candidates = [known] if known.is_file() else []
    for path in [*candidates, *sorted(tasks_dir.rglob("*.yaml"))]:
        try:
            if defines.search(path.read_text(errors="replace")):
                return path
        except OSError:
            continue
    return None


def build_task_manager(tasks: list[str], root: Path | None, work_dir: Path):
    """A TaskManager that knows the local copies, and the lm-eval task name for each requested task."""
    from lm_eval.tasks import TaskManager

    local = {t: packaged_task_yaml(t) for t in tasks if root is not None and t in LOCAL_TASKS}
    all_local = root is not None and all(local.get(t) is not None for t in tasks)
    packaged = None
    if not all_local:  # some task comes from lm-eval's own registry: the full index is needed anyway
        packaged = TaskManager()
        _check_known(tasks, packaged)
    if root is None:
        return packaged, {t: t for t in tasks}
    config_dir, cache_dir = work_dir / "task_configs", work_dir / "datasets_cache"
    config_dir.mkdir(parents=True, exist_ok=True)
    names = {}
    for task in tasks:
        if task not in LOCAL_TASKS:
            log.warning("task %s has no local data in %s: lm-eval will load it from the hub", task, root)
            names[task] = task
            continue
        yaml_path = local.get(task) or packaged.task_index[task].yaml_path
        (config_dir / f"{task}.yaml").write_text(local_task_yaml(task, str(yaml_path), root, cache_dir))
        names[task] = LOCAL_PREFIX + task
    if not any(n.startswith(LOCAL_PREFIX) for n in names.values()):
        return packaged, names
    # Indexing lm-eval's thousands of packaged tasks takes seconds: skip it when every task is a local copy.
    return TaskManager(include_path=str(config_dir), include_defaults=not all_local), names


def summarize(raw: dict, names: dict[str, str]) -> dict[str, dict]:
    """{task: {acc, acc_stderr, acc_norm, acc_norm_stderr (where the task has them), n, lm_eval_task}}."""
    out = {}
    for task, name in names.items():
        metrics = raw["results"].get(name)
        if metrics is None:
            raise WandappError(f"lm-eval returned no result for task {task}")
        row: dict = {}
        for metric in METRICS:
            if f"{metric},none" in metrics:
                row[metric] = float(metrics[f"{metric},none"])
                stderr = metrics.get(f"{metric}_stderr,none")
                row[f"{metric}_stderr"] = float(stderr) if isinstance(stderr, (int, float)) else None
        counts = raw.get("n-samples", {}).get(name, {})
        row["n"] = int(counts.get("effective", 0))
        row["n_total"] = int(counts.get("original", row["n"]))
        row["lm_eval_task"] = name
        row["version"] = raw.get("versions", {}).get(name)
        out[task] = row
    return out


def evaluate_tasks(
    model,
    tokenizer,
    tasks: list[str],
    *,
    root: Path | None = None,
    num_fewshot: int = 0,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    work_dir: str | Path | None = None,
) -> dict:
    """Run lm-eval on an in-memory causal LM; return per-task accuracies plus the run's settings.

    `work_dir` holds the generated task configs and the datasets cache; by default a temporary folder.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    if limit is not None and limit < 1:
        raise WandappError("--limit must be >= 1")
    with tempfile.TemporaryDirectory(prefix="wandapp-tasks-", dir=work_dir) as tmp:
        manager, names = build_task_manager(tasks, root, Path(tmp))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        try:
            raw = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(names.values()),
                task_manager=manager,
                num_fewshot=num_fewshot,
                limit=limit,
                log_samples=False,
                bootstrap_iters=1000,  # stderr for the tables; cheap next to the model forward passes
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
        except FileNotFoundError as e:
            raise DataError(f"task data not found: {e}") from e
    results = summarize(raw, names)
    return {
        "results": results,
        "mean_acc": sum(r["acc"] for r in results.values() if "acc" in r) / max(1, len(results)),
        "num_fewshot": num_fewshot,
        "limit": limit,
        "batch_size": batch_size,
        "data": str(root.resolve()) if root is not None else "hub",
    }


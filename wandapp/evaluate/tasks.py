"""Zero-shot downstream accuracy with lm-evaluation-harness, on an in-memory model.

Task data comes from a local mirror (`tasks/<task>/<split>.jsonl[.gz]`, HF field names) when one is given: each
packaged lm-eval task is re-pointed at the local file through a generated YAML that `include:`s the packaged one, so
prompts, choices and metrics stay lm-eval's own. MMLU is lm-eval's group of 57 subject tasks; locally each subject
reads `tasks/mmlu/<subject>/{test,dev}.jsonl` and a local group averages them weighted by size, as `mmlu` does.
With a mirror every task must be in it (no silent mix with the hub); without one, lm-eval loads from the hub.
"""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, WandappError

log = logging.getLogger(__name__)

# The Wanda++ paper's Table 2 (method.md 3.3), in its column order; Wanda's seven are WANDA_TASKS.
PAPER_TASKS = ("wic", "mrpc", "hellaswag", "arc_easy", "arc_challenge", "winogrande", "boolq", "rte", "mmlu")
WANDA_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
LOCAL_PREFIX = "wandapp_local_"
METRICS = ("acc", "acc_norm")
MMLU = "mmlu"
# lm-eval's `mmlu` group: one task mmlu_<subject> per subject (the cais/mmlu configs), 14,042 test questions.
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)


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
    "wic": LocalTask("validation", "validation.jsonl"),  # super_glue WiC; no train split, so zero-shot only
    "mrpc": LocalTask("validation", "validation.jsonl"),  # GLUE MRPC; no train split, so zero-shot only
}
# Each MMLU subject: the test split evaluated, dev (5 questions) for few-shot, as lm-eval's mmlu_<subject>.
MMLU_LOCAL = LocalTask("test", "test.jsonl", "dev.jsonl", fewshot_split="dev")
MIRROR_TASKS = (*LOCAL_TASKS, MMLU)


def parse_task_list(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise WandappError("no tasks given")
    if len(set(names)) != len(names):
        raise WandappError(f"task listed twice in {text!r}")
    return names


def local_task_files(task: str, root: Path) -> dict[str, Path]:
    """{split: absolute file} of a task in the mirror; DataError naming the file when the evaluated one is missing.

    `task` is a LOCAL_TASKS name or `mmlu_<subject>` (one MMLU subject)."""
    if task.startswith(MMLU + "_") and task.removeprefix(MMLU + "_") in MMLU_SUBJECTS:
        spec, folder = MMLU_LOCAL, root / "tasks" / MMLU / task.removeprefix(MMLU + "_")
    else:
        spec, folder = LOCAL_TASKS[task], root / "tasks" / task
    folder = folder.resolve()
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


def lm_eval_tasks(task: str) -> list[str]:
    """The lm-eval tasks that make up one requested task: the 57 subjects for mmlu, else the task itself."""
    return [f"{MMLU}_{s}" for s in MMLU_SUBJECTS] if task == MMLU else [task]


def check_tasks(tasks: list[str], root: Path | None) -> None:
    """Fail before any model is loaded: with a mirror, every task and its files in it; else names known to lm-eval."""
    if root is None:
        from lm_eval.tasks import TaskManager

        _check_known(tasks, TaskManager())
        return
    missing = [t for t in tasks if t not in MIRROR_TASKS]
    if missing:
        raise DataError(
            f"task(s) {', '.join(missing)} not in the mirror {root} (it has {', '.join(MIRROR_TASKS)}); "
            "leave out --data-dir to load tasks from the hub"
        )
    for task in tasks:
        for name in lm_eval_tasks(task):
            local_task_files(name, root)


def _check_known(tasks: list[str], manager) -> None:
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise WandappError(
            f"unknown task(s) {', '.join(unknown)}; in a mirror: {', '.join(MIRROR_TASKS)} (others from lm-eval's "
            "registry via the hub)"
        )


def local_task_yaml(task: str, packaged_yaml: str, root: Path, cache_dir: Path) -> str:
    """A task config that includes the packaged YAML and swaps its hub dataset for the local JSONL file(s)."""
    files = local_task_files(task, root)
    splits = {s: (s if s in files else None) for s in ("train", "validation", "test")}
    data_files = "".join(f"\n      {split}: {_quote(path)}" for split, path in files.items())
    fewshot = "fewshot_split: dev\n" if "dev" in files else ""
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
        f"{fewshot}"
    )


def local_mmlu_group_yaml() -> str:
    """lm-eval's `mmlu` group over the local subject copies: accuracy averaged weighted by size, as `_mmlu.yaml`."""
    subtasks = "".join(f"\n  - {LOCAL_PREFIX}{name}" for name in lm_eval_tasks(MMLU))
    return (
        f"group: {LOCAL_PREFIX}{MMLU}\n"
        f"task:{subtasks}\n"
        "aggregate_metric_list:\n"
        "  - metric: acc\n"
        "    weight_by_size: true\n"
        "metadata:\n"
        "  version: 2\n"
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
    "wic": "super_glue/wic/default.yaml",
    "mrpc": "glue/mrpc/default.yaml",
    **{f"{MMLU}_{s}": f"mmlu/default/mmlu_{s}.yaml" for s in MMLU_SUBJECTS},
}


def packaged_task_yaml(task: str) -> Path | None:
    """The packaged YAML that defines `task`, without a TaskManager: indexing lm-eval's ~14,000 task YAMLs took
    most of a quick `wandapp tasks` job's start-up (about 8 s of parsing on a 2-core machine, twice)."""
    import lm_eval.tasks

    tasks_dir = Path(lm_eval.tasks.__file__).parent
    # `task: x` or, as in lm-eval's generated MMLU configs, `"task": "x"`
    defines = re.compile(rf"^['\"]?task['\"]?:\s*['\"]?{re.escape(task)}['\"]?\s*$", re.M)
    known = tasks_dir / PACKAGED_YAML.get(task, "-")
    candidates = [known] if known.is_file() else []
    # The tree walk is lazy: listing lm-eval's task folders cost ~1.4 s CPU a job even when `known` matched.
    for path in itertools.chain(candidates, _sorted_yamls(tasks_dir)):
        try:
            if defines.search(path.read_text(errors="replace")):
                return path
        except OSError:
            continue
    return None


def _sorted_yamls(folder: Path):
    yield from sorted(folder.rglob("*.yaml"))


def build_task_manager(tasks: list[str], root: Path | None, work_dir: Path):
    """A TaskManager that knows the local copies, and the lm-eval task (or group) name for each requested task."""
    from lm_eval.tasks import TaskManager

    if root is None:  # lm-eval's own registry: the full index is needed anyway
        packaged = TaskManager()
        _check_known(tasks, packaged)
        return packaged, {t: t for t in tasks}
    check_tasks(tasks, root)
    config_dir, cache_dir = work_dir / "task_configs", work_dir / "datasets_cache"
    config_dir.mkdir(parents=True, exist_ok=True)
    packaged = None
    for task in tasks:
        for name in lm_eval_tasks(task):
            yaml_path = packaged_task_yaml(name)
            if yaml_path is None:  # moved beyond a text scan's reach: ask the (slow) full index once
                packaged = packaged or TaskManager()
                yaml_path = packaged.task_index[name].yaml_path
            (config_dir / f"{name}.yaml").write_text(local_task_yaml(name, str(yaml_path), root, cache_dir))
        if task == MMLU:
            (config_dir / f"_{MMLU}_group.yaml").write_text(local_mmlu_group_yaml())
    # Every task here is a local copy: skip indexing lm-eval's thousands of packaged tasks.
    return TaskManager(include_path=str(config_dir), include_defaults=False), {t: LOCAL_PREFIX + t for t in tasks}


def _metrics_row(metrics: dict) -> dict:
    row: dict = {}
    for metric in METRICS:
        if f"{metric},none" in metrics:
            row[metric] = float(metrics[f"{metric},none"])
            stderr = metrics.get(f"{metric}_stderr,none")
            row[f"{metric}_stderr"] = float(stderr) if isinstance(stderr, (int, float)) else None
    return row


def _counts(raw: dict, name: str) -> tuple[int, int]:
    counts = raw.get("n-samples", {}).get(name, {})
    effective = int(counts.get("effective", 0))
    return effective, int(counts.get("original", effective))


def summarize(raw: dict, names: dict[str, str]) -> dict[str, dict]:
    """{task: {acc, acc_stderr, acc_norm, acc_norm_stderr (where the task has them), n, n_total, lm_eval_task}}.

    MMLU's row is lm-eval's group accuracy (subjects weighted by their question counts) and carries a `subjects`
    entry with each subject's own row."""
    out = {}
    for task, name in names.items():
        metrics = raw["results"].get(name)
        if metrics is None:
            raise WandappError(f"lm-eval returned no result for task {task}")
        row = _metrics_row(metrics)
        prefix = name.removesuffix(task)  # "" from the hub, LOCAL_PREFIX for a local copy
        parts = {sub: prefix + sub for sub in lm_eval_tasks(task)} if task == MMLU else {task: name}
        subjects = {}
        for sub, sub_name in parts.items():
            sub_metrics = raw["results"].get(sub_name)
            if sub_metrics is None:
                raise WandappError(f"lm-eval returned no result for task {sub} of {task}")
            n, n_total = _counts(raw, sub_name)
            subjects[sub.removeprefix(MMLU + "_")] = {**_metrics_row(sub_metrics), "n": n, "n_total": n_total}
        row["n"] = sum(s["n"] for s in subjects.values())
        row["n_total"] = sum(s["n_total"] for s in subjects.values())
        row["lm_eval_task"] = name
        row["version"] = raw.get("versions", {}).get(name)
        if task == MMLU:
            row["subjects"] = subjects
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


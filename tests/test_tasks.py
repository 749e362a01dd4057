"""`wandapp tasks` on the tiny model over a few rows of every local task, fully offline."""

from __future__ import annotations

import json

import pytest

from wandapp.cli import main
from wandapp.errors import DataError, WandappError
from wandapp.evaluate.tasks import (
    LOCAL_TASKS,
    MIRROR_TASKS,
    MMLU_SUBJECTS,
    PAPER_TASKS,
    WANDA_TASKS,
    check_tasks,
    local_task_files,
    local_task_yaml,
    parse_task_list,
)

LIMIT = 3


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))


def test_all_local_tasks_run_offline(tiny_llama_dir, data_dir, tmp_path, capsys):
    tasks = list(MIRROR_TASKS)  # the paper's nine, Wanda's openbookqa, piqa
    out = tmp_path / "results.json"
    rc = main([
        "tasks", "--model", str(tiny_llama_dir), "--tasks", ",".join(tasks), "--limit", str(LIMIT),
        "--batch-size", "16", "--data-dir", str(data_dir), "--output", str(out),
    ])
    assert rc == 0
    result = json.loads(out.read_text())
    assert list(result["results"]) == tasks
    assert result["num_fewshot"] == 0 and result["limit"] == LIMIT
    full_sizes = {"boolq": 3270, "rte": 277, "hellaswag": 10042, "winogrande": 1267, "arc_easy": 2376,
                  "arc_challenge": 1172, "openbookqa": 500, "piqa": 1838, "wic": 638, "mrpc": 408, "mmlu": 14042}
    for task, row in result["results"].items():
        if task == "mmlu":
            continue
        assert row["n"] == LIMIT, task
        assert row["n_total"] == full_sizes[task], task  # the split lm-eval evaluates (ARC/OBQA: test)
        assert 0.0 <= row["acc"] <= 1.0
        # accuracy over 3 rows is a multiple of 1/3
        assert abs(row["acc"] * LIMIT - round(row["acc"] * LIMIT)) < 1e-6
        assert "subjects" not in row
    for task in ("hellaswag", "arc_easy", "arc_challenge", "openbookqa", "piqa"):
        assert 0.0 <= result["results"][task]["acc_norm"] <= 1.0
    assert "acc_norm" not in result["results"]["boolq"]  # lm-eval's boolq defines acc only
    # MMLU: one accuracy over the 57 subjects (the limit applies per subject), weighted by size as lm-eval's group
    mmlu = result["results"]["mmlu"]
    assert mmlu["lm_eval_task"] == "wandapp_local_mmlu"
    assert list(mmlu["subjects"]) == list(MMLU_SUBJECTS)
    assert mmlu["n"] == 57 * LIMIT and mmlu["n_total"] == full_sizes["mmlu"]
    assert mmlu["subjects"]["professional_law"]["n_total"] == 1534
    subjects = mmlu["subjects"].values()
    assert mmlu["acc"] == pytest.approx(sum(s["acc"] * s["n"] for s in subjects) / mmlu["n"])
    assert "boolq" in capsys.readouterr().out


def test_local_yaml_points_at_absolute_files(data_dir, tmp_path):
    text = local_task_yaml("arc_easy", "/pkg/arc_easy.yaml", data_dir, tmp_path / "cache")
    test_file = (data_dir / "tasks" / "arc_easy" / "test.jsonl").resolve()
    assert f'test: "{test_file}"' in text
    assert "test_split: test" in text and "training_split: null" in text
    assert text.startswith('include: "/pkg/arc_easy.yaml"')


@pytest.mark.parametrize("task", ["no_such_task", "lambada_openai"])  # unknown anywhere / an lm-eval task not mirrored
def test_task_missing_from_mirror_is_one_line_error(data_dir, tmp_path, capsys, task):
    rc = main(["tasks", "--model", "unused-hub/id", "--tasks", f"boolq,{task}", "--data-dir", str(data_dir),
               "--output", str(tmp_path / "r.json")])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # run start/end lines aside
    assert rc == 2 and len(err) == 1
    err = err[0]
    assert f"task(s) {task} not in the mirror" in err and "mmlu" in err  # names what the mirror has
    assert not (tmp_path / "r.json").exists()


def test_missing_mmlu_subject_names_its_file(tmp_path):
    for subject in MMLU_SUBJECTS[:-1]:
        (tmp_path / "tasks" / "mmlu" / subject).mkdir(parents=True)
        (tmp_path / "tasks" / "mmlu" / subject / "test.jsonl").write_text("{}\n")
    with pytest.raises(DataError, match=r"tasks/mmlu/world_religions/test\.jsonl"):
        check_tasks(["mmlu"], tmp_path)
    assert set(local_task_files("mmlu_anatomy", tmp_path)) == {"test"}  # dev (few-shot) is optional


def test_mmlu_subject_yaml_reads_test_and_dev(data_dir, tmp_path):
    text = local_task_yaml("mmlu_anatomy", "/pkg/mmlu_anatomy.yaml", data_dir, tmp_path / "cache")
    assert "task: wandapp_local_mmlu_anatomy" in text and "test_split: test" in text
    assert "fewshot_split: dev" in text and str((data_dir / "tasks/mmlu/anatomy/dev.jsonl").resolve()) in text


def test_missing_local_file_names_it(tmp_path):
    (tmp_path / "tasks" / "rte").mkdir(parents=True)
    with pytest.raises(DataError, match=r"tasks/rte/validation\.jsonl"):
        check_tasks(["rte"], tmp_path)


def test_gzipped_local_file_is_used(tmp_path):
    import gzip

    (tmp_path / "tasks" / "rte").mkdir(parents=True)
    with gzip.open(tmp_path / "tasks" / "rte" / "validation.jsonl.gz", "wt") as f:
        f.write('{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0}\n')
    assert local_task_files("rte", tmp_path)["validation"].name == "validation.jsonl.gz"


def test_task_list_parsing():
    assert parse_task_list(" BoolQ, rte ,") == ["boolq", "rte"]
    with pytest.raises(WandappError):
        parse_task_list("rte,rte")
    assert set(PAPER_TASKS) <= set(MIRROR_TASKS) and set(WANDA_TASKS) <= set(LOCAL_TASKS)
    assert len(PAPER_TASKS) == 9 and len(MMLU_SUBJECTS) == 57 == len(set(MMLU_SUBJECTS))

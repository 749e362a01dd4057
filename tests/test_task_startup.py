"""`wandapp tasks` finds the packaged YAML of each local task without indexing all of lm-eval's tasks."""

import pytest

from wandapp.evaluate.tasks import LOCAL_TASKS, PACKAGED_YAML, packaged_task_yaml


def test_every_local_task_has_a_known_yaml():
    from wandapp.evaluate.tasks import MMLU, MMLU_SUBJECTS

    assert set(PACKAGED_YAML) == set(LOCAL_TASKS) | {f"{MMLU}_{s}" for s in MMLU_SUBJECTS}


def test_the_yaml_found_is_the_one_lm_eval_indexes():
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    index = TaskManager().task_index
    for task in LOCAL_TASKS:
        assert str(packaged_task_yaml(task)) == str(index[task].yaml_path), task
    assert packaged_task_yaml("no_such_task_anywhere") is None


def test_a_known_task_is_found_without_walking_the_task_tree(monkeypatch):
    pytest.importorskip("lm_eval")
    import wandapp.evaluate.tasks as tasks

    def walk(folder):
        raise AssertionError("walked lm-eval's task tree for a task whose YAML path is known")
        yield

    monkeypatch.setattr(tasks, "_sorted_yamls", walk)
    assert packaged_task_yaml("arc_easy").name == "arc_easy.yaml"
    assert packaged_task_yaml("mmlu_anatomy").name == "mmlu_anatomy.yaml"

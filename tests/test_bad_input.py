"""Every bad input is one line on stderr and exit code 2, before any work, and nothing is written or removed.

Each case runs the CLI in a scratch folder (the current directory, so `--output .` is safe to try) and compares a
snapshot of the whole tree before and after. Cases that need no model say so: loading one fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wandapp.cli import main
from wandapp.io import MARKER, atomic_dir, check_output

CPU = ["--device", "cpu"]
PRUNE = ["prune", "--method", "wanda", "--sparsity", "0.5", "--nsamples", "2", "--seqlen", "16", *CPU]
PPL = ["ppl", "--seqlen", "16", "--max-windows", "1", *CPU]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def calib(path: Path, ids: torch.Tensor) -> str:
    from safetensors.torch import save_file

    save_file({"input_ids": ids}, str(path))
    return str(path)


def pickle_only(folder: Path, model_dir: Path) -> str:
    """The tiny model as a folder holding only pytorch_model.bin."""
    from transformers import AutoModelForCausalLM

    folder.mkdir()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for f in model_dir.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    return str(folder)


def bad_calibration(name: str, content: torch.Tensor | bytes | str, message: str):
    """A case: prune calibrating on scratch/name holding content (a tensor is saved as input_ids) fails with message."""

    def build(d: Path, m: str, data: str) -> list:
        path = calib(d / name, content) if isinstance(content, torch.Tensor) else write(d / name, content)
        return [*PRUNE, "--model", m, "--output", "o", "--calibration", path]

    return build, message, False


# name -> (argv builder (scratch folder, model folder, data folder), message fragment, loads the model)
CASES = {
    "output-user-folder": (lambda d, m, data: ["convert", "--model", m, "--output", user_folder(d)],
                           "did not write", False),
    "output-existing-file": (lambda d, m, data: ["convert", "--model", m, "--output", write(d / "f", "x")],
                             "existing file", False),
    "ppl-output-existing-file": (lambda d, m, data: [*PPL, "--model", m, "--output", write(d / "r.json", "{}")],
                                 "existing file", False),
    "output-dot": (lambda d, m, data: [*PRUNE, "--model", m, "--output", "."], "current folder", False),
    "output-parent": (lambda d, m, data: [*PRUNE, "--model", m, "--output", ".."], "current folder", False),
    "output-under-file": (lambda d, m, data: [*PRUNE, "--model", m, "--output", write(d / "f", "x") + "/sub/o"],
                          "is a file", False),
    "output-unwritable": (lambda d, m, data: [*PRUNE, "--model", m, "--output", "/proc/self/wandapp-out"],
                          "cannot write", False),
    "ppl-output-folder": (lambda d, m, data: [*PPL, "--model", m, "--output", str(d)], "current folder", False),
    "calib-id-at-vocab": bad_calibration("c.safetensors", torch.full((2, 8), 49152), "vocabulary size 49152"),
    "calib-id-negative": bad_calibration("c.safetensors", torch.full((2, 8), -1), "negative"),
    "calib-0-rows-safetensors": bad_calibration("c.safetensors", torch.zeros(0, 8, dtype=torch.long),
                                                "0 calibration windows"),
    "calib-0-rows-jsonl": bad_calibration("c.jsonl", "", "holds no text"),
    "calib-0-rows-txt": bad_calibration("c.txt", "\n\n", "holds no text"),
    "calib-jsonl-list-row": bad_calibration("c.jsonl", '{"text": "a"}\n[1, 2]\n', "c.jsonl:2: not an object"),
    "calib-jsonl-number-text": bad_calibration("c.jsonl", '{"text": 5}\n', "not an object"),
    "calib-jsonl-string-row": bad_calibration("c.jsonl", '"text"\n', "not an object"),
    "calib-txt-not-utf8": bad_calibration("c.txt", b"caf\xe9 \xff\xfe", "not UTF-8"),
    "prune-nsamples-0": (lambda d, m, data: [*PRUNE, "--model", m, "--output", "o", "--nsamples", "0"],
                         "--nsamples must be >= 1", False),
    "prune-seqlen-1": (lambda d, m, data: [*PRUNE, "--model", m, "--output", "o", "--seqlen", "1"],
                       "--seqlen must be >= 2", False),
    "prune-ro-lr-negative": (lambda d, m, data: ["prune", "--method", "wanda++", "--sparsity", "0.5", *CPU,
                                                 "--ro-lr", "-1", "--model", m, "--output", "o"], "ro_lr", False),
    "prune-profile-unknown": (lambda d, m, data: [*PRUNE, "--sparsity-profile", "steep", "--model", m, "--output",
                                                  "o"], "unknown sparsity profile 'steep'", False),
    "prune-owl-with-2of4": (lambda d, m, data: ["prune", "--method", "wanda++", "--sparsity", "2:4", *CPU,
                                                "--sparsity-profile", "owl", "--model", m, "--output", "o"],
                            "cannot apply to the N:M pattern 2:4", False),
    "prune-owl-lambda-negative": (lambda d, m, data: [*PRUNE, "--sparsity-profile", "owl", "--owl-lambda", "-0.1",
                                                      "--model", m, "--output", "o"], "lambda >= 0", False),
    "prune-gblm-stream": (lambda d, m, data: ["prune", "--method", "gblm", "--sparsity", "0.5", *CPU, "--stream",
                                              "--model", m, "--output", "o"], "--stream does not run gblm", False),
    "prune-gblm-norm-bad": (lambda d, m, data: ["prune", "--method", "gblm", "--sparsity", "0.5", *CPU,
                                                "--gradient-norm", "l3", "--model", m, "--output", "o"],
                            "gradient_norm", False),
    "prune-device-foo": (lambda d, m, data: [*PRUNE[:-2], "--device", "foo", "--model", m, "--output", "o"],
                         "unknown device 'foo'", False),
    "prune-dtype-bad": (lambda d, m, data: [*PRUNE, "--dtype", "fp8", "--model", m, "--output", "o"],
                        "unknown dtype", False),
    "ppl-device-foo": (lambda d, m, data: [*PPL[:-2], "--device", "foo", "--model", m, "--output", "r.json"],
                       "unknown device 'foo'", False),
    "ppl-seqlen-0": (lambda d, m, data: [*PPL, "--seqlen", "0", "--model", m, "--output", "r.json"],
                     "--seqlen must be >= 2", False),
    "ppl-seqlen-negative": (lambda d, m, data: [*PPL, "--seqlen", "-5", "--model", m, "--output", "r.json"],
                            "--seqlen must be >= 2", False),
    "ppl-batch-size-0": (lambda d, m, data: [*PPL, "--batch-size", "0", "--model", m, "--output", "r.json"],
                         "--batch-size must be >= 1", False),
    "ppl-max-windows-0": (lambda d, m, data: [*PPL, "--max-windows", "0", "--model", m, "--output", "r.json"],
                          "--max-windows must be >= 1", False),
    "ppl-max-windows-negative": (lambda d, m, data: [*PPL, "--max-windows", "-3", "--model", m, "--output",
                                                     "r.json"], "--max-windows must be >= 1", False),
    "ppl-pickle-only": (lambda d, m, data: [*PPL, "--model", pickle_only(d / "bin", Path(m)), "--output", "r.json"],
                        "--allow-pickle", False),
    "convert-pickle-only": (lambda d, m, data: ["convert", "--model", pickle_only(d / "bin", Path(m)),
                                                "--output", "o"], "only pickled weights", False),
    "bench-device-foo": (lambda d, m, data: ["bench", "--model", m, "--device", "foo", "--output", "b.json"],
                         "unknown device", False),
    "tasks-batch-size-0": (lambda d, m, data: ["tasks", "--model", m, "--batch-size", "0", *CPU, "--output",
                                               "t.json"], "--batch-size must be >= 1", False),
    "report-output-file": (lambda d, m, data: ["report", "--results", str(d), "--output", write(d / "f", "x")],
                           "is a file", False),
    "report-output-dot": (lambda d, m, data: ["report", "--results", str(d), "--output", "."], "current folder",
                          False),
    "lora-steps-0": (lambda d, m, data: ["lora", "--model", m, "--steps", "0", *CPU, "--output", "o"],
                     "--steps must be >= 1", False),
}


def user_folder(d: Path) -> str:
    victim = d / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("x\n")
    return str(victim)


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(name, tiny_llama_dir, data_dir, tmp_path, monkeypatch,
                                                          capsys):
    build, message, loads = CASES[name]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    argv = [str(a) for a in build(scratch, str(tiny_llama_dir), str(data_dir))]
    if not loads:  # the check must come before the model is read
        import wandapp.models

        def no_load(*a, **k):
            raise AssertionError("the model was loaded before the bad input was refused")

        monkeypatch.setattr(wandapp.models, "load_model", no_load)
        monkeypatch.setattr(wandapp.models, "load_tokenizer", no_load)
    before, model_before = snapshot(scratch), snapshot(tiny_llama_dir)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and message in err, err
    assert snapshot(scratch) == before and snapshot(tiny_llama_dir) == model_before


def test_a_folder_holding_a_users_file_is_kept_and_replaced_only_with_overwrite(tiny_llama_dir, tmp_path, capsys):
    victim = Path(user_folder(tmp_path))
    assert main(["convert", "--model", str(tiny_llama_dir), "--output", str(victim)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (victim / "precious.txt").read_text() == "x\n" and sorted(os.listdir(tmp_path)) == ["victim"]
    assert main(["convert", "--model", str(tiny_llama_dir), "--output", str(victim), "--overwrite"]) == 0
    assert not (victim / "precious.txt").exists() and (victim / MARKER).is_file()
    assert sorted(os.listdir(tmp_path)) == ["victim"]  # no hidden .victim.old-* or .tmp-* left
    # a folder wandapp wrote is replaced without --overwrite
    assert main(["convert", "--model", str(tiny_llama_dir), "--output", str(victim)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["victim"]


def test_overwrite_replaces_a_file_without_leaving_a_hidden_copy(tmp_path):
    target = tmp_path / "model"
    target.write_text("user data")
    with pytest.raises(Exception):
        check_output(target, folder=True)
    check_output(target, folder=True, overwrite=True)
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (target / "config.json").is_file() and os.listdir(tmp_path) == ["model"]


def test_an_empty_folder_is_a_valid_output(tmp_path):
    (tmp_path / "out").mkdir()
    check_output(tmp_path / "out", folder=True)
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("1")
    assert (tmp_path / "out" / "a").is_file()


def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path):
    from wandapp.io import _tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    host = _tag().split(".")[0]
    stale_dir = tmp_path / f".out.tmp-{host}.{pid}-abcd"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_text("half")
    stale_file = tmp_path / f".r.json.tmp-{host}.{pid}-wxyz.json"
    stale_file.write_text("{")
    other_host = tmp_path / f".out.tmp-elsewhere.{pid}-abcd"  # another machine's run may still be going
    other_host.mkdir()
    live = tmp_path / f".out.tmp-{host}.{os.getpid()}-live"  # this process: alive
    live.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("1")
    from wandapp.io import write_json

    write_json(tmp_path / "r.json", {})
    assert not stale_dir.exists() and not stale_file.exists()
    assert other_host.exists() and live.exists()


def test_pickle_only_folder_loads_with_opt_in_and_outputs_drop_auto_map(tiny_llama_dir, tmp_path):
    import json

    folder = Path(pickle_only(tmp_path / "bin", tiny_llama_dir))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "converted"
    assert main(["convert", "--model", str(folder), "--allow-pickle", "--output", str(out)]) == 0
    assert "auto_map" not in json.loads((out / "config.json").read_text())
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ppl_max_windows_is_honoured(tiny_llama_dir, data_dir, tmp_path):
    import json

    out = tmp_path / "ppl.json"
    assert main([*PPL, "--model", str(tiny_llama_dir), "--data-dir", str(data_dir), "--max-windows", "1",
                 "--output", str(out)]) == 0
    assert json.loads(out.read_text())["windows"] == 1
    assert main([*PPL, "--model", str(tiny_llama_dir), "--data-dir", str(data_dir), "--output", str(out)]) == 2
    assert main([*PPL, "--model", str(tiny_llama_dir), "--data-dir", str(data_dir), "--output", str(out),
                 "--overwrite"]) == 0

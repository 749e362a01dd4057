"""The 2:4 kernel lab is an optional wing: the CLI finds its commands on disk, the core never imports it, and a
missing dependency of its extra is one line that says how to install it."""

import ast
import json
from pathlib import Path

from wandapp import cli, sparse24

PACKAGE = Path(cli.__file__).parent
CORE = ["adapter", "walker", "methods", "masks", "data", "models", "evaluate", "lora", "report", "cli", "commands"]


def _imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module a file imports, relative imports resolved against its package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
    return names


def test_no_core_module_imports_the_wing():
    files = [p for name in CORE for p in ([PACKAGE / f"{name}.py"] if (PACKAGE / f"{name}.py").is_file()
                                           else sorted((PACKAGE / name).rglob("*.py")))]
    assert len(files) > len(CORE)
    for path in files:
        package = ".".join(("wandapp", *path.relative_to(PACKAGE).parent.parts))
        wing = {m for m in _imported_modules(path, package) if m.startswith("wandapp.sparse24")}
        assert not wing, f"{path.name} imports {wing}"


def test_cli_and_workflow_find_the_wings_commands():
    from wandapp.codeversion import stage_code_hash, stage_files
    from wandapp.commands import optional_commands

    assert {("sparse24", "bench"), ("sparse24", "export")} <= set(optional_commands())
    assert not {"bench", "export"} & set(cli.COMMANDS)
    choices = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    assert {"bench", "export", "prune", "report"} <= set(choices)
    # the bench rule's code trigger still covers the kernel lab's modules
    assert stage_code_hash("bench") not in ("missing", stage_code_hash("export"))
    assert {"sparse24/commands/bench.py", "sparse24/runner.py", "sparse24/cusparselt.py"} <= set(stage_files("bench"))


def test_cutlass_on_without_the_extra_says_how_to_install_it(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDAPP_CUTLASS_SPARSE", raising=False)
    monkeypatch.delenv("CUTLASS_PATH", raising=False)
    monkeypatch.setattr(sparse24, "EXTRA_MODULES", {"wandapp_no_such_module": "nvidia-cutlass"})
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", str(tiny_llama_dir), "--output", str(out), "--device", "cpu", "--cutlass", "on"]
    assert cli.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # (run start/end lines aside)
    assert len(errors) == 1 and "pip install 'wandapp[sparse24]'" in errors[0] and "nvidia-cutlass" in errors[0]
    assert not out.exists()
    # with the extra (here: a module that exists) the same command gets as far as the CPU's skipped result
    monkeypatch.setattr(sparse24, "EXTRA_MODULES", {"json": "nvidia-cutlass"})
    assert cli.main(argv) == 0 and json.loads(out.read_text())["skipped"] is True


def test_the_kernel_source_ships_with_the_wing():
    import tomllib

    data = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert "sparse24/kernels/*.cu" in data["tool"]["setuptools"]["package-data"]["wandapp"]
    assert list((PACKAGE / "sparse24" / "kernels").glob("*.cu"))
    assert "sparse24" in data["project"]["optional-dependencies"]


def _loaded_modules(code: str) -> set[str]:
    """Every module `python -X importtime -c code` imports, in a fresh interpreter running this checkout."""
    import os
    import subprocess
    import sys

    pythonpath = os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath)
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env,
                       cwd=PACKAGE.parent, check=True)
    rows = [line.split("|") for line in r.stderr.splitlines() if line.startswith("import time:")]
    return {row[2].strip() for row in rows[1:] if len(row) == 3}  # the first row is the header


def test_the_walker_loads_neither_the_wing_nor_pandas_nor_lm_eval():
    loaded = _loaded_modules("import wandapp.walker, wandapp.methods")
    assert {"wandapp.walker", "wandapp.adapter", "torch"} <= loaded  # the probe sees imports at all
    assert not {m for m in loaded if m.split(".")[0] in ("pandas", "lm_eval") or m.startswith("wandapp.sparse24")}
    # the other core modules (report excepted: it is pandas' user) stay clear of the wing as well
    core = _loaded_modules("import " + ", ".join(f"wandapp.{m}" for m in CORE if m not in ("report", "commands")))
    assert not {m for m in core if m.startswith("wandapp.sparse24")}


def test_export_runs_through_the_discovered_command(tiny_llama_dir, tokenizer, tmp_path, capsys):
    import torch

    from conftest import build_tiny_llama
    from wandapp.adapter import DecoderAdapter
    from wandapp.sparse24.sparsity import random_2of4_

    # a dense model is refused in one line, and nothing is written
    assert cli.main(["export", "--model", str(tiny_llama_dir), "--output", str(tmp_path / "dense-24")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "not 2:4" in errors[0] and not (tmp_path / "dense-24").exists()
    model = build_tiny_llama()
    with torch.no_grad():
        for lin in DecoderAdapter.from_model(model).all_linears().values():
            random_2of4_(lin.weight, torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path / "pruned")
    tokenizer.save_pretrained(tmp_path / "pruned")
    assert cli.main(["export", "--model", str(tmp_path / "pruned"), "--output", str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["quantization_config"]["sparsity_config"]["format"] == "sparse-24-bitmask"

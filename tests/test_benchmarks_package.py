"""benchmarks/ is a package run as `python -m benchmarks.<pruning|kernels>.<script>` from the repository root:
every script imports as a module, and none reaches a sibling by a bare name or needs PYTHONPATH=."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*/*.py") if p.name != "__init__.py")


def test_both_groups_are_packages():
    assert {p.parent.name for p in SCRIPTS} == {"pruning", "kernels"}
    assert all((ROOT / "benchmarks" / d / "__init__.py").is_file() for d in ("", "pruning", "kernels"))
    assert [p.name for p in (ROOT / "benchmarks").glob("*.py")] == ["__init__.py"]  # no scripts at the top


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}.{p.stem}")
def test_script_imports_as_a_module_without_sibling_imports(script):
    siblings = {p.stem for p in SCRIPTS}
    for node in ast.walk(ast.parse(script.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        assert not {n.split(".")[0] for n in names} & siblings, f"{script.name} imports a sibling by its bare name"
    assert "PYTHONPATH=." not in script.read_text()
    importlib.import_module(f"benchmarks.{script.parent.name}.{script.stem}")  # scripts and shared modules alike

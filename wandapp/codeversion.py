"""Content hash of the package source that one `wandapp` subcommand runs.

Snakemake's code trigger sees only a rule's shell string, not the modules the command imports. The workflow passes
`stage_code_hash("prune")` as a param, so an edit to any module reachable from `wandapp/commands/prune.py` (by a
static walk of its imports, those inside functions included) reruns pruning, while an edit to, say, report.py does not.
Pure standard library: the Snakefile imports this without paying for torch.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from .commands import command_file

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE = PACKAGE_ROOT.name


def _module_file(module: str) -> Path | None:
    """Path of `wandapp.a.b` as a .py file or package __init__.py inside this package, or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the in-package modules that `path` imports anywhere in its body."""
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.add(origin)
            # `from . import methods` and `from .methods import wanda` may name submodules.
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def import_closure(root: Path) -> list[Path]:
    """Every package file reachable from `root`, parents' __init__.py included, sorted."""
    seen: set[Path] = set()
    todo = [root]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = _imports(path) | {_module_name(path)}
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for name in list(names):
            parts = name.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(f for f in map(_module_file, names) if f is not None and f not in seen)
    return sorted(seen)


def files_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(PACKAGE_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def stage_code_hash(command: str) -> str:
    """Hash of the source behind `wandapp COMMAND`; 'missing' while that command is not built yet."""
    root = command_file(command, PACKAGE_ROOT)
    if root is None:
        return "missing"
    return files_hash(import_closure(root))


def stage_files(command: str) -> list[str]:
    """The files `stage_code_hash` covers, relative to the package, for `--list-changes` style debugging."""
    root = command_file(command, PACKAGE_ROOT)
    return [str(p.relative_to(PACKAGE_ROOT)) for p in import_closure(root)] if root is not None else []

"""CLI subcommands, one module per stage. Each defines `register(subparsers)`.

An optional wing of the package (such as the 2:4 kernel lab, wandapp/sparse24/) keeps its commands in its own
`commands/` folder; they are found on disk, so neither the CLI nor the workflow imports the wing to list them.
Standard library only: the Snakefile reaches this through wandapp.codeversion."""

from __future__ import annotations

import pkgutil
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def optional_commands(root: Path = PACKAGE_ROOT) -> list[tuple[str, str]]:
    """(wing, command) for each wandapp/<wing>/commands/<command>.py, by wing then command name."""
    found = []
    for pkg in pkgutil.iter_modules([str(root)]):
        folder = root / pkg.name / "commands"
        if pkg.ispkg and pkg.name != "commands" and (folder / "__init__.py").is_file():
            found += [(pkg.name, m.name) for m in pkgutil.iter_modules([str(folder)]) if not m.name.startswith("_")]
    return found


def command_file(command: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The module behind `wandapp COMMAND`: wandapp/commands/COMMAND.py or a wing's; None when there is none."""
    candidates = [root / "commands" / f"{command}.py"]
    candidates += [root / wing / "commands" / f"{name}.py" for wing, name in optional_commands(root) if name == command]
    return next((p for p in candidates if p.is_file()), None)

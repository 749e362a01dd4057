"""The 2:4 kernel lab, an optional wing of wandapp: sparse linears and MLPs on cuSPARSELt and CUTLASS sm90 kernels that
fall back to dense where sparse loses, their timers (`wandapp bench`), and the compressed-tensors export
(`wandapp export`). Its own dependencies come with `pip install 'wandapp[sparse24]'`; the pruning suite never
imports this package. Kept free of imports: the CLI reads `commands/` at start-up."""

from __future__ import annotations

import importlib.util

EXTRA = "sparse24"
INSTALL = f"pip install 'wandapp[{EXTRA}]'"
# import name -> the distribution the extra installs for it (see [project.optional-dependencies] in pyproject.toml)
EXTRA_MODULES = {"cutlass_library": "nvidia-cutlass"}


def missing() -> list[str]:
    """Distributions of the extra that are not installed."""
    return [dist for mod, dist in EXTRA_MODULES.items() if importlib.util.find_spec(mod) is None]

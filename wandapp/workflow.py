"""The one module the Snakemake workflow (workflow/rules/common.smk) imports at parse time.

Standard library only: no torch, no pandas, no CLI. It names the results tree's layout, which the report parses
back: RESULTS/metrics/{model}/{method}/{variant}/KIND.json, where variant is SparsityPattern.path_label ("2-4",
"0.5"), DENSE's variant is "0", and LORA_SUFFIX marks the LoRA-tuned model.
"""

from __future__ import annotations

from .codeversion import stage_code_hash
from .config_check import ConfigError, check_config
from .pattern import SparsityPattern

DENSE = "dense"
LORA_SUFFIX = "+lora"

__all__ = ["DENSE", "LORA_SUFFIX", "ConfigError", "SparsityPattern", "check_config", "stage_code_hash", "path_label",
           "pattern_of"]


def path_label(sparsity: str) -> str:
    """Config spelling -> folder name: "2:4" -> "2-4", "0.5" -> "0.5"."""
    return SparsityPattern.parse(sparsity).path_label


def pattern_of(variant: str) -> SparsityPattern:
    """Folder name (optionally with LORA_SUFFIX) -> its pattern."""
    return SparsityPattern.from_path_label(variant.removesuffix(LORA_SUFFIX))

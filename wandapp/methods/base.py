"""What every pruning method shares.

A method is a dataclass: a `pattern` field, a `name`, and `prune_block(ctx)` (LayerwiseMethod adds the score /
mask / update split for methods that prune each linear alone). Its HYPERPARAMETERS are the fields it declares
with `hyperparameter(default, help, ...)`; everything else follows from those declarations:
  - the `wandapp prune` flags (field ro_lr -> --ro-lr; a bool field is a switch), in methods.hyperparameter_table
  - the workflow schema's method entries (`python -m wandapp.methods.schema --write`; a test checks it is current)
  - range and choice checks (Method.__post_init__), so the CLI, the workflow and Python callers get the same errors
  - `hyperparameters()`, the settings a prune report records
Plain fields are not flags: `rgs`/`ro` are fixed by a variant in methods.METHODS, `seed` comes from the run's --seed.
Named settings (`presets`, e.g. Wanda++'s "tuned") are a class attribute; "paper" always means the defaults.

A new method: subclass Method or LayerwiseMethod as a dataclass, declare its fields with hyperparameter(), add it
to methods.METHODS, and regenerate the schema. No other file names its hyperparameters.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import torch
from torch import nn

from ..masks import SparsityPattern, apply_mask
from ..walker import BlockContext


def hyperparameter(default, help: str, *, choices: tuple | None = None, minimum: float | None = None,
                   exclusive_minimum: float | None = None):
    """A dataclass field that is a user-facing hyperparameter (a CLI flag and a workflow config key)."""
    rules = {"choices": choices, "minimum": minimum, "exclusive_minimum": exclusive_minimum}
    return field(default=default, metadata={"help": help, **{k: v for k, v in rules.items() if v is not None}})


@dataclass
class Method:
    pattern: SparsityPattern
    family: ClassVar[str | None] = None  # the name its flags' help gives (default: `name`)
    presets: ClassVar[dict[str, dict]] = {}  # named sets of hyperparameter values; "paper" is the defaults
    reads_inputs: ClassVar[bool] = True  # False: prune_block reads no calibration inputs, so the walk runs no forward

    @classmethod
    def hyperparameter_fields(cls) -> list:
        return [f for f in fields(cls) if "help" in f.metadata]

    @classmethod
    def field_types(cls) -> dict[str, type]:
        return typing.get_type_hints(cls)

    def __post_init__(self):
        for f in self.hyperparameter_fields():
            value, rules = getattr(self, f.name), f.metadata
            if "choices" in rules and value not in rules["choices"]:
                raise ValueError(f"{f.name} must be one of {', '.join(rules['choices'])}; got {value!r}")
            if "minimum" in rules and value < rules["minimum"]:
                raise ValueError(f"{f.name} must be >= {rules['minimum']:g}; got {value!r}")
            if "exclusive_minimum" in rules and value <= rules["exclusive_minimum"]:
                raise ValueError(f"{f.name} must be > {rules['exclusive_minimum']:g}; got {value!r}")

    def hyperparameters(self) -> dict:
        """Every setting but the pattern (variant switches and seed included), as a prune report records them."""
        return {k: v for k, v in asdict(self).items() if k != "pattern"}

    def prune_block(self, ctx: BlockContext) -> None:
        raise NotImplementedError


@dataclass
class LayerwiseMethod(Method):
    """Prunes the linears of a block independently from statistics of one dense pass (Wanda's protocol:
    all seven linears see the dense block's inputs)."""

    name: ClassVar[str] = "base"
    stat: ClassVar[type | None] = None  # statistic class, None when the score needs no inputs

    @torch.no_grad()
    def prune_block(self, ctx: BlockContext) -> None:
        stats = ctx.collect(self.stat, list(ctx.linears)) if self.stat else {}
        for name, linear in ctx.linears.items():
            self.prune_linear(linear, stats.get(name), ctx.pattern_for(name, self.pattern))

    def prune_linear(self, linear: nn.Linear, stat, pattern: SparsityPattern) -> None:
        mask = pattern.mask(self.score(linear, stat))
        apply_mask(linear.weight.data, mask)

    def score(self, linear: nn.Linear, stat) -> torch.Tensor:
        raise NotImplementedError

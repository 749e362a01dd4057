"""Pruning methods: small strategies that the one block-walker drives."""

from __future__ import annotations

from dataclasses import fields

from ..errors import WandappError
from ..masks import SparsityPattern
from .magnitude import Magnitude
from .sparsegpt import SparseGPT
from .wanda import Wanda
from .wanda_plus_plus import WandaPlusPlus

# name -> (class, fixed settings that define the variant)
METHODS = {
    "magnitude": (Magnitude, {}),
    "wanda": (Wanda, {}),
    "sparsegpt": (SparseGPT, {}),
    "wanda++": (WandaPlusPlus, {}),
    "wanda++-rgs": (WandaPlusPlus, {"ro": False}),
    "wanda++-ro": (WandaPlusPlus, {"rgs": False}),
}

# Named hyperparameter sets for Wanda++. "paper": the paper's defaults (tuned on LLaMA-7B).
# "tuned": the best single change on WikiText-2 *validation* of a coordinate sweep on SmolLM2-135M at 2:4
# (H100, 128 x 2048 C4; benchmarks/pruning/quality.py, results in benchmarks/results/). RO at the paper's 3e-7 barely
# moves a 135M model's weights; 3e-4 gave validation ppl 66.7 against 281 for the paper's defaults.
# "tuned-long": tuned, with RO on every calibration sample each round (M = 128; fewer if there are fewer):
# validation 55.0 at 2:4, better at 50% and 4:8 too, for about 1.7x tuned's prune time.
PRESETS: dict[str, dict] = {
    "paper": {},
    "tuned": {"ro_lr": 3e-4},
    "tuned-long": {"ro_lr": 3e-4, "ro_samples": 128},
}


def method_names() -> list[str]:
    return list(METHODS)


def hyperparameter_names(method: str) -> list[str]:
    cls, fixed = _lookup(method)
    return [f.name for f in fields(cls) if f.name not in ("pattern", *fixed)]


def build_method(method: str, pattern: SparsityPattern, preset: str = "paper", **hyper):
    """Instantiate a method; unknown names, presets and hyperparameters are one-line errors."""
    cls, fixed = _lookup(method)
    if preset not in PRESETS:
        raise WandappError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    allowed = set(hyperparameter_names(method))
    settings = dict(PRESETS[preset]) if cls is WandaPlusPlus else {}
    for key, value in hyper.items():
        if value is None:
            continue
        if key not in allowed:
            raise WandappError(f"method {method} has no hyperparameter {key!r}")
        settings[key] = value
    settings = {k: v for k, v in settings.items() if k in allowed}
    try:
        return cls(pattern=pattern, **settings, **fixed)
    except ValueError as e:
        raise WandappError(str(e)) from None


def _lookup(method: str):
    try:
        return METHODS[method]
    except KeyError:
        raise WandappError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}") from None

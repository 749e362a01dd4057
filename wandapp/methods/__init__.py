"""Pruning methods: small strategies that the one block-walker drives (see base.py for the interface)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

from ..errors import WandappError
from ..masks import SparsityPattern
from .gblm import Gblm
from .magnitude import Magnitude
from .sparsegpt import SparseGPT
from .wanda import Wanda
from .wanda_plus_plus import PRESETS, WandaPlusPlus  # noqa: F401  (PRESETS: Wanda++'s, kept importable here)

# name -> (class, fixed settings that define the variant). The one list of methods: the CLI's choices, the
# schema's enum and the report's order (and colours) follow it.
METHODS = {
    "magnitude": (Magnitude, {}),
    "wanda": (Wanda, {}),
    "sparsegpt": (SparseGPT, {}),
    "gblm": (Gblm, {}),
    "wanda++-rgs": (WandaPlusPlus, {"ro": False}),
    "wanda++-ro": (WandaPlusPlus, {"rgs": False}),
    "wanda++": (WandaPlusPlus, {}),
}


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter as the CLI and the schema see it: the union over the methods that declare it."""

    name: str
    type: type
    default: object
    help: str
    rules: dict  # choices, minimum, exclusive_minimum
    families: tuple[str, ...]  # the methods that take it, by family name
    defaults: tuple = ()  # (family, default) of each family, when the families' defaults differ

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def description(self) -> str:
        if self.type is bool:
            default = ""
        elif self.defaults:
            default = " (default " + ", ".join(f"{value} for {family}" for family, value in self.defaults) + ")"
        else:
            default = f" (default {self.default})"
        return f"{', '.join(self.families)}: {self.help}{default}"


def method_names() -> list[str]:
    return list(METHODS)


def preset_names() -> list[str]:
    names = ["paper"]
    for cls in _classes():
        names += [p for p in cls.presets if p not in names]
    return names


def presets_of(method: str) -> list[str]:
    """The presets `method` accepts ("paper", its defaults, always first)."""
    cls, _ = _lookup(method)
    return ["paper", *[p for p in cls.presets if p != "paper"]]


def hyperparameter_names(method: str) -> list[str]:
    cls, fixed = _lookup(method)
    return [f.name for f in cls.hyperparameter_fields() if f.name not in fixed]


def hyperparameter_table() -> dict[str, Hyperparameter]:
    """Every method's hyperparameters by field name, in declaration order. Two methods may share a name only with
    the same type (one flag serves both)."""
    table: dict[str, Hyperparameter] = {}
    for cls in _classes():
        family, types = cls.family or cls.name, cls.field_types()
        for f in cls.hyperparameter_fields():
            default = f.default if f.default is not MISSING else None
            if f.name not in table:
                rules = {k: v for k, v in f.metadata.items() if k != "help"}
                table[f.name] = Hyperparameter(f.name, types[f.name], default, f.metadata["help"], rules, (family,))
                continue
            known = table[f.name]
            if known.type is not types[f.name]:
                raise TypeError(f"{cls.__name__}.{f.name} is {types[f.name].__name__}; another method declares it "
                                f"{known.type.__name__}")
            # equal defaults so far collapse to (); rebuild one entry per family taken, not only the first
            defaults = known.defaults or tuple((taken, known.default) for taken in known.families)
            defaults = (*defaults, (family, default))
            table[f.name] = Hyperparameter(**{**known.__dict__, "families": (*known.families, family),
                                              "defaults": defaults if len({v for _, v in defaults}) > 1 else ()})
    return table


def build_method(method: str, pattern: SparsityPattern, preset: str = "paper", seed: int | None = None, **hyper):
    """Instantiate a method; unknown names, presets and hyperparameters are one-line errors. Hyperparameters
    given as None are left at the preset's (or default) value; `seed` goes to methods that draw samples."""
    cls, fixed = _lookup(method)
    if preset not in presets_of(method):
        raise WandappError(f"method {method} has no preset {preset!r}; choose one of {', '.join(presets_of(method))}")
    allowed = set(hyperparameter_names(method))
    settings = dict(cls.presets.get(preset, {}))
    for key, value in hyper.items():
        if value is None:
            continue
        if key not in allowed:
            raise WandappError(f"method {method} has no hyperparameter {key!r}")
        settings[key] = value
    if seed is not None and "seed" in {f.name for f in fields(cls)}:
        settings["seed"] = seed
    try:
        return cls(pattern=pattern, **settings, **fixed)
    except ValueError as e:
        raise WandappError(str(e)) from None


def _classes() -> list[type]:
    return list(dict.fromkeys(cls for cls, _ in METHODS.values()))


def _lookup(method: str):
    try:
        return METHODS[method]
    except KeyError:
        raise WandappError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}") from None

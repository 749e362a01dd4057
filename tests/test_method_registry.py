"""wandapp.methods (the registry): the method, preset and hyperparameter lists, how hyperparameters shared by
several methods merge into one flag, and build_method's settings and exact one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from wandapp import methods
from wandapp.errors import WandappError
from wandapp.masks import SparsityPattern
from wandapp.methods import (
    Hyperparameter,
    build_method,
    hyperparameter_names,
    hyperparameter_table,
    method_names,
    preset_names,
    presets_of,
)
from wandapp.methods.base import LayerwiseMethod, hyperparameter
from wandapp.methods.gblm import Gblm
from wandapp.methods.wanda_plus_plus import WandaPlusPlus

P = SparsityPattern.parse("0.5")
WPP = ["alpha", "ro_rounds", "ro_samples", "ro_lr", "ro_batch", "ro_epochs", "x_norm", "g_norm", "loop_norms",
       "precision", "track_error"]


def test_method_and_preset_lists():
    assert method_names() == ["magnitude", "wanda", "sparsegpt", "gblm", "wanda++-rgs", "wanda++-ro", "wanda++"]
    assert preset_names() == ["paper", "tuned", "tuned-long"]
    assert {m: presets_of(m) for m in method_names()} == {
        "magnitude": ["paper"], "wanda": ["paper"], "sparsegpt": ["paper"], "gblm": ["paper"],
        "wanda++-rgs": ["paper", "tuned", "tuned-long"], "wanda++-ro": ["paper", "tuned", "tuned-long"],
        "wanda++": ["paper", "tuned", "tuned-long"]}
    assert methods._classes() == [methods.Magnitude, methods.Wanda, methods.SparseGPT, Gblm, WandaPlusPlus]


def test_preset_names_gather_every_methods_presets_in_order(monkeypatch):
    """'paper' first, then each method's own presets, once, whichever method comes last."""
    monkeypatch.setattr(methods, "METHODS", {"wanda++": (WandaPlusPlus, {}), "gblm": (Gblm, {})})
    assert preset_names() == ["paper", "tuned", "tuned-long"]
    monkeypatch.setattr(methods, "METHODS", {"gblm": (Gblm, {})})
    assert preset_names() == ["paper"]


def test_hyperparameter_names_per_method():
    assert {m: hyperparameter_names(m) for m in method_names()} == {
        "magnitude": [], "wanda": [], "sparsegpt": ["blocksize", "percdamp"],
        "gblm": ["gradient_norm", "gradient_scale", "x_norm", "gradient_chunk"],
        "wanda++-rgs": WPP, "wanda++-ro": WPP, "wanda++": WPP}


def test_a_variants_fixed_settings_are_not_its_hyperparameters(monkeypatch):
    monkeypatch.setitem(methods.METHODS, "gblm-l1", (Gblm, {"gradient_norm": "l1"}))
    assert hyperparameter_names("gblm-l1") == ["gradient_scale", "x_norm", "gradient_chunk"]
    assert build_method("gblm-l1", P).gradient_norm == "l1"
    with pytest.raises(WandappError) as e:
        build_method("gblm-l1", P, gradient_norm="l2")
    assert str(e.value) == "method gblm-l1 has no hyperparameter 'gradient_norm'"


def test_the_real_table():
    table = hyperparameter_table()
    assert list(table) == ["blocksize", "percdamp", "gradient_norm", "gradient_scale", "x_norm", "gradient_chunk",
                           *[n for n in WPP if n != "x_norm"]]
    assert table["gradient_norm"] == Hyperparameter(
        "gradient_norm", str, "l2", "aggregate the per-sample LM-loss gradients as l2, sqrt(sum (scale*g)^2) (GBLM's "
        "default), or l1, sum |scale*g|", {"choices": ("l2", "l1")}, ("gblm",), ())
    assert table["percdamp"].rules == {"exclusive_minimum": 0} and table["blocksize"].rules == {"minimum": 1}
    assert table["track_error"].type is bool and table["track_error"].rules == {}
    x = table["x_norm"]
    assert (x.type, x.default, x.families) == (str, "per-sample", ("gblm", "wanda++"))
    assert x.defaults == (("gblm", "per-sample"), ("wanda++", "l2"))
    assert x.help.startswith("||X_j|| convention: l2 (all tokens")  # the first declaration's help


def test_flags_and_descriptions():
    table = hyperparameter_table()
    assert [table[n].flag for n in ("ro_lr", "gradient_chunk", "alpha")] == ["--ro-lr", "--gradient-chunk", "--alpha"]
    assert table["gradient_scale"].description == (
        "gblm: the gradient scale folded into G (GBLM's --scale): weighs G against ||X|| (default 100.0)")
    assert table["track_error"].description == (  # a switch: no default
        "wanda++: log the dense-vs-sparse block error before and after each RO round (costs forwards)")
    assert table["x_norm"].description == (
        "gblm, wanda++: ||X_j|| convention: l2 (all tokens, the formulas as written), per-sample (/sqrt N, Wanda's and "
        "GBLM's code), rms (/sqrt(N*T)) (default per-sample for gblm, l2 for wanda++)")


@dataclass
class ToyA(LayerwiseMethod):
    name = "toya"
    steps: int = field(metadata={"help": "toy steps"})  # a hyperparameter without a default
    k: int = hyperparameter(1, "k of a", minimum=0)
    on: bool = hyperparameter(False, "a switch")


@dataclass
class ToyB(LayerwiseMethod):
    name = "toyb"
    family = "toys"
    k: int = hyperparameter(1, "k of b", choices=(1, 2))


@dataclass
class ToyC(LayerwiseMethod):
    name = "toyc"
    k: int = hyperparameter(2, "k of c", exclusive_minimum=0)


@dataclass
class ToyD(LayerwiseMethod):
    name = "toyd"
    k: float = hyperparameter(1.0, "k as a float")


def table_of(monkeypatch, *classes):
    monkeypatch.setattr(methods, "METHODS", {cls.name: (cls, {}) for cls in classes})
    return hyperparameter_table()


def test_shared_names_with_equal_defaults_have_one_default(monkeypatch):
    table = table_of(monkeypatch, ToyA, ToyB)
    assert list(table) == ["steps", "k", "on"]
    assert table["steps"] == Hyperparameter("steps", int, None, "toy steps", {}, ("toya",), ())
    assert table["steps"].description == "toya: toy steps (default None)"
    assert table["on"].description == "toya: a switch"
    assert table["k"] == Hyperparameter("k", int, 1, "k of a", {"minimum": 0}, ("toya", "toys"), ())
    assert table["k"].description == "toya, toys: k of a (default 1)"  # the family, not the name, of ToyB


def test_shared_names_with_different_defaults_name_each(monkeypatch):
    k = table_of(monkeypatch, ToyA, ToyC, ToyB)["k"]
    assert k.families == ("toya", "toyc", "toys") and k.default == 1 and k.rules == {"minimum": 0}
    assert k.defaults == (("toya", 1), ("toyc", 2), ("toys", 1))
    assert k.description == "toya, toyc, toys: k of a (default 1 for toya, 2 for toyc, 1 for toys)"
    k = table_of(monkeypatch, ToyA, ToyB, ToyC)["k"]  # two equal defaults first, then a different one
    assert k.defaults == (("toya", 1), ("toys", 1), ("toyc", 2))
    assert k.description == "toya, toys, toyc: k of a (default 1 for toya, 1 for toys, 2 for toyc)"
    k = table_of(monkeypatch, ToyC, ToyB)["k"]
    assert k.defaults == (("toyc", 2), ("toys", 1))
    assert k.description == "toyc, toys: k of c (default 2 for toyc, 1 for toys)"


def test_a_shared_name_must_keep_its_type(monkeypatch):
    with pytest.raises(TypeError) as e:
        table_of(monkeypatch, ToyA, ToyD)
    assert str(e.value) == "ToyD.k is float; another method declares it int"


def test_build_method_errors_are_exact_one_liners():
    cases = [
        (lambda: build_method("nope", P),
         "unknown method 'nope'; choose one of magnitude, wanda, sparsegpt, gblm, wanda++-rgs, wanda++-ro, wanda++"),
        (lambda: build_method("gblm", P, preset="tuned"), "method gblm has no preset 'tuned'; choose one of paper"),
        (lambda: build_method("wanda++", P, preset="fast"),
         "method wanda++ has no preset 'fast'; choose one of paper, tuned, tuned-long"),
        (lambda: build_method("wanda", P, alpha=1.0), "method wanda has no hyperparameter 'alpha'"),
        (lambda: build_method("wanda++-rgs", P, ro=True), "method wanda++-rgs has no hyperparameter 'ro'"),
        (lambda: build_method("gblm", P, gradient_chunk=0), "gradient_chunk must be >= 1; got 0"),
        (lambda: build_method("gblm", P, gradient_scale=0.0), "gradient_scale must be > 0; got 0.0"),
        (lambda: presets_of("nope"), "unknown method 'nope'; choose one of magnitude, wanda, sparsegpt, gblm, "
                                     "wanda++-rgs, wanda++-ro, wanda++"),
        (lambda: hyperparameter_names("Wanda"), "unknown method 'Wanda'; choose one of magnitude, wanda, sparsegpt, "
                                                "gblm, wanda++-rgs, wanda++-ro, wanda++"),
    ]
    for call, message in cases:
        with pytest.raises(WandappError) as e:
            call()
        assert str(e.value) == message
        # one line: no chained traceback (a KeyError or ValueError underneath is suppressed)
        assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)


def test_build_method_settings():
    m = build_method("gblm", P, gradient_norm=None, x_norm="l2", gradient_scale=3.0)
    assert type(m) is Gblm and m.pattern is P
    assert (m.gradient_norm, m.x_norm, m.gradient_scale, m.gradient_chunk) == ("l2", "l2", 3.0, 16)
    assert build_method("wanda", P, alpha=None).hyperparameters() == {}  # None: not given, so not refused either
    long = build_method("wanda++", P, preset="tuned-long", ro_samples=64, ro_rounds=None)
    assert (long.ro_lr, long.ro_samples, long.ro_rounds) == (3e-4, 64, 5)  # the preset, then the explicit keys
    assert build_method("wanda++", P, preset="tuned").ro_samples == 32
    assert build_method("wanda++", P, preset="paper").ro_lr == 3e-7
    assert WandaPlusPlus.presets["tuned-long"] == {"ro_lr": 3e-4, "ro_samples": 128}  # the preset is not edited
    rgs, ro, both = (build_method(m, P) for m in ("wanda++-rgs", "wanda++-ro", "wanda++"))
    assert (rgs.rgs, rgs.ro, ro.rgs, ro.ro, both.rgs, both.ro) == (True, False, False, True, True, True)


def test_the_seed_goes_only_to_methods_that_draw_samples():
    default = WandaPlusPlus(pattern=P).seed
    assert build_method("wanda++", P, seed=default + 7).seed == default + 7
    assert build_method("wanda++", P, seed=None).seed == default
    assert build_method("gblm", P, seed=7).hyperparameters() == build_method("gblm", P).hyperparameters()

"""Workflow config checks that run at parse time (dry runs included) and fail with ONE line naming the key.

The JSON schema (workflow/schemas/config.schema.yaml) says what each key may hold; Snakemake's own `validate`
prints the whole schema and instance on a typo (hundreds of lines), so this module reports the most relevant
schema error as one line, then checks what a schema cannot: method labels, N:M values, model sources, data_dir.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import WandappError
from .model_source import EMBEDDED, resolve_model
from .pattern import SparsityPattern


class ConfigError(WandappError):
    """A workflow config value that would fail late (or never): named by its key path."""


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_error(config: dict, schema: dict) -> str | None:
    """The most relevant schema violation as one line ('KEY: what is wrong; expected ...'), or None."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return None
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        key = ".".join(filter(None, [where if error.absolute_path else "", unknown[0] if unknown else ""]))
        expected = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key ({error.message.split('(', 1)[-1].rstrip(')')}){expected}"
    message = " ".join(error.message.split())
    if len(message) > 300:
        message = message[:300] + "..."
    return f"{where}: {message}"


def sparsity_label(text) -> str:
    """One label per sparsity (SparsityPattern.label): '0.5', '.5' and '0.50' -> '0.5'; 'N:M' as given.
    Raises WandappError for N >= M, a ratio outside [0, 1), and 0 (which prunes nothing)."""
    pattern = SparsityPattern.parse(text)
    if not pattern.is_nm and pattern.ratio == 0:
        raise WandappError("sparsity 0 prunes nothing (the dense baseline is `dense: true`)")
    return pattern.label


def _check_sparsities(config: dict, key: str, values: list) -> list[str]:
    labels = []
    for i, value in enumerate(values):
        try:
            label = sparsity_label(value)
        except WandappError as e:
            raise ConfigError(f"{key}[{i}]: {e}") from None
        if label not in labels:
            labels.append(label)
    return labels


STAGE_SUBSETS = {"eval.ppl": ("eval", "ppl"), "eval.tasks": ("eval", "tasks"), "lora": ("lora",)}


def _check_stage_subsets(config: dict) -> None:
    """A stage's models/methods/sparsities subset names entries of the top-level lists (its sparsities normalised)."""
    for key, path in STAGE_SUBSETS.items():
        node = config
        for part in path:
            node = (node or {}).get(part)
        for name in ("models", "methods", "sparsities"):
            values = (node or {}).get(name)
            if values is None:
                continue
            if name == "sparsities":
                values = node[name] = _check_sparsities(config, f"{key}.sparsities", values)
            known = [str(k) for k in config[name]]
            unknown = [str(v) for v in values if str(v) not in known]
            if unknown:
                raise ConfigError(f"{key}.{name}: {', '.join(unknown)} not in the top-level {name} "
                                  f"({', '.join(known)})")


def check_config(config: dict, schema: dict, methods: list[str], cwd: str | os.PathLike = ".") -> None:
    """Raise ConfigError (one line) for the first bad value; normalise sparsity labels in place."""

    if (line := schema_error(config, schema)) is not None:
        raise ConfigError(line)
    for label, spec in config["methods"].items():
        if label not in methods and not (spec or {}).get("method"):
            raise ConfigError(f"methods.{label}: not a known method ({', '.join(methods)}); name one with a "
                              f"`method:` key to use {label!r} as a label")
    config["sparsities"] = _check_sparsities(config, "sparsities", config["sparsities"])
    _check_stage_subsets(config)
    bench = config.get("bench") or {}
    if bench.get("patterns"):
        bench["patterns"] = _check_sparsities(config, "bench.patterns", bench["patterns"])
    for name, spec in config["models"].items():
        if str(spec["source"]).lower() in EMBEDDED:  # its package need only be in the rules' environment
            continue
        try:
            resolve_model(spec["source"], allow_pickle=bool(spec.get("allow_pickle")))
        except WandappError as e:
            raise ConfigError(f"models.{name}.source: {e}") from None
    data_dir = config.get("data_dir")
    if data_dir and not (Path(cwd) / Path(data_dir).expanduser()).is_dir():
        raise ConfigError(f"data_dir: {data_dir} is not a folder (relative paths start at {Path(cwd).resolve()}); "
                          "null reads from the Hugging Face hub")
    calib = (config.get("calibration") or {}).get("dataset")
    if calib and calib not in ("c4", "wikitext2") and not (Path(cwd) / Path(calib).expanduser()).is_file():
        raise ConfigError(f"calibration.dataset: {calib!r} is not c4, wikitext2 or an existing file")

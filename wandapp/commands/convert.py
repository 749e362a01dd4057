"""`wandapp convert`: load any model source and write a save_pretrained folder (e.g. GGUF -> safetensors)."""

from __future__ import annotations

from .common import add_rewrite_options, rewrite_model


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="load a model (hub id, folder, GGUF, 'smollm2') and save it as a safetensors folder",
        description="Load a model from any supported source and write a save_pretrained folder, once, so later "
        "stages load it fast (GGUF files are dequantized on every load).",
    )
    add_rewrite_options(p, "hub id, save_pretrained folder, .gguf file, or 'smollm2'", "float32",
                        "weight dtype of the saved folder (default float32)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..models import save_model

    rewrite_model(args, save_model)

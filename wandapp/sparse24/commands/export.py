"""`wandapp export`: write a 2:4 pruned model as a compressed-tensors sparse-24-bitmask checkpoint."""

from __future__ import annotations

from ...commands.common import add_rewrite_options, rewrite_model


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a 2:4 pruned model to the compressed-tensors sparse-24-bitmask format (for pinned vLLM)",
        description="Write a checkpoint that vLLM versions with 2:4 support load (see envs/vllm.yaml). Every "
        "prunable linear must be exactly 2:4; nothing is re-pruned.",
    )
    add_rewrite_options(p, "2:4 pruned model (folder, hub id, .gguf)", "float16",
                        "weight dtype written (default float16)")
    p.add_argument("--format", default="sparse-24-bitmask", choices=["sparse-24-bitmask"])
    p.set_defaults(func=run)


def run(args) -> None:
    from ..export import export_sparse24

    rewrite_model(args, export_sparse24)

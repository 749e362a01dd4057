"""Export a 2:4 pruned model to the compressed-tensors "sparse-24-bitmask" checkpoint format, in plain torch.

Per 2:4 linear the checkpoint holds `<name>.compressed` (the 2 kept values of each group of 4, rows x cols/2,
original dtype), `<name>.bitmask` (kept positions, packed little-endian bits, rows x ceil(cols/8) uint8) and
`<name>.shape` (int64, 2x1), as compressed-tensors' Sparse24BitMaskCompressor writes them. Unlike that
compressor, a weight that is not exactly 2:4 is an error here, never silently re-pruned. Zeros are +0.0:
vLLM's 2:4 path gave garbage on -0.0 (vLLM PR #13198).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..adapter import DecoderAdapter
from ..errors import WandappError
from ..masks import follows_nm

FORMAT = "sparse-24-bitmask"
COMPRESSED_TENSORS_VERSION = "0.13.0"  # the format version the pinned vLLM environment loads (envs/vllm.yaml)


def keep_mask_2of4(weight: torch.Tensor) -> torch.Tensor:
    """Exactly 2 kept positions per group of 4: the nonzeros, padded with the first zeros. Error if not 2:4."""
    rows, cols = weight.shape
    if cols % 4:
        raise WandappError(f"{cols} input features is not a multiple of 4")
    if not follows_nm(weight, 2, 4):
        raise WandappError("weight is not 2:4 sparse")
    nonzero = weight.reshape(rows, cols // 4, 4) != 0
    # Rank positions: nonzeros first, then by index; keep the first two.
    order = (~nonzero).to(torch.int8) * 4 + torch.arange(4, dtype=torch.int8)
    keep_idx = order.argsort(-1)[..., :2].sort(-1).values
    mask = torch.zeros_like(nonzero).scatter_(-1, keep_idx, True)
    return mask.reshape(rows, cols)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """numpy.packbits(mask, axis=-1, bitorder='little') in torch: rows x ceil(cols/8) uint8."""
    rows, cols = mask.shape
    padded = torch.zeros(rows, -(-cols // 8) * 8, dtype=torch.uint8)
    padded[:, :cols] = mask.to(torch.uint8)
    weights = (1 << torch.arange(8, dtype=torch.int32)).to(torch.uint8)
    return (padded.reshape(rows, -1, 8) * weights).sum(-1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, cols: int) -> torch.Tensor:
    bits = (packed.to(torch.int32).unsqueeze(-1) >> torch.arange(8, dtype=torch.int32)) & 1
    return bits.reshape(packed.shape[0], -1)[:, :cols].bool()


def compress_2of4(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    weight = weight.detach().cpu()
    mask = keep_mask_2of4(weight)
    values = weight[mask].reshape(weight.shape[0], weight.shape[1] // 2)
    values = values.masked_fill(values == 0, 0.0)  # -0.0 -> +0.0
    return {"compressed": values.contiguous(), "bitmask": pack_bits(mask),
            "shape": torch.tensor(weight.shape, dtype=torch.int64).reshape(-1, 1)}


def decompress_2of4(compressed: torch.Tensor, bitmask: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    rows, cols = (int(v) for v in shape.flatten())
    dense = torch.zeros(rows, cols, dtype=compressed.dtype)
    dense[unpack_bits(bitmask, cols)] = compressed.flatten()
    return dense


def sparsity_config(model, targets: list[str]) -> dict:
    params = [p for p in model.parameters()]
    zeros = sum(int((p == 0).sum()) for p in params)
    return {"format": FORMAT, "sparsity_structure": "2:4", "global_sparsity": zeros / sum(p.numel() for p in params),
            "targets": ["Linear"], "ignore": _ignored_linears(model, targets), "registry_requires_subclass": False}


def _ignored_linears(model, targets: list[str]) -> list[str]:
    target_set = set(targets)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in target_set]


def export_sparse24(model, tokenizer, folder) -> dict:
    """Write the checkpoint into `folder` (which must exist); returns the quantization_config written."""
    from safetensors.torch import save_file

    adapter = DecoderAdapter.from_model(model)
    prefix = _module_prefix(model, adapter)
    bad = [n for n, lin in adapter.all_linears().items() if not follows_nm(lin.weight.detach(), 2, 4)]
    if bad:
        raise WandappError(f"{len(bad)} linear(s) are not 2:4 sparse (first: {bad[0]}); prune with 2:4 first")
    targets = [prefix + n for n in adapter.all_linears()]
    tensors: dict[str, torch.Tensor] = {}
    target_weights = {t + ".weight" for t in targets}
    for name, tensor in model.state_dict().items():
        if name in target_weights:
            for suffix, value in compress_2of4(tensor).items():
                tensors[f"{name.removesuffix('.weight')}.{suffix}"] = value
        else:
            tensors[name] = tensor.detach().cpu().contiguous()
    if getattr(model.config, "tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)  # tied: stored once, as the embedding
    folder = Path(folder)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    qconfig = {"quant_method": "compressed-tensors", "version": COMPRESSED_TENSORS_VERSION,
               "format": "dense", "quantization_status": "compressed", "config_groups": {},
               "sparsity_config": sparsity_config(model, targets)}
    config = model.config.to_dict()
    config["quantization_config"] = qconfig
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return qconfig


def decompress_checkpoint(folder) -> dict[str, torch.Tensor]:
    """The dense state dict of an exported folder (CPU): the round trip the tests check."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / "model.safetensors"))
    out = {}
    for name in [n for n in tensors if n.endswith(".compressed")]:
        base = name.removesuffix(".compressed")
        out[base + ".weight"] = decompress_2of4(tensors[name], tensors[base + ".bitmask"], tensors[base + ".shape"])
    for name, value in tensors.items():
        if not name.endswith((".compressed", ".bitmask", ".shape")):
            out[name] = value
    return out


def _module_prefix(model, adapter) -> str:
    for name, module in model.named_modules():
        if module is adapter.base:
            return name + "." if name else ""
    return ""

"""wandapp.safetensors_read: the same tensors as safetensors' own reader, without mapping the file."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wandapp.errors import WandappError
from wandapp.safetensors_read import SafetensorsFile
from wandapp.stream import Checkpoint


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "w16": torch.randn(5, 7, generator=g).half(),
        "wbf": torch.randn(3, 4, generator=g).bfloat16(),
        "w32": torch.randn(9, generator=g),
        "i64": torch.arange(6).reshape(2, 3),
        "mask": torch.rand(4, 4, generator=g) > 0.5,
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 8),
    }


def test_reads_every_tensor_as_safetensors_does(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), path, metadata={"format": "pt"})
    ref = load_file(path)
    f = SafetensorsFile(path)
    assert sorted(f.keys()) == sorted(ref)
    for key, value in ref.items():
        got = f.read(key)
        assert got.dtype == value.dtype and got.shape == value.shape and torch.equal(got, value), key


def test_checkpoint_reads_leave_no_mapping_of_the_file(tmp_path):
    save_file({f"t{i}": torch.randn(256, 256) for i in range(4)}, tmp_path / "model.safetensors")
    ckpt = Checkpoint(tmp_path)
    total = sum(ckpt.get(k).sum().item() for k in ckpt.keys())
    assert total == pytest.approx(sum(v.sum().item() for v in load_file(tmp_path / "model.safetensors").values()))
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(tmp_path / "model.safetensors") not in maps.read_text()


@pytest.mark.parametrize("damage", ["short", "length", "json", "offsets"])
def test_a_damaged_file_is_one_clear_error(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4, 4)}, path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    if damage == "short":
        raw = raw[:5]
    elif damage == "length":
        raw = (10**9).to_bytes(8, "little") + raw[8:]
    elif damage == "json":
        raw = raw[:8] + b"{" * n + raw[8 + n:]
    else:  # data past the end of the file
        raw = raw[: 8 + n] + raw[8 + n: 8 + n + 16]
    path.write_bytes(raw)
    with pytest.raises(WandappError, match="safetensors|outside the file"):
        SafetensorsFile(path)


def test_a_missing_shard_is_one_clear_error(tmp_path):
    with pytest.raises(WandappError, match="cannot open"):
        SafetensorsFile(tmp_path / "model-00002-of-00002.safetensors")

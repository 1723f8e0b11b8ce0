"""A checkpoint in memory (tensors by saved name, config.json, tokenizer.json, the JSON files beside them)
and its reading and writing. Every tensor is held as float32: this is for test and experiment models, not
for reading a 70B model (the fingerprinting itself never does that, see huref.sources)."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from huref.errors import HurefError

# JSON files beside the weights that are carried over (their token ids follow a vocabulary reordering)
EXTRA_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


@dataclass
class Checkpoint:
    """A checkpoint in memory: `tensors` by saved name, `config` (config.json), `tokenizer` (tokenizer.json,
    or None) and `extras` (the EXTRA_FILES present, by file name)."""
    tensors: dict
    config: dict
    tokenizer: dict | None = None
    extras: dict = field(default_factory=dict)


def read_checkpoint(directory) -> Checkpoint:
    """Read config.json, every *.safetensors file and tokenizer.json (if present) from `directory`."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    if not tensors:
        raise HurefError(f"no *.safetensors in {directory}")
    tokenizer_path = directory / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text()) if tokenizer_path.exists() else None
    extras = {name: json.loads((directory / name).read_text()) for name in EXTRA_FILES if (directory / name).exists()}
    return Checkpoint({k: v.float() for k, v in tensors.items()}, config, tokenizer, extras)


def write_checkpoint(checkpoint: Checkpoint, directory, dtype: torch.dtype = torch.float32) -> Path:
    """Write `checkpoint` into `directory` as config.json + model.safetensors (tensors stored as `dtype`;
    anything but float32 rounds the weights) + tokenizer.json and the EXTRA_FILES it holds."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(checkpoint.config, indent=2))
    save_file({k: v.to(dtype).contiguous() for k, v in checkpoint.tensors.items()},
              str(directory / "model.safetensors"), metadata={"format": "pt"})
    extras = dict(checkpoint.extras)
    if checkpoint.tokenizer is not None:
        (directory / "tokenizer.json").write_text(json.dumps(checkpoint.tokenizer))
        extras.setdefault("tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast"})
    for name, content in extras.items():
        (directory / name).write_text(json.dumps(content, indent=2))
    return directory

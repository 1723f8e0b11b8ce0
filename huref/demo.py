"""Tiny models built on the spot, so `huref` shows real output on a fresh machine with no network.

`demo:base` is a small random llama; `demo:offspring` is the base after a simulated fine-tune
(every weight moved by 5% relative Gaussian noise) and a function-preserving permutation of the
residual stream's dimensions, so none of its weights sits where the base's did; `demo:independent`
is another llama initialized from another seed. They are written once to
`$HUREF_CACHE` (default ~/.cache/huref)/demo and reused.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from huref.errors import HurefError
from huref.files import cache_dir

DEMO_MODELS = ("base", "offspring", "independent")
VERSION = "v1"


def _config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=1024, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False)


def _random_llama(seed: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(_config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
    return model


def _offspring(base):
    """Fine-tune-like noise, then a permutation of the hidden dimensions (exact for RMSNorm)."""
    generator = torch.Generator().manual_seed(1)
    state = {}
    for name, p in base.state_dict().items():
        noise = torch.randn(p.shape, generator=generator) * p.std().clamp_min(1e-3)
        state[name] = p + 0.05 * noise
    perm = torch.randperm(base.config.hidden_size, generator=generator)
    writes_residual = ("o_proj.weight", "down_proj.weight")  # [hidden, inner]: permute rows
    for name, p in state.items():
        if name.endswith(writes_residual) or "norm" in name:
            state[name] = p[perm]
        else:  # embeddings, head and every reader of the residual stream: [*, hidden]
            state[name] = p[:, perm]
    base.load_state_dict(state)
    return base


def demo_model_dir(name: str) -> Path:
    """Directory of demo model `name` (built on first use)."""
    if name not in DEMO_MODELS:
        raise HurefError(f"unknown demo model '{name}'; choose one of: {', '.join(DEMO_MODELS)}")
    directory = cache_dir() / "demo" / f"{name}-{VERSION}"
    if (directory / "model.safetensors").is_file():
        return directory
    model = _random_llama(seed=0 if name != "independent" else 1)
    if name == "offspring":
        model = _offspring(model)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))  # renamed once complete
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        try:
            tmp.replace(directory)
        except OSError:  # another process finished first: use its copy
            if not (directory / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory

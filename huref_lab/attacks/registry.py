"""The flat registry of attacks (each beside its validity rule in its family's module), their composition,
and the entry point for a saved model."""

from pathlib import Path

import torch

from huref.errors import HurefError
from huref_lab.attacks.attention import (head_permutation, qk_norm_gain_exchange, qk_norm_rescale, qk_scale,
                                         qk_transform, vo_transform)
from huref_lab.attacks.checkpoint import read_checkpoint, write_checkpoint
from huref_lab.attacks.ffn import expert_permutation, ffn_permutation, ffn_scale, router_shift
from huref_lab.attacks.latent import latent_rotation, mla_head_permutation, mla_qk_transform, mla_vo_transform
from huref_lab.attacks.layout import Layout, layout_of
from huref_lab.attacks.residual import residual_permutation, rotation, zhu_rotation
from huref_lab.attacks.scaling import (embedding_row_scale, embedding_scale, layernorm_null_direction, mean_shift,
                                       position_embedding_shift, post_norm_rescale)
from huref_lab.attacks.vocabulary import append_vocabulary, reorder_vocabulary

# name -> attack, in the order composites apply them (`valid_attacks`; a seed draws the same maps in this order)
ATTACKS = {f.__name__: f for f in (
    rotation, zhu_rotation, residual_permutation, qk_transform, qk_scale, qk_norm_rescale, qk_norm_gain_exchange,
    vo_transform, head_permutation, latent_rotation, mla_head_permutation, mla_qk_transform, mla_vo_transform,
    ffn_permutation, ffn_scale, expert_permutation, embedding_scale,
    post_norm_rescale, embedding_row_scale, position_embedding_shift, mean_shift, layernorm_null_direction, router_shift,
    append_vocabulary, reorder_vocabulary)}


def compose(*attacks):
    """One attack applying `attacks` in order."""
    def composed(checkpoint, generator):
        for attack in attacks:
            checkpoint = attack(checkpoint, generator)
        return checkpoint
    composed.__name__ = "+".join(a.__name__ for a in attacks)
    return composed


def is_valid(name: str, layout: Layout) -> bool:
    """Whether attack `name` preserves the function of models with `layout` (its rule, beside it)."""
    return ATTACKS[name].valid(layout)


def valid_attacks(layout: Layout) -> list[str]:
    """Names of the attacks in ATTACKS that preserve the function of models with `layout`."""
    return [name for name in ATTACKS if is_valid(name, layout)]


def residual_attack(layout: Layout):
    """The strongest residual-stream rewrite valid for `layout` (rotation, else a permutation)."""
    return rotation if is_valid("rotation", layout) else residual_permutation


def attack_directory(source, target, name: str, seed: int = 0) -> Path:
    """Apply attack `name` (a key of ATTACKS, or several joined by "+") to the checkpoint in `source`, write to `target`."""
    checkpoint = read_checkpoint(source)
    layout = layout_of(checkpoint.config)
    parts = name.split("+")
    for part in parts:
        if part not in ATTACKS:
            raise HurefError(f"unknown attack {part!r}; known: {', '.join(ATTACKS)}")
        if not is_valid(part, layout):
            raise HurefError(f"attack {part!r} does not preserve the function of a {layout.model_type} model")
    generator = torch.Generator().manual_seed(seed)
    return write_checkpoint(compose(*(ATTACKS[p] for p in parts))(checkpoint, generator), target)

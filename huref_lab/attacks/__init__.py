"""Function-preserving rewrites of a Hugging Face checkpoint: the attacks a fingerprint must survive.

Each attack takes a `Checkpoint` (the tensors under their saved names, config.json, tokenizer.json) and a
torch.Generator, and returns a new Checkpoint whose weights differ but whose logits are the same (for
the vocabulary attacks: the same after mapping token ids through the tokenizer). Every attack sits in
its family's module beside its rule (`rule`): where it preserves the function, read from the model's
`Layout` (norm kinds, post norms, QK norms, ALiBi, FFN kind, experts), and which layout facts
(`layout_facts`) decide its code path. `ATTACKS` is the flat registry; `valid_attacks(layout)` the
attacks whose rule holds.

| module | what |
|---|---|
| `checkpoint` | `Checkpoint`, read and written as config.json + safetensors + tokenizer files |
| `layout` | `Layout` (the architecture's ArchSpec row, sizes, config values), `layout_facts` |
| `canonical` | `Canon`: fused tensors split into [out, in] matrices, by role; who reads and writes the residual |
| `draws` | random orthogonal / invertible maps, scales, permutations |
| `rule` | the decorator that puts an attack's validity rule and the facts it reads beside it |
| `residual` | changes of basis of the residual stream: rotation, zhu_rotation, residual_permutation |
| `attention` | qk_transform, qk_scale, qk_norm_rescale, qk_norm_gain_exchange, vo_transform, head_permutation |
| `latent` | latent attention (MLA): latent_rotation, mla_head_permutation, mla_qk_transform, mla_vo_transform |
| `ffn` | ffn_permutation, ffn_scale, expert_permutation, router_shift |
| `scaling` | embedding_scale, post_norm_rescale, layernorm_null_direction, embedding_row_scale, position_embedding_shift, mean_shift |
| `vocabulary` | append_vocabulary, reorder_vocabulary; rename_token_strings (not in ATTACKS: tokenizer-dependent) |
| `registry` | `ATTACKS`, `is_valid`, `valid_attacks`, `residual_attack`, `compose`, `attack_directory` |

`attack_directory(source, target, "rotation+reorder_vocabulary")` is the entry point for a saved model.
"""

from huref_lab.attacks.attention import (head_permutation, qk_norm_gain_exchange, qk_norm_rescale, qk_scale,
                                         qk_transform, rope_commuting_matrix, vo_transform)
from huref_lab.attacks.canonical import NORM_ROLES, Canon
from huref_lab.attacks.checkpoint import EXTRA_FILES, Checkpoint, read_checkpoint, write_checkpoint
from huref_lab.attacks.draws import orthogonal_fixing_ones, random_invertible, random_orthogonal, random_scales
from huref_lab.attacks.ffn import expert_permutation, ffn_permutation, ffn_scale, router_shift
from huref_lab.attacks.latent import latent_rotation, mla_head_permutation, mla_qk_transform, mla_vo_transform
from huref_lab.attacks.layout import Layout, layout_facts, layout_of
from huref_lab.attacks.registry import ATTACKS, attack_directory, compose, is_valid, residual_attack, valid_attacks
from huref_lab.attacks.residual import change_residual_basis, residual_permutation, rotation, zhu_rotation
from huref_lab.attacks.rule import rule
from huref_lab.attacks.scaling import (embedding_row_scale, embedding_scale, layernorm_null_direction, mean_shift,
                                       position_embedding_shift, post_norm_rescale)
from huref_lab.attacks.vocabulary import append_vocabulary, rename_token_strings, reorder_vocabulary, vocabulary

__all__ = [
    "ATTACKS", "EXTRA_FILES", "NORM_ROLES", "Canon", "Checkpoint", "Layout", "append_vocabulary", "attack_directory",
    "change_residual_basis", "compose", "embedding_row_scale", "embedding_scale", "expert_permutation",
    "ffn_permutation", "ffn_scale", "head_permutation", "is_valid", "latent_rotation", "layernorm_null_direction",
    "layout_facts", "layout_of", "mean_shift", "mla_head_permutation", "mla_qk_transform", "mla_vo_transform",
    "orthogonal_fixing_ones", "position_embedding_shift", "post_norm_rescale", "qk_norm_gain_exchange",
    "qk_norm_rescale", "qk_scale", "qk_transform", "random_invertible", "random_orthogonal", "random_scales",
    "read_checkpoint", "rename_token_strings", "reorder_vocabulary", "residual_attack", "residual_permutation",
    "rope_commuting_matrix", "rotation", "router_shift", "rule", "valid_attacks", "vo_transform", "vocabulary",
    "write_checkpoint", "zhu_rotation",
]

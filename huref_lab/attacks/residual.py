"""Residual-stream rewrites: a change of basis x -> T x of the residual stream, with or without folding the
norm gains into the matrices reading them.

A reader W becomes W T^-1 and a writer W becomes T W; for orthogonal T, W T^T.
"""

import torch

from huref_lab.attacks.canonical import (RESIDUAL_FACTS, Canon, edit_checkpoint, norm_gain, reader_groups, set_gain,
                                         untie, writers)
from huref_lab.attacks.checkpoint import Checkpoint
from huref_lab.attacks.draws import (in_float64, orthogonal_fixing_ones, random_orthogonal, random_permutation,
                                     random_scales)
from huref_lab.attacks.layout import layout_of
from huref_lab.attacks.rule import rule


def change_residual_basis(canon: Canon, result: Checkpoint, T: torch.Tensor, fold: bool):
    """Rewrite the model for residual stream x -> T x (T [H, H], orthogonal, float64).

    fold=True: fold every pre-norm's gain (and LayerNorm bias, as T(b/g)) into the weights reading it and
    set the gain to 1, so T can be any orthogonal matrix (fixing the all-ones vector for LayerNorm).
    fold=False: T must be a (signed, for RMSNorm) permutation; norm gains and biases are permuted.
    """
    lay = canon.layout
    Tabs = T.abs()
    row_map = in_float64(lambda w: w @ T.T)        # rows are residual vectors (embeddings)
    write = in_float64(lambda w: T @ w)            # writer weights [H, *] and biases [H]

    def fold_into(i, norm_role, readers):
        gain, bias = norm_gain(canon, i, norm_role)
        if fold and gain is not None:
            for r in readers:
                canon.update(i, r, in_float64(lambda w: w @ torch.diag(gain) @ T.T))
            set_gain(canon, i, norm_role, torch.ones_like(gain))
            if bias is not None:
                canon.put(i, norm_role, (T @ (bias.double() / gain)).float(), "bias")
        else:
            for r in readers:
                canon.update(i, r, in_float64(lambda w: w @ T.T))
            if gain is not None:
                set_gain(canon, i, norm_role, Tabs @ gain)
            if bias is not None:
                canon.put(i, norm_role, write(bias), "bias")

    final_gain = norm_gain(canon, None, lay.final_norm)[0] if lay.final_norm else None
    if lay.tied and (lay.head_reader is not None or fold and final_gain is not None):
        untie(canon, result)   # the head does not follow the embedding (folded gain, or bert's own space)
    for name in (lay.embed, *lay.pos_embeds):
        canon.update(None, name, row_map)
    if lay.emb_norm:   # bloom / bert: the embedding LayerNorm's output starts the residual stream
        canon.update(None, lay.emb_norm, lambda g: (Tabs @ g.double()).float())
        canon.update(None, lay.emb_norm, write, "bias")
    for i in range(lay.n_layers):
        for norm_role, readers in reader_groups(canon, i):
            fold_into(i, norm_role, readers)
        for role in writers(canon, i):
            canon.update(i, role, write)
            canon.update(i, role, write, "bias")
        for role in ("attn_post_norm", "ffn_post_norm", "residual_norm"):
            if canon.get(i, role) is not None:
                gain, bias = norm_gain(canon, i, role)
                set_gain(canon, i, role, Tabs @ gain)
                if bias is not None:
                    canon.put(i, role, write(bias), "bias")
    # a head still tied to the embedding is absent from the tensors and was rewritten with it
    fold_into(None, lay.final_norm, [lay.head_reader or lay.head])


# folding needs every residual read to go through a pre-norm and no norm on a residual write; the gains cannot
# be folded where the norms' outputs are the residual path (minimax)
@rule(lambda lay: lay.pre_norms and not lay.post_norms and lay.emb_norm is None and not lay.arch.norm_residual,
      reads=RESIDUAL_FACTS)
def rotation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Fold the pre-norm gains into the weights and rotate the residual stream by a random orthogonal matrix.

    RMSNorm models get a Haar-random rotation; LayerNorm models one that fixes the all-ones vector, with
    the LayerNorm bias carried as T(b/g). A tied head is untied (it absorbs the final norm's gain).
    """
    layout = layout_of(checkpoint.config)
    draw = orthogonal_fixing_ones if layout.layer_norm else random_orthogonal
    T = draw(layout.hidden, generator)
    return edit_checkpoint(checkpoint, lambda canon, result: change_residual_basis(canon, result, T, fold=True))


@rule(lambda lay: not lay.layer_norm and lay.pre_norms and not lay.post_norms and not lay.arch.norm_residual,
      reads=RESIDUAL_FACTS)
def zhu_rotation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """The model-tracing attack of Zhu et al., "Independence Tests for Language Models" (ICML 2025).

    As in their `rotate_model` (github.com/salzhu/model-tracing, tracing/utils/llama/model.py): multiply
    q/k/v and gate/up by diag(input norm gain) and a Haar-random orthogonal R, o/down by R^T on the left,
    embeddings by R, the head by diag(final norm gain)·R, and set every RMSNorm gain to one. Here that is
    `change_residual_basis` with T = R^T; it applies to RMSNorm pre-norm models only.
    """
    layout = layout_of(checkpoint.config)
    R = random_orthogonal(layout.hidden, generator)
    return edit_checkpoint(checkpoint, lambda canon, result: change_residual_basis(canon, result, R.T, fold=True))


@rule(lambda lay: True, reads=RESIDUAL_FACTS)
def residual_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the residual stream's coordinates (with random sign flips for RMSNorm models), norms permuted too.

    The residual change of basis that survives post-norms (gemma2/3, olmo2, bert) and an embedding LayerNorm
    (bloom); sign flips would break LayerNorm's mean, so LayerNorm models get a plain permutation.
    """
    layout = layout_of(checkpoint.config)
    T = torch.eye(layout.hidden, dtype=torch.float64)[random_permutation(layout.hidden, generator)]
    if not layout.layer_norm:
        T = T * random_scales(layout.hidden, generator, spread=0.0)[:, None]
    return edit_checkpoint(checkpoint, lambda canon, result: change_residual_basis(canon, result, T, fold=False))

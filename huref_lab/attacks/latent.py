"""Rewrites of multi-head latent attention (DeepSeek-V2/V3 MLA), which has its own head layout, latent
spaces and one rotary key shared by every head: latent rotations, head reorderings, per-head QK and VO maps."""

import torch

from huref_lab.attacks.attention import rope_commuting_matrix
from huref_lab.attacks.canonical import edit_checkpoint
from huref_lab.attacks.checkpoint import Checkpoint
from huref_lab.attacks.draws import in_float64, random_invertible, random_orthogonal, random_permutation
from huref_lab.attacks.rule import rule


def _latent(layout) -> bool:
    """The rule of every attack here: the model has latent attention."""
    return layout.mla is not None


def _by_heads(canon, i, role, per_head: int, fn, columns=False, suffixes=("weight", "bias")):
    """Replace `role` (its rows, or its columns with `columns`) viewed per head as [n_heads, per_head, rest]
    by fn(that view) (float64, same shape)."""
    def apply(w):
        x = w.double().T if columns else w.double()
        out = fn(x.reshape(canon.layout.n_heads, per_head, -1)).reshape(x.shape)
        return (out.T if columns else out).contiguous().float()
    for suffix in suffixes:
        canon.update(i, role, apply, suffix)


def _per_head_maps(maps):
    """fn for `_by_heads`: head h's block [per_head, rest] -> maps[h] @ block."""
    return lambda heads: torch.stack([maps[h] @ heads[h] for h in range(len(heads))])


def _query_role(canon, i) -> str:
    """The MLA matrix writing every head's query rows: q_b behind a q latent, else q."""
    return "q_b" if canon.get(i, "q_b") is not None else "q"


@rule(_latent, reads=("attention", "attention storage", "reader biases", "layer kinds"))
def latent_rotation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MLA: rotate the q latent and the kv latent by random orthogonal maps U, the latent norm gains g
    folded into the matrices reading them: q_a -> U·q_a, q_b -> q_b·diag(g)·Uᵀ, gain set to 1 (RMS
    commutes with U, a gain does not), and so the sparse-attention indexer's wq_b, which reads the q latent
    too; kv_a's latent rows -> U·rows (its rotary key rows stay), kv_b -> kv_b·diag(g)·Uᵀ."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for writer, norm, readers in (("q_a", "q_a_norm", ("q_b", "indexer_q")), ("kv_a", "kv_a_norm", ("kv_b",))):
                if canon.get(i, writer) is None:
                    continue
                gain = canon.get(i, norm).double()
                r = len(gain)
                U = random_orthogonal(r, generator)
                for reader in readers:
                    canon.update(i, reader, in_float64(lambda w: w @ torch.diag(gain) @ U.T))
                canon.put(i, norm, torch.ones_like(gain).float())
                for suffix in ("weight", "bias"):
                    canon.update(i, writer, in_float64(lambda w: torch.cat([U @ w[:r], w[r:]])), suffix)
    return edit_checkpoint(checkpoint, edit)


@rule(_latent, reads=("attention", "reader biases", "layer kinds"))
def mla_head_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MLA: reorder the heads: query rows (nope + rope per head), kv_b rows (k + v per head), o columns."""
    def edit(canon, result):
        m = canon.layout.mla
        for i in range(canon.layout.n_layers):
            order = random_permutation(canon.layout.n_heads, generator)
            _by_heads(canon, i, _query_role(canon, i), m.nope + m.rope, lambda heads: heads[order])
            _by_heads(canon, i, "kv_b", m.nope + m.v, lambda heads: heads[order])
            _by_heads(canon, i, "o", m.v, lambda heads: heads[order], columns=True, suffixes=("weight",))
    return edit_checkpoint(checkpoint, edit)


@rule(_latent, reads=("attention", "rotary", "reader biases", "layer kinds"))
def mla_qk_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MLA: per head an invertible A_h on the non-rotary query rows and A_h^-T on that head's key rows in
    kv_b; one RoPE-commuting M on every head's rotary query rows and M^-T on the shared rotary key rows
    of kv_a (one M for all heads, since they share that key)."""
    def edit(canon, result):
        lay, m = canon.layout, canon.layout.mla
        for i in range(lay.n_layers):
            A = [random_invertible(m.nope, generator) for _ in range(lay.n_heads)]
            M = rope_commuting_matrix(lay, generator, m.rope)
            q_maps = [torch.block_diag(a, M) for a in A]
            k_maps = [torch.block_diag(torch.linalg.inv(a).T, torch.eye(m.v, dtype=torch.float64)) for a in A]
            _by_heads(canon, i, _query_role(canon, i), m.nope + m.rope, _per_head_maps(q_maps))
            _by_heads(canon, i, "kv_b", m.nope + m.v, _per_head_maps(k_maps))
            key_map = torch.block_diag(torch.eye(m.kv_rank, dtype=torch.float64), torch.linalg.inv(M).T)
            for suffix in ("weight", "bias"):
                canon.update(i, "kv_a", in_float64(lambda w: key_map @ w), suffix)
    return edit_checkpoint(checkpoint, edit)


@rule(_latent, reads=("attention", "reader biases", "layer kinds"))
def mla_vo_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MLA: per head an invertible B_h on the value rows of kv_b, and o's columns of that head times B_h^-1."""
    def edit(canon, result):
        lay, m = canon.layout, canon.layout.mla
        for i in range(lay.n_layers):
            B = [random_invertible(m.v, generator) for _ in range(lay.n_heads)]
            v_maps = [torch.block_diag(torch.eye(m.nope, dtype=torch.float64), b) for b in B]
            _by_heads(canon, i, "kv_b", m.nope + m.v, _per_head_maps(v_maps))
            # o's columns of head h, as rows [v, hidden]: B_h^-T @ rows  (o_h -> o_h·B_h^-1)
            _by_heads(canon, i, "o", m.v, _per_head_maps([torch.linalg.inv(b).T for b in B]), columns=True,
                      suffixes=("weight",))
    return edit_checkpoint(checkpoint, edit)

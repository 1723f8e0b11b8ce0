"""Attention rewrites: maps on each head's query/key and value/output spaces that attention's products
cancel, rescalings that QK norms divide out, and head reorderings."""

import math

import torch

from huref_lab.attacks.canonical import edit_checkpoint, norm_gain, output_roles, query_roles, set_gain
from huref_lab.attacks.checkpoint import Checkpoint
from huref_lab.attacks.draws import in_float64, random_invertible, random_permutation, random_scales
from huref_lab.attacks.layout import Layout
from huref_lab.attacks.rule import rule


def _shared_kv(layout: Layout) -> bool:
    """Keys and values attended to by later layers (kolibri1_1): a head map, permutation or key-norm gain of the
    source layer would have to reach every layer reading them, which these per-layer rewrites do not do."""
    return layout.arch.kv_sources is not None


def _rotary_pairs(layout: Layout) -> list[tuple[int, int]]:
    """The (i, j) dimension pairs of a head that RoPE rotates together."""
    r = layout.rotary_dim
    if layout.rotary_style == "pairs":
        return [(2 * p, 2 * p + 1) for p in range(r // 2)]
    return [(p, p + r // 2) for p in range(r // 2)]


def rope_commuting_matrix(layout: Layout, generator: torch.Generator, d: int | None = None) -> torch.Tensor:
    """A random invertible d x d map M (d: the head dim by default) with (M q)·(M^-T k) = q·k that
    commutes with RoPE.

    Each rotary pair gets a scaled 2-D rotation s·R(θ) (it commutes with RoPE's rotation of that plane);
    the non-rotary dims get an arbitrary well-conditioned invertible block.
    """
    d = d or layout.head_dim
    M = torch.zeros(d, d, dtype=torch.float64)
    pairs = _rotary_pairs(layout)
    for a, b in pairs:
        theta = float(torch.rand(1, generator=generator, dtype=torch.float64)) * 2 * math.pi
        s = float(random_scales(1, generator)[0])
        M[a, a], M[a, b], M[b, a], M[b, b] = s * math.cos(theta), -s * math.sin(theta), s * math.sin(theta), s * math.cos(theta)
    rest = [j for j in range(d) if j not in {x for pair in pairs for x in pair}]
    if rest:
        M[torch.tensor(rest)[:, None], torch.tensor(rest)] = random_invertible(len(rest), generator)
    return M


def _per_kv_head(canon, i, maps_q, maps_k):
    """Apply maps_q[j] to the rows of every query head in group j (of q, or of each attention expert's
    queries) and maps_k[j] to key head j (weights and biases)."""
    d = canon.layout.head_dim

    def by_head(maps):
        def apply(w):
            n_heads = w.shape[0] // d   # [n_heads * d, *] -> per head [d, *]; group j: heads j * per_group ...
            heads = w.double().reshape(n_heads, d, *w.shape[1:])
            out = torch.stack([maps[h // (n_heads // len(maps))] @ heads[h].reshape(d, -1) for h in range(n_heads)])
            return out.reshape(w.shape).float()
        return apply

    for suffix in ("weight", "bias"):
        for role in query_roles(canon, i):
            canon.update(i, role, by_head(maps_q), suffix)
        canon.update(i, "k", by_head(maps_k), suffix)


@rule(lambda lay: lay.qk_norm is None and not lay.clip_qkv and lay.mla is None,
      reads=("attention", "head grouping", "attention storage", "rotary", "reader biases", "shared kv", "layer kinds"))
def qk_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: queries -> M q, keys -> M^-T k with M commuting with RoPE (shared across a GQA group)."""
    def edit(canon, result):
        for i in canon.layout.attention_layers:
            maps = [rope_commuting_matrix(canon.layout, generator) for _ in range(canon.layout.n_kv_heads)]
            _per_kv_head(canon, i, maps, [torch.linalg.inv(m).T for m in maps])
    return edit_checkpoint(checkpoint, edit)


@rule(lambda lay: lay.qk_norm is None and not lay.clip_qkv and lay.mla is None,
      reads=("attention", "head grouping", "attention storage", "reader biases", "shared kv", "layer kinds"))
def qk_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: queries times c, keys divided by c (c random, either sign)."""
    def edit(canon, result):
        eye = torch.eye(canon.layout.head_dim, dtype=torch.float64)
        for i in canon.layout.attention_layers:
            scales = random_scales(canon.layout.n_kv_heads, generator, spread=1.5)
            _per_kv_head(canon, i, [c * eye for c in scales], [eye / c for c in scales])
    return edit_checkpoint(checkpoint, edit)


@rule(lambda lay: lay.qk_norm is not None and not lay.clip_qkv,
      reads=("qk norms", "head grouping", "attention storage", "reader biases", "shared kv", "layer kinds"))
def qk_norm_rescale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """QK-norm models: scale W_q and W_k by positive factors the q/k norms divide out again.

    Per-head norms (qwen3, gemma3): every query head and every key head gets its own factor; a norm over the
    whole projection (olmo2): one factor for all queries and one for all keys.
    """
    def edit(canon, result):
        lay = canon.layout
        for i in lay.qk_norm_layers:
            n_q, n_k = (lay.n_heads, lay.n_kv_heads) if lay.qk_norm == "head" else (1, 1)
            # factors >= 1, so the norms' epsilon matters even less than in the original
            cq, ck = (1 + random_scales(n, generator, signed=False, spread=1.5) for n in (n_q, n_k))
            for role, c, n in (("q", cq, lay.n_heads), ("k", ck, lay.n_kv_heads)):
                per_head = c.repeat_interleave(n // len(c)).repeat_interleave(lay.head_dim)
                canon.update(i, role, in_float64(lambda w: w * per_head[:, None]))
                canon.update(i, role, in_float64(lambda b: b * per_head), "bias")
    return edit_checkpoint(checkpoint, edit)


@rule(lambda lay: lay.qk_norm is not None and lay.arch.q_norm[0].name is not None and not _shared_kv(lay),
      reads=("qk norms", "head grouping", "rotary", "layer kinds"))
def qk_norm_gain_exchange(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """QK-norm models: q_norm gain (and a LayerNorm's bias) times s, k_norm's divided by s, s equal on both
    dims of each rotary pair: every product of a query and a key dimension is unchanged."""
    def edit(canon, result):
        lay = canon.layout
        d = lay.head_dim
        rep = lay.n_heads // lay.n_kv_heads
        n_groups = lay.n_kv_heads if lay.qk_norm == "row" else 1
        for i in lay.qk_norm_layers:
            s = random_scales(n_groups * d, generator, spread=1.0).reshape(n_groups, d)
            for a, b in _rotary_pairs(lay):
                s[:, b] = s[:, a]
            s_k = s.reshape(-1)
            s_q = s.repeat_interleave(rep, 0).reshape(-1) if lay.qk_norm == "row" else s_k
            for role, factor in (("q_norm", s_q), ("k_norm", 1 / s_k)):
                gain, _ = norm_gain(canon, i, role)
                set_gain(canon, i, role, gain * factor)
                canon.update(i, role, in_float64(lambda b: b * factor), "bias")
    return edit_checkpoint(checkpoint, edit)


# an elementwise gate on each head's output (qwen3_next) does not commute with a V/O map
@rule(lambda lay: not lay.clip_qkv and lay.mla is None and lay.arch.attn_gate is None and not _shared_kv(lay),
      reads=("attention", "head grouping", "attention storage", "output storage", "reader biases", "layer kinds"))
def vo_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: values -> A v, and the output projection columns of its query heads (of o, or of
    every attention expert's output) times A^-1."""
    def edit(canon, result):
        lay = canon.layout
        d = lay.head_dim
        for i in lay.attention_layers:
            maps = [random_invertible(d, generator) for _ in range(lay.n_kv_heads)]
            inverse = [torch.linalg.inv(m) for m in maps]

            def values(w):
                heads = w.double().reshape(lay.n_kv_heads, d, -1)
                return torch.stack([maps[j] @ heads[j] for j in range(lay.n_kv_heads)]).reshape(w.shape).float()

            def output(w):
                n_heads = w.shape[1] // d
                rep = n_heads // lay.n_kv_heads
                cols = w.double().reshape(w.shape[0], n_heads, d)
                return torch.stack([cols[:, h] @ inverse[h // rep] for h in range(n_heads)], 1).reshape(w.shape).float()

            canon.update(i, "v", values)
            canon.update(i, "v", values, "bias")
            for role in output_roles(canon, i):
                canon.update(i, role, output)
    return edit_checkpoint(checkpoint, edit)


# ALiBi slopes are tied to head positions
@rule(lambda lay: not lay.alibi and lay.mla is None and not _shared_kv(lay),
      reads=("attention", "head grouping", "attention storage", "output storage", "sinks", "qk norms",
             "reader biases", "layer kinds"))
def head_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Reorder the attention heads: key/value heads by a permutation, query heads within and with their groups
    (with attention experts: every expert's query and output heads as the key/value heads they read)."""
    def edit(canon, result):
        lay = canon.layout
        d = lay.head_dim
        for i in lay.attention_layers:
            rep = canon.get(i, query_roles(canon, i)[0]).shape[0] // d // lay.n_kv_heads
            kv_order = random_permutation(lay.n_kv_heads, generator)
            q_order = torch.cat([kv_order[a] * rep + random_permutation(rep, generator) for a in range(lay.n_kv_heads)])
            rows_q = (q_order[:, None] * d + torch.arange(d)).reshape(-1)
            rows_kv = (kv_order[:, None] * d + torch.arange(d)).reshape(-1)
            for suffix in ("weight", "bias"):
                for role in query_roles(canon, i):
                    canon.update(i, role, lambda w: w[rows_q], suffix)
                for role in ("k", "v"):
                    canon.update(i, role, lambda w: w[rows_kv], suffix)
            for role in output_roles(canon, i):
                canon.update(i, role, lambda w: w[:, rows_q])
            canon.update(i, "attn_gate", lambda w: w[rows_q])   # each head's output gate goes with it
            canon.update(i, "attn_gate", lambda b: b[rows_q], "bias")
            canon.update(i, "sinks", lambda s: s[q_order])      # and its sink logit
            if lay.qk_norm == "row":
                canon.update(i, "q_norm", lambda g: g[rows_q])
                canon.update(i, "k_norm", lambda g: g[rows_kv])
    return edit_checkpoint(checkpoint, edit)

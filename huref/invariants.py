"""The invariant terms: what a model's weights say about its base, unchanged by equivalent rewrites.

For probe rows X (embedding rows of the selected tokens, `huref.tokens`) and one layer, in Hugging
Face orientation (a Linear weight W is [out, in] and maps a row x to x·Wᵀ):

    qk  = Σ_h  N_q(X_a·Wq_hᵀ) · N_k(X_a·Wk_g(h)ᵀ)ᵀ            query head h, its key/value head g(h)
    vo  = P_a( Σ_h X_a·Wv_g(h)ᵀ·Wo_hᵀ ) · X_oᵀ
    ffn = P_f( Σ_experts (X_f·Wgᵀ ⊙ X_f·Wuᵀ)·Wdᵀ ) · X_oᵀ      gated; plain FFN: X_f·W1ᵀ·W2ᵀ

- X_a, X_f: the rows as the attention / FFN input norm leaves them (centred for LayerNorm, divided
  by their RMS or std, times the norm's scale — gemma: 1 + w — never its bias). Folding a norm's
  scale into the next weights, or rescaling the embedding, therefore changes nothing.
- N_q, N_k: the QK norm where the model has one (per head or per row, with 1/rms): rescaling a
  head that the norm undoes changes nothing.
- Keys and values another layer computed (kolibri1_1's kv_source_layers): Wk, Wv, N_k and the input norm
  giving their rows (X_kv) are that layer's.
- X_o: the raw rows, where the sublayer writes; centred for LayerNorm models, which cannot see the
  residual stream's mean (adding multiples of the all-ones vector to embeddings and writes).
- P_a, P_f: the post-norm on that write where the model has one (gemma2/3, olmo2), else identity.
- Invariant to any rotation of the residual stream (with the norms folded), per-head Q/K maps that
  commute with RoPE, per-head V/O maps, head and neuron permutations, up/down (and gate/down)
  rescaling, expert reordering. The paper's code uses (Wg ⊙ Wu)·Wd instead of the FFN term
  above; that elementwise product of weight matrices is not invariant to a residual rotation.

Mixture of attention heads (jetmoe): each attention expert e has its own query and output matrices
and shares the keys and values; its query head j reads key/value head j. The terms sum over the
experts as over heads, router-free: qk = Σ_e Σ_j N_q(X_a·Wq_e,jᵀ)·N_k(X_a·Wk_jᵀ)ᵀ and
vo = P_a(Σ_e Σ_j X_a·Wv_jᵀ·Wo_e,jᵀ)·X_oᵀ (docs/INVARIANTS.md has the derivation).

Multi-head latent attention (DeepSeek-V2/V3, `mla_qk_term`, `mla_vo_term`): the rows are pushed
through the latents as the model does, C_q = N_qa(X_a·Wq_aᵀ) (X_a without a q latent), C_kv =
N_kva(X_a·Wkv_aᵀ's latent columns), k_pe = the rotary key columns shared by every head; then
qk = Σ_h C_q·Wq_nope_hᵀ·Wk_h·C_kvᵀ + (C_q·Wq_pe_hᵀ)·k_peᵀ and vo = Σ_h C_kv·Wv_hᵀ·Wo_hᵀ·X_oᵀ
(docs/INVARIANTS.md has the derivation and the rewrites they survive).

Default layers (`default_layer_order`): the two middle layers that write, counted over the attention
layers. The paper reads the last two; measured on the zoo and real pairs (docs/RESULTS.md, "Which
layers"), the top layers of independently trained models with one tokenizer and corpus converge
(twins and siblings look related there) and are the ones heavy continued pretraining moves most,
while the middle layers keep a base's identity. `--layers -2,-1` is the paper's setting.

Hybrid models (qwen3_next, qwen3_5, jamba, minimax): only attention layers (`huref.config.LayerPlan.term_layers`)
carry the terms; a gated delta-net, Mamba or lightning-attention layer has no QK or VO term, so the
default layers are the middle attention layers that write, and another kind of layer asked for is
refused. nemotron_h's layers are single blocks: attention block i takes the FFN term of the first
MLP/MoE block after it (`huref.config.ffn_blocks`). minimax carries each input norm's output on the
residual path, so a write side is the sublayer's own input rows (X_o = X_a for VO, X_f for FFN).

Cost: each weight matrix is multiplied once by X (n·in·out flops) and never materialized in full;
the query heads of a group are summed before the n×n product (exact: Σ_h Q_h·K_gᵀ = (Σ_h Q_h)·K_gᵀ),
and, without a QK norm, already on the weights (Σ_h X·Wq_hᵀ = X·(Σ_h Wq_h)ᵀ), as the output heads
of a group are for VO.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

import huref
from huref.errors import HurefError
from huref.layers import LayerWeights, Matrix, apply_norm, embedding_rows, layer_weights
from huref.readers import require_finite
from huref.tokens import select_tokens

TERM_NAMES = ("qk", "vo", "ffn")
# --precision: the arithmetic of the terms (bfloat16: weight products in bfloat16, float32 accumulation)
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
DEFAULT_TOKENS = 4096
DEFAULT_LAYERS = 2  # how many layers the default rule reads (`default_layer_order`)
DEFAULT_RULE = "middle"  # meta["layer_choice"] of terms made by the default rule
PREFETCH_ELEMENTS = 1 << 29  # ~1 GB of bfloat16: a bigger layer is not read ahead
INERT_TOLERANCE = 1e-6  # a layer whose VO and FFN terms stay below this, relative to X_o·X_oᵀ, writes nothing


@dataclass
class Terms:
    """Raw invariant terms [L, 3, n, n] of the given layers over the given token keys."""

    values: torch.Tensor
    layers: list[int]
    tokens: list[str]
    meta: dict = field(default_factory=dict)


def times_t(rows: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """rows · blockᵀ ([n, k] x [m, k] -> [n, m]). A bfloat16 block (`--precision bfloat16`,
    `huref.readers.lineage_reads`) is multiplied as it is, by the rows rounded to bfloat16, with float32
    accumulation; the product comes back in rows' dtype (bfloat16 rows, rounded once by the caller
    for many products, keep it bfloat16). Otherwise the product is in rows' dtype. A NaN or infinity
    in the block makes its column of the product non-finite (IEEE: x·inf is ±inf or, for x = 0, NaN),
    which is how the blocks' finiteness is checked (`invariant_terms`)."""
    if block.dtype == torch.bfloat16:
        product = rows.to(torch.bfloat16) @ block.T
        return product.to(rows.dtype)
    return rows @ block.to(rows).T


def project(matrix: Matrix, rows: torch.Tensor, heads: "HeadGroups | None" = None) -> torch.Tensor:
    """rows · Wᵀ  ([n, in] -> [n, out]), reading W one block of rows at a time.

    With `heads`, W (a query matrix) has its rows first summed over the query heads sharing a
    key/value head, so out = n_kv_heads * head_dim: X·(Σ_t Wq_t)ᵀ = Σ_t X·Wq_tᵀ with 1/group the flops.
    """
    group = heads.group if heads else 1
    out = rows.new_empty(rows.shape[0], matrix.out_dim // group)
    for start, stop, block in matrix.blocks(multiple=group * heads.head_dim if heads else 1):
        out[:, start // group : stop // group] = times_t(rows, heads.sum_group_rows(block) if heads else block)
    return out


def write_back(matrix: Matrix, hidden: torch.Tensor, heads: "HeadGroups | None" = None) -> torch.Tensor:
    """hidden · Wᵀ for an output matrix W [d, inner]: [n, inner'] -> [n, d], W read by row blocks.

    With `heads`, W's columns are first summed over the query heads sharing a key/value head, so
    `hidden` holds one slice per key/value head (inner' = n_kv_heads * head_dim).
    """
    out = hidden.new_empty(hidden.shape[0], matrix.out_dim)
    for start, stop, block in matrix.blocks():
        out[:, start:stop] = times_t(hidden, heads.sum_groups(block) if heads else block)
    return out


def read_out(matrix: Matrix, rows: torch.Tensor, heads: "HeadGroups | None" = None) -> torch.Tensor:
    """rows · W for an output matrix W [d, inner]: [n, d] -> [n, inner'] (inner' as in write_back)."""
    out = None
    for start, stop, block in matrix.blocks():
        part = times_t(rows[:, start:stop], (heads.sum_groups(block) if heads else block).T)
        out = part if out is None else out.add_(part)
    return out


@dataclass(frozen=True)
class HeadGroups:
    """Grouped-query attention: query head h = j * group + t uses key/value head j."""

    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def sum_groups(self, t: torch.Tensor) -> torch.Tensor:
        """[r, n_heads * head_dim] -> [r, n_kv_heads * head_dim], summing each group's heads."""
        if self.group == 1:
            return t
        r = t.shape[0]
        return t.reshape(r, self.n_kv_heads, self.group, self.head_dim).sum(2).reshape(r, -1)

    def sum_group_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Query weight rows [k * group * head_dim, in] -> [k * head_dim, in], summing each group's heads."""
        if self.group == 1:
            return t
        return t.reshape(-1, self.group, self.head_dim, t.shape[1]).sum(1).reshape(-1, t.shape[1])


def qk_term(layer: LayerWeights, x_attn: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
    """Σ_h N_q(X·Wq_hᵀ)·N_k(X_kv·Wk_g(h)ᵀ)ᵀ  [n, n] (X_kv: the rows as the keys' input norm leaves them, X
    itself unless the keys are an earlier layer's); with attention experts, the sum runs over every expert's
    query heads too."""
    heads = HeadGroups(layer.n_heads, layer.n_kv_heads, layer.head_dim)
    q = None
    for query in layer.queries:
        if layer.q_norm is None:  # sum each group's query heads on the weights, before projecting
            part = project(query, x_attn, heads)
        else:
            part = heads.sum_groups(apply_norm(layer.q_norm, project(query, x_attn), layer.n_heads))
        q = part if q is None else q.add_(part)
    k = apply_norm(layer.k_norm, project(layer.k, x_kv), layer.n_kv_heads)
    return q @ k.T


def vo_term(layer: LayerWeights, x_kv: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
    """P(Σ_h X_kv·Wv_g(h)ᵀ·Wo_hᵀ)·X_oᵀ  [n, n] (X_kv as in `qk_term`); with attention experts, the sum
    runs over every expert's output heads too."""
    heads = HeadGroups(layer.n_heads, layer.n_kv_heads, layer.head_dim)
    v = project(layer.v, x_kv)
    if layer.attn_post_norm is None:
        # cheaper order when there is no norm on the write: V · (X_o · Wo_grouped)ᵀ
        read = None
        for output in layer.outputs:
            part = read_out(output, x_out, heads)
            read = part if read is None else read.add_(part)
        return v @ read.T
    written = None
    for output in layer.outputs:
        part = write_back(output, v, heads)
        written = part if written is None else written.add_(part)
    return apply_norm(layer.attn_post_norm, written) @ x_out.T


def ffn_term(layer: LayerWeights, x_ffn: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
    """P(Σ_experts (X·Wgᵀ ⊙ X·Wuᵀ)·Wdᵀ)·X_oᵀ  [n, n] (plain FFN: X·W1ᵀ·W2ᵀ).

    With bfloat16 products the rows are rounded to bfloat16 once for every expert, and each expert's
    hidden rows stay bfloat16 (the gate's product, exact in float32, is rounded once, as the down
    projection would round it); the experts' writes are summed in float32. The next expert's bytes
    are asked of the disk while one computes (a MoE layer is too wide for `prefetch`)."""
    rows = x_ffn.to(torch.bfloat16) if layer.ffns[0].up.dtype == torch.bfloat16 else x_ffn
    written = None
    for k, ffn in enumerate(layer.ffns):
        if k + 1 < len(layer.ffns):  # the next expert's bytes are read while this one computes
            for matrix in filter(None, (layer.ffns[k + 1].gate, layer.ffns[k + 1].up, layer.ffns[k + 1].down)):
                matrix.reader.prefetch(matrix.name)
        hidden = project(ffn.up, rows)
        if ffn.gate is not None:  # multiplied in block by block: no second [n, inner] buffer
            for start, stop, block in ffn.gate.blocks():
                hidden[:, start:stop].mul_(times_t(rows, block))
        part = write_back(ffn.down, hidden)
        written = part.to(x_ffn.dtype) if written is None else written.add_(part)
    return apply_norm(layer.ffn_post_norm, written) @ x_out.T


def _rows_of(matrix: Matrix, like: torch.Tensor) -> torch.Tensor:
    """The whole matrix [out, in], read block by block, in `like`'s dtype and device."""
    return torch.cat([block.to(like) for _, _, block in matrix.blocks()])


def latent_rows(layer: LayerWeights, x_attn: torch.Tensor):
    """MLA: (C_q [n, q_rank] (or x_attn itself without a q latent), C_kv [n, kv_rank], k_pe [n, rope]):
    the probe rows in the latent spaces as the model computes them, latent norms applied (1/rms, gain)."""
    m = layer.mla
    c_q = x_attn if m.q_a is None else apply_norm(m.q_a_norm, project(m.q_a, x_attn))
    a = project(m.kv_a, x_attn)                        # [n, kv_rank + rope]
    c_kv = apply_norm(m.kv_a_norm, a[:, : m.dims.kv_rank])
    return c_q, c_kv, a[:, m.dims.kv_rank :]


def mla_qk_term(layer: LayerWeights, c_q: torch.Tensor, c_kv: torch.Tensor, k_pe: torch.Tensor) -> torch.Tensor:
    """Σ_h q_nope_h·k_nope_hᵀ + q_pe_h·k_peᵀ  [n, n], from the latent rows (`latent_rows`).

    The non-rotary part goes through the latent bilinear form B = Σ_h Wq_nope_hᵀ·Wk_h [q_rank, kv_rank]
    (C_q·B·C_kvᵀ: weights multiplied once, never an [n, heads * dim] buffer); the rotary part through
    the rotary query rows summed over heads (the key is shared): (C_q·(Σ_h Wq_pe_h)ᵀ)·k_peᵀ.
    """
    m, h = layer.mla.dims, layer.n_heads
    kv_b = _rows_of(layer.mla.kv_b, c_q).reshape(h, m.nope + m.v, m.kv_rank)  # per head: k rows, then v rows
    w_k = kv_b[:, : m.nope]                                                    # [h, nope, kv_rank]
    form = c_q.new_zeros(c_q.shape[1], m.kv_rank)
    rope_rows = c_q.new_zeros(m.rope, c_q.shape[1])
    per_head = m.nope + m.rope
    for start, stop, block in layer.mla.q.blocks(multiple=per_head):
        heads = block.to(c_q).reshape(-1, per_head, c_q.shape[1])            # [heads in block, nope + rope, in]
        first = start // per_head
        form += torch.einsum("hdi,hdj->ij", heads[:, : m.nope], w_k[first : first + heads.shape[0]])
        rope_rows += heads[:, m.nope :].sum(0)
    return (c_q @ form) @ c_kv.T + (c_q @ rope_rows.T) @ k_pe.T


def mla_vo_term(layer: LayerWeights, c_kv: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
    """P(Σ_h C_kv·Wv_hᵀ·Wo_hᵀ)·X_oᵀ  [n, n], through W = Σ_h Wo_h·Wv_h [hidden, kv_rank], built
    from row blocks of Wo: C_kv·Wᵀ·X_oᵀ."""
    m, h = layer.mla.dims, layer.n_heads
    w_v = _rows_of(layer.mla.kv_b, c_kv).reshape(h, m.nope + m.v, m.kv_rank)[:, m.nope :]  # [h, v, kv_rank]
    written = c_kv.new_empty(layer.o.out_dim, m.kv_rank)
    for start, stop, block in layer.o.blocks():
        written[start:stop] = torch.einsum("rhv,hvj->rj", block.to(c_kv).reshape(-1, h, m.v), w_v)
    if layer.attn_post_norm is None:
        return c_kv @ (x_out @ written).T
    return apply_norm(layer.attn_post_norm, c_kv @ written.T) @ x_out.T


def write_side_rows(x: torch.Tensor, centre: bool) -> torch.Tensor:
    """X_o: the raw rows x [n, d] where sublayers write, centred for LayerNorm models. Centred in
    float64: a huge all-ones component (a LayerNorm model's mean shift) would otherwise leave a
    float32 remainder along 1 that the write side's huge all-ones component amplifies."""
    if not centre:
        return x
    wide = x.double()
    return (wide - wide.mean(1, keepdim=True)).to(x.dtype)


def layer_terms(layer: LayerWeights, x: torch.Tensor, x_out: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The three terms of one layer [3, n, n], from raw residual rows x [n, d] and their write-side
    form x_out (`write_side_rows`), written into `out` when given (each term is copied in as soon
    as it exists, so no second [3, n, n] buffer is made)."""
    n = x.shape[0]
    out = x.new_empty(3, n, n) if out is None else out
    x_attn, x_ffn = apply_norm(layer.attn_norm, x), apply_norm(layer.ffn_norm, x)
    # minimax carries each input norm's output on the residual path: a write lands beside its own input rows
    attn_out, ffn_out = (x_attn, x_ffn) if layer.norm_residual else (x_out, x_out)
    if layer.mla is not None:
        c_q, c_kv, k_pe = latent_rows(layer, x_attn)
        out[0] = mla_qk_term(layer, c_q, c_kv, k_pe)
        out[1] = mla_vo_term(layer, c_kv, attn_out)
    else:
        # keys and values attended to across layers (kolibri1_1) read the source layer's input norm
        x_kv = x_attn if layer.kv_source is None else apply_norm(layer.kv_norm, x)
        out[0] = qk_term(layer, x_attn, x_kv)
        out[1] = vo_term(layer, x_kv, attn_out)
    out[2] = ffn_term(layer, x_ffn, ffn_out)
    return out


def prefetch(layer: LayerWeights) -> None:
    """Ask the readers to start reading a layer's matrices while the current layer computes (the
    disk works while the cores multiply); skipped for a layer over PREFETCH_ELEMENTS (a wide MoE
    layer would only push the current one out of the page cache)."""
    matrices = {(id(m.reader), m.name): m for m in layer.matrices()}.values()
    if sum(math.prod(m.reader.shape(m.name)) for m in matrices) <= PREFETCH_ELEMENTS:
        for m in matrices:
            m.reader.prefetch(m.name)


def nonfinite_error(model, layer: LayerWeights) -> HurefError:
    """Why layer terms came out non-finite: the first of the layer's matrices holding a NaN or an
    infinity (read again, block by block, checked), else weights so large that finite products overflow."""
    for matrix in layer.matrices():
        for _, _, block in matrix.blocks():
            try:
                require_finite(block, matrix.name)
            except HurefError as error:
                return error
    return HurefError(f"{model.name}: the terms of layer {layer.index} overflow (weights too large to be a "
                      "trained model's)")


def memory_budget() -> int:
    """Bytes the terms may take: HUREF_MEMORY_GB (default 4) GiB."""
    import os

    try:
        gib = float(os.environ.get("HUREF_MEMORY_GB", "4"))
    except ValueError:
        raise HurefError("HUREF_MEMORY_GB must be a number of GiB") from None
    return int(gib * (1 << 30))


def check_memory(n_layers: int, n: int, dtype: torch.dtype) -> None:
    """Refuse, before allocating, terms of n_layers layers over n tokens that would not fit the
    budget: the kept terms [L, 3, n, n] float32 plus one layer's [3, n, n] working set in dtype
    (float32 for bfloat16 products)."""
    width = 8 if dtype == torch.float64 else 4
    needed = n_layers * 3 * n * n * 4 + 2 * 3 * n * n * width
    if needed > memory_budget():
        raise HurefError(f"{n_layers} layers of terms over {n} tokens need {needed / (1 << 30):.1f} GiB, more than "
                         f"the {memory_budget() / (1 << 30):.1f} GiB budget (fewer --tokens or layers, or raise "
                         "HUREF_MEMORY_GB)")


def default_layer_order(attention: list[int]) -> list[int]:
    """The default rule: attention layer indices (ascending) in the order they are taken, the first
    DEFAULT_LAYERS of them that write to the residual stream being read: from the middle of the
    attention layers outwards, the deeper of two equally near first (so the two middle layers, the
    deeper middle pair on an odd count; why: docs/RESULTS.md "Which layers")."""
    centre = (len(attention) - 1) / 2
    ranked = sorted(range(len(attention)), key=lambda p: (abs(p - centre), -p))
    return [attention[p] for p in ranked]


def resolve_layers(n_layers: int, layers: list[int] | None) -> list[int]:
    """Absolute layer indices: default the rule's first DEFAULT_LAYERS over all n_layers (before
    attention-only and inert layers are passed over); negative indices count from the end."""
    chosen = layers if layers else sorted(default_layer_order(list(range(n_layers)))[:DEFAULT_LAYERS])
    resolved = []
    for i in chosen:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise HurefError(f"layer {i} is out of range for a model with {n_layers} layers")
        resolved.append(j)
    return resolved


def invariant_terms(
    model,
    layers: list[int] | None = None,
    n_tokens: int = DEFAULT_TOKENS,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = None,
    rows_from=None,
    skip_inert: bool = False,
) -> Terms:
    """Compute the invariant terms of `model` (a `huref.sources.Model`).

    Returns `Terms` with values [L, 3, n, n] (float32, on the CPU) for the chosen layers in ascending
    order (default: `default_layer_order`'s first DEFAULT_LAYERS that write) over n = min(n_tokens, usable vocabulary) selected tokens. `dtype=torch.float64`
    computes in double precision (a check mode); `dtype=torch.bfloat16` multiplies weight blocks in
    bfloat16 (the probe rows rounded to it) with float32 accumulation, the rest in float32.
    `progress(step)` is called as work proceeds.
    `rows_from` (another `Model` of the same hidden size): cross terms, `model`'s layers read on the
    embedding rows (and tokens) of `rows_from` instead of its own (see `huref.lineage.cross_depth_terms`).
    `skip_inert` (with `layers` in ascending order): given layers that write nothing are passed over, as the
    default rule passes them over (an inserted identity layer leaves the terms as they were).
    """
    if n_tokens < 2:
        raise HurefError("--tokens must be at least 2")
    n_layers = model.dims.n_layers
    wanted = resolve_layers(n_layers, layers)
    # Hybrid models: only attention layers carry the three terms (a mixer layer has no QK/VO term).
    attention = model.plan.term_layers
    refused = [i for i in wanted if i not in attention] if layers else []
    if refused:
        raise HurefError(f"{model.name}: layer {refused[0]} is not an attention layer (its token mixer carries no "
                         f"QK or VO term); attention layers: {', '.join(map(str, attention))}")
    # Default layers: the rule's attention layers that write to the residual stream. A layer whose
    # attention and FFN writes vanish is an identity, which can be inserted without changing the
    # model; skip it.
    candidates = wanted if layers else default_layer_order(list(attention))
    rows_model = rows_from or model
    if rows_model.dims.hidden != model.dims.hidden:
        raise HurefError(f"{rows_model.name} has hidden size {rows_model.dims.hidden}, {model.name} "
                         f"{model.dims.hidden}: one's embedding rows cannot feed the other's layers")
    ids, keys = select_tokens(rows_model.vocab, rows_model.embedding_shape()[0], n_tokens)
    if len(ids) < 2:
        raise HurefError(f"{model.name}: fewer than 2 usable tokens in the vocabulary")
    check_memory(len(wanted), len(ids), dtype)
    say = progress or (lambda step: None)
    say("reading embedding rows")
    chosen, skipped = [], []
    # kept terms, filled in place: given layers straight into their slots in layer order; the default
    # walk's in the order found, sorted at the end
    values = torch.empty(len(wanted), 3, len(ids), len(ids))
    slot_order = sorted(range(len(wanted)), key=wanted.__getitem__)
    rows_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    with torch.no_grad():
        x = embedding_rows(rows_model, ids).to(device=device, dtype=rows_dtype)
        x_out = write_side_rows(x, model.arch.layer_norm)
        identity_scale = float(x_out.pow(2).sum(1).max())
        upcoming = None  # the next candidate's weights, its bytes already asked of the disk
        for k, i in enumerate(candidates):
            if len(chosen) == len(wanted):
                break
            say(f"layer {i}")
            weights = upcoming if upcoming is not None and upcoming.index == i else layer_weights(model, i, dtype)
            upcoming = None
            if k + 1 < len(candidates) and len(chosen) + 1 < len(wanted):
                upcoming = layer_weights(model, candidates[k + 1], dtype)
                prefetch(upcoming)
            slot = slot_order.index(len(chosen)) if layers else len(chosen)
            terms = layer_terms(weights, x, x_out, values[slot])
            if not bool(torch.isfinite(terms).all()):  # the blocks' finite check (`times_t`), and overflow
                raise nonfinite_error(model, weights)
            if (skip_inert or not layers) and float(terms[1:].abs().max()) <= INERT_TOLERANCE * identity_scale:
                skipped.append(i)
                continue
            chosen.append(i)
    if skip_inert and chosen:
        values, wanted = values[:len(chosen)], chosen  # [L', 3, n, n]: the layers that write
    if len(chosen) < len(wanted):
        raise HurefError(f"{model.name}: fewer than {len(wanted)} layers write to the residual stream")
    if not layers and chosen != sorted(chosen):
        values = values[sorted(range(len(chosen)), key=chosen.__getitem__)]  # [L, 3, n, n] by layer; the
        # copy fits the budget's working set, freed by now (check_memory)
    chosen = sorted(chosen)
    meta = {
        "model": model.label,
        "model_type": model.config.get("model_type"),
        "n_layers": model.dims.n_layers,
        "hidden_size": model.dims.hidden,
        "token_strategy": "string" if rows_model.vocab is not None else "id",
        "n_tokens": len(ids),
        "tool_version": huref.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "layer_choice": "given" if layers else DEFAULT_RULE,
        "skipped_inert_layers": skipped,
        "sha256": dict(sorted(model.reader.digests.items())),
    }
    if rows_from is not None:
        meta["rows_from"] = rows_from.label
    return Terms(values, chosen, keys, meta)


def terms_chunks(terms: Terms):
    """terms as an invariants file's bytes, in chunks (.safetensors: tensor "values", huref JSON
    metadata), without copying the values."""
    from huref.files import safetensors_chunks

    header = {"huref": "invariants", "layers": terms.layers, "tokens": terms.tokens, "meta": terms.meta}
    return safetensors_chunks({"values": terms.values}, {"huref": json.dumps(header)})


def save_terms(terms: Terms, path: str | Path) -> None:
    """Write terms to an invariants file, atomically."""
    from huref.files import write_atomically

    write_atomically(path, terms_chunks(terms))


def terms_header(path: str | Path) -> tuple[Terms, object]:
    """An invariants file's header, checked, with its values not yet read: (Terms whose values is
    an empty [L, 3, 0, 0] placeholder, the open reader). Malformed files raise HurefError."""
    from huref.readers.jsonfile import parse_json
    from huref.readers.safetensors import SafetensorsReader

    path = str(path)
    try:
        reader = SafetensorsReader(path)
        metadata = reader.metadata.get("huref")
        header = parse_json(metadata.encode(), path) if isinstance(metadata, str) else None
    except HurefError as error:
        raise HurefError(f"{path}: not a huref invariants file ({str(error).removeprefix(path + ': ')})") from None
    if not isinstance(header, dict) or header.get("huref") != "invariants" or not reader.has("values"):
        raise HurefError(f"{path}: not a huref invariants file")
    shape = tuple(reader.shape("values"))
    layers, tokens, meta = header.get("layers"), header.get("tokens"), header.get("meta", {})
    if (len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]
            or not isinstance(layers, list) or not all(type(i) is int for i in layers)
            or not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens)
            or len(set(tokens)) != len(tokens) or not isinstance(meta, dict)
            or len(layers) != shape[0] or len(tokens) != shape[2]):
        raise HurefError(f"{path}: invariants file with inconsistent shapes or header")
    check_memory(shape[0], shape[2], torch.float32)
    return Terms(torch.empty(shape[0], 3, 0, 0), layers, tokens, meta), reader


def load_terms(path: str | Path) -> Terms:
    """Read an invariants file written by `save_terms`; malformed files raise HurefError."""
    header, reader = terms_header(path)
    return Terms(reader.read("values"), header.layers, header.tokens, header.meta)

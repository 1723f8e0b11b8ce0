"""From an ArchSpec and a checkpoint to the weights of one layer, read lazily.

`layer_weights(model, i)` returns a `LayerWeights` whose matrices are `Matrix` handles: nothing
large is read until the invariant engine asks a handle for a block of rows, so memory grows
with one block, not with a layer or the model. Fused tensors (QKV, gate/up, 3-D experts) are
unfused here by row index maps (`LAYOUTS`), and grouped-query heads are described by
`n_heads` / `n_kv_heads` (query head h uses key/value head h // (n_heads // n_kv_heads)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from huref.architectures import CENTRED_KINDS, FFN, PLUS_ONE_KINDS, Norm, Proj
from huref.config import Dims, LatentDims, latent_dims
from huref.errors import HurefError

BLOCK_ELEMENTS = 1 << 24  # rows per block are chosen so a float32 block is ~64 MB
BLOCK_ROW_MULTIPLE = 256


# --- fused layouts: (part, dims, logical 2-D row count, expert) -> rows of the stored 2-D view ---

def _qkv_split(part, d, n_rows, e):
    q, kv = d.n_heads * d.head_dim, d.n_kv_heads * d.head_dim
    start = {"q": 0, "k": q, "v": q + kv}[part]
    return slice(start, start + (q if part == "q" else kv))


def _qkv_heads(part, d, n_rows, e):
    index = np.arange(n_rows).reshape(d.n_heads, 3, d.head_dim)
    return index[:, "qkv".index(part)].reshape(-1)


def _qkv_groups(part, d, n_rows, e):
    g = d.n_heads // d.n_kv_heads
    index = np.arange(n_rows).reshape(d.n_kv_heads, g + 2, d.head_dim)
    picked = {"q": index[:, :g], "k": index[:, g], "v": index[:, g + 1]}[part]
    return picked.reshape(-1)


def _qkv_mp4(part, d, n_rows, e):
    index = np.arange(n_rows).reshape(4, 3, n_rows // 12)  # [shard, (q, v, k), hidden / 4]
    return index[:, "qvk".index(part)].reshape(-1)


def _kv_split(part, d, n_rows, e):
    half = n_rows // 2  # key rows, then value rows (jetmoe's kv_proj)
    return slice(0, half) if part == "k" else slice(half, n_rows)


def _halves(part, d, n_rows, e):
    half = n_rows // 2
    return slice(0, half) if part == "gate" else slice(half, n_rows)


def _q_gate_heads(part, d, n_rows, e):
    index = np.arange(n_rows).reshape(d.n_heads, 2, -1)  # per head: query rows, then gate rows
    return index[:, ("q", "gate").index(part)].reshape(-1)


def _experts(part, d, n_rows, e):
    per = n_rows // d.n_experts
    return slice(e * per, (e + 1) * per)


def _experts_gate_up(part, d, n_rows, e):
    per = n_rows // d.n_experts
    half = per // 2
    start = e * per + (0 if part == "gate" else half)
    return slice(start, start + half)


def _experts_gate_up_interleaved(part, d, n_rows, e):
    per = n_rows // d.n_experts  # one expert's rows: gate, up, gate, up, ...
    return np.arange(e * per + (0 if part == "gate" else 1), (e + 1) * per, 2)


LAYOUTS = {
    "plain": lambda part, d, n_rows, e: slice(0, n_rows),
    "qkv_split": _qkv_split,
    "qkv_heads": _qkv_heads,
    "qkv_groups": _qkv_groups,
    "qkv_mp4": _qkv_mp4,
    "kv_split": _kv_split,
    "gate_up_split": _halves,
    "experts": _experts,
    "experts_gate_up": _experts_gate_up,
    "experts_gate_up_interleaved": _experts_gate_up_interleaved,
    "q_gate_heads": _q_gate_heads,
}


class Matrix:
    """A lazily read logical weight matrix [out, in] (HF orientation), yielding row blocks in `dtype`
    (float32, float64, or bfloat16 for products in bfloat16 with float32 accumulation).

    A `transposed` tensor is stored [in, out] (Conv1D) or [experts, in, out] (gpt-oss experts; with an
    expert layout also flat, [experts * in, out]: dbrx's w2): its logical view is [experts * out, in],
    read one expert's stored [in, out] at a time. Blocks are not checked finite here: whoever
    multiplies them checks the products (`huref.invariants`)."""

    def __init__(self, reader, name: str, proj: Proj, dims: Dims, expert: int = 0) -> None:
        self.reader, self.name, self.transposed = reader, name, proj.transposed
        self.dtype = torch.float32  # set by `layer_weights`
        stored = reader.shape(name)
        if len(stored) < 2:
            raise HurefError(f"tensor '{name}' should be a matrix but has shape {tuple(stored)}")
        if proj.transposed and proj.layout.startswith("experts") and len(stored) == 2:
            if dims.n_experts <= 0 or stored[0] % dims.n_experts:
                raise HurefError(f"tensor '{name}' has shape {tuple(stored)}, which does not fit "
                                 f"{dims.n_experts} experts")
            stored = (dims.n_experts, stored[0] // dims.n_experts, stored[1])  # flat [experts * in, out] (dbrx's w2)
        if proj.transposed:
            self.stored_out = stored[-1]
            n_rows, self.in_dim = math.prod(stored[:-2]) * stored[-1], stored[-2]
        else:
            n_rows, self.in_dim = math.prod(stored[:-1]), stored[-1]
        try:
            index = LAYOUTS[proj.layout](proj.part, dims, n_rows, expert)
        except ValueError:
            raise HurefError(f"tensor '{name}' has shape {tuple(stored)}, which does not fit the config") from None
        self.index = index
        self.out_dim = len(range(n_rows)[index]) if isinstance(index, slice) else len(index)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_dim, self.in_dim)

    def block_size(self) -> int:
        """Rows per block so that one float32 block stays near 64 MB, rounded down to a multiple of
        BLOCK_ROW_MULTIPLE: a matmul over an odd number of rows (1524, 3276) runs 15-30% slower."""
        rows = max(1, BLOCK_ELEMENTS // max(1, self.in_dim))
        return rows // BLOCK_ROW_MULTIPLE * BLOCK_ROW_MULTIPLE if rows >= BLOCK_ROW_MULTIPLE else rows

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Logical rows [start, stop) as `dtype` [stop - start, in] (as stored when that is bfloat16,
        untransposed, under `huref.readers.lineage_reads`), unchecked."""
        if not self.transposed:
            return self.reader.read(self.name, rows=self._stored(start, stop), dtype=self.dtype,
                                    keep_bfloat16=self.reader.bfloat16_blocks, check_finite=False)
        wanted = self._stored(start, stop)
        logical = np.arange(wanted.start, wanted.stop) if isinstance(wanted, slice) else np.asarray(wanted)
        experts = logical // self.stored_out
        out = torch.empty(len(logical), self.in_dim, dtype=self.dtype)
        for e in map(int, np.unique(experts)):
            at = np.nonzero(experts == e)[0]
            stored = self.reader.read(self.name, rows=slice(e * self.in_dim, (e + 1) * self.in_dim), dtype=self.dtype,
                                      check_finite=False)  # [in, out]
            out[torch.as_tensor(at)] = stored[:, torch.as_tensor(logical[at] - e * self.stored_out)].T
        return out

    def _stored(self, start: int, stop: int):
        if isinstance(self.index, slice):
            base = self.index.start
            return slice(base + start, base + stop)
        return self.index[start:stop]

    def blocks(self, multiple: int = 1):
        """Yield (start, stop, rows) over the whole matrix, one block at a time; every block but the
        last has a multiple of `multiple` rows."""
        step = max(multiple, self.block_size() // multiple * multiple)
        for start in range(0, self.out_dim, step):
            stop = min(self.out_dim, start + step)
            yield start, stop, self.rows(start, stop)


@dataclass
class NormWeights:
    """A norm to apply to rows: kind, scale (None when parameter-free), scope, epsilon."""

    kind: str
    weight: torch.Tensor | None
    scope: str
    eps: float

    def scale(self) -> torch.Tensor | None:
        if self.weight is None:
            return None
        return 1.0 + self.weight if self.kind in PLUS_ONE_KINDS else self.weight


@dataclass
class FFNWeights:
    """One expert (or the only FFN): gate (None for a plain FFN), up and down matrices."""

    up: Matrix
    down: Matrix
    gate: Matrix | None = None


@dataclass
class LatentWeights:
    """Multi-head latent attention of one layer. `q`: the matrix writing every head's query rows
    [n_heads * (nope + rope), q_rank] (q_b) or [.., hidden] (q_proj, when q_a is None); `kv_a`:
    [kv_rank + rope, hidden]; `kv_b`: [n_heads * (nope + v), kv_rank]; latent norms with 1/rms."""

    dims: LatentDims
    q: Matrix
    kv_a: Matrix
    kv_b: Matrix
    kv_a_norm: NormWeights
    q_a: Matrix | None = None
    q_a_norm: NormWeights | None = None


@dataclass
class LayerWeights:
    """Everything the invariant terms need from one layer (q, k, v are None when `mla` holds the
    attention; q and o are None when `q_experts` and `o_experts` hold them: a mixture of attention
    heads, each expert's query heads j = 0 .. n_heads - 1 reading key/value head j, n_heads = n_kv_heads)."""

    index: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    q: Matrix | None
    k: Matrix | None
    v: Matrix | None
    o: Matrix | None
    ffns: list[FFNWeights]
    attn_norm: NormWeights | None = None
    ffn_norm: NormWeights | None = None
    attn_post_norm: NormWeights | None = None
    ffn_post_norm: NormWeights | None = None
    q_norm: NormWeights | None = None
    k_norm: NormWeights | None = None
    mla: LatentWeights | None = None
    norm_residual: bool = False  # the stream carries the input norms' outputs (minimax): see huref.invariants
    # an earlier layer whose keys and values this one attends to (k, v and k_norm are that layer's), and that
    # layer's input norm, which the keys and values read; None: this layer's own
    kv_source: int | None = None
    kv_norm: NormWeights | None = None
    q_experts: list[Matrix] = field(default_factory=list)
    o_experts: list[Matrix] = field(default_factory=list)

    @property
    def queries(self) -> list[Matrix]:
        """The query matrices: q, or each attention expert's."""
        return self.q_experts or [self.q]

    @property
    def outputs(self) -> list[Matrix]:
        """The output matrices: o, or each attention expert's (in the order of `queries`)."""
        return self.o_experts or [self.o]

    def matrices(self) -> list[Matrix]:
        found = [m for m in (self.q, self.k, self.v, self.o, *self.q_experts, *self.o_experts) if m is not None]
        if self.mla is not None:
            found += [m for m in (self.mla.q_a, self.mla.q, self.mla.kv_a, self.mla.kv_b) if m is not None]
        for f in self.ffns:
            found += [m for m in (f.gate, f.up, f.down) if m is not None]
        return found


def _norm(model, candidates: tuple[Norm, ...], template_args: dict, width: int):
    for norm in candidates:
        if norm.name is None:
            return NormWeights(norm.kind, None, norm.scope, model.dims.eps)
        name = model.tensor_name(norm.name.format(**template_args))
        if model.reader.has(name):
            weight = model.reader.read(name).reshape(-1)
            if weight.numel() != width:
                raise HurefError(f"tensor '{name}' has {weight.numel()} entries, expected {width}")
            return NormWeights(norm.kind, weight, norm.scope, model.dims.eps)
    if candidates:
        first = candidates[0].name.format(**template_args)
        raise HurefError(f"tensor '{model.tensor_name(first)}' is missing from the checkpoint")
    return None


def _matrix(model, proj: Proj, args: dict, shape: tuple[int, int], expert: int = 0) -> Matrix:
    name = model.tensor_name(proj.name.format(**args))
    if not model.reader.has(name):
        raise HurefError(f"tensor '{name}' is missing from the checkpoint")
    matrix = Matrix(model.reader, name, proj, model.dims, expert)
    if matrix.shape != shape:
        raise HurefError(f"tensor '{name}' has shape {matrix.shape} as [out, in], expected {shape}")
    return matrix


def _ffn_weights(model, ffn: FFN, args: dict, expert: int = 0) -> FFNWeights:
    d = model.dims.hidden
    up_name = model.tensor_name(ffn.up.name.format(**args))
    if not model.reader.has(up_name):
        raise HurefError(f"tensor '{up_name}' is missing from the checkpoint")
    inner = Matrix(model.reader, up_name, ffn.up, model.dims, expert).out_dim
    return FFNWeights(
        up=_matrix(model, ffn.up, args, (inner, d), expert),
        down=_matrix(model, ffn.down, args, (d, inner), expert),
        gate=_matrix(model, ffn.gate, args, (inner, d), expert) if ffn.gate else None,
    )


def _ffn_list(model, ffns: tuple[FFN, ...], args: dict) -> list[FFNWeights]:
    for ffn in ffns:
        probe = model.tensor_name(ffn.up.name.format(**args, e=0))
        if not model.reader.has(probe):
            continue
        if not ffn.experts:
            return [_ffn_weights(model, ffn, args)]
        if model.dims.n_experts <= 0:
            raise HurefError("config.json declares no experts for a mixture-of-experts model")
        experts = [_ffn_weights(model, ffn, {**args, "e": e}, e) for e in range(model.dims.n_experts)]
        if ffn.shared is not None:
            experts.append(_ffn_weights(model, ffn.shared, args))
        return experts
    first = model.tensor_name(ffns[0].up.name.format(**args, e=0))
    raise HurefError(f"tensor '{first}' is missing from the checkpoint")


def layer_weights(model, i: int, dtype: torch.dtype = torch.float32) -> LayerWeights:
    """Describe layer `i` of `model` (a `huref.sources.Model`): matrices as lazy handles yielding
    blocks in `dtype` (`Matrix`), norms read."""
    d, spec = model.dims, model.arch
    args = {"i": i}
    if i not in model.plan.ffn_block:
        raise HurefError(f"{model.name}: layer {i} is not an attention layer")
    j = model.plan.ffn_block[i]   # the FFN's layer: i, or a single-block model's next FFN block
    if j is None:
        raise HurefError(f"{model.name}: no FFN block follows attention block {i}, so it carries no FFN term")

    def local(proj: Proj, layer: int = i) -> Proj:
        return Proj(spec.layer.format(i=layer) + proj.name, proj.layout, proj.part, proj.transposed)

    def local_norms(norms, layer: int = i):
        return tuple(Norm(spec.layer.format(i=layer) + n.name if n.name else None, n.kind, n.scope) for n in norms)

    def local_ffn(ffn: FFN) -> FFN:
        shared = local_ffn(ffn.shared) if ffn.shared else None
        gate = local(ffn.gate, j) if ffn.gate else None
        return FFN(local(ffn.up, j), local(ffn.down, j), gate, ffn.experts, shared)

    q_out, kv_out = d.n_heads * d.head_dim, d.n_kv_heads * d.head_dim
    q_width = d.head_dim if spec.q_norm and spec.q_norm[0].scope == "head" else q_out
    k_width = d.head_dim if spec.k_norm and spec.k_norm[0].scope == "head" else kv_out
    mla, n_heads, q_experts, o_experts = None, d.n_heads, [], []
    if spec.mla is not None:
        mla = _latent_weights(model, spec.mla, local, local_norms, args)
        q = k = v = None
        o_in = d.n_heads * mla.dims.v
    elif spec.attn_experts is not None:  # each expert: queries for every key/value head, and its output
        experts, n_heads = spec.attn_experts, d.n_kv_heads
        q_experts = [_matrix(model, local(experts.q), args, (kv_out, d.hidden), e) for e in range(d.n_experts)]
        o_experts = [_matrix(model, local(experts.o), args, (d.hidden, kv_out), e) for e in range(d.n_experts)]
        q = None
    else:
        q = _matrix(model, local(spec.q), args, (q_out, d.hidden))
        o_in = q_out
    src = model.plan.kv_source[i]   # keys and values: this layer's, or an earlier one's
    if spec.mla is None:
        k = _matrix(model, local(spec.k, src), {"i": src}, (kv_out, d.hidden))
        v = _matrix(model, local(spec.v, src), {"i": src}, (kv_out, d.hidden))
    norm_layers = model.plan.qk_norm
    weights = LayerWeights(
        index=i,
        n_heads=n_heads,
        n_kv_heads=d.n_kv_heads,
        head_dim=d.head_dim,
        q=q,
        k=k,
        v=v,
        o=_matrix(model, local(spec.o), args, (d.hidden, o_in)) if spec.o is not None else None,
        q_experts=q_experts,
        o_experts=o_experts,
        mla=mla,
        ffns=_ffn_list(model, tuple(local_ffn(f) for f in spec.ffn), {"i": j}),
        attn_norm=_norm(model, local_norms(spec.attn_norm), args, d.hidden),
        ffn_norm=_norm(model, local_norms(spec.ffn_norm, j), {"i": j}, d.hidden),
        attn_post_norm=_norm(model, local_norms(spec.attn_post_norm), args, d.hidden),
        ffn_post_norm=_norm(model, local_norms(spec.ffn_post_norm, j), {"i": j}, d.hidden),
        q_norm=_norm(model, local_norms(spec.q_norm), args, q_width) if i in norm_layers else None,
        k_norm=_norm(model, local_norms(spec.k_norm, src), {"i": src}, k_width) if src in norm_layers else None,
        norm_residual=spec.norm_residual,
        kv_source=None if src == i else src,
        kv_norm=None if src == i else _norm(model, local_norms(spec.attn_norm, src), {"i": src}, d.hidden),
    )
    for matrix in weights.matrices():
        matrix.dtype = dtype
    return weights


def _latent_weights(model, spec, local, local_norms, args: dict) -> LatentWeights:
    """The MLA matrices and latent norms of one layer, shapes checked against config.json."""
    d, m = model.dims, latent_dims(model.config)
    q_rows = d.n_heads * (m.nope + m.rope)
    q_a = q_a_norm = None
    if m.q_rank:
        q_a = _matrix(model, local(spec.q_a), args, (m.q_rank, d.hidden))
        q_a_norm = replace(_norm(model, local_norms((spec.q_a_norm,)), args, m.q_rank), eps=spec.norm_eps)
        q = _matrix(model, local(spec.q_b), args, (q_rows, m.q_rank))
    else:
        q = _matrix(model, local(spec.q), args, (q_rows, d.hidden))
    return LatentWeights(
        dims=m,
        q=q,
        kv_a=_matrix(model, local(spec.kv_a), args, (m.kv_rank + m.rope, d.hidden)),
        kv_b=_matrix(model, local(spec.kv_b), args, (d.n_heads * (m.nope + m.v), m.kv_rank)),
        kv_a_norm=replace(_norm(model, local_norms((spec.kv_a_norm,)), args, m.kv_rank), eps=spec.norm_eps),
        q_a=q_a,
        q_a_norm=q_a_norm,
    )


def embedding_rows(model, ids: list[int]) -> torch.Tensor:
    """Residual-stream rows [n, hidden] of the given token ids: embedding rows, through the input
    projection (OPT) if any, plus the mean of the embeddings every input adds (learned positions,
    token types), then the embedding norm's scale (bloom, bert; bias dropped) if any."""
    spec = model.arch
    rows = model.reader.read(model.tensor_name(spec.embed), rows=ids)
    if spec.embed_proj and model.reader.has(model.tensor_name(spec.embed_proj)):
        proj = model.reader.read(model.tensor_name(spec.embed_proj))
        rows = rows @ proj.T
    for name, first_row in spec.added_embeds:
        added = model.reader.read(model.tensor_name(name))
        if added.dim() != 2 or added.shape[1] != rows.shape[1] or added.shape[0] <= first_row:
            raise HurefError(f"tensor '{model.tensor_name(name)}' has shape {tuple(added.shape)}, "
                             f"which does not fit embedding rows of width {rows.shape[1]}")
        rows = rows + added[first_row:].mean(0)
    norm = _norm(model, spec.embed_norm, {}, rows.shape[1])
    if norm is not None:
        rows = apply_norm(norm, rows)
    if rows.shape[1] != model.dims.hidden:
        raise HurefError(f"embedding width {rows.shape[1]} does not match hidden size {model.dims.hidden}")
    return rows


def apply_norm(norm: NormWeights | None, rows: torch.Tensor, heads: int = 1) -> torch.Tensor:
    """Normalize each row (or each head's slice of it, scope 'head') as the model does, with the
    norm's scale and without its bias."""
    if norm is None:
        return rows
    n = rows.shape[0]
    x = rows.reshape(n, heads, -1) if norm.scope == "head" else rows
    if norm.kind in CENTRED_KINDS:
        x = x - x.mean(-1, keepdim=True)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    scale = norm.scale()
    if scale is not None:
        x = x * scale.to(x)
    return x.reshape(n, -1)

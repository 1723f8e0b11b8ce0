"""Lineage: which layers of model B come from which layers of model A, over the whole depth.

The invariant terms (`huref.invariants`) of every layer of both models are compared pairwise on
their common probe tokens: map[i, j] is the cosine of the centred (standardized) terms of A's layer
i and B's layer j, per term ([3, La, Lb], `term_maps`) and averaged over the terms ([La, Lb],
`layer_map`; the cosine of the concatenated standardized terms). The terms are n×n over tokens, so
models of different width, head count or depth compare.

`align_layers` reads the map as a sequence alignment: each layer of B is either traced to one layer
of A or called foreign (from neither). The path runs forward through A; skipping layers of A (a
dropped layer), staying on one (a duplicate) or jumping back (a duplicated block, SOLAR-style) costs
a penalty, and a cell below the per-cell threshold is better called foreign. A frankenmerge shows as
a path that covers only the layers taken from A.

`lineage_statistic` turns map and path into one number: the mean similarity of the aligned cells
(foreign layers count as 0) minus the mean of every cell off the path. The off-path cells are
pairs of layers that do not correspond, a null built into each map. The statistic is calibrated
against independently trained pairs in `huref.statistics`.

Cost: one layer's terms take about n·d·(4d + 3·ffn) flops (d: hidden size, ffn: FFN width; less
with grouped-query attention) plus one pass over the layer's weight bytes (read; the finite check
rides on the products).
`huref.comparison.lineage_terms` reads them through `huref.readers.lineage_reads`: no SHA-256 (these
terms are never written) and weights stored in bfloat16 multiplied as they are, with float32
accumulation (no widening pass; 2.7x the float32 matmul rate on an AVX-512 BF16 CPU). At n =
LINEAGE_TOKENS = 256 two 7B-shaped checkpoints (d 4096, ffn 11008, 32 layers) take 2·32·256·4096·49408
≈ 3.3e12 flops: about a minute on 2 cores (docs/PERFORMANCE.md). The null panel separates the zoo as
well at 256 tokens as at 512 (docs/RESULTS.md). The verdict of compare, verify and report reads at
most VERDICT_LAYERS evenly spaced layers of each model (`verdict_stride`; every layer of the zoo's
models): on two 7B-shaped checkpoints the default compare measured 1.08x the two-layer 4096-token
comparison alone; `huref lineage` reads every layer (`stride` 1).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from huref.errors import HurefError
from huref.invariants import TERM_NAMES, Terms, invariant_terms
from huref.similarity import common_tokens

LINEAGE_TOKENS = 256
LINEAGE_STRIDE = 1
# The lineage verdict of compare, verify and report reads at most this many evenly spaced layers of
# each model (`verdict_stride`): every layer of the zoo's models, every 4th of a 32-layer model.
VERDICT_LAYERS = 8
# Alignment costs, in units of the map's cosine: a cell must beat CELL_THRESHOLD to be traced rather
# than called foreign; leaving the diagonal (skip, repeat, jump back) costs the penalties below.
CELL_THRESHOLD = 0.15
SKIP_PENALTY = 0.05
REPEAT_PENALTY = 0.05
RESTART_PENALTY = 0.1


def whole_depth_terms(
    model,
    n_tokens: int = LINEAGE_TOKENS,
    stride: int = LINEAGE_STRIDE,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = None,
) -> Terms:
    """Invariant terms of every `stride`-th layer (`depth_layers`) of `model` (a `huref.sources.Model`) over
    n_tokens probe tokens: `Terms` with values [ceil(L/stride), 3, n, n]. Maps and alignments of
    strided terms index positions in `terms.layers`, not layer numbers."""
    return invariant_terms(model, layers=list(depth_layers(model, stride)), n_tokens=n_tokens, device=device,
                           dtype=dtype, progress=progress)


def cross_depth_terms(
    donor,
    host,
    n_tokens: int = LINEAGE_TOKENS,
    stride: int = LINEAGE_STRIDE,
    progress: Callable[[str], None] | None = None,
) -> Terms:
    """Cross terms: the whole-depth terms of `donor`'s layers read on `host`'s embedding rows and tokens
    (both `huref.sources.Model`, same hidden size), [ceil(L_donor/stride), 3, n, n].

    A layer pasted from the donor into the host without a rewrite (a frankenmerge) computes, in the
    host, what the donor's layer computes on the host's rows, so its host terms match these cross terms
    (`layer_map(host terms, cross terms)`), where the host's own terms of it no longer match the donor's.
    Holds only while the host's rows and the donor's layers share one residual basis: any
    function-preserving rewrite of either defeats it (a rotation, permutation or per-channel rescaling
    of the donor as compared, of the whole merged model, or of the pasted layers alone), as does a
    fitted alignment of the donor to the host. Between models whose bases are unrelated the residual
    bases are unrelated, and the map stays at noise."""
    return invariant_terms(donor, layers=list(depth_layers(donor, stride)), n_tokens=n_tokens, progress=progress,
                           rows_from=host)


def depth_layers(model, stride: int = LINEAGE_STRIDE) -> tuple[int, ...]:
    """The layers whole-depth terms read: every `stride`-th layer that carries the terms (every layer
    but a hybrid model's non-attention ones)."""
    if stride < 1:
        raise HurefError("--stride must be at least 1")
    return model.plan.term_layers[::stride]


def verdict_stride(model, max_layers: int = VERDICT_LAYERS) -> int:
    """The stride at which whole-depth terms read at most `max_layers` of `model`'s layers (1 when it
    has no more)."""
    return max(1, math.ceil(len(depth_layers(model)) / max_layers))


UNIT_ROWS_BYTES = 1 << 24  # float64 working set of `unit_rows`: as many layers at a time as fit


def unit_rows(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """[L, 3, N, N] terms restricted to tokens `idx` -> [L, 3, m²] float32 rows, each standardized and
    scaled to unit norm (so a dot product of two rows is the cosine of the centred terms). Centred then
    scaled to unit norm in float64 (what standardizing first gives), as many layers at a time as fit
    UNIT_ROWS_BYTES (small maps in one step, 4096-token terms one layer at a time)."""
    n_layers, n_terms, m = values.shape[0], values.shape[1], len(idx)
    rows = torch.empty(n_layers, n_terms, m * m)
    step = max(1, UNIT_ROWS_BYTES // (8 * n_terms * m * m))
    every = m == values.shape[2] and bool((idx == torch.arange(m)).all())  # all tokens, in order: no gather
    for first in range(0, n_layers, step):
        z = values[first:first + step]
        z = (z if every else z[:, :, idx][:, :, :, idx]).double()
        z = z.reshape(z.shape[0], n_terms, m * m)  # [l, 3, m, m] -> [l, 3, m²]
        z = z - z.mean(2, keepdim=True)
        norm = z.norm(dim=2, keepdim=True)
        rows[first:first + step] = (z / torch.where(norm > 0, norm, torch.ones_like(norm))).float()
    return rows


def term_maps(a: Terms, b: Terms) -> torch.Tensor:
    """Per-term layer maps [3, La, Lb]: cosine of the centred terms of A's layer i and B's layer j on
    the common tokens (HurefError when they share too few)."""
    ia, ib = common_tokens(a, b)
    ra, rb = unit_rows(a.values, ia), unit_rows(b.values, ib)
    return torch.einsum("itk,jtk->tij", ra, rb).double().clamp(-1.0, 1.0)


def layer_map(a: Terms, b: Terms) -> torch.Tensor:
    """The layer map [La, Lb]: per-layer-pair ICS, the mean of the three term maps."""
    return term_maps(a, b).mean(0)


def align_layers(
    similarity: torch.Tensor,
    threshold: float = CELL_THRESHOLD,
    skip: float = SKIP_PENALTY,
    repeat: float = REPEAT_PENALTY,
    restart: float = RESTART_PENALTY,
) -> list[tuple[int | None, int]]:
    """The best alignment of B's layers onto A's in a map [La, Lb]: [(i or None, j) for j in 0..Lb-1].

    Maximizes Σ over traced layers of (map[i, j] - threshold) minus penalties: tracing B's layer j to
    A's layer i right after A's layer i' costs nothing when i = i' + 1, `skip` when i > i' + 1 (layers
    of A dropped, or B starting past A's first layer), `repeat` when i = i' (a duplicated layer) and
    `restart` when i < i' (a block repeated). A layer of B traced to nothing (None) is foreign; the
    last traced layer of A carries across foreign ones. Dynamic programming, O(Lb·La²).
    """
    la, lb = similarity.shape
    gain = similarity.double() - threshold
    prev = torch.arange(-1, la).unsqueeze(1)  # [La+1, 1]: last traced layer i' (-1: none yet)
    step = torch.arange(la).unsqueeze(0)  # [1, La]: next traced layer i
    cost = torch.where(step == prev + 1, 0.0,
                       torch.where(step > prev + 1, skip, torch.where(step == prev, repeat, restart))).double()
    # best[k]: best score so far with A's layer k - 1 the last traced (k = 0: none traced yet)
    best = torch.full((la + 1,), float("-inf"), dtype=torch.float64)
    best[0] = 0.0
    back = []  # per j: (traced-from state [La], foreign flag [La+1])
    for j in range(lb):
        candidates = best.unsqueeze(1) - cost  # [La+1, La]: from state k to trace layer i
        from_state = candidates.argmax(0)
        traced = candidates.max(0).values + gain[:, j]
        # a foreign layer keeps the state; tracing lands in state i + 1
        new = best.clone()
        new[1:] = torch.maximum(best[1:], traced)
        back.append((from_state, torch.cat([torch.ones(1, dtype=torch.bool), best[1:] >= traced])))
        best = new
    state = int(best.argmax())
    path: list[tuple[int | None, int]] = []
    for j in range(lb - 1, -1, -1):
        from_state, foreign = back[j]
        if foreign[state]:
            path.append((None, j))
        else:
            path.append((state - 1, j))
            state = int(from_state[state - 1])
    return path[::-1]


def lineage_statistic(similarity: torch.Tensor, alignment: list[tuple[int | None, int]]) -> float:
    """Mean of the aligned cells over all of B's layers (a foreign layer counts 0) minus the mean of
    the cells off the path; 0 when every cell is on the path."""
    on = torch.zeros_like(similarity, dtype=torch.bool)
    for i, j in alignment:
        if i is not None:
            on[i, j] = True
    off = similarity[~on]
    traced = similarity[on].sum() / len(alignment)
    return float(traced - off.mean()) if off.numel() else 0.0


def lineage(a: Terms, b: Terms, panel: dict | None = None) -> dict:
    """Everything `huref lineage` reports for terms of A and B (e.g. `whole_depth_terms`):
    {"map": [La][Lb], "term_maps": {qk, vo, ffn: [La][Lb]}, "layers_a", "layers_b",
     "alignment": [[layer of A or None, layer of B]], "statistic": float,
     "z", "p_value", "verdict", "fpr" (from `huref.statistics.verdict_from_statistic`, against `panel`)}.
    Alignment pairs are given as the models' own layer indices (a.layers / b.layers)."""
    from huref.statistics import verdict_from_statistic

    maps = term_maps(a, b)
    combined = maps.mean(0)
    path = align_layers(combined)
    statistic = lineage_statistic(combined, path)
    return {
        "map": combined.tolist(),
        "term_maps": {name: maps[t].tolist() for t, name in enumerate(TERM_NAMES)},
        "layers_a": list(a.layers),
        "layers_b": list(b.layers),
        "alignment": [[None if i is None else a.layers[i], b.layers[j]] for i, j in path],
        "statistic": statistic,
        **verdict_from_statistic(statistic, panel),
    }


def _colour(value: float) -> tuple[int, int, int]:
    """A dark-blue -> teal -> yellow ramp for a value in [0, 1] (viridis-like)."""
    anchors = ((0.0, (68, 1, 84)), (0.33, (49, 104, 142)), (0.66, (53, 183, 121)), (1.0, (253, 231, 37)))
    value = min(1.0, max(0.0, value))
    for (x0, c0), (x1, c1) in zip(anchors, anchors[1:]):
        if value <= x1:
            t = (value - x0) / (x1 - x0)
            return tuple(round(u + t * (v - u)) for u, v in zip(c0, c1))
    return anchors[-1][1]


MAP_SIDE = 560  # pixels the cells of a layer map take along its longer side (at most MAP_CELL each)
MAP_CELL = 44
VALUE_CELL = 34  # cells at least this large carry their value as text
ALIGNED, FOREIGN = (230, 30, 30), (150, 150, 150)


def _every(cell: int, spacing: int = 18) -> int:
    """Label every k-th row or column so that labels are at least `spacing` pixels apart."""
    return max(1, math.ceil(spacing / cell))


def lineage_image(similarity, alignment: list[tuple[int | None, int]], labels: tuple[str, str] = ("A", "B"),
                  vmin: float = 0.0, vmax: float = 1.0, layers_a: list[int] | None = None,
                  layers_b: list[int] | None = None):
    """A PIL heatmap of a layer map [La, Lb]: rows A's layers, columns B's, each labelled with its
    layer index (`layers_a`, `layers_b`: the layers read; default 0..L-1), the model names
    (`labels`) on the axes, a colour bar from vmin to vmax, each cell's value written in it when
    the cells are large enough, the aligned cells outlined in red and columns traced to neither
    marked with a grey bar. `alignment` holds positions in the map (as `align_layers` returns them)."""
    from PIL import Image, ImageDraw, ImageFont

    values = torch.as_tensor(similarity, dtype=torch.float64)
    la, lb = values.shape
    layers_a = list(range(la)) if layers_a is None else list(layers_a)
    layers_b = list(range(lb)) if layers_b is None else list(layers_b)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    cell = max(8, min(MAP_CELL, MAP_SIDE // max(la, lb)))
    row_label = max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(str(i), font=font) for i in layers_a)
    left, top = int(row_label) + 34, 78
    bar_x = left + lb * cell + 24
    width = max(bar_x + 70, left + 420)
    height = top + max(la * cell, 160) + 56
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), f"columns: layers of B = {labels[1]}", fill="black", font=font)
    draw.text((left, 24), f"rows: layers of A = {labels[0]}", fill="black", font=font)
    for i in range(la):
        for j in range(lb):
            value = float(values[i, j])
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1]
            draw.rectangle(box, fill=_colour((value - vmin) / (vmax - vmin)))
            if cell >= VALUE_CELL:
                ink = "black" if (value - vmin) / (vmax - vmin) > 0.6 else "white"
                draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), f"{value:.2f}", fill=ink, font=small,
                          anchor="mm")
    for i, j in alignment:
        if i is None:
            draw.rectangle([left + j * cell, top - 8, left + (j + 1) * cell - 1, top - 3], fill=FOREIGN)
        else:
            draw.rectangle([left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1],
                           outline=ALIGNED, width=max(1, cell // 10))
    for i in range(0, la, _every(cell)):
        draw.text((left - 6, top + i * cell + cell / 2), str(layers_a[i]), fill="black", font=font, anchor="rm")
    for j in range(0, lb, _every(cell, 26)):
        draw.text((left + j * cell + cell / 2, top - 12), str(layers_b[j]), fill="black", font=font, anchor="mb")
    bar_height = max(la * cell, 160)
    for y in range(bar_height):
        draw.line([bar_x, top + y, bar_x + 14, top + y], fill=_colour(1 - y / max(1, bar_height - 1)))
    for fraction in (0.0, 0.5, 1.0):
        y = top + round((1 - fraction) * (bar_height - 1))
        draw.text((bar_x + 20, y), f"{vmin + fraction * (vmax - vmin):g}", fill="black", font=font, anchor="lm")
    draw.text((left, top + bar_height + 10), "cell: similarity (ICS) of A's and B's layer; red outline: B's layer "
              "traced to A's;", fill="black", font=small)
    draw.text((left, top + bar_height + 26), "grey bar over a column: B's layer traced to neither", fill="black",
              font=small)
    return image

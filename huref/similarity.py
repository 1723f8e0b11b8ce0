"""Similarities between two models: ICS on invariant terms, PCS on raw parameters, and the verdict.

ICS (invariant-terms cosine similarity, as in the paper): standardize each n×n term (zero mean,
unit std), flatten, concatenate, take the cosine. Before that, the two term sets are restricted to
the token keys they share and put in the same order, so models whose vocabularies were extended
or reordered are compared on the same probe tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from huref.errors import HurefError
from huref.invariants import TERM_NAMES, Terms

MIN_COMMON_TOKENS = 16
THRESHOLDS_FILE = Path(__file__).with_name("data") / "thresholds.json"


STAT_ROWS = 256  # rows of an n×n term turned into float64 at a time


def standardize(t: torch.Tensor) -> torch.Tensor:
    """z-score over the whole tensor (float64): zero mean, unit standard deviation."""
    t = t.double()
    std = t.std()
    return (t - t.mean()) / (std if std > 0 else 1.0)


def standardized_sums(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(za·zb, za·za, zb·zb) of the standardized (`standardize`) a and b, two same-shaped matrices,
    accumulated in float64 over blocks of STAT_ROWS rows: no full-size copy is made."""
    sum_a = sum_b = 0.0
    for start in range(0, a.shape[0], STAT_ROWS):
        sum_a += float(a[start:start + STAT_ROWS].double().sum())
        sum_b += float(b[start:start + STAT_ROWS].double().sum())
    mean_a, mean_b = sum_a / a.numel(), sum_b / b.numel()
    ab = aa = bb = 0.0
    for start in range(0, a.shape[0], STAT_ROWS):
        da = a[start:start + STAT_ROWS].double() - mean_a
        db = b[start:start + STAT_ROWS].double() - mean_b
        ab, aa, bb = ab + float((da * db).sum()), aa + float((da * da).sum()), bb + float((db * db).sum())
    # standardizing divides by std = sqrt(aa / (N - 1)): scale the sums accordingly (zero spread stays 0)
    n1 = a.numel() - 1
    scale_a, scale_b = (n1 / aa if aa > 0 else 1.0), (n1 / bb if bb > 0 else 1.0)
    return ab * (scale_a * scale_b) ** 0.5, aa * scale_a, bb * scale_b


def _cosine_of_sums(dot: float, norm_a: float, norm_b: float) -> float:
    denom = (norm_a * norm_b) ** 0.5
    return max(-1.0, min(1.0, dot / denom)) if denom > 0 else 0.0


def common_tokens(a: Terms, b: Terms) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (ia, ib) [m] of the token keys both term sets share, in a's order; raises HurefError
    when the sides selected tokens differently or share fewer than MIN_COMMON_TOKENS."""
    strategies = {a.meta.get("token_strategy"), b.meta.get("token_strategy")}
    if len(strategies) > 1:
        raise HurefError("the two sides selected tokens differently (by string and by id); "
                         "give both a tokenizer or neither")
    where_b = {key: i for i, key in enumerate(b.tokens)}
    pairs = [(i, where_b[key]) for i, key in enumerate(a.tokens) if key in where_b]
    if len(pairs) < MIN_COMMON_TOKENS:
        raise HurefError(f"the two models share only {len(pairs)} probe tokens (need {MIN_COMMON_TOKENS})")
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def _same_depth(a: Terms, b: Terms) -> None:
    if len(a.layers) != len(b.layers):
        raise HurefError(f"cannot compare terms of {len(a.layers)} layers with terms of {len(b.layers)} layers")


def _restricted(term: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """An n×n term restricted to the rows and columns in index (no copy when index is all of it, in order)."""
    if len(index) == term.shape[0] and bool((index == torch.arange(len(index))).all()):
        return term
    return term[index][:, index]


def align(a: Terms, b: Terms) -> tuple[torch.Tensor, torch.Tensor]:
    """Both term tensors restricted to their common token keys, in a's order: ([L,3,m,m], [L,3,m,m])."""
    _same_depth(a, b)
    ia, ib = common_tokens(a, b)
    return a.values[:, :, ia][:, :, :, ia], b.values[:, :, ib][:, :, :, ib]


def compare_terms(a: Terms, b: Terms) -> dict:
    """ICS overall, per term and per layer, on the common tokens.

    Each (layer, term) pair is restricted to the common tokens, standardized and reduced to three
    sums (a·b, a·a, b·b) block by block (`standardized_sums`), so memory holds little beyond the
    terms themselves; every cosine is then a ratio of sums.

    Returns {"ics": float, "terms": {"qk", "vo", "ffn": float}, "layers": [float per layer],
    "n_common": int}.
    """
    _same_depth(a, b)
    ia, ib = common_tokens(a, b)
    n_layers = len(a.layers)
    sums = torch.zeros(n_layers, 3, 3, dtype=torch.float64)  # [layer, term, (a·b, a·a, b·b)]
    for l in range(n_layers):
        for t in range(3):
            sums[l, t] = torch.tensor(standardized_sums(_restricted(a.values[l, t], ia), _restricted(b.values[l, t], ib)),
                                      dtype=torch.float64)
    return {
        "ics": _cosine_of_sums(*sums.sum((0, 1)).tolist()),
        "terms": {name: _cosine_of_sums(*sums[:, t].sum(0).tolist()) for t, name in enumerate(TERM_NAMES)},
        "layers": [_cosine_of_sums(*sums[l].sum(0).tolist()) for l in range(n_layers)],
        "n_common": len(ia),
    }


def pcs(model_a, model_b, layers: list[int]) -> float | None:
    """Parameter cosine similarity (the paper's naive baseline) over the same-named, same-shaped
    tensors of the given layers and the token embedding; None when no tensor matches."""
    names_b = set(model_b.reader.names())
    prefixes = [model_a.tensor_name(model_a.arch.layer.format(i=i)) for i in layers]
    embed = model_a.tensor_name(model_a.arch.embed)
    dot = norm_a = norm_b = 0.0
    matched = False
    for name in model_a.reader.names():
        if not (name == embed or any(name.startswith(p) for p in prefixes)):
            continue
        if name not in names_b or model_a.reader.shape(name) != model_b.reader.shape(name):
            continue
        shape = model_a.reader.shape(name)
        whole = len(shape) <= 1  # a vector, or a scalar (apertus' activation parameters): read at once
        n_rows = 1 if whole else max(1, torch.Size(shape[:-1]).numel())
        step = 1 if whole else max(1, (1 << 22) // shape[-1])
        for start in range(0, n_rows, step):
            rows = None if whole else slice(start, start + step)
            ta, tb = model_a.reader.read(name, rows).double(), model_b.reader.read(name, rows).double()
            dot += float((ta * tb).sum())
            norm_a += float((ta * ta).sum())
            norm_b += float((tb * tb).sum())
        matched = True
    if not matched or norm_a == 0 or norm_b == 0:
        return None
    return dot / (norm_a * norm_b) ** 0.5


def thresholds() -> dict:
    """The verdict thresholds calibrated in docs/RESULTS.md (huref/data/thresholds.json)."""
    with open(THRESHOLDS_FILE, encoding="utf-8") as f:
        return json.load(f)


def judge_ics(ics: float, a_meta: dict, b_meta: dict) -> dict:
    """The ICS verdict of two sets of terms (their metadata says how their layers were chosen):
    {"verdict", "decided_by": "ics panel"|"thresholds", "threshold" (the smallest same-base ICS)} and,
    against the ICS null panel, "z", "p_value", "fpr". The panel (`huref.statistics.ICS_PANEL_FILE`)
    was calibrated on the default layers, so it judges only terms both read by the default rule;
    terms at given layers keep the fixed thresholds (calibrated on the paper's last two layers)."""
    from huref.invariants import DEFAULT_RULE
    from huref.statistics import ICS_PANEL_FILE, null_panel, statistic_at, verdict_from_statistic

    if a_meta.get("layer_choice") == DEFAULT_RULE == b_meta.get("layer_choice"):
        panel = null_panel(ICS_PANEL_FILE)
        return {**verdict_from_statistic(ics, panel), "decided_by": "ics panel", "threshold": statistic_at(panel)}
    return {"verdict": verdict(ics), "decided_by": "thresholds", "threshold": thresholds()["same_base"]}


def verdict(ics: float, t: dict | None = None) -> str:
    """'same-base' at or above the same-base threshold, 'unrelated' at or below the unrelated one,
    'inconclusive' between; t: {"same_base", "unrelated"}, by default `thresholds()`."""
    t = t if t is not None else thresholds()
    if ics >= t["same_base"]:
        return "same-base"
    if ics <= t["unrelated"]:
        return "unrelated"
    return "inconclusive"

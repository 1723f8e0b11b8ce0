"""Similarities between the zoo's models, computed once per pair from cached invariant terms.

The ICS of any subset of layers and terms is the mean of the per-(layer, term) cosines: every
standardized n×n matrix has the same norm, so the cosine of their concatenation is the plain mean
of their cosines. One [L, 3] cosine table per pair therefore answers every "which layers / which
terms" question; `check_against_engine` confirms the identity against huref.similarity.compare_terms.
"""

import torch

from huref.invariants import DEFAULT_LAYERS, Terms, default_layer_order
from huref.similarity import align, compare_terms


def last_layers(terms: Terms, k: int) -> Terms:
    """`terms` restricted to its last `k` layers."""
    return Terms(terms.values[-k:], terms.layers[-k:], terms.tokens, terms.meta)


def default_positions(n_layers: int) -> list[int]:
    """The layers huref reads by default in a model of n_layers (all attention, none inert): its rule."""
    return sorted(default_layer_order(list(range(n_layers)))[:DEFAULT_LAYERS])


def default_layers(terms: Terms) -> Terms:
    """Whole-depth `terms` restricted to the layers huref reads by default (`default_positions`)."""
    keep = default_positions(len(terms.layers))
    return Terms(terms.values[keep], [terms.layers[i] for i in keep], terms.tokens, terms.meta)


def first_tokens(terms: Terms, n: int) -> Terms:
    """`terms` restricted to its first `n` selected tokens: exactly what invariant_terms(n_tokens=n)
    returns, since the selection is a hash ranking and each entry depends only on its two tokens."""
    return Terms(terms.values[:, :, :n, :n], terms.layers, terms.tokens[:n], terms.meta)


def cosine_table(a: Terms, b: Terms) -> tuple[torch.Tensor, int]:
    """([k, 3] cosines of the standardized terms of the last k = min(La, Lb) layers, aligned from the
    end; number of common tokens). The cosine of two standardized matrices is their Pearson
    correlation, computed here directly (centre, then cosine) to spare the division passes."""
    k = min(len(a.layers), len(b.layers))
    a, b = last_layers(a, k), last_layers(b, k)
    va, vb = (a.values, b.values) if a.tokens == b.tokens else align(a, b)
    table = torch.zeros(k, 3, dtype=torch.float64)
    for layer in range(k):
        for term in range(3):
            x, y = va[layer, term].flatten().double(), vb[layer, term].flatten().double()
            x, y = x - x.mean(), y - y.mean()
            denominator = x.norm() * y.norm()
            table[layer, term] = x @ y / denominator if denominator > 0 else 0.0
    return table, int(va.shape[2])


def ics(table: torch.Tensor, layers=None, terms=None) -> float:
    """The ICS over the chosen rows (layers, counted in the table) and columns (terms) of a cosine table."""
    part = table if layers is None else table[layers]
    part = part if terms is None else part[:, terms]
    return float(part.mean())


def check_against_engine(a: Terms, b: Terms) -> float:
    """|our ICS from the cosine table - huref's compare_terms ICS| on the default layers."""
    table, _ = cosine_table(default_layers(a), default_layers(b))
    engine = compare_terms(default_layers(a), default_layers(b))
    return abs(ics(table) - engine["ics"])

"""Similarities between the zoo's models, computed once per pair from cached invariant terms.

The ICS of any subset of layers and terms is the mean of the per-(layer, term) cosines: every
standardized n×n matrix has the same norm, so the cosine of their concatenation is the plain mean
of their cosines. One [L, 3] cosine table per pair therefore answers every "which layers / which
terms" question; `check_against_engine` confirms the identity against huref.similarity.compare_terms.
"""

import torch

from huref.invariants import Terms
from huref.similarity import align, compare_terms


def last_layers(terms: Terms, k: int) -> Terms:
    """`terms` restricted to its last `k` layers."""
    return Terms(terms.values[-k:], terms.layers[-k:], terms.tokens, terms.meta)


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


def check_against_engine(a: Terms, b: Terms, default_layers: int) -> float:
    """|our ICS from the cosine table - huref's compare_terms ICS| on the default layers."""
    table, _ = cosine_table(last_layers(a, default_layers), last_layers(b, default_layers))
    engine = compare_terms(last_layers(a, default_layers), last_layers(b, default_layers))
    return abs(ics(table) - engine["ics"])

"""How well a score separates positives (same-base pairs) from negatives: AUC and TPR at a fixed FPR.

Imports nothing heavy, so scripts that only score pairs (real_lineage.py) need not load the zoo's.
"""

import math


def auc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive scores above a negative), ties counting one half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def tpr_at_fpr(positives: list[float], negatives: list[float], fpr: float) -> float:
    """The fraction of positives above the threshold that lets at most `fpr` of the negatives through."""
    ranked = sorted(negatives, reverse=True)
    allowed = math.floor(fpr * len(ranked))
    threshold = ranked[allowed] if allowed < len(ranked) else -math.inf
    return sum(p > threshold for p in positives) / len(positives)

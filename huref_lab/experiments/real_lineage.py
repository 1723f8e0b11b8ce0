"""Lineage on real pretrained weights: every pair of the real models, within and across families,
through the functions `huref compare` calls for two models (`huref.similarity.compare_terms` on the
default two-layer terms; `huref.lineage.lineage`, the calibrated verdict, on `whole_depth_terms` at
the lineage defaults), plus the latent cosine of their dogs (`huref fingerprint`'s latents), the held-out losses of every model, AUC / TPR at 1% FPR / margin over the real
pairs, and a picture of where each pair falls against the null panel.

Reproduce (models under CACHE = $HUREF_REAL_CACHE; nothing large enters the repo): the stages of
`real_models` up to quantize (its docstring lists the commands), then

    python scripts/real_lineage.py    # -> docs/results/real_lineage.json, docs/results/real_lineage_panel.png,
                                      #    the "Lineage on real weights" section of docs/RESULTS.md

Only this last command needs re-running after a change to huref (lineage tokens, stride, the
fingerprint's layers): terms and latents are cached in CACHE/lineage-terms under a hash of huref's
sources and the model file, so a changed huref recomputes them all. The smollm2-rewritten and
smollm2-pruned copies are derived here when missing; losses are cached in CACHE/losses.json. Models
not built yet are left out of the table. `--minutes` bounds wall time, so the steps a run reaches
depend on the machine's load (the table lists them).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch

from huref.errors import HurefError, InstallationError
from huref.invariants import DEFAULT_TOKENS
from huref.statistics import ALPHA_SAME_BASE, ALPHA_UNRELATED, null_panel, statistic_at
from huref_lab import attacks
from huref_lab.experiments import real_models as rm
from huref_lab.experiments.doc_sections import replace_section
from huref_lab.experiments.paths import REPO
from huref_lab.experiments.separation import auc, tpr_at_fpr

OUT_JSON = REPO / "docs" / "results" / "real_lineage.json"
OUT_PANEL = REPO / "docs" / "results" / "real_lineage_panel.png"
RESULTS_MD = REPO / "docs" / "RESULTS.md"
DROPPED = range(10, 15)

PATHS = {label: where for label, (where, _) in {**rm.MODELS, **rm.LINEAGE_MODELS}.items()}
WHAT = {label: what for label, (_, what) in {**rm.MODELS, **rm.LINEAGE_MODELS}.items()}
# the float32 exports smollm2.st and gemma3.st are left out: the same tensors as their GGUF (docs/REAL_MODELS.md)
ORDER = ["smollm2.gguf", "smollm2-rewritten", "smollm2-pruned", "smollm2-vim.st", "smollm2-vim.q8",
         "smollm2-vim.q4", "smollm2-python.st", "smollm2-python.q8", "gemma3.gguf", "gemma3-vim.st",
         "gemma3-vim.q8", "gemma3-vim.q4", "minilm.st"]
PARENT = {  # label -> (the model it was made from, how); roots are the published files
    "smollm2.st": ("smollm2.gguf", "dequantized"),
    "smollm2-rewritten": ("smollm2.st", "rewritten"),
    "smollm2-pruned": ("smollm2.st", "pruned"),
    "smollm2-vim.st": ("smollm2.st", "fine-tuned"),
    "smollm2-vim.q8": ("smollm2-vim.st", "Q8_0"),
    "smollm2-vim.q4": ("smollm2-vim.st", "Q4_0"),
    "smollm2-python.st": ("smollm2.st", "CPT+vocab"),
    "smollm2-python.q8": ("smollm2-python.st", "Q8_0"),
    "gemma3.st": ("gemma3.gguf", "dequantized"),
    "gemma3-vim.st": ("gemma3.st", "fine-tuned"),
    "gemma3-vim.q8": ("gemma3-vim.st", "Q8_0"),
    "gemma3-vim.q4": ("gemma3-vim.st", "Q4_0"),
}
TRAINING = {"fine-tuned", "CPT+vocab"}


# ---------------------------------------------------------------- the derived copies

def pruned_copy(source: Path, target: Path, dropped=DROPPED) -> Path:
    """source without the layers `dropped` (later layers renumbered), not healed."""
    checkpoint = attacks.read_checkpoint(source)
    n = checkpoint.config["num_hidden_layers"]
    keep = [i for i in range(n) if i not in dropped]
    tensors = {}
    for name, tensor in checkpoint.tensors.items():
        if name.startswith("model.layers."):
            index = int(name.split(".")[2])
            if index in dropped:
                continue
            name = name.replace(f"model.layers.{index}.", f"model.layers.{keep.index(index)}.", 1)
        tensors[name] = tensor
    checkpoint.tensors = tensors
    checkpoint.config = dict(checkpoint.config, num_hidden_layers=len(keep))
    attacks.write_checkpoint(checkpoint, target)
    return target


def derive_copies() -> None:
    """CACHE/derived/smollm2-rewritten (every function-preserving rewrite at once) and
    CACHE/derived/smollm2-pruned, from the float32 export, when missing."""
    base = rm.hf_dir("smollm2")
    rewritten, pruned = PATHS["smollm2-rewritten"](), PATHS["smollm2-pruned"]()
    if not rewritten.exists():
        layout = attacks.layout_of(json.loads((base / "config.json").read_text()))
        every = "+".join(a for a in attacks.valid_attacks(layout) if a != "append_vocabulary")
        attacks.attack_directory(base, rewritten, every, seed=1)
    if not pruned.exists():
        pruned_copy(base, pruned)


# ---------------------------------------------------------------- relations

def ancestry(label: str) -> list[tuple[str, str]]:
    """[(model, how it was made from the previous one)] from the root down to `label`."""
    chain = [(label, "")]
    while chain[0][0] in PARENT:
        parent, how = PARENT[chain[0][0]]
        chain[0] = (chain[0][0], how)
        chain.insert(0, (parent, ""))
    return chain


def relation(a: str, b: str) -> dict:
    """{"same_base": bool, "training": whether a training run separates them, "text"}."""
    chain_a, chain_b = ancestry(a), ancestry(b)
    if chain_a[0][0] != chain_b[0][0]:
        return {"same_base": False, "training": False, "text": "other family"}
    common = 0
    while common < min(len(chain_a), len(chain_b)) and chain_a[common][0] == chain_b[common][0]:
        common += 1
    root = chain_a[common - 1][0]
    steps_a, steps_b = [h for _, h in chain_a[common:]], [h for _, h in chain_b[common:]]
    sides = [f"{side} = {root} + {' + '.join(steps)}" for side, steps in (("A", steps_a), ("B", steps_b)) if steps]
    return {"same_base": True, "training": bool(TRAINING & set(steps_a + steps_b)), "text": "; ".join(sides)}


# ---------------------------------------------------------------- losses

def measured_in_training(label: str) -> dict | None:
    """The held-out losses a fine-tune's finetune.json holds for `label`: after training for the trained
    model itself, before training for the published model it started from (its export's weights)."""
    name = label.split(".")[0]
    for record_path in sorted(rm.cache().glob("hf/*/finetune.json")):
        record = json.loads(record_path.read_text())
        if label.endswith(".st") and record_path.parent == rm.hf_dir(name):
            return record["loss_after"]
        if label not in PARENT and record["base"] == name:
            return record["loss_before"]
    return None


def losses(label: str, compute: bool = True) -> dict | None:
    """Held-out losses {"vim", "python"} of a causal LM (real_models.evaluate): from a finetune.json
    where one measured them, else computed and cached in CACHE/losses.json by the file's size and
    time (None for an encoder, or when not cached and `compute` is False). A published GGUF is measured on its float32 export (the same tensors);
    a re-quantized GGUF read by huref's GGUF reader into the config and tokenizer of the checkpoint it
    was made from (the same shapes and vocabulary)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if label.startswith("minilm"):
        return None
    recorded = measured_in_training(label)
    if recorded:
        return recorded
    path = PATHS[label]()
    if path.is_file() and label not in PARENT:
        path = rm.hf_dir(label.split(".")[0])
    target = path if path.is_file() else path / "model.safetensors"
    stamp = f"{target.stat().st_size}:{target.stat().st_mtime_ns}"
    cache_file = rm.cache() / "losses.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if cache.get(label, {}).get("stamp") != stamp:
        if not compute:
            return None
        if path.is_file():
            parent = PATHS[PARENT[label][0]]()
            tokenizer = AutoTokenizer.from_pretrained(parent)
            model = rm.gguf_model(path, AutoConfig.from_pretrained(parent))
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        cache[label] = {"stamp": stamp, "loss": rm.evaluate(model, tokenizer)}
        cache_file.write_text(json.dumps(cache, indent=1))
    return cache[label]["loss"]


# ---------------------------------------------------------------- pairs

def alignment_text(alignment: list) -> str:
    if all(i == j for i, j in alignment):
        return "identity"
    if all(i is None for i, _ in alignment):
        return "all foreign"
    return " ".join("-" if i is None else str(i) for i, _ in alignment)


def code_stamp() -> str:
    """A hash of huref's sources: cached terms and latents are reused only while it is unchanged (a merge
    that changes a default, such as the lineage token count or the fingerprint's layers, recomputes them)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "huref").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def model_terms(label: str) -> dict:
    """{"ics": two-layer terms (`huref compare`'s defaults), "depth": whole-depth terms (the lineage
    defaults), "latent": the dog's latent record or None (no encoder), "n_layers", "seconds"} of a
    model, cached in CACHE/lineage-terms by the model file's size and time and `code_stamp()`."""
    from huref.fingerprint import latent_record
    from huref.invariants import invariant_terms, save_terms
    from huref.lineage import whole_depth_terms
    from huref.readers import lineage_reads
    from huref.sources import load_model

    path = PATHS[label]()
    target = path if path.is_file() else path / "model.safetensors"
    key = hashlib.sha256(f"{code_stamp()}:{target.stat().st_size}:{target.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    where = rm.cache() / "lineage-terms" / f"{label}.{key}"
    if not (where / "info.json").is_file():
        where.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        model = load_model(str(path))
        ics = invariant_terms(model)
        with lineage_reads(model.reader):  # as `huref lineage` and compare's verdict read them
            depth = whole_depth_terms(model)
        try:
            latent = latent_record(ics)
        except (HurefError, InstallationError) as error:
            print(f"{label}: no latent ({error})", flush=True)
            latent = None
        save_terms(ics, where / "ics.safetensors")
        save_terms(depth, where / "depth.safetensors")
        info = {"latent": latent, "n_layers": model.dims.n_layers, "seconds": round(time.monotonic() - start, 1)}
        (where / "info.json").write_text(json.dumps(info))
        print(f"terms of {label}: {info['seconds']} s", flush=True)
    info = json.loads((where / "info.json").read_text())
    return {**info, "key": where.name, "ics": where / "ics.safetensors", "depth": where / "depth.safetensors"}


def measure_pairs(labels: list[str]) -> tuple[list[dict], dict]:
    """Every pair of `labels`: what `huref compare --json` reports for two models (ICS of the
    two-layer terms, `huref.similarity.compare_terms`; the calibrated lineage summary,
    `huref.lineage.lineage` on whole-depth terms) + the latent cosine of their dogs. Each pair's row is cached in
    CACHE/lineage-pairs under both models' term keys (recomputed exactly when either side's terms are)."""
    from huref.fingerprint import compare_fingerprints
    from huref.invariants import load_terms
    from huref.lineage import lineage
    from huref.similarity import compare_terms, judge_ics

    models = {label: model_terms(label) for label in labels}
    pair_cache = rm.cache() / "lineage-pairs"
    pair_cache.mkdir(exist_ok=True)
    rows = []
    for k, a in enumerate(labels):
        terms_a = {}
        for b in labels[k + 1:]:
            cached = pair_cache / f"{models[a]['key']}__{models[b]['key']}.json"
            if cached.is_file():
                rows.append(json.loads(cached.read_text()))
                continue
            if not terms_a:
                terms_a = {which: load_terms(models[a][which]) for which in ("ics", "depth")}
            row = {"a": a, "b": b, **relation(a, b)}
            try:
                terms_b = load_terms(models[b]["ics"])
                ics = compare_terms(terms_a["ics"], terms_b)
                found = lineage(terms_a["depth"], load_terms(models[b]["depth"]))
            except HurefError as error:  # too few probe tokens in common (WordPiece against BPE)
                row["error"] = str(error)
                rows.append(row)
                cached.write_text(json.dumps(row))
                print(f"{a} | {b}: {error}", flush=True)
                continue
            row.update(ics=ics["ics"], n_common_tokens=ics["n_common"],
                       ics_verdict=judge_ics(ics["ics"], terms_a["ics"].meta, terms_b.meta)["verdict"],
                       **{key: found[key] for key in ("statistic", "z", "p_value", "verdict", "alignment")})
            if models[a]["latent"] and models[b]["latent"]:
                latent = compare_fingerprints(models[a]["latent"], models[b]["latent"])
                row.update(latent_cosine=latent["latent_cosine"], latent_verdict=latent["verdict"])
            rows.append(row)
            cached.write_text(json.dumps(row))
            print(f"{a:>18} | {b:<18} stat {row['statistic']:+.4f} z {row['z']:+6.1f} {row['verdict']:<12} "
                  f"ICS {row['ics']:+.4f}  ({row['text']})", flush=True)
    depth = load_terms(models[labels[0]]["depth"])
    meta = {"lineage_tokens": len(depth.tokens), "ics_tokens": DEFAULT_TOKENS,
            "terms_seconds": {label: m["seconds"] for label, m in models.items()},
            "n_layers": {label: m["n_layers"] for label, m in models.items()}}
    return rows, meta


def separation(rows: list[dict], key: str, positives_filter=lambda r: True) -> dict | None:
    """AUC, TPR at 1% FPR and margin (lowest positive - highest negative) of score `key`."""
    scored = [r for r in rows if r.get(key) is not None]
    positives = [r[key] for r in scored if r["same_base"] and positives_filter(r)]
    negatives = [r[key] for r in scored if not r["same_base"]]
    if not positives or not negatives:
        return None
    return {"auc": auc(positives, negatives), "tpr_at_1pct_fpr": tpr_at_fpr(positives, negatives, 0.01),
            "margin": min(positives) - max(negatives), "n_pos": len(positives), "n_neg": len(negatives)}


# ---------------------------------------------------------------- the panel picture

def panel_figure(rows: list[dict], panel: dict, path: Path) -> None:
    """Strips on one statistic axis: the null panel's pairs (grey) with its normal fit, the real
    cross-family pairs, the real same-base pairs without and with training; the verdict thresholds."""
    from PIL import Image, ImageDraw

    scored = [r for r in rows if "statistic" in r]
    null = [p[2] for p in panel.get("pairs", [])]
    lo = min([-0.1] + [r["statistic"] for r in scored] + null)
    hi = max([1.0] + [r["statistic"] for r in scored])
    width, height, left, right = 960, 350, 190, 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def x_of(value: float) -> int:
        return round(left + (value - lo) / (hi - lo) * (width - left - right))

    strips = [("null panel (tiny zoo)", [(v, (120, 120, 120)) for v in null]),
              ("real: other family", [(r["statistic"], (200, 40, 40)) for r in scored if not r["same_base"]]),
              ("real: same base, no training", [(r["statistic"], (40, 90, 200)) for r in scored
                                                if r["same_base"] and not r["training"]]),
              ("real: same base, trained", [(r["statistic"], (20, 150, 60)) for r in scored
                                            if r["same_base"] and r["training"]])]
    top, gap = 95, 55
    density = [math.exp(-0.5 * ((lo + (hi - lo) * t / 600 - panel["mean"]) / panel["std"]) ** 2) for t in range(601)]
    draw.line([(x_of(lo + (hi - lo) * t / 600), top - 8 - 40 * d) for t, d in enumerate(density)], fill="black")
    for k, (name, points) in enumerate(strips):
        y = top + k * gap
        draw.text((8, y - 6), f"{name} ({len(points)})", fill="black")
        draw.line([(left, y), (width - right, y)], fill=(225, 225, 225))
        for n, (value, colour) in enumerate(points):
            dy = (n * 37 % 17) - 8  # deterministic jitter
            draw.ellipse([x_of(value) - 3, y + dy - 3, x_of(value) + 3, y + dy + 3], outline=colour, width=2)
    axis = top + len(strips) * gap - 15
    draw.line([(left, axis), (width - right, axis)], fill="black")
    for tick in [t / 10 for t in range(math.ceil(lo * 10), math.floor(hi * 10) + 1)]:
        draw.line([(x_of(tick), axis), (x_of(tick), axis + 4)], fill="black")
        draw.text((x_of(tick) - 8, axis + 6), f"{tick:.1f}", fill="black")
    for alpha, colour in ((ALPHA_UNRELATED, (150, 150, 150)), (ALPHA_SAME_BASE, (0, 0, 0))):
        x = x_of(statistic_at(panel, alpha))
        for y in range(top - 50, axis, 6):
            draw.line([(x, y), (x, y + 3)], fill=colour)
    draw.text((left, 6), "lineage statistic of each pair (x); curve: the null panel's normal fit", fill="black")
    draw.text((left, 20), f"dashed grey: p = {ALPHA_UNRELATED:g} (unrelated left of it); dashed black: "
                          f"p = {ALPHA_SAME_BASE:g} (same-base right of it)", fill="black")
    draw.text((left, axis + 22), "statistic = mean aligned layer-map cell - mean off-path cell (huref.lineage)",
              fill="black")
    image.save(path)


# ---------------------------------------------------------------- the report

def finetune_record(label: str) -> dict | None:
    """finetune.json of the trained model `label` is (or was re-quantized from), without the curve."""
    name = label.split(".")[0]
    path = rm.hf_dir(name) / "finetune.json"
    if "-" not in name or not path.is_file():
        return None
    record = json.loads(path.read_text())
    record.pop("train_loss", None)
    return record


def reproduce_commands() -> list[str]:
    """real_models' stage commands up to quantize (the last paragraph of its docstring), then this module's."""
    stages = [line[2:] for line in rm.__doc__.strip().split("\n\n")[-1].split("\n") if "measure" not in line]
    return stages + ["python scripts/real_lineage.py"]


def section(report: dict) -> str:
    """The "Lineage on real weights" section of docs/RESULTS.md, from real_lineage.json's content."""
    meta, rows, panel = report["meta"], report["pairs"], report["panel"]
    out = ["## Lineage on real weights", "", "*Written by `python scripts/real_lineage.py`.*", "",
           "Every pair of the real models below, through the functions `huref compare` calls for two models: "
           "the two-layer ICS (`huref.similarity.compare_terms`) at "
           f"{meta['ics_tokens']} probe tokens, and the calibrated whole-depth lineage statistic at "
           f"{meta['lineage_tokens']} probe tokens (`huref.lineage.lineage`) against the shipped null panel (tiny zoo, n = {panel['n']}, "
           f"mean {panel['mean']:.4f}, std {panel['std']:.4f}); latent cosine: the dogs' latents "
           "(`huref fingerprint`); the ICS and latent verdicts are the calibrated ones (`huref.similarity.judge_ics`, "
           "`huref.fingerprint.compare_fingerprints`). Same base = same family here (a published file and what was made from it); "
           "every cross-family pair is a negative. Reproduce (models under $HUREF_REAL_CACHE; the last command alone regenerates this section, its JSON and picture):", "",
           "```", *reproduce_commands(), "```", "",
           "Models (losses: mean next-token loss in nats on fixed held-out vim help / Python stdlib windows, "
           "`real_models.evaluate`; a published GGUF has its export's weights):", "",
           "| label | model | layers | loss vim | loss python | made by |", "|---|---|---|---|---|---|"]
    for label, m in report["models"].items():
        loss = m["loss"]
        f = m["finetune"]
        made = (f"{f['trained']}; {f['steps']} steps x {f['batch']} x {f['seq_len']} tokens, lr {f['lr']}, "
                f"{f['minutes']} min on 1 CPU thread; before: vim {f['loss_before']['vim']:.3f}, python "
                f"{f['loss_before']['python']:.3f}" + (f"; {len(f['new_tokens'])} new tokens, e.g. "
                                                        f"{', '.join(f['new_tokens'][:4])}" if f.get("new_tokens") else "")
                if f and m["trained_here"] else ("re-quantized from its safetensors" if ".q" in label else ""))
        out.append(f"| {label} | {m['what']} | {m['n_layers']} | " + (f"{loss['vim']:.3f} | {loss['python']:.3f}"
                                                                       if loss else "- | -") + f" | {made} |")
    out += ["", "| score | positives | AUC | TPR at 1% FPR | margin (lowest positive - highest negative) | pairs (+/-) |",
            "|---|---|---|---|---|---|"]
    for name, by in report["separation"].items():
        for which, s in by.items():
            if s:
                out.append(f"| {name} | {which} | {s['auc']:.3f} | {s['tpr_at_1pct_fpr']:.3f} | {s['margin']:+.4f} | "
                           f"{s['n_pos']}/{s['n_neg']} |")
    tallies = []
    for name, key in (("lineage", "verdict"), ("ICS (calibrated on the default layers)", "ics_verdict"),
                      ("latent (calibrated)", "latent_verdict")):
        verdicts = {}
        for r in rows:
            if key in r:
                which = ("same-base pairs" if r["same_base"] else "other-family pairs", r[key])
                verdicts[which] = verdicts.get(which, 0) + 1
        tallies.append(f"{name}: " + ", ".join(f"{k[0]} -> {k[1]} {v}" for k, v in sorted(verdicts.items())))
    out += ["", "Verdicts (" + "; ".join(tallies) + ").", "",
            "![real pairs against the null panel](results/real_lineage_panel.png)", "",
            "| A | B | relation | statistic | z | p-value | verdict | ICS (verdict) | latent cos (verdict) | B's layers traced to A's |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['a']} | {r['b']} | {r['text']} | - | - | - | not compared: {r['error']} | - | - | - |")
            continue
        latent = f"{r['latent_cosine']:+.3f} ({r['latent_verdict']})" if r.get("latent_cosine") is not None else "-"
        out.append(f"| {r['a']} | {r['b']} | {r['text']} | {r['statistic']:+.4f} | {r['z']:+.1f} | {r['p_value']:.2g} | "
                   f"{r['verdict']} | {r['ics']:+.5f} ({r['ics_verdict']}) | {latent} | {alignment_text(r['alignment'])} |")
    out += ["", "Where a map is not the identity, the list gives, for each layer of B in order, the layer of A it "
            "is traced to (- foreign). Limits: the trained models are small CPU runs (minutes, see above), so "
            "their weights drift far less than a real fine-tune's or continued pretraining's; the null panel "
            "is fitted on tiny models, not on real ones; the positives are all relatives of two published "
            "models. docs/REAL_MODELS.md (`python scripts/real_models.py measure`) compares the same fine-tunes on "
            "the paper's last two layers, with PCS and a check of huref's GGUF reader against transformers'."]
    return "\n".join(out)


def run(cached_losses: bool) -> None:
    """Measure every pair of the real models that exist, write OUT_JSON, OUT_PANEL and the section of
    RESULTS_MD; `cached_losses`: only losses already measured (others show -)."""
    torch.set_num_threads(1)
    derive_copies()
    labels = [label for label in ORDER if PATHS[label]().exists()]
    print(f"models: {labels}", flush=True)
    rows, meta = measure_pairs(labels)
    panel = null_panel()
    models = {}
    for label in labels:
        record = finetune_record(label)
        models[label] = {"what": WHAT[label], "path": str(PATHS[label]()), "n_layers": meta["n_layers"][label],
                         "loss": losses(label, compute=not cached_losses),
                         "finetune": record, "trained_here": bool(record) and label.endswith(".st")}
    report = {"meta": meta, "panel": {k: panel[k] for k in ("mean", "std", "n", "n_tokens", "source")},
              "models": models, "pairs": rows,
              "separation": {name: {"all": separation(rows, key),
                                    "trained only": separation(rows, key, lambda r: r["training"])}
                             for name, key in (("lineage statistic", "statistic"), ("ICS, two layers", "ics"),
                                               ("latent cosine", "latent_cosine"))}}
    OUT_JSON.write_text(json.dumps(report, indent=1) + "\n")
    panel_figure(rows, panel, OUT_PANEL)
    replace_section(RESULTS_MD, "real-lineage", section(report))
    print(f"wrote {OUT_JSON.relative_to(REPO)}, {OUT_PANEL.relative_to(REPO)}, {RESULTS_MD.relative_to(REPO)}")
    for name, by in report["separation"].items():
        print(name, json.dumps(by))


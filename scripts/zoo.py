"""The model zoo of the experiments: tiny bases trained from scratch and their offspring.

Bases (each with its own tokenizer, trained on its own random 70% of the Python standard library,
its own initialisation seed and its own data order): three llama models and one gpt_neox model.
Offspring of every llama base, all on vim's help files unless said otherwise:
  sft        full fine-tune of every weight
  cpt+vocab  continued pretraining after appending BPE tokens learned on vim's help to the vocabulary
  lora       rank-8 adapters on every block matrix, trained, then merged into the weights
  int8       every weight rounded to int8 (per row, symmetric absmax) and back
  prune20    the 20% smallest-magnitude weights of every block matrix set to zero
  attacked   every function-preserving rewrite in huref_lab.attacks valid for llama, composed (but
             append_vocabulary: see llama_attacks)
  rotated    the rotation attack alone (used only for the FFN-form comparison)
Training jobs are module-level functions of a spec dict so that a process pool can run them.
"""

import json
import math
import time
from pathlib import Path

import torch

import corpora
import train_lm

EVAL_CHARS = 100_000


def eval_texts() -> dict:
    """{"python": ..., "vim": ...}: the first EVAL_CHARS characters of each held-out corpus."""
    return {name: "\n".join(corpora.load(name, "heldout"))[:EVAL_CHARS] for name in ("python", "vim")}


def losses(model, tokenizer, context: int) -> dict:
    """Held-out loss and bits per byte of `model` on both corpora: {"python": {...}, "vim": {...}}."""
    return {name: train_lm.heldout_loss(model, tokenizer, text, context) for name, text in eval_texts().items()}


def is_done(directory: Path, key: dict) -> bool:
    """Whether `directory` holds a finished model built with settings `key` (the cache check)."""
    info = Path(directory) / "info.json"
    return info.exists() and json.loads(info.read_text()).get("key") == key


def train_base(spec: dict) -> str:
    """Train one base from scratch. spec: name, model_type, seed, out, scale (vocab, size, steps, lr, batch);
    optional data_seed (the data subset and so the tokenizer: another base's seed makes a hard negative
    sharing its tokenizer and data; default `seed`) and size (overrides scale["size"]: a sibling)."""
    torch.set_num_threads(1)
    out, scale = Path(spec["out"]), spec["scale"]
    key = {k: spec[k] for k in ("model_type", "seed")} | {"scale": scale}
    key |= {k: spec[k] for k in ("data_seed", "size") if spec.get(k) is not None}
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    data_seed = spec.get("data_seed") or spec["seed"]
    documents = corpora.shuffled(corpora.load("python", "train"), data_seed, fraction=0.7)
    tokenizer = train_lm.train_tokenizer(documents, scale["vocab"])
    ids = train_lm.encode(tokenizer, documents)
    size = spec.get("size") or scale["size"]
    model = train_lm.build_lm(spec["model_type"], tokenizer.get_vocab_size(), size, spec["seed"])
    curve = train_lm.train(model, ids, scale["base_steps"], spec["seed"], scale["lr"], scale["batch"],
                           size["context"])
    info = {"key": key, "kind": "base", "curve": curve, "train_tokens": len(ids),
            "losses": losses(model, tokenizer, size["context"]), "seconds": time.perf_counter() - start}
    train_lm.save(model, tokenizer, out, info)
    return spec["name"]


def _vim_ids(tokenizer, seed: int):
    return train_lm.encode(tokenizer, corpora.shuffled(corpora.load("vim", "train"), seed))


def train_offspring(spec: dict) -> str:
    """Derive one trained offspring. spec: name, kind ("sft" | "cpt+vocab" | "lora"), parent, seed, out, scale."""
    torch.set_num_threads(1)
    out, scale, kind = Path(spec["out"]), spec["scale"], spec["kind"]
    key = {"kind": kind, "seed": spec["seed"], "scale": scale}
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    model, tokenizer, parent_info = train_lm.load(spec["parent"])
    context, steps = scale["size"]["context"], scale["child_steps"]
    extra = {}
    if kind == "sft":
        curve = train_lm.train(model, _vim_ids(tokenizer, spec["seed"]), steps, spec["seed"], scale["child_lr"],
                               scale["batch"], context, warmup=20)
    elif kind == "cpt+vocab":
        vim_train = corpora.load("vim", "train")
        model, tokenizer, new_tokens = train_lm.extend_vocabulary(model, tokenizer, vim_train, scale["new_tokens"])
        extra = {"new_tokens": len(new_tokens), "examples": new_tokens[:12]}
        curve = train_lm.train(model, _vim_ids(tokenizer, spec["seed"]), steps, spec["seed"], scale["child_lr"],
                               scale["batch"], context, warmup=20)
    elif kind == "lora":
        curve = train_lm.train_lora_merged(model, _vim_ids(tokenizer, spec["seed"]), steps, spec["seed"],
                                           rank=8, lr=scale["lora_lr"], batch=scale["batch"], context=context)
    else:
        raise ValueError(kind)
    info = {"key": key, "kind": kind, "curve": curve, "losses": losses(model, tokenizer, context),
            "seconds": time.perf_counter() - start, **extra}
    train_lm.save(model, tokenizer, out, info)
    return spec["name"]


def int8_round_trip(model) -> None:
    """Round every parameter of `model` in place to int8 with one absmax scale per row (per tensor for vectors)."""
    with torch.no_grad():
        for p in model.parameters():
            rows = p.view(p.shape[0], -1) if p.dim() > 1 else p.view(1, -1)
            scale = rows.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
            rows.copy_(torch.round(rows / scale).clamp(-127, 127) * scale)


def magnitude_prune(model, fraction: float) -> None:
    """Zero, in place, the `fraction` smallest-magnitude entries of every matrix inside the blocks
    (embeddings, head and norms are kept)."""
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and p is not head and p is not embed:
                k = math.ceil(p.numel() * fraction)
                threshold = p.abs().flatten().kthvalue(k).values
                p[p.abs() <= threshold] = 0.0


def edit_offspring(spec: dict) -> str:
    """Derive one weight-edited offspring (kind "int8" | "prune20") of spec["parent"]."""
    torch.set_num_threads(1)
    out, kind = Path(spec["out"]), spec["kind"]
    key = {"kind": kind, "scale": spec["scale"]}
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    model, tokenizer, _ = train_lm.load(spec["parent"])
    int8_round_trip(model) if kind == "int8" else magnitude_prune(model, 0.2)
    info = {"key": key, "kind": kind, "losses": losses(model, tokenizer, spec["scale"]["size"]["context"]),
            "seconds": time.perf_counter() - start}
    train_lm.save(model, tokenizer, out, info)
    return spec["name"]


def attacked_offspring(spec: dict) -> str:
    """Write spec["attacks"] ("+"-joined names from huref_lab.attacks) applied to spec["parent"], with its losses."""
    from huref_lab import attacks

    torch.set_num_threads(1)
    out = Path(spec["out"])
    key = {"kind": spec["kind"], "attacks": spec["attacks"], "scale": spec["scale"]}
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    attacks.attack_directory(spec["parent"], out, spec["attacks"], seed=spec["seed"])
    model = train_lm.transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = train_lm.Tokenizer.from_file(str(out / "tokenizer.json"))
    info = {"key": key, "kind": spec["kind"], "attacks": spec["attacks"].split("+"),
            "losses": losses(model, tokenizer, spec["scale"]["size"]["context"]),
            "seconds": time.perf_counter() - start}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return spec["name"]


def llama_attacks() -> str:
    """Every function-preserving attack valid for a llama model, "+"-joined (the 'attacked' offspring).

    append_vocabulary is left out: its new random head rows take probability mass from the real
    tokens, so the copy's loss changes (the cpt+vocab offspring covers an extended vocabulary)."""
    from huref_lab import attacks

    layout = attacks.layout_of({"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2,
                                "num_hidden_layers": 1, "tie_word_embeddings": False, "rms_norm_eps": 1e-5})
    return "+".join(a for a in attacks.valid_attacks(layout) if a != "append_vocabulary")


def restack(plan: list[tuple[str, int]], embeddings_from: str):
    """A llama model whose layer k is layer plan[k][1] of the model in directory plan[k][0] (same width),
    with the embeddings, final norm and head of `embeddings_from`; returns (model, its tokenizer)."""
    donor, tokenizer, _ = train_lm.load(embeddings_from)
    config = donor.config.__class__(**{**donor.config.to_dict(), "num_hidden_layers": len(plan)})
    model = train_lm.transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    sources = {d: train_lm.load(d)[0] for d in {d for d, _ in plan}}
    with torch.no_grad():
        model.get_input_embeddings().load_state_dict(donor.get_input_embeddings().state_dict())
        model.get_output_embeddings().load_state_dict(donor.get_output_embeddings().state_dict())
        model.model.norm.load_state_dict(donor.model.norm.state_dict())
        for k, (directory, i) in enumerate(plan):
            model.model.layers[k].load_state_dict(sources[directory].model.layers[i].state_dict())
    return model.eval(), tokenizer


def structure_offspring(spec: dict) -> str:
    """A depth-changed offspring of llama parents, healed on the base's corpus (Python) or trained on vim's help.

    spec: name, kind, out, seed, scale, plan [[parent dir, layer]], embeddings_from (a parent dir),
    steps, lr, corpus ("python" | "vim"), vocab (new vim tokens, 0 for none). kinds: "depth-pruned"
    (middle layers dropped, healed), "upscaled" (layers duplicated, SOLAR-style, trained), "frankenmerge"
    (layers of two bases stacked, healed), "cpt-heavy" (every layer kept; long continued pretraining)."""
    torch.set_num_threads(1)
    out, scale = Path(spec["out"]), spec["scale"]
    key = {k: spec[k] for k in ("kind", "seed", "plan", "embeddings_from", "steps", "lr", "corpus", "vocab")}
    key["scale"] = scale
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    model, tokenizer = restack([tuple(p) for p in spec["plan"]], spec["embeddings_from"])
    context = scale["size"]["context"]
    before = losses(model, tokenizer, context)
    extra = {}
    if spec["vocab"]:
        vim_train = corpora.load("vim", "train")
        model, tokenizer, new_tokens = train_lm.extend_vocabulary(model, tokenizer, vim_train, spec["vocab"])
        extra = {"new_tokens": len(new_tokens), "examples": new_tokens[:12]}
    if spec["corpus"] == "vim":
        ids = _vim_ids(tokenizer, spec["seed"])
    else:
        ids = train_lm.encode(tokenizer, corpora.shuffled(corpora.load("python", "train"), spec["seed"]))
    curve = train_lm.train(model, ids, spec["steps"], spec["seed"], spec["lr"], scale["batch"], context, warmup=20)
    info = {"key": key, "kind": spec["kind"], "curve": curve, "losses_before_training": before,
            "losses": losses(model, tokenizer, context), "seconds": time.perf_counter() - start, **extra}
    train_lm.save(model, tokenizer, out, info)
    return spec["name"]

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
The lineage evidence (catalogue.lineage_entries) adds derivations that change shape:
depth (structure_offspring), width (width_pruned_offspring, Minitron-style), an MoE upcycle
(upcycled_offspring), merges of two fine-tunes (merged_offspring: linear, SLERP, TIES) and a student
distilled from scratch (distilled_student).
Training jobs are module-level functions of a spec dict so that a process pool can run them.
"""

import json
import math
import time
from pathlib import Path

import torch

from huref_lab.experiments import corpora, train_lm

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


def _python_ids(tokenizer, seed: int):
    return train_lm.encode(tokenizer, corpora.shuffled(corpora.load("python", "train"), seed))


def train_offspring(spec: dict) -> str:
    """Derive one trained offspring. spec: name, kind ("sft" | "cpt+vocab" | "lora" | "ft-python": a full
    fine-tune on the Python corpus, the base's own, with another data order), parent, seed, out, scale."""
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
    elif kind == "ft-python":
        curve = train_lm.train(model, _python_ids(tokenizer, spec["seed"]), steps, spec["seed"], scale["child_lr"],
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
    ids = (_vim_ids if spec["corpus"] == "vim" else _python_ids)(tokenizer, spec["seed"])
    curve = train_lm.train(model, ids, spec["steps"], spec["seed"], spec["lr"], scale["batch"], context, warmup=20)
    info = {"key": key, "kind": spec["kind"], "curve": curve, "losses_before_training": before,
            "losses": losses(model, tokenizer, context), "seconds": time.perf_counter() - start, **extra}
    train_lm.save(model, tokenizer, out, info)
    return spec["name"]


@torch.no_grad()
def minitron_importance(model, ids: torch.Tensor, context: int, batch: int = 8):
    """Activation importance of a llama `model` on `batch` consecutive `context`-token windows of `ids`
    (Minitron): (channels [hidden]: summed |output| of every RMSNorm inside the blocks, heads: per layer
    [n_heads] summed L2 norm of each head's attention output, neurons: per layer [ffn] summed |input| of
    down_proj)."""
    windows = ids[: batch * context].view(batch, context)
    layers = model.model.layers
    n_heads, head_dim = model.config.num_attention_heads, model.config.head_dim
    channels = torch.zeros(model.config.hidden_size)
    heads = [torch.zeros(n_heads) for _ in layers]
    neurons = [torch.zeros(model.config.intermediate_size) for _ in layers]

    def add_channels(module, inputs, output):
        channels.add_(output.abs().sum((0, 1)))

    def add_heads(k):
        def hook(module, inputs):
            x = inputs[0]
            per_head = x.view(*x.shape[:2], n_heads, head_dim)  # [b, t, h*d] -> [b, t, h, d]
            heads[k].add_(per_head.norm(dim=-1).sum((0, 1)))
        return hook

    def add_neurons(k):
        def hook(module, inputs):
            neurons[k].add_(inputs[0].abs().sum((0, 1)))
        return hook

    handles = []
    for k, layer in enumerate(layers):
        handles += [layer.input_layernorm.register_forward_hook(add_channels),
                    layer.post_attention_layernorm.register_forward_hook(add_channels),
                    layer.self_attn.o_proj.register_forward_pre_hook(add_heads(k)),
                    layer.mlp.down_proj.register_forward_pre_hook(add_neurons(k))]
    model.eval()
    model(input_ids=windows)
    for handle in handles:
        handle.remove()
    return channels, heads, neurons


@torch.no_grad()
def width_prune(model, importance, hidden: int, ffn: int):
    """A narrower llama copy of `model`: its `hidden` most important residual channels (every matrix
    reading or writing the residual stream, every norm, embeddings and head cut alike), in each layer
    its `ffn` most important FFN neurons and, in each KV group, its most important query head
    (n_heads becomes n_kv_heads; K and V are kept). `importance`: `minitron_importance`'s triple."""
    channels, heads, neurons = importance
    config = model.config
    n_kv, head_dim = config.num_key_value_heads, config.head_dim
    group = config.num_attention_heads // n_kv
    keep = channels.topk(hidden).indices.sort().values
    narrow = config.__class__(**{**config.to_dict(), "hidden_size": hidden, "intermediate_size": ffn,
                                 "num_attention_heads": n_kv, "head_dim": head_dim})
    pruned = train_lm.transformers.AutoModelForCausalLM.from_config(narrow, dtype=torch.float32)
    pruned.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[:, keep])
    pruned.lm_head.weight.copy_(model.lm_head.weight[:, keep])
    pruned.model.norm.weight.copy_(model.model.norm.weight[keep])
    for k, (old, new) in enumerate(zip(model.model.layers, pruned.model.layers)):
        best = heads[k].view(n_kv, group).argmax(1) + torch.arange(n_kv) * group  # [n_kv, group] -> one head per group
        q_rows = (best.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)  # [n_kv, head_dim] -> rows of q
        cells = neurons[k].topk(ffn).indices.sort().values
        attention, mlp = old.self_attn, old.mlp
        new.self_attn.q_proj.weight.copy_(attention.q_proj.weight[q_rows][:, keep])
        new.self_attn.k_proj.weight.copy_(attention.k_proj.weight[:, keep])
        new.self_attn.v_proj.weight.copy_(attention.v_proj.weight[:, keep])
        new.self_attn.o_proj.weight.copy_(attention.o_proj.weight[keep][:, q_rows])
        new.mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[cells][:, keep])
        new.mlp.up_proj.weight.copy_(mlp.up_proj.weight[cells][:, keep])
        new.mlp.down_proj.weight.copy_(mlp.down_proj.weight[keep][:, cells])
        new.input_layernorm.weight.copy_(old.input_layernorm.weight[keep])
        new.post_attention_layernorm.weight.copy_(old.post_attention_layernorm.weight[keep])
    return pruned.eval()


def width_pruned_offspring(spec: dict) -> str:
    """Minitron-style width pruning of spec["parent"] to hidden spec["hidden"], FFN spec["ffn"] and one query
    head per KV group (importance on Python windows), healed by distilling the parent's logits for
    spec["steps"] steps at spec["lr"] on Python."""
    torch.set_num_threads(1)
    out, scale = Path(spec["out"]), spec["scale"]
    key = {k: spec[k] for k in ("kind", "seed", "hidden", "ffn", "steps", "lr")} | {"scale": scale}
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    teacher, tokenizer, _ = train_lm.load(spec["parent"])
    context = scale["size"]["context"]
    ids = _python_ids(tokenizer, spec["seed"])
    model = width_prune(teacher, minitron_importance(teacher, ids, context), spec["hidden"], spec["ffn"])
    before = losses(model, tokenizer, context)
    curve = train_lm.train(model, ids, spec["steps"], spec["seed"], spec["lr"], scale["batch"], context, warmup=20,
                           teacher=teacher)
    info = {"key": key, "kind": spec["kind"], "curve": curve, "losses_before_training": before,
            "losses": losses(model, tokenizer, context), "seconds": time.perf_counter() - start}
    train_lm.save(model, tokenizer, out, info)
    return spec["name"]


@torch.no_grad()
def upcycle(model, n_experts: int, top_k: int, seed: int):
    """A mixtral copy of llama `model` (same attention, norms, embeddings, RoPE) whose every layer's FFN is
    copied into `n_experts` experts, `top_k` of them routed per token by a randomly initialised router
    (seeded). Until trained it computes what `model` computes: the routing weights sum to 1."""
    config = model.config
    moe = train_lm.transformers.MixtralConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim, intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
        rope_parameters=dict(config.rope_parameters), tie_word_embeddings=False, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, num_local_experts=n_experts, num_experts_per_tok=top_k)
    torch.manual_seed(seed)
    upcycled = train_lm.transformers.AutoModelForCausalLM.from_config(moe, dtype=torch.float32)
    dense = {k: v for k, v in model.state_dict().items() if ".mlp." not in k}
    missing = upcycled.load_state_dict(dense, strict=False).missing_keys
    assert all(".mlp." in k for k in missing), missing
    for old, new in zip(model.model.layers, upcycled.model.layers):
        gate_up = torch.cat([old.mlp.gate_proj.weight, old.mlp.up_proj.weight])  # [2 * ffn, hidden]
        new.mlp.experts.gate_up_proj.copy_(gate_up.expand(n_experts, -1, -1))
        new.mlp.experts.down_proj.copy_(old.mlp.down_proj.weight.expand(n_experts, -1, -1))
    return upcycled.eval()


def upcycled_offspring(spec: dict) -> str:
    """spec["parent"] upcycled into a mixtral MoE (spec["experts"] experts, top spec["top_k"]), trained for
    spec["steps"] steps at spec["lr"] on Python. info also holds how far the experts moved apart."""
    torch.set_num_threads(1)
    out, scale = Path(spec["out"]), spec["scale"]
    key = {k: spec[k] for k in ("kind", "seed", "experts", "top_k", "steps", "lr")} | {"scale": scale}
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    dense, tokenizer, _ = train_lm.load(spec["parent"])
    context = scale["size"]["context"]
    model = upcycle(dense, spec["experts"], spec["top_k"], spec["seed"])
    before = losses(model, tokenizer, context)
    curve = train_lm.train(model, _python_ids(tokenizer, spec["seed"]), spec["steps"], spec["seed"], spec["lr"],
                           scale["batch"], context, warmup=20)
    with torch.no_grad():
        experts = torch.stack([layer.mlp.experts.gate_up_proj for layer in model.model.layers])  # [L, E, 2f, d]
        spread = float((experts - experts.mean(1, keepdim=True)).norm() / experts.norm())
    info = {"key": key, "kind": spec["kind"], "curve": curve, "losses_before_training": before,
            "losses": losses(model, tokenizer, context), "expert_spread": spread,
            "seconds": time.perf_counter() - start}
    train_lm.save(model, tokenizer, out, info)
    return spec["name"]


def merge_linear(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Linear merge: the weighted mean Σ w_i·t_i / Σ w_i of same-shaped tensors."""
    total = sum(w * t.double() for w, t in zip(weights, tensors))
    return (total / sum(weights)).to(tensors[0].dtype)


def merge_slerp(a: torch.Tensor, b: torch.Tensor, t: float, parallel: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation from `a` (t = 0) to `b` (t = 1), the tensors taken as flat vectors: the
    angle comes from their directions, the weights sin((1-t)θ)/sin θ and sin(tθ)/sin θ apply to the
    tensors themselves; nearly parallel directions (|cos| > `parallel`) fall back to linear."""
    x, y = a.double().flatten(), b.double().flatten()
    cos = float(torch.dot(x / x.norm().clamp_min(1e-12), y / y.norm().clamp_min(1e-12)))
    if abs(cos) > parallel:
        mixed = (1 - t) * x + t * y
    else:
        theta = math.acos(cos)
        mixed = (math.sin((1 - t) * theta) * x + math.sin(t * theta) * y) / math.sin(theta)
    return mixed.view(a.shape).to(a.dtype)


def merge_ties(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    """TIES merge: each task vector (tensor - base) trimmed to its `density` fraction of largest
    magnitudes and weighted; per entry the sign of the weighted sum is elected; the base plus the
    weighted mean over the task vectors that agree with that sign (entries none agree with stay)."""
    deltas = []
    for w, t in zip(weights, tensors):
        delta = (t.double() - base.double()).flatten()
        k = int(density * delta.numel())
        trimmed = torch.zeros_like(delta)
        if k:
            top = delta.abs().topk(k).indices
            trimmed[top] = delta[top]
        deltas.append(w * trimmed)
    stacked = torch.stack(deltas)  # [models, numel]
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = stacked.sign() == elected
    scale = torch.tensor(weights, dtype=torch.float64).unsqueeze(1)
    divisor = (scale * agree).sum(0)
    mixed = (stacked * agree).sum(0) / torch.where(divisor == 0, 1.0, divisor)
    return (base.double().flatten() + mixed).view(base.shape).to(base.dtype)


def merged_offspring(spec: dict) -> str:
    """spec["merge"] ("linear" | "slerp" | "ties") of the models in spec["models"] (two fine-tunes of
    spec["parent"], their base; same shapes and tokenizer), tensor by tensor; no training after."""
    torch.set_num_threads(1)
    out, scale = Path(spec["out"]), spec["scale"]
    key = {k: spec[k] for k in ("kind", "merge", "models")} | {"scale": scale}
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    base, tokenizer, _ = train_lm.load(spec["parent"])
    states = [train_lm.load(d)[0].state_dict() for d in spec["models"]]
    merged = {}
    for name, tensor in base.state_dict().items():
        tensors = [s[name] for s in states]
        if spec["merge"] == "linear":
            merged[name] = merge_linear(tensors, [0.5, 0.5])
        elif spec["merge"] == "slerp":
            merged[name] = merge_slerp(tensors[0], tensors[1], 0.5)
        elif spec["merge"] == "ties":
            merged[name] = merge_ties(tensor, tensors, [1.0, 1.0], density=0.5)
        else:
            raise ValueError(spec["merge"])
    base.load_state_dict(merged)
    context = scale["size"]["context"]
    info = {"key": key, "kind": spec["kind"], "merge": spec["merge"], "losses": losses(base, tokenizer, context),
            "parents_losses": [json.loads((Path(d) / "info.json").read_text())["losses"] for d in spec["models"]],
            "seconds": time.perf_counter() - start}
    train_lm.save(base, tokenizer, out, info)
    return spec["name"]


def distilled_student(spec: dict) -> str:
    """A model of spec["parent"]'s config and tokenizer, randomly initialised (seed spec["seed"]) and trained
    from scratch only on the parent's next-token distributions (KL) over Python windows, spec["steps"]
    steps at spec["lr"]: no weight of the teacher is copied."""
    torch.set_num_threads(1)
    out, scale = Path(spec["out"]), spec["scale"]
    key = {k: spec[k] for k in ("kind", "seed", "steps", "lr")} | {"scale": scale}
    if is_done(out, key):
        return spec["name"]
    start = time.perf_counter()
    teacher, tokenizer, _ = train_lm.load(spec["parent"])
    torch.manual_seed(spec["seed"])
    model = train_lm.transformers.AutoModelForCausalLM.from_config(teacher.config, dtype=torch.float32)
    context = scale["size"]["context"]
    before = losses(model, tokenizer, context)
    curve = train_lm.train(model, _python_ids(tokenizer, spec["seed"]), spec["steps"], spec["seed"], spec["lr"],
                           scale["batch"], context, teacher=teacher)
    info = {"key": key, "kind": spec["kind"], "curve": curve, "losses_before_training": before,
            "losses": losses(model, tokenizer, context), "seconds": time.perf_counter() - start}
    train_lm.save(model, tokenizer, out, info)
    return spec["name"]

"""Function-preserving rewrites of a Hugging Face checkpoint: the attacks a fingerprint must survive.

Each attack takes a `Checkpoint` (the tensors under their saved names, config.json, tokenizer.json) and a
torch.Generator, and returns a new Checkpoint whose weights differ but whose logits are the same (for
the vocabulary attacks: the same after mapping token ids through the tokenizer). Which attacks apply to
an architecture is data: `valid_attacks(layout)` reads the properties of its `Layout` (norm kind, post
norms, QK norms, ALiBi, FFN kind, experts).

Orientation: every matrix is handled as HF nn.Linear stores it, [out, in]; residual vectors are columns.
A residual-stream change of basis x -> T x turns a reader W into W T^-1 and a writer W into T W; for
orthogonal T that is W T^T.

Fused tensors (gpt2 c_attn, gpt_neox/bloom per-head query_key_value, falcon's multi-query and grouped
layouts, phi3 qkv_proj/gate_up_proj) are split into virtual parts named "<tensor>#q" etc. before an
attack and joined again after it; gpt2's Conv1D weights are transposed to [out, in] and back.
MoE experts are expected under their per-expert saved names (what transformers 5 writes by default).

A Checkpoint holds every tensor in memory as float32: this is for test and experiment models, not
for reading a 70B model (the fingerprinting itself never does that, see huref.sources).
`attack_directory(source, target, "rotation+reorder_vocabulary")` is the entry point for a saved model.
"""

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from huref.errors import HurefError


# --------------------------------------------------------------------------------------------- checkpoints

# JSON files beside the weights that are carried over (their token ids follow a vocabulary reordering)
EXTRA_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


@dataclass
class Checkpoint:
    """A checkpoint in memory: `tensors` by saved name, `config` (config.json), `tokenizer` (tokenizer.json,
    or None) and `extras` (the EXTRA_FILES present, by file name)."""
    tensors: dict
    config: dict
    tokenizer: dict | None = None
    extras: dict = field(default_factory=dict)


def read_checkpoint(directory) -> Checkpoint:
    """Read config.json, every *.safetensors file and tokenizer.json (if present) from `directory`."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    if not tensors:
        raise HurefError(f"no *.safetensors in {directory}")
    tokenizer_path = directory / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text()) if tokenizer_path.exists() else None
    extras = {name: json.loads((directory / name).read_text()) for name in EXTRA_FILES if (directory / name).exists()}
    return Checkpoint({k: v.float() for k, v in tensors.items()}, config, tokenizer, extras)


def write_checkpoint(checkpoint: Checkpoint, directory, dtype: torch.dtype = torch.float32) -> Path:
    """Write `checkpoint` into `directory` as config.json + model.safetensors (tensors stored as `dtype`;
    anything but float32 rounds the weights) + tokenizer.json and the EXTRA_FILES it holds."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(checkpoint.config, indent=2))
    save_file({k: v.to(dtype).contiguous() for k, v in checkpoint.tensors.items()},
              str(directory / "model.safetensors"), metadata={"format": "pt"})
    extras = dict(checkpoint.extras)
    if checkpoint.tokenizer is not None:
        (directory / "tokenizer.json").write_text(json.dumps(checkpoint.tokenizer))
        extras.setdefault("tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast"})
    for name, content in extras.items():
        (directory / name).write_text(json.dumps(content, indent=2))
    return directory


# ------------------------------------------------------------------------------------------ architectures

_LLAMA_LAYER = {
    "attn_norm": "input_layernorm", "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
    "o": "self_attn.o_proj", "mlp_norm": "post_attention_layernorm",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}
_LLAMA = dict(prefix="model.layers.{i}.", embed="model.embed_tokens", final_norm="model.norm", head="lm_head",
              layer=_LLAMA_LAYER, norm="rms", ffn="gated", eps_key="rms_norm_eps")
_GEMMA2_LAYER = dict(_LLAMA_LAYER, post_attn_norm="post_attention_layernorm",
                     mlp_norm="pre_feedforward_layernorm", post_mlp_norm="post_feedforward_layernorm")
_QK_NORM = dict(q_norm="self_attn.q_norm", k_norm="self_attn.k_norm")
_NO_MLP = {k: v for k, v in _LLAMA_LAYER.items() if k not in ("gate", "up", "down")}
_PLAIN_LINEAR_ATTN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj"}

# model_type -> how its tensors are named and what its blocks are made of (before config-dependent details)
ARCHITECTURES = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": dict(_LLAMA, layer=dict(_LLAMA_LAYER, **_QK_NORM), qk_norm="head"),
    "gemma": dict(_LLAMA, norm="rms_offset"),
    "gemma2": dict(_LLAMA, norm="rms_offset", layer=_GEMMA2_LAYER),
    "gemma3_text": dict(_LLAMA, norm="rms_offset", layer=dict(_GEMMA2_LAYER, **_QK_NORM), qk_norm="head"),
    "olmo": dict(_LLAMA, norm="ln_bare", eps_key=None,
                 layer={k: v for k, v in _LLAMA_LAYER.items() if "norm" not in k}),
    "olmo2": dict(_LLAMA, eps_key=None, qk_norm="row",
                  layer=dict({k: v for k, v in _LLAMA_LAYER.items() if "norm" not in k}, **_QK_NORM,
                             post_attn_norm="post_attention_layernorm", post_mlp_norm="post_feedforward_layernorm")),
    "mixtral": dict(_LLAMA, layer=_NO_MLP, experts="block_sparse_moe.experts.{e}.",
                    expert_layer={"gate": "w1", "up": "w3", "down": "w2"}, router="block_sparse_moe.gate"),
    "qwen2_moe": dict(_LLAMA, layer=dict(_LLAMA_LAYER, shared_gate="mlp.shared_expert.gate_proj",
                                         shared_up="mlp.shared_expert.up_proj",
                                         shared_down="mlp.shared_expert.down_proj",
                                         shared_router="mlp.shared_expert_gate"),
                      experts="mlp.experts.{e}.",
                      expert_layer={"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}, router="mlp.gate"),
    "phi": dict(_LLAMA, norm="ln", ffn="plain", final_norm="model.final_layernorm", eps_key="layer_norm_eps",
                head_bias="lm_head.bias",
                layer=dict(_PLAIN_LINEAR_ATTN, attn_norm="input_layernorm", o="self_attn.dense",
                           up="mlp.fc1", down="mlp.fc2"), shared_norm=True),
    "phi3": dict(_LLAMA, layer=dict(attn_norm="input_layernorm", o="self_attn.o_proj",
                                    mlp_norm="post_attention_layernorm", down="mlp.down_proj"),
                 fused={"self_attn.qkv_proj": ("concat", ("q", "k", "v")), "mlp.gate_up_proj": ("concat", ("gate", "up"))}),
    "stablelm": dict(_LLAMA, norm="ln", eps_key="layer_norm_eps"),
    "starcoder2": dict(_LLAMA, norm="ln", ffn="plain", eps_key="norm_epsilon",
                       layer=dict(_NO_MLP, up="mlp.c_fc", down="mlp.c_proj")),
    "gpt2": dict(prefix="transformer.h.{i}.", embed="transformer.wte", pos_embeds=("transformer.wpe",),
                 final_norm="transformer.ln_f", head="lm_head", norm="ln", ffn="plain", eps_key="layer_norm_epsilon",
                 rotary_style=None,
                 layer={"attn_norm": "ln_1", "o": "attn.c_proj", "mlp_norm": "ln_2", "up": "mlp.c_fc",
                        "down": "mlp.c_proj"},
                 fused={"attn.c_attn": ("concat", ("q", "k", "v"))},
                 conv1d=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")),
    "gpt_neox": dict(prefix="gpt_neox.layers.{i}.", embed="gpt_neox.embed_in", final_norm="gpt_neox.final_layer_norm",
                     head="embed_out", norm="ln", ffn="plain", eps_key="layer_norm_eps",
                     layer={"attn_norm": "input_layernorm", "o": "attention.dense",
                            "mlp_norm": "post_attention_layernorm", "up": "mlp.dense_h_to_4h",
                            "down": "mlp.dense_4h_to_h"},
                     fused={"attention.query_key_value": ("per_head", ("q", "k", "v"))}),
    "gptj": dict(prefix="transformer.h.{i}.", embed="transformer.wte", final_norm="transformer.ln_f", head="lm_head",
                 head_bias="lm_head.bias", norm="ln", ffn="plain", eps_key="layer_norm_epsilon", rotary_style="pairs",
                 layer={"attn_norm": "ln_1", "q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj",
                        "o": "attn.out_proj", "up": "mlp.fc_in", "down": "mlp.fc_out"}, shared_norm=True),
    "gpt_neo": dict(prefix="transformer.h.{i}.", embed="transformer.wte", pos_embeds=("transformer.wpe",),
                    final_norm="transformer.ln_f", head="lm_head", norm="ln", ffn="plain",
                    eps_key="layer_norm_epsilon", rotary_style=None,
                    layer={"attn_norm": "ln_1", "q": "attn.attention.q_proj", "k": "attn.attention.k_proj",
                           "v": "attn.attention.v_proj", "o": "attn.attention.out_proj", "mlp_norm": "ln_2",
                           "up": "mlp.c_fc", "down": "mlp.c_proj"}),
    "falcon": dict(prefix="transformer.h.{i}.", embed="transformer.word_embeddings", final_norm="transformer.ln_f",
                   head="lm_head", norm="ln", ffn="plain", eps_key="layer_norm_epsilon",
                   layer={"o": "self_attention.dense", "up": "mlp.dense_h_to_4h", "down": "mlp.dense_4h_to_h"}),
    "opt": dict(prefix="model.decoder.layers.{i}.", embed="model.decoder.embed_tokens",
                pos_embeds=("model.decoder.embed_positions",), final_norm="model.decoder.final_layer_norm",
                head="lm_head", norm="ln", ffn="plain", eps_key=None, rotary_style=None,
                layer={"attn_norm": "self_attn_layer_norm", "q": "self_attn.q_proj", "k": "self_attn.k_proj",
                       "v": "self_attn.v_proj", "o": "self_attn.out_proj", "mlp_norm": "final_layer_norm",
                       "up": "fc1", "down": "fc2"}),
    "bloom": dict(prefix="transformer.h.{i}.", embed="transformer.word_embeddings",
                  emb_norm="transformer.word_embeddings_layernorm", final_norm="transformer.ln_f", head="lm_head",
                  norm="ln", ffn="plain", eps_key="layer_norm_epsilon", rotary_style=None, alibi=True,
                  layer={"attn_norm": "input_layernorm", "o": "self_attention.dense",
                         "mlp_norm": "post_attention_layernorm", "up": "mlp.dense_h_to_4h",
                         "down": "mlp.dense_4h_to_h"},
                  fused={"self_attention.query_key_value": ("per_head", ("q", "k", "v"))}),
    "bert": dict(prefix="bert.encoder.layer.{i}.", embed="bert.embeddings.word_embeddings",
                 pos_embeds=("bert.embeddings.position_embeddings", "bert.embeddings.token_type_embeddings"),
                 emb_norm="bert.embeddings.LayerNorm", final_norm=None, head="cls.predictions.decoder",
                 head_bias="cls.predictions.bias", head_bias_alias="cls.predictions.decoder.bias",
                 head_reader="cls.predictions.transform.dense",
                 norm="ln", ffn="plain", eps_key="layer_norm_eps", rotary_style=None, residual_post_norm=True,
                 layer={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                        "o": "attention.output.dense", "post_attn_norm": "attention.output.LayerNorm",
                        "up": "intermediate.dense", "down": "output.dense", "post_mlp_norm": "output.LayerNorm"}),
}


@dataclass
class Layout:
    """Everything the attacks need to know about one checkpoint's architecture (pure data).

    `layer` maps roles (attn_norm, q, k, v, o, q_norm, k_norm, post_attn_norm, mlp_norm, gate, up, down,
    post_mlp_norm, shared_*) to module names relative to `prefix`; `fused` maps a fused module to
    (layout kind, roles); `norm` is "rms", "rms_offset" (gain is 1 + weight), "ln" or "ln_bare" (no parameters).
    """
    model_type: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rotary_dim: int          # leading dims of each head that RoPE rotates (0: no RoPE)
    rotary_style: str | None  # "half": pairs (p, p + r/2); "pairs": (2p, 2p + 1)
    prefix: str
    layer: dict
    embed: str
    head: str
    norm: str
    ffn: str
    tied: bool
    eps_key: str | None = None
    pos_embeds: tuple = ()
    emb_norm: str | None = None
    final_norm: str | None = None
    head_bias: str | None = None
    head_bias_alias: str | None = None   # bert: the decoder's own bias, saved only once untied
    head_reader: str | None = None   # bert: the transform that reads the residual before the head
    residual_post_norm: bool = False # bert: the post-norms normalise the residual sum, not just the write
    shared_norm: bool = False        # the FFN reads the attention's norm (gptj, phi, falcon parallel)
    qk_norm: str | None = None       # "head": per-head q/k norm; "row": over the whole projection
    alibi: bool = False
    relu: bool = False
    reader_bias: bool = True         # config does not switch the q/k/v/FFN-input biases off
    clip_qkv: bool = False           # olmo: q, k, v are clamped, so only their values may not change
    fused: dict = field(default_factory=dict)
    conv1d: tuple = ()
    experts: str | None = None
    expert_layer: dict = field(default_factory=dict)
    router: str | None = None
    n_experts: int = 0

    @property
    def post_norms(self) -> bool:
        return "post_attn_norm" in self.layer or "post_mlp_norm" in self.layer

    @property
    def pre_norms(self) -> bool:
        return "attn_norm" in self.layer or self.norm == "ln_bare"


def _config_value(config: dict, *keys, default=None):
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def layout_of(config: dict) -> Layout:
    """The Layout of a checkpoint with HF `config` (config.json as a dict)."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise HurefError(f"attacks: unsupported model_type {model_type!r}; supported: {', '.join(ARCHITECTURES)}")
    arch = dict(ARCHITECTURES[model_type])
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model")
    n_heads = _config_value(config, "num_attention_heads", "n_head", "num_heads")
    n_kv_heads = _config_value(config, "num_key_value_heads", default=n_heads)
    head_dim = _config_value(config, "head_dim", default=hidden // n_heads)
    rope = config.get("rope_parameters") or {}
    partial = _config_value(config, "partial_rotary_factor", "rotary_pct", default=rope.get("partial_rotary_factor", 1.0))
    layer = dict(arch.pop("layer"))
    unsupported = {
        "opt": not config.get("do_layer_norm_before", True)
        or config.get("word_embed_proj_dim", hidden) != hidden,
        "stablelm": bool(config.get("qk_layernorm")), "phi": bool(config.get("qk_layernorm")),
    }
    if unsupported.get(model_type):
        raise HurefError(f"attacks: this {model_type} variant (post-LayerNorm, projected embeddings or "
                         "per-head q/k LayerNorm) is not supported")
    if model_type == "falcon":
        if config.get("new_decoder_architecture"):
            n_kv_heads = config["num_kv_heads"]
            kind = "grouped"
        else:
            n_kv_heads = 1 if config.get("multi_query", True) else n_heads
            kind = "concat" if config.get("multi_query", True) else "per_head"
        arch["fused"] = {"self_attention.query_key_value": (kind, ("q", "k", "v"))}
        if config.get("new_decoder_architecture") and (config.get("num_ln_in_parallel_attn") or 2) == 2:
            layer.update(attn_norm="ln_attn", mlp_norm="ln_mlp")
        elif not config.get("parallel_attn", True):
            layer.update(attn_norm="input_layernorm", mlp_norm="post_attention_layernorm")
        else:
            layer["attn_norm"] = "input_layernorm"
            arch["shared_norm"] = True
        arch["alibi"] = bool(config.get("alibi"))
        if arch["alibi"]:
            arch["rotary_style"] = None
    if model_type == "gptj":
        rotary_dim = config.get("rotary_dim") or head_dim
    else:
        rotary_dim = int(head_dim * partial)
    style = arch.pop("rotary_style", "half")
    if style is None:
        rotary_dim = 0
    activation = str(_config_value(config, "hidden_act", "activation_function", "activation", default=""))
    n_experts = _config_value(config, "num_local_experts", "num_experts", default=0) if "experts" in arch else 0
    return Layout(
        model_type=model_type, n_layers=_config_value(config, "num_hidden_layers", "n_layer", "num_layers"),
        hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, rotary_dim=rotary_dim,
        rotary_style=style if rotary_dim else None, layer=layer, tied=bool(config.get("tie_word_embeddings", True)),
        relu=activation == "relu", n_experts=n_experts,
        clip_qkv=config.get("clip_qkv") is not None,
        reader_bias=all(config.get(k) is not False for k in ("bias", "use_bias", "use_qkv_bias", "enable_bias")), **arch)


# ----------------------------------------------------------------------------- canonical (unfused) view

def _split(tensors: dict, layout: Layout) -> dict:
    """Tensors with fused weights split into "<name>#<role>" parts and Conv1D weights made [out, in]."""
    out = dict(tensors)
    nh, nkv, d = layout.n_heads, layout.n_kv_heads, layout.head_dim
    for i in range(layout.n_layers):
        prefix = layout.prefix.format(i=i)
        for module in layout.conv1d:
            out[prefix + module + ".weight"] = out[prefix + module + ".weight"].T
        for module, (kind, roles) in layout.fused.items():
            for suffix in ("weight", "bias"):
                name = f"{prefix}{module}.{suffix}"
                if name not in out:
                    continue
                fused = out.pop(name)
                rest = fused.shape[1:]
                if kind == "concat":
                    sizes = {"q": nh * d, "k": nkv * d, "v": nkv * d}
                    sizes = [sizes[r] if r in sizes else fused.shape[0] // len(roles) for r in roles]
                    parts = torch.split(fused, sizes)
                elif kind == "per_head":   # [head, (q, k, v), d]
                    grouped = fused.reshape(nh, 3, d, *rest)
                    parts = [grouped[:, j].reshape(nh * d, *rest) for j in range(3)]
                else:                      # grouped: [kv head, (q x n_rep, k, v), d]
                    rep = nh // nkv
                    grouped = fused.reshape(nkv, rep + 2, d, *rest)
                    parts = [grouped[:, :rep].reshape(nh * d, *rest), grouped[:, rep].reshape(nkv * d, *rest),
                             grouped[:, rep + 1].reshape(nkv * d, *rest)]
                for role, part in zip(roles, parts):
                    out[f"{name}#{role}"] = part.clone()
    return out


def _join(parts: dict, layout: Layout) -> dict:
    """Inverse of `_split`."""
    out = dict(parts)
    nh, nkv, d = layout.n_heads, layout.n_kv_heads, layout.head_dim
    for i in range(layout.n_layers):
        prefix = layout.prefix.format(i=i)
        for module, (kind, roles) in layout.fused.items():
            for suffix in ("weight", "bias"):
                name = f"{prefix}{module}.{suffix}"
                if f"{name}#{roles[0]}" not in out:
                    continue
                pieces = [out.pop(f"{name}#{r}") for r in roles]
                rest = pieces[0].shape[1:]
                if kind == "concat":
                    out[name] = torch.cat(pieces)
                elif kind == "per_head":
                    out[name] = torch.stack([p.reshape(nh, d, *rest) for p in pieces], 1).reshape(-1, *rest)
                else:
                    rep = nh // nkv
                    q = pieces[0].reshape(nkv, rep, d, *rest)
                    k, v = (p.reshape(nkv, 1, d, *rest) for p in pieces[1:])
                    out[name] = torch.cat([q, k, v], 1).reshape(-1, *rest)
        for module in layout.conv1d:
            out[prefix + module + ".weight"] = out[prefix + module + ".weight"].T.contiguous()
    return out


class Canon:
    """Named access to the logical matrices of a split checkpoint: `w(i, role)`, `b(i, role)`, set with `put`."""

    def __init__(self, tensors: dict, layout: Layout):
        self.t = tensors
        self.layout = layout
        self.fused_role = {role: module for module, (_, roles) in layout.fused.items() for role in roles}

    def name(self, i, role, suffix="weight"):
        """Key of `role`'s weight/bias in layer i (i=None: a global module name given as `role`)."""
        if i is None:
            return f"{role}.{suffix}"
        prefix = self.layout.prefix.format(i=i)
        if role in self.fused_role:
            return f"{prefix}{self.fused_role[role]}.{suffix}#{role}"
        if role.startswith("expert"):
            e, sub = role[len("expert"):].split(".")
            return f"{prefix}{self.layout.experts.format(e=e)}{self.layout.expert_layer[sub]}.{suffix}"
        if role == "router":
            return f"{prefix}{self.layout.router}.{suffix}"
        return f"{prefix}{self.layout.layer[role]}.{suffix}" if role in self.layout.layer else None

    def get(self, i, role, suffix="weight"):
        key = self.name(i, role, suffix)
        return self.t.get(key) if key else None

    def put(self, i, role, value, suffix="weight"):
        key = self.name(i, role, suffix)
        assert key in self.t, key
        self.t[key] = value

    def update(self, i, role, fn, suffix="weight"):
        """Replace the tensor (if present) by fn(tensor)."""
        value = self.get(i, role, suffix)
        if value is not None:
            self.put(i, role, fn(value), suffix)

    def ffn_units(self, i):
        """The FFNs of layer i as lists of roles [(gate or None, up, down)]: dense, each expert, shared expert."""
        units = []
        if self.get(i, "up") is not None:
            units.append(("gate" if self.get(i, "gate") is not None else None, "up", "down"))
        if self.get(i, "router") is not None:   # a sparse layer (qwen2_moe may keep some layers dense)
            units += [(f"expert{e}.gate", f"expert{e}.up", f"expert{e}.down") for e in range(self.layout.n_experts)]
        if self.get(i, "shared_up") is not None:
            units.append(("shared_gate", "shared_up", "shared_down"))
        return units


def _edit(checkpoint: Checkpoint, fn) -> Checkpoint:
    """Apply fn(canon) to a split copy of `checkpoint` and return the joined result (config copied)."""
    layout = layout_of(checkpoint.config)
    canon = Canon(_split(checkpoint.tensors, layout), layout)
    result = Checkpoint(canon.t, copy.deepcopy(checkpoint.config), copy.deepcopy(checkpoint.tokenizer),
                        copy.deepcopy(checkpoint.extras))
    fn(canon, result)
    result.tensors = _join(canon.t, layout)
    return result


# ------------------------------------------------------------------------------------------ random draws

def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random n x n orthogonal matrix (QR of a Gaussian, signs fixed), float64."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def orthogonal_fixing_ones(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random orthogonal T with T·1 = 1 (commutes with LayerNorm's mean removal), float64."""
    basis = torch.cat([torch.ones(n, 1, dtype=torch.float64),
                       torch.randn(n, n - 1, generator=generator, dtype=torch.float64)], 1)
    basis, _ = torch.linalg.qr(basis)
    basis[:, 0] = basis[:, 0].abs()
    inner = torch.eye(n, dtype=torch.float64)
    inner[1:, 1:] = random_orthogonal(n - 1, generator)
    return basis @ inner @ basis.T


def random_scales(n: int, generator: torch.Generator, signed=True, spread=1.0) -> torch.Tensor:
    """n factors exp(U(-spread, spread)), each with a random sign when `signed`, float64."""
    scales = torch.exp((torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * spread)
    if signed:
        scales = scales * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
    return scales


def random_invertible(n: int, generator: torch.Generator) -> torch.Tensor:
    """A well-conditioned random invertible matrix: orthogonal · positive diagonal (0.37..2.7) · orthogonal."""
    return random_orthogonal(n, generator) @ torch.diag(random_scales(n, generator, signed=False)) @ \
        random_orthogonal(n, generator)


def _perm(n, generator):
    return torch.randperm(n, generator=generator)


def _f64(fn):
    """Run fn on a float64 copy and return float32."""
    return lambda x: fn(x.double()).float()


# ----------------------------------------------------------------------------- residual-stream rewrites

def _norm_gain(canon, i, role):
    """(gain as the forward multiplies it, bias) of a norm, or (None, None) when it has no parameters."""
    if role is None:
        return None, None
    weight, bias = canon.get(i, role), canon.get(i, role, "bias")
    if weight is None:
        return None, bias
    return (weight.double() + 1 if canon.layout.norm == "rms_offset" else weight.double()), bias


def _set_gain(canon, i, role, gain):
    if canon.get(i, role) is not None:
        canon.put(i, role, (gain - 1 if canon.layout.norm == "rms_offset" else gain).float())


def _reader_groups(canon, i):
    """[(norm role or None, reader roles)] of layer i: each norm (if any) and the matrices reading its output."""
    lay = canon.layout
    attn = ["q", "k", "v"]
    ffn = [r for unit in canon.ffn_units(i) for r in unit[:2] if r is not None]
    ffn += [r for r in ("router", "shared_router") if canon.get(i, r) is not None]
    attn_norm = "attn_norm" if "attn_norm" in lay.layer else None
    if lay.shared_norm:
        return [(attn_norm, attn + ffn)]
    return [(attn_norm, attn), ("mlp_norm" if "mlp_norm" in lay.layer else None, ffn)]


def _writers(canon, i):
    """Roles of layer i whose output is added to the residual stream (their rows live in it)."""
    return ["o"] + [unit[2] for unit in canon.ffn_units(i)]


def _untie(canon, result):
    """Give the head its own tensor (a copy of the embedding) if the two were tied."""
    lay = canon.layout
    if lay.tied and canon.name(None, lay.head) not in canon.t:
        canon.t[canon.name(None, lay.head)] = canon.t[canon.name(None, lay.embed)].clone()
        if lay.head_bias_alias:
            canon.t[lay.head_bias_alias] = canon.t[lay.head_bias].clone()
    result.config["tie_word_embeddings"] = False


def change_residual_basis(canon: Canon, result: Checkpoint, T: torch.Tensor, fold: bool):
    """Rewrite the model for residual stream x -> T x (T [H, H], orthogonal, float64).

    fold=True: fold every pre-norm's gain (and LayerNorm bias, as T(b/g)) into the weights reading it and
    set the gain to 1, so T can be any orthogonal matrix (fixing the all-ones vector for LayerNorm).
    fold=False: T must be a (signed, for RMSNorm) permutation; norm gains and biases are permuted.
    """
    lay = canon.layout
    Tabs = T.abs()
    row_map = _f64(lambda w: w @ T.T)        # rows are residual vectors (embeddings)
    write = _f64(lambda w: T @ w)            # writer weights [H, *] and biases [H]

    def fold_into(i, norm_role, readers):
        gain, bias = _norm_gain(canon, i, norm_role)
        if fold and gain is not None:
            for r in readers:
                canon.update(i, r, _f64(lambda w: w @ torch.diag(gain) @ T.T))
            _set_gain(canon, i, norm_role, torch.ones_like(gain))
            if bias is not None:
                canon.put(i, norm_role, (T @ (bias.double() / gain)).float(), "bias")
        else:
            for r in readers:
                canon.update(i, r, _f64(lambda w: w @ T.T))
            if gain is not None:
                _set_gain(canon, i, norm_role, Tabs @ gain)
            if bias is not None:
                canon.put(i, norm_role, write(bias), "bias")

    final_gain = _norm_gain(canon, None, lay.final_norm)[0] if lay.final_norm else None
    if lay.tied and (lay.head_reader is not None or fold and final_gain is not None):
        _untie(canon, result)   # the head does not follow the embedding (folded gain, or bert's own space)
    for name in (lay.embed, *lay.pos_embeds):
        canon.update(None, name, row_map)
    if lay.emb_norm:   # bloom / bert: the embedding LayerNorm's output starts the residual stream
        canon.update(None, lay.emb_norm, lambda g: (Tabs @ g.double()).float())
        canon.update(None, lay.emb_norm, write, "bias")
    for i in range(lay.n_layers):
        for norm_role, readers in _reader_groups(canon, i):
            fold_into(i, norm_role, readers)
        for role in _writers(canon, i):
            canon.update(i, role, write)
            canon.update(i, role, write, "bias")
        for role in ("post_attn_norm", "post_mlp_norm"):
            if role in lay.layer:
                gain, bias = _norm_gain(canon, i, role)
                _set_gain(canon, i, role, Tabs @ gain)
                if bias is not None:
                    canon.put(i, role, write(bias), "bias")
    # a head still tied to the embedding is absent from the tensors and was rewritten with it
    fold_into(None, lay.final_norm, [lay.head_reader or lay.head])


def rotation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Fold the pre-norm gains into the weights and rotate the residual stream by a random orthogonal matrix.

    RMSNorm models get a Haar-random rotation; LayerNorm models one that fixes the all-ones vector, with
    the LayerNorm bias carried as T(b/g). A tied head is untied (it absorbs the final norm's gain).
    """
    layout = layout_of(checkpoint.config)
    draw = orthogonal_fixing_ones if layout.norm.startswith("ln") else random_orthogonal
    T = draw(layout.hidden, generator)
    return _edit(checkpoint, lambda canon, result: change_residual_basis(canon, result, T, fold=True))


def zhu_rotation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """The model-tracing attack of Zhu et al., "Independence Tests for Language Models" (ICML 2025).

    As in their `rotate_model` (github.com/salzhu/model-tracing, tracing/utils/llama/model.py): multiply
    q/k/v and gate/up by diag(input norm gain) and a Haar-random orthogonal R, o/down by R^T on the left,
    embeddings by R, the head by diag(final norm gain)·R, and set every RMSNorm gain to one. Here that is
    `change_residual_basis` with T = R^T; it applies to RMSNorm pre-norm models only.
    """
    layout = layout_of(checkpoint.config)
    R = random_orthogonal(layout.hidden, generator)
    return _edit(checkpoint, lambda canon, result: change_residual_basis(canon, result, R.T, fold=True))


def residual_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the residual stream's coordinates (with random sign flips for RMSNorm models), norms permuted too.

    The residual change of basis that survives post-norms (gemma2/3, olmo2, bert) and an embedding LayerNorm
    (bloom); sign flips would break LayerNorm's mean, so LayerNorm models get a plain permutation.
    """
    layout = layout_of(checkpoint.config)
    T = torch.eye(layout.hidden, dtype=torch.float64)[_perm(layout.hidden, generator)]
    if not layout.norm.startswith("ln"):
        T = T * random_scales(layout.hidden, generator, spread=0.0)[:, None]
    return _edit(checkpoint, lambda canon, result: change_residual_basis(canon, result, T, fold=False))


# ------------------------------------------------------------------------------------ attention rewrites

def _rotary_pairs(layout: Layout) -> list[tuple[int, int]]:
    """The (i, j) dimension pairs of a head that RoPE rotates together."""
    r = layout.rotary_dim
    if layout.rotary_style == "pairs":
        return [(2 * p, 2 * p + 1) for p in range(r // 2)]
    return [(p, p + r // 2) for p in range(r // 2)]


def rope_commuting_matrix(layout: Layout, generator: torch.Generator) -> torch.Tensor:
    """A random invertible d x d map M with (M q)·(M^-T k) = q·k that commutes with RoPE.

    Each rotary pair gets a scaled 2-D rotation s·R(θ) (it commutes with RoPE's rotation of that plane);
    the non-rotary dims get an arbitrary well-conditioned invertible block.
    """
    d = layout.head_dim
    M = torch.zeros(d, d, dtype=torch.float64)
    pairs = _rotary_pairs(layout)
    for a, b in pairs:
        theta = float(torch.rand(1, generator=generator, dtype=torch.float64)) * 2 * math.pi
        s = float(random_scales(1, generator)[0])
        M[a, a], M[a, b], M[b, a], M[b, b] = s * math.cos(theta), -s * math.sin(theta), s * math.sin(theta), s * math.cos(theta)
    rest = [j for j in range(d) if j not in {x for pair in pairs for x in pair}]
    if rest:
        M[torch.tensor(rest)[:, None], torch.tensor(rest)] = random_invertible(len(rest), generator)
    return M


def _per_kv_head(canon, i, maps_q, maps_k, roles=("q", "k")):
    """Apply maps_q[j] to the rows of every query head in group j and maps_k[j] to key head j (weights and biases)."""
    lay = canon.layout
    d, rep = lay.head_dim, lay.n_heads // lay.n_kv_heads

    def by_head(maps, n_heads, per_group):
        def apply(w):
            heads = w.double().reshape(n_heads, d, *w.shape[1:])
            out = torch.stack([maps[h // per_group] @ heads[h].reshape(d, -1) for h in range(n_heads)])
            return out.reshape(w.shape).float()
        return apply

    for suffix in ("weight", "bias"):
        canon.update(i, roles[0], by_head(maps_q, lay.n_heads, rep), suffix)
        canon.update(i, roles[1], by_head(maps_k, lay.n_kv_heads, 1), suffix)


def qk_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: queries -> M q, keys -> M^-T k with M commuting with RoPE (shared across a GQA group)."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            maps = [rope_commuting_matrix(canon.layout, generator) for _ in range(canon.layout.n_kv_heads)]
            _per_kv_head(canon, i, maps, [torch.linalg.inv(m).T for m in maps])
    return _edit(checkpoint, edit)


def qk_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: queries times c, keys divided by c (c random, either sign)."""
    def edit(canon, result):
        eye = torch.eye(canon.layout.head_dim, dtype=torch.float64)
        for i in range(canon.layout.n_layers):
            scales = random_scales(canon.layout.n_kv_heads, generator, spread=1.5)
            _per_kv_head(canon, i, [c * eye for c in scales], [eye / c for c in scales])
    return _edit(checkpoint, edit)


def qk_norm_rescale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """QK-norm models: scale W_q and W_k by positive factors the q/k norms divide out again.

    Per-head norms (qwen3, gemma3): every query head and every key head gets its own factor; a norm over the
    whole projection (olmo2): one factor for all queries and one for all keys.
    """
    def edit(canon, result):
        lay = canon.layout
        for i in range(lay.n_layers):
            n_q, n_k = (lay.n_heads, lay.n_kv_heads) if lay.qk_norm == "head" else (1, 1)
            # factors >= 1, so the norms' epsilon matters even less than in the original
            cq, ck = (1 + random_scales(n, generator, signed=False, spread=1.5) for n in (n_q, n_k))
            for role, c, n in (("q", cq, lay.n_heads), ("k", ck, lay.n_kv_heads)):
                per_head = c.repeat_interleave(n // len(c)).repeat_interleave(lay.head_dim)
                canon.update(i, role, _f64(lambda w: w * per_head[:, None]))
                canon.update(i, role, _f64(lambda b: b * per_head), "bias")
    return _edit(checkpoint, edit)


def qk_norm_gain_exchange(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """QK-norm models: q_norm gain times s, k_norm gain divided by s, s equal on both dims of each rotary pair."""
    def edit(canon, result):
        lay = canon.layout
        d = lay.head_dim
        rep = lay.n_heads // lay.n_kv_heads
        n_groups = lay.n_kv_heads if lay.qk_norm == "row" else 1
        for i in range(lay.n_layers):
            s = random_scales(n_groups * d, generator, spread=1.0).reshape(n_groups, d)
            for a, b in _rotary_pairs(lay):
                s[:, b] = s[:, a]
            s_k = s.reshape(-1)
            s_q = s.repeat_interleave(rep, 0).reshape(-1) if lay.qk_norm == "row" else s_k
            for role, factor in (("q_norm", s_q), ("k_norm", 1 / s_k)):
                gain, _ = _norm_gain(canon, i, role)
                _set_gain(canon, i, role, gain * factor)
    return _edit(checkpoint, edit)


def vo_transform(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Per key/value head: values -> A v, and the output projection columns of its query heads times A^-1."""
    def edit(canon, result):
        lay = canon.layout
        d, rep = lay.head_dim, lay.n_heads // lay.n_kv_heads
        for i in range(lay.n_layers):
            maps = [random_invertible(d, generator) for _ in range(lay.n_kv_heads)]
            inverse = [torch.linalg.inv(m) for m in maps]

            def values(w):
                heads = w.double().reshape(lay.n_kv_heads, d, -1)
                return torch.stack([maps[j] @ heads[j] for j in range(lay.n_kv_heads)]).reshape(w.shape).float()

            def output(w):
                cols = w.double().reshape(w.shape[0], lay.n_heads, d)
                return torch.stack([cols[:, h] @ inverse[h // rep] for h in range(lay.n_heads)], 1).reshape(w.shape).float()

            canon.update(i, "v", values)
            canon.update(i, "v", values, "bias")
            canon.update(i, "o", output)
    return _edit(checkpoint, edit)


def head_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Reorder the attention heads: key/value heads by a permutation, query heads within and with their groups."""
    def edit(canon, result):
        lay = canon.layout
        d, rep = lay.head_dim, lay.n_heads // lay.n_kv_heads
        for i in range(lay.n_layers):
            kv_order = _perm(lay.n_kv_heads, generator)
            q_order = torch.cat([kv_order[a] * rep + _perm(rep, generator) for a in range(lay.n_kv_heads)])
            rows_q = (q_order[:, None] * d + torch.arange(d)).reshape(-1)
            rows_kv = (kv_order[:, None] * d + torch.arange(d)).reshape(-1)
            for suffix in ("weight", "bias"):
                canon.update(i, "q", lambda w: w[rows_q], suffix)
                for role in ("k", "v"):
                    canon.update(i, role, lambda w: w[rows_kv], suffix)
            canon.update(i, "o", lambda w: w[:, rows_q])
            if lay.qk_norm == "row":
                canon.update(i, "q_norm", lambda g: g[rows_q])
                canon.update(i, "k_norm", lambda g: g[rows_kv])
    return _edit(checkpoint, edit)


# ------------------------------------------------------------------------------------------ FFN rewrites

def ffn_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the hidden neurons of every FFN (each expert and the shared expert separately)."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for gate, up, down in canon.ffn_units(i):
                order = _perm(canon.get(i, up).shape[0], generator)
                for role in (gate, up):
                    if role is not None:
                        canon.update(i, role, lambda w: w[order])
                        canon.update(i, role, lambda b: b[order], "bias")
                canon.update(i, down, lambda w: w[:, order])
    return _edit(checkpoint, edit)


def ffn_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Scale each FFN neuron's input by c and its output by 1/c.

    Gated FFNs: the up projection, any sign (act(gate)·(c·up) is linear in up). Plain ReLU FFNs: the input
    projection with c > 0 (relu(c·x) = c·relu(x)).
    """
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for gate, up, down in canon.ffn_units(i):
                scales = random_scales(canon.get(i, up).shape[0], generator, signed=gate is not None, spread=1.5)
                canon.update(i, up, _f64(lambda w: w * scales[:, None]))
                canon.update(i, up, _f64(lambda b: b * scales), "bias")
                canon.update(i, down, _f64(lambda w: w / scales))
    return _edit(checkpoint, edit)


def expert_permutation(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Reorder the experts of every MoE layer together with the router's rows."""
    def edit(canon, result):
        lay = canon.layout
        for i in range(lay.n_layers):
            if canon.get(i, "router") is None:
                continue
            order = _perm(lay.n_experts, generator)
            old = {(e, sub): canon.get(i, f"expert{e}.{sub}") for e in range(lay.n_experts) for sub in lay.expert_layer}
            for e in range(lay.n_experts):
                for sub in lay.expert_layer:
                    canon.put(i, f"expert{e}.{sub}", old[(int(order[e]), sub)])
            canon.update(i, "router", lambda w: w[order])
    return _edit(checkpoint, edit)


# ---------------------------------------------------------------------------------- scale and mean shifts

def embedding_scale(checkpoint: Checkpoint, generator: torch.Generator, factor: float = 3.7) -> Checkpoint:
    """Scale the whole residual stream by `factor`: embeddings and every residual write times c, norm eps times c².

    Pre-norms see c·x with eps·c², so their output is unchanged; post-norm gains (the writes of gemma2/3)
    are scaled instead of the matrices before them, and QK-norm inputs are scaled by c to match their eps.
    """
    def edit(canon, result):
        lay = canon.layout
        times = _f64(lambda w: w * factor)
        for name in (lay.embed, *lay.pos_embeds):
            canon.update(None, name, times)
        if lay.emb_norm:
            canon.update(None, lay.emb_norm, times)
            canon.update(None, lay.emb_norm, times, "bias")
        for i in range(lay.n_layers):
            for role in _writers(canon, i):   # with a post-norm this keeps its input in step with its eps
                canon.update(i, role, times)
                canon.update(i, role, times, "bias")
            for post in ("post_attn_norm", "post_mlp_norm"):
                if post in lay.layer:
                    gain, _ = _norm_gain(canon, i, post)
                    _set_gain(canon, i, post, gain * factor)
            if lay.qk_norm:
                for role in ("q", "k"):
                    canon.update(i, role, times)
                    canon.update(i, role, times, "bias")
        if lay.tied and lay.head_reader is None:
            _untie(canon, result)
            canon.update(None, lay.head, _f64(lambda w: w / factor))
        result.config[lay.eps_key] = result.config[lay.eps_key] * factor ** 2
    return _edit(checkpoint, edit)


def post_norm_rescale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Post-norm models (gemma2/3, olmo2): scale the attention output and FFN down projections by factors
    >= 1 per layer; the norm on each write divides them out (its epsilon matters even less afterwards)."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            for roles in (["o"], _writers(canon, i)[1:]):
                c = 1 + float(random_scales(1, generator, signed=False, spread=1.5)[0])
                for role in roles:
                    canon.update(i, role, _f64(lambda w: w * c))
                    canon.update(i, role, _f64(lambda b: b * c), "bias")
    return _edit(checkpoint, edit)


def layernorm_null_direction(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """LayerNorm pre-norm models: add u·(1/g)ᵀ to each matrix reading a LayerNorm (gain g, bias b).

    The normalised input z is centred, so (u·(1/g)ᵀ)(g∘z + b) = u·Σ(b/g): a constant, moved into the
    reader's bias. Readers without a bias are left alone (unless the norm has no bias at all).
    """
    def edit(canon, result):
        lay = canon.layout

        def shift(i, norm_role, readers):
            gain, bias = _norm_gain(canon, i, norm_role)
            gain = torch.ones(lay.hidden, dtype=torch.float64) if gain is None else gain
            offset = 0.0 if bias is None else float((bias.double() / gain).sum())
            for r in readers:
                w = canon.get(i, r)
                if w is None or (canon.get(i, r, "bias") is None and offset != 0.0):
                    continue
                u = float(w.std()) * torch.randn(w.shape[0], generator=generator, dtype=torch.float64)
                canon.put(i, r, (w.double() + u[:, None] / gain).float())
                canon.update(i, r, _f64(lambda b: b - u * offset), "bias")

        for i in range(lay.n_layers):
            for norm_role, readers in _reader_groups(canon, i):
                shift(i, norm_role, readers)
        shift(None, lay.final_norm, [lay.head])
    return _edit(checkpoint, edit)


def router_shift(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """MoE: add one random vector to every row of each router; the softmax over experts cancels it."""
    def edit(canon, result):
        for i in range(canon.layout.n_layers):
            router = canon.get(i, "router")
            if router is None:
                continue
            delta = float(router.std()) * 3 * torch.randn(router.shape[1], generator=generator)
            canon.put(i, "router", router + delta)
    return _edit(checkpoint, edit)


def embedding_row_scale(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Models whose token embedding goes straight into a LayerNorm (bloom): scale each token's row by its own
    factor >= 1; the norm divides it out (its epsilon matters even less afterwards). The head is untied."""
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            _untie(canon, result)
        name = canon.name(None, lay.embed)
        factors = 1 + random_scales(canon.t[name].shape[0], generator, signed=False, spread=1.5)
        canon.t[name] = (canon.t[name].double() * factors[:, None]).float()
    return _edit(checkpoint, edit)


def position_embedding_shift(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Learned absolute positions (gpt2, gpt_neo, opt, bert): add one vector v to every token embedding row
    and subtract it from every row of the other embedding each input adds (positions). The sum entering
    the model is unchanged; the head is untied from the embedding."""
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            _untie(canon, result)
        embed = canon.name(None, lay.embed)
        v = 2 * float(canon.t[embed].std()) * torch.randn(lay.hidden, generator=generator)
        canon.t[embed] = canon.t[embed] + v
        canon.update(None, lay.pos_embeds[0], lambda w: w - v)
    return _edit(checkpoint, edit)


def mean_shift(checkpoint: Checkpoint, generator: torch.Generator, magnitude: float = 1.0) -> Checkpoint:
    """LayerNorm models: add multiples of the all-ones vector to every embedding row and every residual write.

    LayerNorm removes the mean, so nothing downstream sees the shift; the head is untied from the embedding.
    The shifts are about `magnitude` times the embedding's standard deviation.
    """
    def edit(canon, result):
        lay = canon.layout
        if lay.tied:
            _untie(canon, result)
        spread = magnitude * float(canon.get(None, lay.embed).std())

        def shift_rows(w):   # w [*, H]: each row plus s·1
            return w + spread * torch.randn(w.shape[0], 1, generator=generator)

        def shift_writer(w):  # w [H, *]: output plus (v·input)·1
            return w + spread * torch.randn(1, w.shape[1], generator=generator)

        def shift_bias(b):
            return b + spread * torch.randn(1, generator=generator)

        for name in (lay.embed, *lay.pos_embeds):
            canon.update(None, name, shift_rows)
        for i in range(lay.n_layers):
            for role in _writers(canon, i):
                canon.update(i, role, shift_writer)
                canon.update(i, role, shift_bias, "bias")
    return _edit(checkpoint, edit)


# ---------------------------------------------------------------------------------------- vocabularies

def vocabulary(tokenizer: dict) -> dict:
    """token string -> id of a parsed tokenizer.json (model vocabulary plus added tokens)."""
    vocab = tokenizer["model"]["vocab"]
    ids = {piece: i for i, (piece, _) in enumerate(vocab)} if isinstance(vocab, list) else dict(vocab)
    ids.update({t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])})
    return ids


def _vocab_rows(canon):
    """(name, kind) of every tensor indexed by token id: embedding, head (if untied), head bias."""
    lay = canon.layout
    names = [canon.name(None, lay.embed), canon.name(None, lay.head)]
    names += [lay.head_bias, lay.head_bias_alias]
    return [n for n in names if n in canon.t]


def append_vocabulary(checkpoint: Checkpoint, generator: torch.Generator, n_new: int = 40) -> Checkpoint:
    """Append `n_new` tokens: new random rows in the embedding and head, new entries in the tokenizer."""
    def edit(canon, result):
        for name in _vocab_rows(canon):
            old = canon.t[name]
            scale = float(old.std())
            canon.t[name] = torch.cat([old, scale * torch.randn(n_new, *old.shape[1:], generator=generator)])
        vocab_size = result.config["vocab_size"]
        result.config["vocab_size"] = vocab_size + n_new
        if result.tokenizer is not None:
            taken = vocabulary(result.tokenizer)
            new = [f"new{j}tok" for j in range(n_new)]
            assert not taken.keys() & set(new)
            result.tokenizer.setdefault("added_tokens", []).extend(
                {"id": vocab_size + j, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": True, "special": False} for j, s in enumerate(new))
    return _edit(checkpoint, edit)


def reorder_vocabulary(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Permute the token ids: embedding/head rows and the tokenizer's ids (and the config's special ids) together."""
    def edit(canon, result):
        n = canon.t[canon.name(None, canon.layout.embed)].shape[0]
        order = _perm(n, generator)                       # new id j holds old id order[j]
        new_of_old = torch.empty_like(order)
        new_of_old[order] = torch.arange(n)
        for name in _vocab_rows(canon):
            canon.t[name] = canon.t[name][order]
        def remap(value):   # a token id, or a list of them
            if isinstance(value, list):
                return [remap(v) for v in value]
            return int(new_of_old[value]) if isinstance(value, int) and 0 <= value < n else value

        for settings in (result.config, result.extras.get("generation_config.json", {})):
            for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "decoder_start_token_id"):
                if key in settings:
                    settings[key] = remap(settings[key])
        tokenizer_config = result.extras.get("tokenizer_config.json", {})
        if "added_tokens_decoder" in tokenizer_config:
            tokenizer_config["added_tokens_decoder"] = {
                str(remap(int(i))): token for i, token in tokenizer_config["added_tokens_decoder"].items()}
        tok = result.tokenizer
        if tok is None:
            return
        vocab = tok["model"]["vocab"]
        if isinstance(vocab, list):
            tok["model"]["vocab"] = [vocab[int(o)] for o in order]
        else:
            tok["model"]["vocab"] = {s: int(new_of_old[i]) for s, i in vocab.items()}
        for added in tok.get("added_tokens", []):
            added["id"] = int(new_of_old[added["id"]])
        for special in ((tok.get("post_processor") or {}).get("special_tokens") or {}).values():
            special["ids"] = [int(new_of_old[i]) for i in special["ids"]]
    return _edit(checkpoint, edit)


def _walk(node):
    """Every dict inside a parsed tokenizer.json component (Sequences included)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def rename_token_strings(checkpoint: Checkpoint, generator: torch.Generator) -> Checkpoint:
    """Rename every vocabulary string through a random bijection of the letters a-z onto other characters,
    with a normaliser that applies it to the input text and a decoder step that undoes it on the output.

    Text still maps to the same ids and ids decode to the same text; the weights are untouched. Not for
    byte-level tokenizers (their pre-tokenizer would see the replaced characters as other bytes) or
    byte-fallback ones. Not in ATTACKS: whether it applies depends on the tokenizer, not the architecture.
    """
    tok = copy.deepcopy(checkpoint.tokenizer)
    if tok is None:
        raise HurefError("rename_token_strings needs a tokenizer.json")
    if any(node.get("type") == "ByteLevel" for node in _walk(tok.get("pre_tokenizer"))) or tok["model"].get("byte_fallback"):
        raise HurefError("rename_token_strings does not apply to byte-level or byte-fallback tokenizers")
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = [chr(c) for c in range(0x100, 0x180)]   # Latin Extended-A
    picked = [pool[int(j)] for j in _perm(len(pool), generator)[:len(letters)]]
    rename = str.maketrans(letters, "".join(picked))
    model = tok["model"]
    specials = {t["content"] for t in tok.get("added_tokens", [])} | {model.get("unk_token")}

    def renamed(piece):
        return piece if piece in specials else piece.translate(rename)

    if isinstance(model["vocab"], list):
        model["vocab"] = [[renamed(piece), score] for piece, score in model["vocab"]]
    else:
        model["vocab"] = {renamed(piece): i for piece, i in model["vocab"].items()}
    if "merges" in model:
        model["merges"] = [" ".join(map(renamed, m.split(" "))) if isinstance(m, str) else [renamed(x) for x in m]
                           for m in model["merges"]]
    forward = [{"type": "Replace", "pattern": {"String": a}, "content": b} for a, b in zip(letters, picked)]
    backward = [{"type": "Replace", "pattern": {"String": b}, "content": a} for a, b in zip(letters, picked)]
    tok["normalizer"] = {"type": "Sequence", "normalizers": ([tok["normalizer"]] if tok.get("normalizer") else []) + forward}
    # no decoder joins tokens with spaces; WordPiece's decoder does the same for pieces without its prefix
    joiner = tok.get("decoder") or {"type": "WordPiece", "prefix": "\u0000##", "cleanup": False}
    tok["decoder"] = {"type": "Sequence", "decoders": backward + [joiner]}
    return Checkpoint(dict(checkpoint.tensors), copy.deepcopy(checkpoint.config), tok, copy.deepcopy(checkpoint.extras))


# ------------------------------------------------------------------------------------------- the suite

def compose(*attacks):
    """One attack applying `attacks` in order."""
    def composed(checkpoint, generator):
        for attack in attacks:
            checkpoint = attack(checkpoint, generator)
        return checkpoint
    composed.__name__ = "+".join(a.__name__ for a in attacks)
    return composed


ATTACKS = {f.__name__: f for f in (
    rotation, zhu_rotation, residual_permutation, qk_transform, qk_scale, qk_norm_rescale, qk_norm_gain_exchange,
    vo_transform, head_permutation, ffn_permutation, ffn_scale, expert_permutation, embedding_scale,
    post_norm_rescale, embedding_row_scale, position_embedding_shift, mean_shift, layernorm_null_direction, router_shift,
    append_vocabulary, reorder_vocabulary)}


def is_valid(name: str, layout: Layout) -> bool:
    """Whether attack `name` preserves the function of models with `layout` (the rules, as data, in one place)."""
    layer_norm = layout.norm.startswith("ln")
    rules = {
        # folding needs every residual read to go through a pre-norm and no norm on a residual write
        "rotation": layout.pre_norms and not layout.post_norms and layout.emb_norm is None,
        "zhu_rotation": layout.norm in ("rms", "rms_offset") and layout.pre_norms and not layout.post_norms,
        "residual_permutation": True,
        "qk_transform": layout.qk_norm is None and not layout.clip_qkv,
        "qk_scale": layout.qk_norm is None and not layout.clip_qkv,
        "qk_norm_rescale": layout.qk_norm is not None and not layout.clip_qkv,
        "qk_norm_gain_exchange": layout.qk_norm is not None,
        "vo_transform": not layout.clip_qkv,
        "head_permutation": not layout.alibi,   # ALiBi slopes are tied to head positions
        "ffn_permutation": True,
        "ffn_scale": layout.ffn == "gated" or layout.relu,
        "expert_permutation": layout.n_experts > 0,
        # needs the norm epsilon in config.json and residual reads only through norms
        "embedding_scale": layout.eps_key is not None and layout.pre_norms and not layout.residual_post_norm,
        "post_norm_rescale": layout.post_norms and not layout.residual_post_norm,
        # the embedding norm must see the token embedding alone (bert adds position embeddings first)
        "embedding_row_scale": layout.emb_norm is not None and not layout.pos_embeds,
        "position_embedding_shift": bool(layout.pos_embeds),
        "mean_shift": layer_norm,
        "layernorm_null_direction": layer_norm and layout.pre_norms and not layout.residual_post_norm
                                    and (layout.reader_bias or layout.norm == "ln_bare"),
        "router_shift": layout.n_experts > 0,
        "append_vocabulary": True,
        "reorder_vocabulary": True,
    }
    return rules[name]


def valid_attacks(layout: Layout) -> list[str]:
    """Names of the attacks in ATTACKS that preserve the function of models with `layout`."""
    return [name for name in ATTACKS if is_valid(name, layout)]


def residual_attack(layout: Layout):
    """The strongest residual-stream rewrite valid for `layout` (rotation, else a permutation)."""
    return rotation if is_valid("rotation", layout) else residual_permutation


def attack_directory(source, target, name: str, seed: int = 0) -> Path:
    """Apply attack `name` (a key of ATTACKS, or several joined by "+") to the checkpoint in `source`, write to `target`."""
    checkpoint = read_checkpoint(source)
    layout = layout_of(checkpoint.config)
    parts = name.split("+")
    for part in parts:
        if part not in ATTACKS:
            raise HurefError(f"unknown attack {part!r}; known: {', '.join(ATTACKS)}")
        if not is_valid(part, layout):
            raise HurefError(f"attack {part!r} does not preserve the function of a {layout.model_type} model")
    generator = torch.Generator().manual_seed(seed)
    return write_checkpoint(compose(*(ATTACKS[p] for p in parts))(checkpoint, generator), target)

"""What the attacks know about a checkpoint's architecture: its `Layout` (pure data, from config.json and
the one table of tensor roles, huref.architectures), and the layout facts that decide which code path an
attack takes (`layout_facts`), which the attack suite covers model by model."""

from dataclasses import dataclass

from huref.architectures import ArchSpec, Norm, Proj, arch_for_config
from huref.config import (EPS_KEYS, Dims, LatentDims, attention_layers, config_value, latent_dims, model_dims,
                          qk_norm_layers)

@dataclass
class Layout:
    """What the attacks need to know about one checkpoint's architecture (pure data): its ArchSpec row
    with the config's variants applied (huref.architectures, the one table of tensor roles), its sizes,
    and the config values a rewrite depends on. Tensor names are full names as transformers saves them."""
    model_type: str
    arch: ArchSpec
    dims: Dims
    rotary_dim: int          # leading dims of each head that RoPE rotates (0: no RoPE)
    tied: bool               # the head shares the embedding's tensor
    eps_key: str | None      # config.json key of the norm epsilon (None: the model fixes it)
    relu: bool
    reader_bias: bool        # config does not switch the q/k/v/FFN-input biases off
    clip_qkv: bool           # olmo: q, k, v are clamped, so only their values may not change
    mla: LatentDims | None = None   # multi-head latent attention sizes (None: ordinary attention)
    expert_groups: int = 1   # DeepSeek routes within groups of consecutive experts (config n_group)
    attention_layers: tuple[int, ...] = ()   # layers whose token mixer is attention (hybrids: not all)
    qk_norm_layers: tuple[int, ...] = ()     # attention layers with QK norms (llama4: its RoPE layers)

    n_layers = property(lambda self: self.dims.n_layers)
    hidden = property(lambda self: self.dims.hidden)
    n_heads = property(lambda self: self.dims.n_heads)
    n_kv_heads = property(lambda self: self.dims.n_kv_heads)
    head_dim = property(lambda self: self.dims.head_dim)

    @property
    def rotary_style(self) -> str | None:
        """"half": RoPE rotates pairs (p, p + r/2); "pairs": (2p, 2p + 1); None: no RoPE."""
        return self.arch.rope if self.rotary_dim else None

    @property
    def n_experts(self) -> int:
        return self.dims.n_experts if any(f.experts for f in self.arch.ffn) else 0

    @property
    def layer_norm(self) -> bool:
        return self.arch.layer_norm

    @property
    def pre_norms(self) -> bool:
        """Every block reads the residual stream through an input norm (with or without parameters)."""
        return bool(self.arch.attn_norm)

    @property
    def bare_norms(self) -> bool:
        """The input norms have no parameters (OLMo)."""
        return any(n.name is None for n in self.arch.attn_norm)

    @property
    def post_norms(self) -> bool:
        return bool(self.arch.attn_post_norm or self.arch.ffn_post_norm)

    @property
    def residual_post_norm(self) -> bool:
        """Post-LN (BERT): a norm over the residual sum, not just over a block's write."""
        return bool(self.arch.residual_norm)

    @property
    def qk_norm(self) -> str | None:
        """"head": per-head q/k norm; "row": over the whole projection; None: no QK norm."""
        return self.arch.q_norm[0].scope if self.arch.q_norm else None

    @property
    def gated(self) -> bool:
        return all(f.gate is not None for f in self.arch.ffn)

    @property
    def alibi(self) -> bool:
        return self.arch.alibi

    def full_name(self, name: str) -> str:
        """A tensor name of the ArchSpec (relative to the base model) as transformers saves it."""
        return self.arch.base_prefix + name

    @property
    def embed(self) -> str:
        return self.full_name(self.arch.embed)

    @property
    def pos_embeds(self) -> tuple[str, ...]:
        return tuple(self.full_name(name) for name, _ in self.arch.added_embeds)

    @property
    def emb_norm(self) -> str | None:
        return _norm_name(self, self.arch.embed_norm)

    @property
    def final_norm(self) -> str | None:
        return _norm_name(self, self.arch.final_norm)

    @property
    def head(self) -> str:
        return self.arch.head

    @property
    def head_bias(self) -> str | None:
        return self.arch.head_bias

    @property
    def head_reader(self) -> str | None:
        return self.arch.head_reader


def _norm_name(layout: Layout, norms: tuple[Norm, ...]) -> str | None:
    """Full name of a global norm's scale (None: no norm, or one without parameters)."""
    return layout.full_name(norms[0].name) if norms and norms[0].name else None


def layout_of(config: dict) -> Layout:
    """The Layout of a checkpoint with HF `config` (config.json as a dict)."""
    arch = arch_for_config(config)
    config = arch.settings(config)
    dims = model_dims(config, arch)
    rope = config.get("rope_parameters") or {}
    partial = config_value(config, "partial_rotary_factor", "rotary_pct",
                           default=rope.get("partial_rotary_factor", 1.0))
    mla = latent_dims(config) if arch.mla is not None else None
    rotary_dim = 0 if arch.rope is None else int(config_value(config, "rotary_dim", default=dims.head_dim * partial))
    if mla is not None:   # RoPE turns the rotary part of each head only
        rotary_dim = mla.rope
    activation = str(config_value(config, "hidden_act", "activation_function", "activation", default=""))
    return Layout(
        model_type=config["model_type"], arch=arch, dims=dims, rotary_dim=rotary_dim, mla=mla,
        attention_layers=attention_layers(config, arch, dims.n_layers),
        qk_norm_layers=qk_norm_layers(config, arch, dims.n_layers),
        expert_groups=int(config.get("n_group") or 1),
        tied=bool(config.get("tie_word_embeddings", True)),
        eps_key=None if arch.layer_norm_eps else next((key for key in EPS_KEYS if config.get(key) is not None), None),
        relu=activation == "relu", clip_qkv=config.get("clip_qkv") is not None,
        reader_bias=all(config.get(k) is not False
                        for k in ("bias", "use_bias", "use_qkv_bias", "enable_bias", "attention_bias")))


def _norm_kinds(norms: tuple[Norm, ...]) -> frozenset[str]:
    """The kinds among norm alternatives; "bare <kind>" for a norm without parameters."""
    return frozenset(n.kind if n.name else f"bare {n.kind}" for n in norms)


def _storage(**projs: Proj | None) -> frozenset[tuple[str, str, bool]]:
    """How each present matrix is stored: (role, fused layout, transposed)."""
    return frozenset((role, p.layout, p.transposed) for role, p in projs.items() if p is not None)


def layout_facts(layout: Layout) -> dict[str, object]:
    """The facts of `layout` that decide which code path an attack takes, by name. A value is a scalar or
    a frozenset of features (each one a fact of its own; empty: none). Each attack names the facts it
    reads (`huref_lab.attacks.rule`); the attack suite runs it on a few models that together show every
    value, and every feature, that those facts take."""
    arch = layout.arch
    mla, experts = arch.mla, arch.attn_experts
    if mla is not None:
        attention = "latent, q latent" if layout.mla.q_rank else "latent"
        storage = _storage(q=mla.q, q_a=mla.q_a, q_b=mla.q_b, kv_a=mla.kv_a, kv_b=mla.kv_b, indexer_q=mla.indexer_q,
                           **{f"indexer_in{j}": p for j, p in enumerate(mla.indexer_readers)})
    elif experts is not None:
        attention = "experts"
        storage = _storage(q=experts.q, k=arch.k, v=arch.v)
    else:
        attention = "heads"
        storage = _storage(q=arch.q, k=arch.k, v=arch.v, attn_gate=arch.attn_gate)
    ffn_storage = frozenset().union(*(_storage(gate=f.gate, up=f.up, down=f.down) for f in arch.ffn),
                                    *(_storage(gate=f.shared.gate, up=f.shared.up, down=f.shared.down)
                                      for f in arch.ffn if f.shared))
    ffn_kinds = {"experts" if f.experts else "dense" for f in arch.ffn} | {"shared" for f in arch.ffn if f.shared} | {
        "shared gate" for f in arch.ffn if f.shared and f.shared.router}
    router = set()
    if layout.n_experts:
        router = {arch.router_scores} | {"bias" for f in arch.ffn if f.router_bias} | (
            {"groups"} if layout.expert_groups > 1 else set())
    if arch.layer_kinds is not None and arch.layer_kinds.ffn_kinds:
        layer_kinds = "single blocks"
    else:
        layer_kinds = "attention" if layout.attention_layers == tuple(range(layout.n_layers)) else "hybrid"
    activation = "relu" if layout.relu else "gated" if layout.gated else "other"
    mixer = arch.mixer
    mixer_features = set() if mixer is None else {"mixer"} | {name for name, on in (
        ("parallel", mixer.parallel), ("inner norms", mixer.inner_norms), ("own norms", mixer.norms)) if on}
    qk_norms = {(layout.qk_norm, kind) for kind in _norm_kinds(arch.q_norm)}
    if arch.q_norm and layout.qk_norm_layers != layout.attention_layers:
        qk_norms.add("some layers")
    return {
        "input norms": _norm_kinds(arch.attn_norm + arch.ffn_norm),
        "parallel block": bool({n.name for n in arch.attn_norm} & {n.name for n in arch.ffn_norm}),
        "post norms": _norm_kinds(arch.attn_post_norm + arch.ffn_post_norm),
        "residual norm": _norm_kinds(arch.residual_norm),
        "norm residual": arch.norm_residual,
        "embedding norm": _norm_kinds(arch.embed_norm),
        "final norm": _norm_kinds(arch.final_norm),
        "norm epsilon": "config" if layout.eps_key else "fixed",
        "qk norms": frozenset(qk_norms),
        "attention": attention,
        "head grouping": layout.n_heads // layout.n_kv_heads,
        "attention storage": storage,
        "output storage": _storage(o=arch.o or (experts and experts.o)),
        "sinks": arch.sinks is not None,
        "write biases": bool(arch.write_biases),
        "shared kv": arch.kv_sources is not None,
        "rotary": (layout.rotary_style, layout.rotary_dim < layout.head_dim) if layout.rotary_dim else None,
        "alibi": layout.alibi,
        "position embeddings": len(arch.added_embeds),
        "reader biases": layout.reader_bias,
        "clipped qkv": layout.clip_qkv,
        "ffn storage": ffn_storage,
        "ffn kinds": frozenset(ffn_kinds),
        "ffn activation": f"{activation}, clamped" if arch.ffn_clamped else activation,
        "router": frozenset(router),
        "token mixer": frozenset(mixer_features),
        "layer kinds": layer_kinds,
        "tied head": layout.tied,
        "head reader": layout.head_reader is not None,
        "head bias": layout.head_bias is not None,
    }

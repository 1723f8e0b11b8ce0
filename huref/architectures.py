"""Architectures as data: which tensor of a checkpoint plays which role, one row per family.

An `ArchSpec` names, for one family of `config.json` `model_type`s, the tensor of every role the
invariant engine and the attack library (`huref_lab.attacks`) touch: the embedding and what is
added to it, per layer Q/K/V/O, the FFN (gate/up/down; experts with their router; a shared
expert with its gate), every norm on every path (input norms, post norms on the writes, QK norms),
then the final norm and the LM head. It also says how fused tensors are laid out, what kind each
norm is, how positions enter (RoPE, ALiBi, learned rows), and which config.json values change the
structure (`variants`). Nothing here computes: `huref.layers` turns a spec plus a checkpoint into
per-layer weights, and `arch_for_config` picks the row and applies its variants.

Conventions
- Tensor names are templates relative to the checkpoint's base prefix; `{i}` is the layer index,
  `{e}` the expert index. Some checkpoints drop the base prefix ("transformer.", "bert."): both
  spellings are accepted. The head's names (`head`, `head_bias`, `head_reader`) sit outside the
  base model and are written in full.
- Every matrix is used in Hugging Face orientation [out, in]; `transposed=True` marks tensors stored
  as [in, out] (GPT-2's Conv1D). A bias sits beside its weight ("<module>.bias" for
  "<module>.weight"); only the attacks touch biases.
- Fused layouts (`Proj.layout`, row-index maps in `huref.layers.LAYOUTS`): "plain" (the whole
  tensor), "qkv_split" (Q, K, V rows one after another), "qkv_heads" (per head: q, k, v),
  "qkv_groups" (per key/value head: its query heads, k, v), "qkv_mp4" (codegen: four shards, each
  its slice of q, then v, then k), "gate_up_split" (gate rows, then up rows), "experts" (3-D
  [expert, out, in]), "experts_gate_up" (3-D, each expert's gate then up),
  "experts_gate_up_interleaved" (3-D, each expert's gate and up rows alternating: even rows gate,
  odd rows up; gpt-oss), "q_gate_heads" (per head: its query rows, then its output-gate rows;
  qwen3_next), "kv_split" (key rows, then value rows; jetmoe). A 3-D expert tensor stored [expert,
  in, out] (gpt-oss, llama4, aria_text) is `transposed` too, and so is one stored flat [expert * in,
  out] (dbrx's w2): its logical view is [expert * out, in], one expert's [out, in] after another.
- Norm kinds: "rms" (x / rms(x) * w), "rms_plus1" (gemma: x / rms(x) * (1 + w)), "layer"
  (centre, divide by std, * w; the bias is never used by the engine), "layer_plus1" (nemotron's
  LayerNorm1P: centre, divide by std, * (1 + w)); `CENTRED_KINDS` and `PLUS_ONE_KINDS` group them.
  `Norm(None, kind)` is a norm without parameters (OLMo, nanochat). QK norms have scope "head"
  (per head: qwen3, gemma3, phi) or "row" (the whole projection: olmo2).
- A tuple of norms or of FFNs lists alternatives: the first whose tensor exists in the layer is used
  (falcon names its norms per variant, and a parallel block reads one norm for both sublayers;
  qwen2_moe/qwen3_moe keep some layers dense).
- `added_embeds`: embeddings added to every token's row on the way in (learned absolute positions,
  BERT's token types), as (name, first used row). The probe rows take their mean over used rows, the
  input at an average position: a vector moved from the token rows into the position rows, which
  leaves every input unchanged, then leaves the probe rows unchanged too.
- `mla`: multi-head latent attention (DeepSeek-V2/V3): q, k, v are None and a `LatentAttention`
  names the latent matrices and norms; its sizes come from config.json (`huref.config.latent_dims`).
  DeepSeek sparse attention's indexer (deepseek_v32) is listed there too (`indexer_q` reads the q latent,
  `indexer_readers` the attention input); no term reads it, the attacks carry it.
  `attn_experts`: a mixture of attention heads (jetmoe): q and o are None and `AttentionExperts`
  names each expert's query and output matrices and their router; k and v are shared.
  `router_scores`: "softmax" (adding one vector to every router row changes nothing), "sigmoid", or
  "sparsemixer" (phimoe: a softmax with masks relative to the largest logit's magnitude, which a
  shift changes).
- `layer_kinds`: which layers are attention layers in a hybrid model, read from config.json
  (`LayerKinds`); the others hold a `mixer` (gated delta-net, Mamba) that carries no term of this
  algebra: the terms skip those layers, the attacks rewrite only the mixer's residual readers and
  writers (a `parallel` mixer sits beside attention in every layer: falcon_h1; a mixer layer may
  have norm roles of its own, `Mixer.norms`: olmo_hybrid). With `LayerKinds.ffn_kinds` each layer is
  one block (nemotron_h) and an attention block takes the FFN term of the next MLP/MoE block.
  `norm_residual`: the input norms' outputs are the residual path (minimax). `kv_sources`: which layer's keys and
  values each layer attends to, read from config.json (`KVSources`, kolibri1_1); a layer reading
  another's stores no key/value matrices or key norm, and its terms read the source layer's. `sinks`: a per-head
  learned logit in the softmax's denominator (gpt-oss, granite_swa, flint), which no term reads.
  `attn_gate`: query-projection rows of a per-head sigmoid gate on the attention output
  (qwen3_next), which no term reads. `ffn_clamped`: the gated FFN clamps gate and up and adds 1 to
  up (gpt-oss), so the FFN is not linear in up.
- `qk_norm_layers`: the layers whose queries and keys go through the QK norms (llama4: its RoPE
  layers), read from config.json as `layer_kinds` is. `write_biases`: biases added to the residual
  stream after a block's write, beside no matrix (jetmoe); no term reads them, the attacks rotate
  them. `config_sections`: nested config.json objects whose keys count as top-level ones (dbrx's
  attn_config, ffn_config). `layer_norm_eps`: the epsilon of the layers' norms when the model fixes it
  rather than reading config.json (jetmoe).
- `variants`: `when(key, value, default, field=...)` replaces fields of the row when config.json's
  `key` equals `value` (a missing key reads as `default`, transformers' default), in order, later
  ones winning; `unsupported="..."` marks a variant huref refuses.
- `gguf`: how llama.cpp's converter (convert_hf_to_gguf.py) writes the row's model_types as GGUF, one
  `GGUFArch` per llama.cpp architecture: its `general.architecture`, the model_types written as it,
  and what the converter changes beyond names (rotary row order, MTP blocks, a config flag it drops).
  Which tensors a GGUF file holds are the row's own names (gguf-py's `TensorNameMap` gives each its
  GGUF name; experts stacked [expert, out, in], so a fused or transposed expert layout is read through
  the row's per-expert alternative); a norm of a plus-one kind is stored as 1 + w (ggml's norms
  multiply by the stored scale). `huref.readers.gguf` reads with these facts, `huref_lab.gguf_convert`
  writes with them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from huref.errors import HurefError, excerpt


CENTRED_KINDS = frozenset({"layer", "layer_plus1"})  # norms that subtract the mean first
PLUS_ONE_KINDS = frozenset({"rms_plus1", "layer_plus1"})  # norms whose scale is 1 + the stored weight


@dataclass(frozen=True)
class Proj:
    """A logical [out, in] weight matrix inside a stored tensor."""

    name: str
    layout: str = "plain"
    part: str = ""
    transposed: bool = False


@dataclass(frozen=True)
class Norm:
    """A normalization on a path: its scale tensor (None: no parameters), kind and scope."""

    name: str | None
    kind: str = "rms"
    scope: str = "row"


@dataclass(frozen=True)
class FFN:
    """A feed-forward block: gated (gate, up, down) or plain (up = W1, down = W2).

    `experts=True`: the names hold `{e}` (or a fused 3-D layout) and the block repeats per expert;
    `router`: the matrix [n_experts, hidden] scoring the experts (for a shared expert: its sigmoid
    gate [1, hidden]), reading the same norm as up and gate; `shared`: an always-on expert beside the
    routed ones (qwen2_moe, deepseek); `router_bias`: a per-expert bias on the router's scores.
    """

    up: Proj
    down: Proj
    gate: Proj | None = None
    experts: bool = False
    shared: "FFN | None" = None
    router: str | None = None
    router_bias: str | None = None  # a per-expert bias added to the scores for the choice only (DeepSeek-V3)


@dataclass(frozen=True)
class LatentAttention:
    """Multi-head latent attention (DeepSeek-V2/V3): queries through a low-rank latent (q_a, its RMS
    norm, q_b) or one matrix (`q`, when config.json's q_lora_rank is null); keys and values through
    a shared latent (`kv_a` writes kv_lora_rank latent rows, then qk_rope_head_dim rows of one rotary
    key shared by every head; its latent part goes through `kv_a_norm`, then `kv_b` writes per head
    qk_nope_head_dim key rows and v_head_dim value rows). Query rows per head: nope, then rope."""

    q: Proj
    q_a: Proj
    q_a_norm: Norm
    q_b: Proj
    kv_a: Proj
    kv_a_norm: Norm
    kv_b: Proj
    norm_eps: float = 1e-6  # transformers builds the latent norms with this epsilon, not rms_norm_eps
    # DeepSeek sparse attention's indexer (deepseek_v32), which picks the keys each query sees and which no
    # term reads: its query matrix reading the q latent, and its matrices reading the attention input
    indexer_q: Proj | None = None
    indexer_readers: tuple[Proj, ...] = ()


@dataclass(frozen=True)
class LayerKinds:
    """Which layers are picked, as config.json says (the attention layers of a hybrid model, the
    layers with QK norms of llama4): a per-layer list under `key` whose entries in `attention` mark
    them (qwen3_next's layer_types), or the list of layer indices under `indices` (bamba; a dotted
    path reads a nested dict; used when `key`'s list is absent), or else layer i is picked when
    i % config[period] == config[offset] (jamba; missing keys read as `defaults`, transformers').
    `skip_every`: when the list under `key` is missing or empty, every layer but each
    config[skip_every]-th (i + 1 divisible by it; missing: defaults[0]) is picked (llama4's
    no_rope_layer_interval). With `ffn_kinds`, each layer is one block (attention, mixer or FFN) and
    the terms pair blocks."""

    key: str | None = None
    attention: tuple = ()
    indices: str | None = None
    period: str | None = None
    offset: str | None = None
    defaults: tuple[int, int] = (1, 0)
    skip_every: str | None = None
    # an older spelling of `key`'s list: a string under `pattern`, one character per layer, read through `chars`
    pattern: str | None = None
    chars: tuple[tuple[str, str], ...] = ()
    first_index: int = 0  # 1: the `indices` list counts layers from 1 (kimi_linear's linear_attn_config)
    cycle: bool = False  # `key`'s list is a cycle repeated over the layers (recurrent_gemma's block_types)
    # single-block layers (nemotron_h): the kinds whose block is an FFN. Attention block i takes the FFN
    # term from the first such block after it (its FFN and, as the FFN's input norm, that block's norm)
    ffn_kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class KVSources:
    """Layers attending to an earlier layer's keys and values (kolibri1_1): config.json lists under `key`, for
    each layer, the layer whose keys and values it reads (itself, or an earlier layer that reads its own). When
    the list is missing, transformers' default layout applies: the k-th layer that `layers` picks (or
    `default_layers`, when config.json lacks `layers.key` too) reads the keys and values of the picked layer at
    position `default[k]`, every other layer its own."""

    key: str
    layers: LayerKinds
    default_layers: LayerKinds
    default: tuple[int, ...]


@dataclass(frozen=True)
class AttentionExperts:
    """Mixture of attention heads (jetmoe's MoA): every attention expert has its own query matrix `q`
    ([expert, n_kv_heads * head_dim, hidden] with layout "experts") and output matrix `o` ([expert,
    hidden, n_kv_heads * head_dim]); the keys and values (`ArchSpec.k`, `v`) are shared, query head j
    of every expert reading key/value head j; `router` scores the experts ([experts, hidden], softmax
    over the chosen ones). The ArchSpec's own q and o are None."""

    q: Proj
    o: Proj
    router: str


@dataclass(frozen=True)
class Mixer:
    """The token mixer of a hybrid model's other layers (gated delta-net, Mamba): the matrices that
    read the residual stream through the layer's attention input norm, and those that write to it.
    No invariant term uses it; the residual-stream attacks rewrite these matrices."""

    readers: tuple[Proj, ...]
    writers: tuple[Proj, ...]
    inner_norms: bool = True  # norms inside the mixer use config.json's epsilon (delta-net, Mamba)
    parallel: bool = False  # the mixer sits beside attention in every layer, on the same input norm (falcon_h1)
    # the norms of a mixer layer by role (ArchSpec field name), where they differ from the attention layers'
    # (olmo_hybrid: post-norms beside attention, pre-norms beside the delta-net); None: the row's own
    norms: tuple[tuple[str, tuple[Norm, ...]], ...] | None = None


@dataclass(frozen=True)
class Variant:
    """Fields of a row replaced when config.json's `key` is `value` (missing: `default`)."""

    key: str
    value: object
    default: object
    changes: tuple[tuple[str, object], ...]


def when(key: str, value, default=None, **changes) -> Variant:
    """The variant of a row for config `key` == `value`: `changes` are ArchSpec fields."""
    return Variant(key, value, default, tuple(changes.items()))


@dataclass(frozen=True)
class GGUFArch:
    """One llama.cpp architecture written from a row's model_types (gguf-py's MODEL_ARCH_NAMES;
    llama.cpp's convert_hf_to_gguf.py). A file of `arch` is read as `model_types[0]`, or as the
    model_type of the entry whose `when` holds for it."""

    arch: str  # the file's general.architecture ("qwen3moe")
    model_types: tuple[str, ...]  # the config.json model_types the converter writes as `arch`
    # the entry applies only to a file with "experts" (expert_count > 0) or with a "router_bias"
    # (choice-only exp_probs_b tensors); None: to every other file of `arch`
    when: str | None = None
    rope_interleaved: bool = False  # each Q/K head's rows written as interleaved rotary pairs (LlamaModel.permute)
    qk_norm_flag: str | None = None  # config.json flag the file leaves out: true when it holds QK norms
    mtp_blocks: bool = False  # block_count also counts config.json's num_nextn_predict_layers MTP blocks


@dataclass(frozen=True)
class ArchSpec:
    """Which tensor plays which role in one architecture, and the facts around them (see the module doc)."""

    model_types: tuple[str, ...]
    embed: str
    layer: str
    q: Proj | None  # None (with k, v) when `mla` describes the attention
    k: Proj | None
    v: Proj | None
    o: Proj | None  # None when `attn_experts` describes the attention
    ffn: tuple[FFN, ...]
    mla: LatentAttention | None = None
    attn_experts: AttentionExperts | None = None
    router_scores: str = "softmax"  # how the router turns logits into expert weights (see the module doc)
    attn_norm: tuple[Norm, ...] = ()
    ffn_norm: tuple[Norm, ...] = ()
    attn_post_norm: tuple[Norm, ...] = ()
    ffn_post_norm: tuple[Norm, ...] = ()
    # post-LN (BERT): the LayerNorm over the residual sum after the FFN, which the next layer reads;
    # the one after attention is the FFN's input norm (`ffn_norm`). The invariant terms do not use it.
    residual_norm: tuple[Norm, ...] = ()
    q_norm: tuple[Norm, ...] = ()
    k_norm: tuple[Norm, ...] = ()
    qk_norm_layers: LayerKinds | None = None  # the layers with the QK norms (llama4: its RoPE layers); None: all
    embed_norm: tuple[Norm, ...] = ()
    embed_proj: str | None = None
    added_embeds: tuple[tuple[str, int], ...] = ()
    final_norm: tuple[Norm, ...] = ()
    head: str = "lm_head.weight"
    head_bias: str | None = None  # a token-indexed bias kept apart from the head's own (BERT)
    head_reader: str | None = None  # a matrix between the final residual and the head (BERT's transform)
    base_prefix: str = ""
    n_kv_heads: int | None = None  # a fixed key/value head count (falcon multi-query); None: from config
    rope: str | None = "half"  # RoPE's dimension pairs: "half" (p, p + r/2), "pairs" (2p, 2p + 1); None: no RoPE
    alibi: bool = False  # ALiBi: per-head position biases, tied to each head's index
    sinks: str | None = None  # per-head attention sink logits [n_heads] (gpt-oss); no term reads them
    attn_gate: Proj | None = None  # query rows of a sigmoid gate on each head's output (qwen3_next)
    ffn_clamped: bool = False  # gpt-oss: act(clamp(gate)) * (clamp(up) + 1), not linear in up
    layer_kinds: LayerKinds | None = None  # hybrid models: which layers are attention (None: all)
    kv_sources: KVSources | None = None  # layers attending to an earlier layer's keys and values (None: none)
    write_biases: tuple[str, ...] = ()  # biases added to the residual stream after a block's write (jetmoe)
    config_sections: tuple[str, ...] = ()  # nested config.json dicts read as top-level keys (dbrx's attn_config)
    layer_norm_eps: float | None = None  # the layers' norms use this epsilon, not config.json's (jetmoe)
    mixer: Mixer | None = None  # the token mixer of the other layers of a hybrid model
    # minimax: each input norm's output, not its input, is carried on the residual path (DeepNorm-style
    # alpha/beta), so the stream is a norm output and every write side reads the sublayer's input rows
    norm_residual: bool = False
    variants: tuple[Variant, ...] = ()
    unsupported: str | None = None  # why huref refuses this variant (set by a variant)
    gguf: tuple[GGUFArch, ...] = ()  # how llama.cpp writes the row's model_types (see the module doc)

    @property
    def layer_norm(self) -> bool:
        """True when the model uses LayerNorm, which cannot see the residual stream's mean."""
        norms = self.attn_norm + self.ffn_norm + self.attn_post_norm + self.ffn_post_norm + self.embed_norm
        return any(n.kind in CENTRED_KINDS for n in norms)

    def settings(self, config: dict) -> dict:
        """config.json with the keys of its `config_sections` lifted to the top level (top-level keys win)."""
        flat = {}
        for section in self.config_sections:
            found = config.get(section)
            if found is not None and not isinstance(found, dict):
                raise HurefError(f"config.json: {section} is {excerpt(found)}, not an object")
            flat.update(found or {})
        return {**flat, **config}

    def for_config(self, config: dict) -> "ArchSpec":
        """This row with the variants config.json selects applied (the result has no variants left)."""
        spec = replace(self, variants=())
        for variant in self.variants:
            found = config.get(variant.key, variant.default)
            if variant.value is not None and found is not None and type(found) is not type(variant.value):  # bool is not int
                wanted = "true or false" if isinstance(variant.value, bool) else f"of type {type(variant.value).__name__}"
                raise HurefError(f"config.json: {variant.key} is {excerpt(found)}, not {wanted}")
            if found == variant.value:
                spec = replace(spec, **dict(variant.changes))
        return spec


def _rms(name: str, kind: str = "rms") -> tuple[Norm, ...]:
    return (Norm(name, kind),)


def _ln(*names: str) -> tuple[Norm, ...]:
    return tuple(Norm(n, "layer") for n in names)


_LLAMA_ATTN = dict(
    q=Proj("self_attn.q_proj.weight"),
    k=Proj("self_attn.k_proj.weight"),
    v=Proj("self_attn.v_proj.weight"),
    o=Proj("self_attn.o_proj.weight"),
)
_QK_NORM = dict(
    q_norm=(Norm("self_attn.q_norm.weight", "rms", "head"),),
    k_norm=(Norm("self_attn.k_norm.weight", "rms", "head"),),
)
_GATED = FFN(gate=Proj("mlp.gate_proj.weight"), up=Proj("mlp.up_proj.weight"), down=Proj("mlp.down_proj.weight"))
_FUSED_EXPERTS = FFN(
    gate=Proj("mlp.experts.gate_up_proj", "experts_gate_up", "gate"),
    up=Proj("mlp.experts.gate_up_proj", "experts_gate_up", "up"),
    down=Proj("mlp.experts.down_proj", "experts"),
    experts=True,
    router="mlp.gate.weight",
)
_PLAIN = FFN(up=Proj("mlp.up_proj.weight"), down=Proj("mlp.down_proj.weight"))
_GATE_UP = FFN(
    gate=Proj("mlp.gate_up_proj.weight", "gate_up_split", "gate"),
    up=Proj("mlp.gate_up_proj.weight", "gate_up_split", "up"),
    down=Proj("mlp.down_proj.weight"),
)
_HUNYUAN_QK_NORM = dict(
    q_norm=(Norm("self_attn.query_layernorm.weight", "rms", "head"),),
    k_norm=(Norm("self_attn.key_layernorm.weight", "rms", "head"),),
)
_QWEN_EXPERTS = FFN(
    gate=Proj("mlp.experts.{e}.gate_proj.weight"),
    up=Proj("mlp.experts.{e}.up_proj.weight"),
    down=Proj("mlp.experts.{e}.down_proj.weight"),
    experts=True,
    router="mlp.gate.weight",
)
_LLAMA4_SHARED_EXPERT = FFN(
    gate=Proj("feed_forward.shared_expert.gate_proj.weight"),
    up=Proj("feed_forward.shared_expert.up_proj.weight"),
    down=Proj("feed_forward.shared_expert.down_proj.weight"),
)
_QWEN_SHARED_EXPERT = FFN(
    gate=Proj("mlp.shared_expert.gate_proj.weight"),
    up=Proj("mlp.shared_expert.up_proj.weight"),
    down=Proj("mlp.shared_expert.down_proj.weight"),
    router="mlp.shared_expert_gate.weight",
)
_SHARED_EXPERTS = FFN(
    gate=Proj("mlp.shared_experts.gate_proj.weight"),
    up=Proj("mlp.shared_experts.up_proj.weight"),
    down=Proj("mlp.shared_experts.down_proj.weight"),
)
_HUNYUAN_SHARED = FFN(
    gate=Proj("mlp.shared_mlp.gate_proj.weight"),
    up=Proj("mlp.shared_mlp.up_proj.weight"),
    down=Proj("mlp.shared_mlp.down_proj.weight"),
)
_MIXTRAL_EXPERTS = FFN(
    gate=Proj("block_sparse_moe.experts.{e}.w1.weight"),
    up=Proj("block_sparse_moe.experts.{e}.w3.weight"),
    down=Proj("block_sparse_moe.experts.{e}.w2.weight"),
    experts=True,
    router="block_sparse_moe.gate.weight",
)
_GRANITE_EXPERTS = FFN(  # 3-D [expert, 2 * inner, hidden] (gate rows, then up rows) and [expert, hidden, inner]
    gate=Proj("block_sparse_moe.input_linear.weight", "experts_gate_up", "gate"),
    up=Proj("block_sparse_moe.input_linear.weight", "experts_gate_up", "up"),
    down=Proj("block_sparse_moe.output_linear.weight", "experts"),
    experts=True,
    router="block_sparse_moe.router.layer.weight",
)
_GRANITE_SWA_EXPERTS = FFN(
    gate=Proj("block_sparse_moe.experts.gate_up_proj", "experts_gate_up", "gate"),
    up=Proj("block_sparse_moe.experts.gate_up_proj", "experts_gate_up", "up"),
    down=Proj("block_sparse_moe.experts.down_proj", "experts"),
    experts=True,
    router="block_sparse_moe.router.weight",
)
_GRANITE_SHARED = FFN(
    gate=Proj("shared_mlp.input_linear.weight", "gate_up_split", "gate"),
    up=Proj("shared_mlp.input_linear.weight", "gate_up_split", "up"),
    down=Proj("shared_mlp.output_linear.weight"),
)


def _sigmoid_moe(router_bias: str) -> tuple[FFN, ...]:
    """Experts beside shared experts, with a choice-only router bias named `router_bias` (the row's
    router_scores is "sigmoid"), then a dense FFN for the first layers."""
    return (replace(_QWEN_EXPERTS, shared=_SHARED_EXPERTS, router_bias=router_bias),
            replace(_FUSED_EXPERTS, shared=_SHARED_EXPERTS, router_bias=router_bias), _GATED)


_LLAMA = dict(
    embed="embed_tokens.weight",
    layer="layers.{i}.",
    base_prefix="model.",
    attn_norm=_rms("input_layernorm.weight"),
    ffn_norm=_rms("post_attention_layernorm.weight"),
    final_norm=_rms("norm.weight"),
    **_LLAMA_ATTN,
)
_LLAMA_MLA = dict(
    _LLAMA,
    q=None,
    k=None,
    v=None,
    mla=LatentAttention(
        q=Proj("self_attn.q_proj.weight"),
        q_a=Proj("self_attn.q_a_proj.weight"),
        q_a_norm=Norm("self_attn.q_a_layernorm.weight"),
        q_b=Proj("self_attn.q_b_proj.weight"),
        kv_a=Proj("self_attn.kv_a_proj_with_mqa.weight"),
        kv_a_norm=Norm("self_attn.kv_a_layernorm.weight"),
        kv_b=Proj("self_attn.kv_b_proj.weight"),
    ),
)
_DEEPSEEK_EXPERTS = replace(_QWEN_EXPERTS, shared=_SHARED_EXPERTS)
_GEMMA = dict(
    _LLAMA,
    attn_norm=_rms("input_layernorm.weight", "rms_plus1"),
    ffn_norm=_rms("post_attention_layernorm.weight", "rms_plus1"),
    final_norm=_rms("norm.weight", "rms_plus1"),
)
_GEMMA2 = dict(
    _GEMMA,
    ffn_norm=_rms("pre_feedforward_layernorm.weight", "rms_plus1"),
    attn_post_norm=_rms("post_attention_layernorm.weight", "rms_plus1"),
    ffn_post_norm=_rms("post_feedforward_layernorm.weight", "rms_plus1"),
)
_GRANITE_SHARED_MLP = FFN(gate=Proj("shared_mlp.input_linear.weight", "gate_up_split", "gate"),
                          up=Proj("shared_mlp.input_linear.weight", "gate_up_split", "up"),
                          down=Proj("shared_mlp.output_linear.weight"))
_GATED_DELTA_HYBRID = dict(  # qwen3_next-style hybrid: gated full attention between gated delta-net layers
    _GEMMA,
    q=Proj("self_attn.q_proj.weight", "q_gate_heads", "q"),
    q_norm=(Norm("self_attn.q_norm.weight", "rms_plus1", "head"),),
    k_norm=(Norm("self_attn.k_norm.weight", "rms_plus1", "head"),),
    attn_gate=Proj("self_attn.q_proj.weight", "q_gate_heads", "gate"),
    layer_kinds=LayerKinds(key="layer_types", attention=("full_attention",)),
)
_QWEN3_5_MIXER = Mixer(readers=tuple(Proj(f"linear_attn.in_proj_{p}.weight") for p in ("qkv", "z", "b", "a")),
                       writers=(Proj("linear_attn.out_proj.weight"),))
_NEMOTRON_SHARED = FFN(up=Proj("mixer.shared_experts.up_proj.weight"), down=Proj("mixer.shared_experts.down_proj.weight"))
_LARA_SHARED = FFN(gate=Proj("mlp.shared_expert.gate_proj.weight"), up=Proj("mlp.shared_expert.up_proj.weight"),
                   down=Proj("mlp.shared_expert.down_proj.weight"))
_GPT = dict(embed="wte.weight", layer="h.{i}.", base_prefix="transformer.", final_norm=_ln("ln_f.weight"))


def _fused_qkv(name: str, layout: str) -> dict:
    """q, k and v as parts of one fused tensor."""
    return {part: Proj(name, layout, part) for part in "qkv"}


# lfm2's layers: short gated convolutions between attention layers (layer_types "conv" / "full_attention"),
# per-head QK norms, its own norm names (the final norm is embedding_norm)
_LFM2 = dict(
    q_norm=(Norm("self_attn.q_layernorm.weight", "rms", "head"),),
    k_norm=(Norm("self_attn.k_layernorm.weight", "rms", "head"),),
    layer_kinds=LayerKinds(key="layer_types", attention=("full_attention",)),
    mixer=Mixer(readers=(Proj("conv.in_proj.weight"),), writers=(Proj("conv.out_proj.weight"),), inner_norms=False),
    **{**_LLAMA, "o": Proj("self_attn.out_proj.weight"), "attn_norm": _rms("operator_norm.weight"),
       "ffn_norm": _rms("ffn_norm.weight"), "final_norm": _rms("embedding_norm.weight")},
)

# kolibri1: glm4's post norms, per-head QK norms, sigmoid-scored experts with shared experts
_KOLIBRI1 = dict(
    ffn=_sigmoid_moe("moe.router.expert_bias"),
    router_scores="sigmoid",
    attn_post_norm=_rms("post_attn_norm.weight"),
    ffn_post_norm=_rms("post_ffn_norm.weight"),
    **_QK_NORM,
    **_LLAMA,
)

ARCHITECTURES: tuple[ArchSpec, ...] = (
    # llama's tensors; the others change nothing the terms read: attention biases (seed_oss), layers
    # without RoPE (smollm3: the terms never apply RoPE), sliding windows (cwm, ministral), scalar
    # multipliers on the embedding, the residual writes, the attention scores and the logits (granite:
    # each scales a whole term, which ICS does not see); emu3's language model (image tokens are vocabulary rows)
    ArchSpec(model_types=("llama", "mistral", "qwen2", "internlm3", "iquestcoder", "cwm", "ministral", "ministral3",
                          "seed_oss", "smollm3", "granite", "emu3_text_model"), ffn=(_GATED,),
             # llama.cpp's LlamaModel converter and its subclasses (smollm3, granite) reorder Q/K rows
             gguf=(GGUFArch("llama", ("llama", "mistral"), rope_interleaved=True), GGUFArch("qwen2", ("qwen2",)),
                   GGUFArch("seed_oss", ("seed_oss",)), GGUFArch("smollm3", ("smollm3",), rope_interleaved=True),
                   GGUFArch("granite", ("granite",), rope_interleaved=True)),
             **_LLAMA),
    # RoPE on interleaved pairs (2p, 2p + 1)
    ArchSpec(model_types=("helium", "ernie4_5"), ffn=(_GATED,), rope="pairs",
             gguf=(GGUFArch("ernie4_5", ("ernie4_5",)),), **_LLAMA),
    ArchSpec(model_types=("arcee",), ffn=(_PLAIN,), **_LLAMA),  # plain FFN with ReLU²
    ArchSpec(
        model_types=("exaone",),
        embed="wte.weight",
        layer="h.{i}.",
        base_prefix="transformer.",
        q=Proj("attn.attention.q_proj.weight"),
        k=Proj("attn.attention.k_proj.weight"),
        v=Proj("attn.attention.v_proj.weight"),
        o=Proj("attn.attention.out_proj.weight"),
        ffn=(FFN(gate=Proj("mlp.c_fc_0.weight"), up=Proj("mlp.c_fc_1.weight"), down=Proj("mlp.c_proj.weight")),),
        attn_norm=_rms("ln_1.weight"),
        ffn_norm=_rms("ln_2.weight"),
        final_norm=_rms("ln_f.weight"),
    ),
    # post norms on both writes (peri-LN)
    ArchSpec(model_types=("hyperclovax",), ffn=(_GATED,), attn_post_norm=_rms("post_norm1.weight"),
             ffn_post_norm=_rms("post_norm2.weight"), **_LLAMA),
    ArchSpec(model_types=("glm",), ffn=(_GATE_UP,), rope="pairs", **_LLAMA),
    ArchSpec(model_types=("glm4",), ffn=(_GATE_UP,), rope="pairs",
             attn_post_norm=_rms("post_self_attn_layernorm.weight"), ffn_post_norm=_rms("post_mlp_layernorm.weight"),
             **_LLAMA),
    ArchSpec(model_types=("hunyuan_v1_dense",), ffn=(_GATED,), gguf=(GGUFArch("hunyuan-dense", ("hunyuan_v1_dense",)),),
             **_HUNYUAN_QK_NORM, **_LLAMA),
    ArchSpec(
        model_types=("apertus", "apertus1p5_text"),
        ffn=(_PLAIN,),  # xIELU activation
        **_QK_NORM,
        **{**_LLAMA, "attn_norm": _rms("attention_layernorm.weight"), "ffn_norm": _rms("feedforward_layernorm.weight")},
    ),
    ArchSpec(
        # LayerNorm without bias; plain FFN with ReLU²
        model_types=("jais2",),
        ffn=(_PLAIN,),
        **{**_LLAMA, "attn_norm": _ln("input_layernorm.weight"), "ffn_norm": _ln("post_attention_layernorm.weight"),
           "final_norm": _ln("norm.weight")},
    ),
    ArchSpec(model_types=("qwen3",), ffn=(_GATED,), gguf=(GGUFArch("qwen3", ("qwen3",)),), **_QK_NORM, **_LLAMA),
    ArchSpec(model_types=("mixtral",), ffn=(_MIXTRAL_EXPERTS, _FUSED_EXPERTS),
             gguf=(GGUFArch("llama", ("mixtral",), when="experts", rope_interleaved=True),), **_LLAMA),
    ArchSpec(  # mixtral with LayerNorms (bias unused) and sparsemixer routing
        model_types=("phimoe",),
        ffn=(_MIXTRAL_EXPERTS, _FUSED_EXPERTS),
        router_scores="sparsemixer",
        gguf=(GGUFArch("phimoe", ("phimoe",)),),
        **{**_LLAMA, "attn_norm": _ln("input_layernorm.weight"), "ffn_norm": _ln("post_attention_layernorm.weight"),
           "final_norm": _ln("norm.weight")},
    ),
    ArchSpec(
        model_types=("minimax_m2",),
        ffn=(replace(_MIXTRAL_EXPERTS, router_bias="block_sparse_moe.e_score_correction_bias"),
             replace(_FUSED_EXPERTS, router_bias="block_sparse_moe.e_score_correction_bias")),
        router_scores="sigmoid",
        q_norm=(Norm("self_attn.q_norm.weight", "rms", "row"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms", "row"),),
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("olmoe",),
        ffn=(_QWEN_EXPERTS, _FUSED_EXPERTS),
        q_norm=(Norm("self_attn.q_norm.weight", "rms", "row"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms", "row"),),
        gguf=(GGUFArch("olmoe", ("olmoe",)),),
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("granitemoe", "granitemoeshared"),
        ffn=(replace(_GRANITE_EXPERTS, shared=_GRANITE_SHARED),),
        variants=(when("shared_intermediate_size", 0, 0, ffn=(_GRANITE_EXPERTS,)),),
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("glm4_moe", "solar_open"),
        ffn=_sigmoid_moe("mlp.gate.e_score_correction_bias"),
        router_scores="sigmoid",
        variants=(when("use_qk_norm", True, False, **_QK_NORM),),
        gguf=(GGUFArch("glm4moe", ("glm4_moe",), qk_norm_flag="use_qk_norm", mtp_blocks=True),),
        **_LLAMA,
    ),
    ArchSpec(
        # glm4_moe with RoPE over the whole head, under bailing's names: fused query_key_value (q, k, v rows in
        # turn), per-head QK norms on by default (param2moe: the same config class with other defaults, a tied head)
        model_types=("sarvam_moe", "param2moe"),
        ffn=_sigmoid_moe("mlp.gate.expert_bias"),
        router_scores="sigmoid",
        q_norm=(Norm("attention.query_layernorm.weight", "rms", "head"),),
        k_norm=(Norm("attention.key_layernorm.weight", "rms", "head"),),
        variants=(when("use_qk_norm", False, True, q_norm=(), k_norm=()),),
        **{**_LLAMA, "embed": "word_embeddings.weight", "o": Proj("attention.dense.weight"),
           **_fused_qkv("attention.query_key_value.weight", "qkv_split")},
    ),
    ArchSpec(
        # deepseek_v3's sigmoid-routed experts (dense layers listed in mlp_layer_types) under llama attention with
        # qwen3_next's output gate: q_proj holds per head its query rows, then its gate rows (transformers names
        # the tensor q_gate_proj in memory); no QK norms
        model_types=("minicpm5_moe",),
        ffn=_sigmoid_moe("mlp.gate.e_score_correction_bias"),
        router_scores="sigmoid",
        attn_gate=Proj("self_attn.q_proj.weight", "q_gate_heads", "gate"),
        **{**_LLAMA, "q": Proj("self_attn.q_proj.weight", "q_gate_heads", "q")},
    ),
    ArchSpec(model_types=("exaone_moe",), ffn=_sigmoid_moe("mlp.e_score_correction_bias"), router_scores="sigmoid",
             **_QK_NORM, **_LLAMA),
    ArchSpec(model_types=("dots1",), ffn=_sigmoid_moe("mlp.gate.e_score_correction_bias"), router_scores="sigmoid",
             **_QK_NORM, **_LLAMA),
    ArchSpec(
        # olmo2's attention and post norms with olmoe's experts
        model_types=("flex_olmo",),
        ffn=(_QWEN_EXPERTS, _FUSED_EXPERTS),
        attn_post_norm=_rms("post_attention_layernorm.weight"),
        ffn_post_norm=_rms("post_feedforward_layernorm.weight"),
        q_norm=(Norm("self_attn.q_norm.weight", "rms", "row"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms", "row"),),
        **{**_LLAMA, "attn_norm": (), "ffn_norm": ()},
    ),
    ArchSpec(
        model_types=("ernie4_5_moe",),
        # a softmax router whose choice adds a bias [1, experts]
        ffn=(replace(_QWEN_EXPERTS, shared=_SHARED_EXPERTS, router_bias="mlp.moe_statics.e_score_correction_bias"),
             replace(_FUSED_EXPERTS, shared=_SHARED_EXPERTS, router_bias="mlp.moe_statics.e_score_correction_bias"),
             _GATED),
        gguf=(GGUFArch("ernie4_5-moe", ("ernie4_5_moe",)),),
        rope="pairs",
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("hunyuan_v1_moe",),
        ffn=(replace(_QWEN_EXPERTS, router="mlp.gate.wg.weight", shared=_HUNYUAN_SHARED),
             replace(_FUSED_EXPERTS, router="mlp.gate.wg.weight", shared=_HUNYUAN_SHARED)),
        gguf=(GGUFArch("hunyuan-moe", ("hunyuan_v1_moe",)),),
        **_HUNYUAN_QK_NORM,
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("hy_v3",),
        ffn=(replace(_QWEN_EXPERTS, router="mlp.router.gate.weight", shared=_HUNYUAN_SHARED,
                     router_bias="mlp.expert_bias"),
             replace(_FUSED_EXPERTS, router="mlp.router.gate.weight", shared=_HUNYUAN_SHARED,
                     router_bias="mlp.expert_bias"),
             _GATED),
        router_scores="sigmoid",
        **_QK_NORM,
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("qwen2_moe",),
        ffn=(
            replace(_QWEN_EXPERTS, shared=_QWEN_SHARED_EXPERT),
            replace(_FUSED_EXPERTS, shared=_QWEN_SHARED_EXPERT),
            _GATED,  # layers listed in mlp_only_layers, or off decoder_sparse_step, are dense
        ),
        **_LLAMA,
    ),
    # qwen3 attention (per-head QK norms) with qwen2_moe-like experts and no shared expert
    ArchSpec(model_types=("qwen3_moe", "mellum"), ffn=(_QWEN_EXPERTS, _FUSED_EXPERTS, _GATED),
             gguf=(GGUFArch("qwen3moe", ("qwen3_moe",)),), **_QK_NORM, **_LLAMA),
    # --- experts stored [expert, in, out] (transposed 3-D, or flat 2-D), attention experts ---
    ArchSpec(
        # fused Wqkv (q, k, v rows in turn; its outputs clamped to ±clip_qkv, which no term sees); LayerNorms
        # without bias; experts as flat [experts * ffn, hidden] tensors: w1 (gate) and v1 (up) hold each
        # expert's [out, in], w2 each expert's [in, out]; sizes in attn_config / ffn_config
        model_types=("dbrx",),
        embed="wte.weight",
        layer="blocks.{i}.",
        base_prefix="transformer.",
        o=Proj("norm_attn_norm.attn.out_proj.weight"),
        ffn=(FFN(gate=Proj("ffn.experts.mlp.w1", "experts"), up=Proj("ffn.experts.mlp.v1", "experts"),
                 down=Proj("ffn.experts.mlp.w2", "experts", transposed=True), experts=True,
                 router="ffn.router.layer.weight"),),
        attn_norm=_ln("norm_attn_norm.norm_1.weight"),
        ffn_norm=_ln("norm_attn_norm.norm_2.weight"),
        final_norm=_ln("norm_f.weight"),
        config_sections=("attn_config", "ffn_config"),
        **_fused_qkv("norm_attn_norm.attn.Wqkv.weight", "qkv_split"),
    ),
    ArchSpec(
        # experts stored [expert, in, out] (fc1: each expert's gate columns, then its up columns) beside
        # always-on shared experts; softmax over the chosen experts' logits
        model_types=("aria_text",),
        ffn=(FFN(gate=Proj("mlp.experts.fc1.weight", "experts_gate_up", "gate", transposed=True),
                 up=Proj("mlp.experts.fc1.weight", "experts_gate_up", "up", transposed=True),
                 down=Proj("mlp.experts.fc2.weight", "experts", transposed=True),
                 experts=True, router="mlp.router.weight", shared=_SHARED_EXPERTS),),
        **_LLAMA,
    ),
    ArchSpec(
        # experts stored [expert, in, out] (gate_up_proj: gate columns, then up columns) beside an always-on
        # shared expert, sigmoid-scored (the score scales the expert's input); dense FFNs on the layers
        # between MoE layers (interleave_moe_layer_step); RoPE on pairs (2p, 2p + 1) except on NoPE layers
        # (no_rope_layers, else every no_rope_layer_interval-th); on RoPE layers a parameter-free RMS ("L2")
        # norm on each head's query and key after RoPE (use_qk_norm), which commutes with RoPE's rotation;
        # NoPE layers scale the queries by a per-position temperature (attn_temperature_tuning), exactly 1
        # below position floor_scale - 1, which the terms (taken at no position) leave out
        model_types=("llama4_text",),
        ffn=(FFN(gate=Proj("feed_forward.experts.gate_up_proj", "experts_gate_up", "gate", transposed=True),
                 up=Proj("feed_forward.experts.gate_up_proj", "experts_gate_up", "up", transposed=True),
                 down=Proj("feed_forward.experts.down_proj", "experts", transposed=True),
                 experts=True, router="feed_forward.router.weight",
                 shared=_LLAMA4_SHARED_EXPERT),
             # the same experts one by one, as the GGUF reader gives them
             FFN(gate=Proj("feed_forward.experts.{e}.gate_proj.weight"), up=Proj("feed_forward.experts.{e}.up_proj.weight"),
                 down=Proj("feed_forward.experts.{e}.down_proj.weight"), experts=True, router="feed_forward.router.weight",
                 shared=_LLAMA4_SHARED_EXPERT),
             FFN(gate=Proj("feed_forward.gate_proj.weight"), up=Proj("feed_forward.up_proj.weight"),
                 down=Proj("feed_forward.down_proj.weight"))),
        router_scores="sigmoid",
        rope="pairs",
        q_norm=(Norm(None, "rms", "head"),),
        k_norm=(Norm(None, "rms", "head"),),
        qk_norm_layers=LayerKinds(key="no_rope_layers", attention=(1,), skip_every="no_rope_layer_interval",
                                  defaults=(4, 0)),
        variants=(when("use_qk_norm", False, True, q_norm=(), k_norm=()),),
        gguf=(GGUFArch("llama4", ("llama4_text",)),),
        **_LLAMA,
    ),
    ArchSpec(
        # mixture of attention heads: each attention expert has its own query matrix (input_linear [expert,
        # kv heads * head dim, hidden]) and output matrix (output_linear [expert, hidden, kv heads * head
        # dim]), all share kv_proj (key rows, then value rows); FFN experts with each expert's gate rows, then
        # its up rows; a bias added after each block's write
        model_types=("jetmoe",),
        attn_experts=AttentionExperts(q=Proj("self_attention.experts.input_linear.weight", "experts"),
                                      o=Proj("self_attention.experts.output_linear.weight", "experts"),
                                      router="self_attention.experts.router.layer.weight"),
        ffn=(FFN(gate=Proj("mlp.input_linear.weight", "experts_gate_up", "gate"),
                 up=Proj("mlp.input_linear.weight", "experts_gate_up", "up"),
                 down=Proj("mlp.output_linear.weight", "experts"), experts=True, router="mlp.router.layer.weight"),),
        write_biases=("self_attention.experts.bias", "mlp.bias"),
        layer_norm_eps=1e-6,
        **{**_LLAMA, "q": None, "o": None, "k": Proj("self_attention.kv_proj.weight", "kv_split", "k"),
           "v": Proj("self_attention.kv_proj.weight", "kv_split", "v")},
    ),
    # --- multi-head latent attention (DeepSeek-V2/V3 and the families built on them) ---
    ArchSpec(
        model_types=("deepseek_v2",),
        ffn=(_DEEPSEEK_EXPERTS, replace(_FUSED_EXPERTS, shared=_SHARED_EXPERTS), _GATED),
        rope="pairs",  # complex multiplication on (2p, 2p + 1)
        gguf=(GGUFArch("deepseek2", ("deepseek_v2",)),),
        **_LLAMA_MLA,
    ),
    ArchSpec(
        # deepseek_v3 with DeepSeek sparse attention: a lightning indexer picks the keys each query sees (a
        # data-dependent key mask, which the terms do not read, as a sliding window's); its wq_b reads the q
        # latent, wk and weights_proj the attention input; the attention's RoPE always on pairs
        model_types=("deepseek_v32", "glm_moe_dsa"),
        ffn=(replace(_DEEPSEEK_EXPERTS, router_bias="mlp.gate.e_score_correction_bias"),
             replace(_FUSED_EXPERTS, shared=_SHARED_EXPERTS, router_bias="mlp.gate.e_score_correction_bias"),
             _GATED),
        router_scores="sigmoid",
        rope="pairs",
        **{**_LLAMA_MLA, "mla": replace(_LLAMA_MLA["mla"], indexer_q=Proj("self_attn.indexer.wq_b.weight"),
                                        indexer_readers=(Proj("self_attn.indexer.wk.weight"),
                                                         Proj("self_attn.indexer.weights_proj.weight")))},
    ),
    # deepseek_v2's latent attention with RoPE on halves (p, p + r/2), dense FFNs; scalar multipliers on the
    # embedding (scale_emb), the residual writes (scale_depth / sqrt(layers)) and the logits: constants per term
    ArchSpec(model_types=("minicpm3",), ffn=(_GATED,), **_LLAMA_MLA),
    ArchSpec(
        # sigmoid router with a bias used for the choice only ("noaux_tc"); layers before
        # first_k_dense_replace are dense (sarvam_mla is read by transformers as deepseek_v3; youtu's
        # layers are all dense)
        model_types=("deepseek_v3", "glm4_moe_lite", "sarvam_mla", "youtu"),
        ffn=(replace(_DEEPSEEK_EXPERTS, router_bias="mlp.gate.e_score_correction_bias"),
             replace(_FUSED_EXPERTS, shared=_SHARED_EXPERTS, router_bias="mlp.gate.e_score_correction_bias"),
             _GATED),
        router_scores="sigmoid",
        rope="pairs",
        variants=(when("rope_interleave", False, True, rope="half"),),
        # llama.cpp writes both as deepseek2 (and GLM-4.7-Flash too): a file with exp_probs_b is this row's
        gguf=(GGUFArch("deepseek2", ("deepseek_v3",), when="router_bias"),),
        **_LLAMA_MLA,
    ),
    # --- attention sinks, clamped SwiGLU experts; hybrid models (attention and mixer layers) ---
    ArchSpec(
        # experts stored [expert, in, out] with gate and up interleaved on the last axis (or per expert
        # [out, in], as a GGUF file reads); biases on q/k/v/o, experts and router; alternating
        # sliding-window layers have the same algebra
        model_types=("gpt_oss",),
        ffn=(FFN(gate=Proj("mlp.experts.gate_up_proj", "experts_gate_up_interleaved", "gate", transposed=True),
                 up=Proj("mlp.experts.gate_up_proj", "experts_gate_up_interleaved", "up", transposed=True),
                 down=Proj("mlp.experts.down_proj", "experts", transposed=True),
                 experts=True, router="mlp.router.weight"),
             replace(_QWEN_EXPERTS, router="mlp.router.weight")),
        sinks="self_attn.sinks",
        ffn_clamped=True,
        gguf=(GGUFArch("gpt-oss", ("gpt_oss",)),),
        **_LLAMA,
    ),
    # granite and granitemoe/granitemoeshared with a sink per head (applied as the scale sigmoid(lse - s_h), the
    # same weights as a sink logit), sliding-window layers and a RoPE base per layer (0: no RoPE)
    ArchSpec(model_types=("granite_swa",), ffn=(_GATED,), sinks="self_attn.sinks", **_LLAMA),
    ArchSpec(
        # transformers saves its experts under their new names (experts.gate_up_proj, gate rows then up rows), not
        # granitemoe's input_linear; both are read
        model_types=("granitemoe_swa",),
        ffn=(replace(_GRANITE_SWA_EXPERTS, shared=_GRANITE_SHARED), replace(_GRANITE_EXPERTS, shared=_GRANITE_SHARED)),
        sinks="self_attn.sinks",
        variants=(when("shared_intermediate_size", 0, 0, ffn=(_GRANITE_SWA_EXPERTS, _GRANITE_EXPERTS)),),
        **_LLAMA,
    ),
    ArchSpec(
        # qwen3_moe with sinks: per-head QK norms, RoPE on sliding-window layers only, a sigmoid router without
        # bias, an ungated shared expert always added, dense FFNs on mlp_only_layers; the sinks are stored as
        # softmax_offset (transformers renames them to sinks on loading and back on saving)
        model_types=("flint",),
        ffn=(replace(_QWEN_EXPERTS, shared=_LARA_SHARED), replace(_FUSED_EXPERTS, shared=_LARA_SHARED), _GATED),
        router_scores="sigmoid",
        sinks="self_attn.softmax_offset",
        **_QK_NORM,
        **_LLAMA,
    ),
    ArchSpec(
        # gated delta-net layers between full-attention layers (config layer_types); the query
        # projection holds per head its query rows, then its output-gate rows; gemma-style 1 + w norms
        model_types=("qwen3_next",),
        ffn=(replace(_QWEN_EXPERTS, shared=_QWEN_SHARED_EXPERT), replace(_FUSED_EXPERTS, shared=_QWEN_SHARED_EXPERT),
             _GATED),
        mixer=Mixer(readers=(Proj("linear_attn.in_proj_qkvz.weight"), Proj("linear_attn.in_proj_ba.weight")),
                    writers=(Proj("linear_attn.out_proj.weight"),)),
        **_GATED_DELTA_HYBRID,
    ),
    # qwen3_next's layers with the delta-net's input projections unfused (qkv, z, b, a)
    ArchSpec(model_types=("qwen3_5_text",), ffn=(_GATED,), mixer=_QWEN3_5_MIXER, **_GATED_DELTA_HYBRID),
    ArchSpec(
        model_types=("qwen3_5_moe_text",),
        ffn=(replace(_QWEN_EXPERTS, shared=_QWEN_SHARED_EXPERT), replace(_FUSED_EXPERTS, shared=_QWEN_SHARED_EXPERT),
             _GATED),
        mixer=_QWEN3_5_MIXER,
        **_GATED_DELTA_HYBRID,
    ),
    ArchSpec(
        # every layer: attention and a Mamba-2 mixer side by side on one input norm; scalar multipliers
        # (embedding, attention in/out, key, SSM out, MLP gate/down, head), each a constant factor on a
        # term, which standardization removes
        model_types=("falcon_h1",),
        ffn=(FFN(gate=Proj("feed_forward.gate_proj.weight"), up=Proj("feed_forward.up_proj.weight"),
                 down=Proj("feed_forward.down_proj.weight")),),
        mixer=Mixer(readers=(Proj("mamba.in_proj.weight"),), writers=(Proj("mamba.out_proj.weight"),), parallel=True),
        **{**_LLAMA, "ffn_norm": _rms("pre_ff_layernorm.weight"), "final_norm": _rms("final_layernorm.weight")},
    ),
    ArchSpec(
        # Mamba-2 layers between attention layers (layer_types, old or new spellings); fused 3-D experts
        # (each expert's gate rows, then up rows) beside an always-on shared MLP (gate and up halves); no
        # positions unless position_embedding_type is "rope"; granite's scalar multipliers (a constant per term)
        model_types=("granitemoehybrid",),
        ffn=(FFN(gate=Proj("block_sparse_moe.input_linear.weight", "experts_gate_up", "gate"),
                 up=Proj("block_sparse_moe.input_linear.weight", "experts_gate_up", "up"),
                 down=Proj("block_sparse_moe.output_linear.weight", "experts"),
                 experts=True, router="block_sparse_moe.router.layer.weight", shared=_GRANITE_SHARED_MLP),
             _GRANITE_SHARED_MLP),   # no routed experts (num_local_experts 0): the shared MLP alone
        rope=None,
        layer_kinds=LayerKinds(key="layer_types", attention=("attention", "full_attention")),
        mixer=Mixer(readers=(Proj("mamba.in_proj.weight"),), writers=(Proj("mamba.out_proj.weight"),)),
        variants=(when("position_embedding_type", "rope", rope="half"),),
        **_LLAMA,
    ),
    ArchSpec(
        # Mamba-2 layers beside attention layers listed in attn_layer_indices; partial RoPE
        model_types=("bamba",),
        ffn=(FFN(gate=Proj("feed_forward.gate_proj.weight"), up=Proj("feed_forward.up_proj.weight"),
                 down=Proj("feed_forward.down_proj.weight")),),
        layer_kinds=LayerKinds(indices="attn_layer_indices"),
        mixer=Mixer(readers=(Proj("mamba.in_proj.weight"),), writers=(Proj("mamba.out_proj.weight"),)),
        **{**_LLAMA, "ffn_norm": _rms("pre_ff_layernorm.weight"), "final_norm": _rms("final_layernorm.weight")},
    ),
    ArchSpec(
        # lfm2 (_LFM2) with a dense FFN on every layer
        model_types=("lfm2",),
        ffn=(FFN(gate=Proj("feed_forward.w1.weight"), up=Proj("feed_forward.w3.weight"),
                 down=Proj("feed_forward.w2.weight")),),
        **_LFM2,
    ),
    ArchSpec(
        # lfm2's layers with sigmoid-routed experts (a choice-only expert_bias) after the first dense layers
        model_types=("lfm2_moe",),
        ffn=(FFN(gate=Proj("feed_forward.experts.{e}.w1.weight"), up=Proj("feed_forward.experts.{e}.w3.weight"),
                 down=Proj("feed_forward.experts.{e}.w2.weight"), experts=True, router="feed_forward.gate.weight",
                 router_bias="feed_forward.expert_bias"),
             FFN(gate=Proj("feed_forward.experts.gate_up_proj", "experts_gate_up", "gate"),
                 up=Proj("feed_forward.experts.gate_up_proj", "experts_gate_up", "up"),
                 down=Proj("feed_forward.experts.down_proj", "experts"), experts=True,
                 router="feed_forward.gate.weight", router_bias="feed_forward.expert_bias"),
             FFN(gate=Proj("feed_forward.w1.weight"), up=Proj("feed_forward.w3.weight"),
                 down=Proj("feed_forward.w2.weight"))),
        router_scores="sigmoid",
        **_LFM2,
    ),
    ArchSpec(
        # gated delta-net layers (stored with one fused in_proj, rows q|k|v|z|b|a; transformers splits it)
        # beside full and sliding-window attention with qwen3's per-head QK norms; softmax-routed
        # experts beside an always-on shared expert
        model_types=("lara_mini",),
        ffn=(replace(_QWEN_EXPERTS, shared=_LARA_SHARED), replace(_FUSED_EXPERTS, shared=_LARA_SHARED), _GATED),
        layer_kinds=LayerKinds(key="layer_types", attention=("full_attention", "sliding_attention")),
        mixer=Mixer(readers=(Proj("linear_attn.in_proj.weight"),) + _QWEN3_5_MIXER.readers,
                    writers=_QWEN3_5_MIXER.writers),
        **_QK_NORM,
        **_LLAMA,
    ),
    ArchSpec(
        # Mamba layers between attention layers (i % attn_layer_period == attn_layer_offset); no RoPE
        model_types=("jamba",),
        ffn=(FFN(gate=Proj("feed_forward.experts.{e}.gate_proj.weight"),
                 up=Proj("feed_forward.experts.{e}.up_proj.weight"),
                 down=Proj("feed_forward.experts.{e}.down_proj.weight"),
                 experts=True, router="feed_forward.router.weight"),
             replace(_FUSED_EXPERTS, gate=Proj("feed_forward.experts.gate_up_proj", "experts_gate_up", "gate"),
                     up=Proj("feed_forward.experts.gate_up_proj", "experts_gate_up", "up"),
                     down=Proj("feed_forward.experts.down_proj", "experts"), router="feed_forward.router.weight"),
             FFN(gate=Proj("feed_forward.gate_proj.weight"), up=Proj("feed_forward.up_proj.weight"),
                 down=Proj("feed_forward.down_proj.weight"))),
        rope=None,
        layer_kinds=LayerKinds(period="attn_layer_period", offset="attn_layer_offset", defaults=(8, 4)),
        mixer=Mixer(readers=(Proj("mamba.in_proj.weight"),), writers=(Proj("mamba.out_proj.weight"),)),
        **{**_LLAMA, "ffn_norm": _rms("pre_ff_layernorm.weight"), "final_norm": _rms("final_layernorm.weight")},
    ),
    ArchSpec(
        # every layer is one block on one RMSNorm: Mamba-2 ("M"), attention without positions ("*"), a
        # plain ReLU² MLP ("-") or sigmoid-routed ReLU² experts with a shared expert ("E"). Attention
        # block i pairs with the first MLP/MoE block after it for the FFN term (huref.config.ffn_blocks).
        # With moe_latent_size set, experts read a latent projection: their shapes are refused
        model_types=("nemotron_h",),
        embed="embeddings.weight",
        layer="layers.{i}.",
        base_prefix="backbone.",
        q=Proj("mixer.q_proj.weight"),
        k=Proj("mixer.k_proj.weight"),
        v=Proj("mixer.v_proj.weight"),
        o=Proj("mixer.o_proj.weight"),
        ffn=(FFN(up=Proj("mixer.experts.{e}.up_proj.weight"), down=Proj("mixer.experts.{e}.down_proj.weight"),
                 experts=True, router="mixer.gate.weight", router_bias="mixer.gate.e_score_correction_bias",
                 shared=_NEMOTRON_SHARED),
             FFN(up=Proj("mixer.experts.up_proj", "experts"), down=Proj("mixer.experts.down_proj", "experts"),
                 experts=True, router="mixer.gate.weight", router_bias="mixer.gate.e_score_correction_bias",
                 shared=_NEMOTRON_SHARED),
             FFN(up=Proj("mixer.up_proj.weight"), down=Proj("mixer.down_proj.weight"))),
        router_scores="sigmoid",
        attn_norm=_rms("norm.weight"),
        ffn_norm=_rms("norm.weight"),
        final_norm=_rms("norm_f.weight"),
        rope=None,
        layer_kinds=LayerKinds(key="layers_block_type", attention=("full_attention", "attention"),
                               pattern="hybrid_override_pattern",
                               chars=(("M", "mamba"), ("*", "attention"), ("-", "mlp"), ("E", "moe")),
                               ffn_kinds=("mlp", "moe")),
        mixer=Mixer(readers=(Proj("mixer.in_proj.weight"),), writers=(Proj("mixer.out_proj.weight"),)),
    ),
    ArchSpec(
        # lightning (linear) attention layers beside softmax attention layers (layer_types), fused 3-D
        # experts with a softmax router. Each input norm's output is the residual path: h -> a = N1(h),
        # r = alpha * a + beta * attn(a), b = N2(r), h' = alpha' * b + beta' * moe(b), so the stream is a
        # norm output (docs/INVARIANTS.md: its write sides are the sublayers' input rows)
        model_types=("minimax",),
        ffn=(_MIXTRAL_EXPERTS, _FUSED_EXPERTS),
        layer_kinds=LayerKinds(key="layer_types", attention=("full_attention",)),
        mixer=Mixer(readers=(Proj("self_attn.qkv_proj.weight"), Proj("self_attn.output_gate.weight")),
                    writers=(Proj("self_attn.out_proj.weight"),), inner_norms=False),
        norm_residual=True,
        **_LLAMA,
    ),
    ArchSpec(
        # olmo2's attention layers (raw reads, post-norms on both writes, QK norms over the whole
        # projection) between pre-norm gated delta-net layers, whose post_attention_layernorm is the
        # FFN's input norm (Mixer.norms); no RoPE in the released checkpoints. Stored names first, then
        # transformers' in-memory ones (attention_layer_norm: input_layernorm, feedforward_layer_norm:
        # post_attention_layernorm)
        model_types=("olmo_hybrid",),
        ffn=(_GATED,),
        attn_post_norm=(Norm("feedforward_layer_norm.weight"), Norm("post_attention_layernorm.weight")),
        ffn_post_norm=_rms("post_feedforward_layernorm.weight"),
        q_norm=(Norm("self_attn.q_norm.weight", "rms", "row"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms", "row"),),
        layer_kinds=LayerKinds(key="layer_types", attention=("full_attention",)),
        mixer=Mixer(readers=tuple(Proj(f"linear_attn.{p}_proj.weight") for p in "qkvabg"),
                    writers=(Proj("linear_attn.o_proj.weight"),),
                    norms=(("attn_norm", (Norm("attention_layer_norm.weight"), Norm("input_layernorm.weight"))),
                           ("ffn_norm", (Norm("feedforward_layer_norm.weight"),
                                         Norm("post_attention_layernorm.weight"))))),
        **{**_LLAMA, "attn_norm": (), "ffn_norm": ()},
    ),
    ArchSpec(
        # Kimi Delta Attention layers beside MLA layers without positions (NoPE); the MLA layers are
        # listed 1-based in linear_attn_config.full_attn_layers (or in layer_types once transformers
        # saved the config); sigmoid-routed experts with a shared expert, dense first layers
        model_types=("kimi_linear",),
        ffn=(FFN(gate=Proj("block_sparse_moe.experts.{e}.w1.weight"), up=Proj("block_sparse_moe.experts.{e}.w3.weight"),
                 down=Proj("block_sparse_moe.experts.{e}.w2.weight"), experts=True,
                 router="block_sparse_moe.gate.weight", router_bias="block_sparse_moe.gate.e_score_correction_bias",
                 shared=FFN(gate=Proj("block_sparse_moe.shared_experts.gate_proj.weight"),
                            up=Proj("block_sparse_moe.shared_experts.up_proj.weight"),
                            down=Proj("block_sparse_moe.shared_experts.down_proj.weight"))),
             replace(_FUSED_EXPERTS, shared=_SHARED_EXPERTS, router_bias="mlp.gate.e_score_correction_bias"),
             FFN(gate=Proj("block_sparse_moe.gate_proj.weight"), up=Proj("block_sparse_moe.up_proj.weight"),
                 down=Proj("block_sparse_moe.down_proj.weight")),
             _GATED),   # dense layers, under transformers' saved name (block_sparse_moe) or in-memory one (mlp)
        router_scores="sigmoid",
        rope=None,
        layer_kinds=LayerKinds(key="layer_types", attention=("full_attention",),
                               indices="linear_attn_config.full_attn_layers", first_index=1),
        mixer=Mixer(readers=tuple(Proj(f"self_attn.{p}_proj.weight") for p in ("q", "k", "v", "f_a", "b", "g_a")),
                    writers=(Proj("self_attn.o_proj.weight"),)),
        **_LLAMA_MLA,
    ),
    ArchSpec(
        # RG-LRU recurrent blocks (linear_x and linear_y read, linear_out writes) beside local attention,
        # block_types cycled over the layers; gemma's 1 + w norms, one key/value head, partial RoPE
        model_types=("recurrent_gemma",),
        ffn=(FFN(gate=Proj("mlp_block.gate_proj.weight"), up=Proj("mlp_block.up_proj.weight"),
                 down=Proj("mlp_block.down_proj.weight")),),
        layer_kinds=LayerKinds(key="block_types", attention=("attention",), cycle=True),
        mixer=Mixer(readers=(Proj("temporal_block.linear_x.weight"), Proj("temporal_block.linear_y.weight")),
                    writers=(Proj("temporal_block.linear_out.weight"),), inner_norms=False),
        **{**_LLAMA, **{role: Proj(f"temporal_block.{role}_proj.weight") for role in "qkvo"},
           "attn_norm": _rms("temporal_pre_norm.weight", "rms_plus1"),
           "ffn_norm": _rms("channel_pre_norm.weight", "rms_plus1"),
           "final_norm": _rms("final_norm.weight", "rms_plus1")},
    ),
    ArchSpec(model_types=("gemma",), ffn=(_GATED,), gguf=(GGUFArch("gemma", ("gemma",)),), **_GEMMA),
    ArchSpec(model_types=("gemma2",), ffn=(_GATED,), gguf=(GGUFArch("gemma2", ("gemma2",)),), **_GEMMA2),
    # gemma2's pre-norms without its post norms
    ArchSpec(model_types=("vaultgemma",), ffn=(_GATED,),
             **{**_GEMMA, "ffn_norm": _rms("pre_feedforward_layernorm.weight", "rms_plus1")}),
    ArchSpec(
        model_types=("gemma3_text",),
        ffn=(_GATED,),
        q_norm=(Norm("self_attn.q_norm.weight", "rms_plus1", "head"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms_plus1", "head"),),
        gguf=(GGUFArch("gemma3", ("gemma3_text",)),),
        **_GEMMA2,
    ),
    ArchSpec(
        model_types=("olmo",),
        ffn=(_GATED,),
        **{**_LLAMA, "attn_norm": (Norm(None, "layer"),), "ffn_norm": (Norm(None, "layer"),),
           "final_norm": (Norm(None, "layer"),)},
    ),
    ArchSpec(
        model_types=("olmo2", "olmo3"),
        ffn=(_GATED,),
        attn_post_norm=_rms("post_attention_layernorm.weight"),
        ffn_post_norm=_rms("post_feedforward_layernorm.weight"),
        q_norm=(Norm("self_attn.q_norm.weight", "rms", "row"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms", "row"),),
        **{**_LLAMA, "attn_norm": (), "ffn_norm": ()},
    ),
    ArchSpec(
        # olmo2's post norms with per-head QK norms
        model_types=("exaone4",),
        ffn=(_GATED,),
        attn_post_norm=_rms("post_attention_layernorm.weight"),
        ffn_post_norm=_rms("post_feedforward_layernorm.weight"),
        gguf=(GGUFArch("exaone4", ("exaone4",)),),
        **_QK_NORM,
        **{**_LLAMA, "attn_norm": (), "ffn_norm": ()},
    ),
    ArchSpec(
        model_types=("stablelm",),
        ffn=(_GATED,),
        variants=(when("qk_layernorm", True, unsupported="StableLM with per-head QK LayerNorm (qk_layernorm=true)"),),
        **{**_LLAMA, "attn_norm": _ln("input_layernorm.weight"),
           "ffn_norm": _ln("post_attention_layernorm.weight"), "final_norm": _ln("norm.weight")},
    ),
    ArchSpec(
        model_types=("starcoder2",),
        ffn=(FFN(up=Proj("mlp.c_fc.weight"), down=Proj("mlp.c_proj.weight")),),
        **{**_LLAMA, "attn_norm": _ln("input_layernorm.weight"),
           "ffn_norm": _ln("post_attention_layernorm.weight"), "final_norm": _ln("norm.weight")},
    ),
    ArchSpec(
        # a parallel block: attention and FFN read the same LayerNorm
        model_types=("phi",),
        embed="embed_tokens.weight",
        layer="layers.{i}.",
        base_prefix="model.",
        q=Proj("self_attn.q_proj.weight"),
        k=Proj("self_attn.k_proj.weight"),
        v=Proj("self_attn.v_proj.weight"),
        o=Proj("self_attn.dense.weight"),
        ffn=(FFN(up=Proj("mlp.fc1.weight"), down=Proj("mlp.fc2.weight")),),
        attn_norm=_ln("input_layernorm.weight"),
        ffn_norm=_ln("input_layernorm.weight"),
        final_norm=_ln("final_layernorm.weight"),
        variants=(when("qk_layernorm", True, q_norm=(Norm("self_attn.q_layernorm.weight", "layer", "head"),),
                       k_norm=(Norm("self_attn.k_layernorm.weight", "layer", "head"),)),),
    ),
    ArchSpec(
        # RMSNorms without parameters everywhere (on the embedding and QK too); plain FFN with ReLU²
        model_types=("nanochat",),
        embed_norm=(Norm(None),),
        ffn=(FFN(up=Proj("mlp.fc1.weight"), down=Proj("mlp.fc2.weight")),),
        q_norm=(Norm(None, "rms", "head"),),
        k_norm=(Norm(None, "rms", "head"),),
        **{**_LLAMA, "attn_norm": (Norm(None),), "ffn_norm": (Norm(None),), "final_norm": (Norm(None),)},
    ),
    ArchSpec(model_types=("kolibri1",), **_KOLIBRI1),
    ArchSpec(
        # kolibri1's layers, dense FFNs on mlp_only_layers; sliding-window layers with RoPE beside indexed-attention
        # layers without positions, some of which attend to an earlier layer's keys and values (kv_source_layers)
        # and store no k_proj, v_proj or k_norm of their own. An indexer without weights picks the keys each query
        # sees, and indexed layers round keys and values to NVFP4: no term reads either (docs/INVARIANTS.md)
        model_types=("kolibri1_1",),
        # without kv_source_layers: of the indexed layers (layer_types; missing: every 5th), the 2nd, 3rd and 10th
        # read the 1st's keys and values, the 7th to 9th the 6th's (Kolibri 1.1's layout, transformers' default)
        kv_sources=KVSources("kv_source_layers", LayerKinds(key="layer_types", attention=("indexed_attention",)),
                             LayerKinds(defaults=(5, 4)), default=(0, 0, 0, 3, 4, 5, 5, 5, 5, 0)),
        **_KOLIBRI1,
    ),
    ArchSpec(
        # per-head fused query_key_value, per-head QK LayerNorms, plain FFN with ReLU²
        model_types=("persimmon",),
        ffn=(FFN(up=Proj("mlp.dense_h_to_4h.weight"), down=Proj("mlp.dense_4h_to_h.weight")),),
        q_norm=(Norm("self_attn.q_layernorm.weight", "layer", "head"),),
        k_norm=(Norm("self_attn.k_layernorm.weight", "layer", "head"),),
        **{**_LLAMA, "o": Proj("self_attn.dense.weight"), "attn_norm": _ln("input_layernorm.weight"),
           "ffn_norm": _ln("post_attention_layernorm.weight"),
           "final_norm": _ln("final_layernorm.weight"),
           **_fused_qkv("self_attn.query_key_value.weight", "qkv_heads")},
    ),
    ArchSpec(
        model_types=("phi3",),
        ffn=(
            FFN(
                gate=Proj("mlp.gate_up_proj.weight", "gate_up_split", "gate"),
                up=Proj("mlp.gate_up_proj.weight", "gate_up_split", "up"),
                down=Proj("mlp.down_proj.weight"),
            ),
        ),
        gguf=(GGUFArch("phi3", ("phi3",)),),
        **{**_LLAMA, **_fused_qkv("self_attn.qkv_proj.weight", "qkv_split")},
    ),
    ArchSpec(
        # a parallel block (attention and FFN read one LayerNorm without bias); `logit_scale` scales the logits
        model_types=("cohere", "cohere2"),
        ffn=(_GATED,),
        rope="pairs",
        variants=(when("use_qk_norm", True, False, unsupported=(
            "Command R+ style per-head QK LayerNorms with a gain per head (use_qk_norm=true)")),),
        gguf=(GGUFArch("cohere2", ("cohere2",)),),
        **{**_LLAMA, "attn_norm": _ln("input_layernorm.weight"), "ffn_norm": _ln("input_layernorm.weight"),
           "final_norm": _ln("norm.weight")},
    ),
    ArchSpec(
        # cohere2's parallel block with experts beside shared experts (their average is a scalar on the
        # write); RMSNorms when config.json sets rms_norm_eps, else LayerNorms without bias
        model_types=("cohere2_moe",),
        ffn=(replace(_QWEN_EXPERTS, shared=_SHARED_EXPERTS), replace(_FUSED_EXPERTS, shared=_SHARED_EXPERTS), _GATED),
        rope="pairs",
        variants=(when("num_shared_experts", 0, 0, ffn=(_QWEN_EXPERTS, _FUSED_EXPERTS, _GATED)),
                  when("rms_norm_eps", None, None, attn_norm=_ln("input_layernorm.weight"),
                       ffn_norm=_ln("input_layernorm.weight"), final_norm=_ln("norm.weight")),
                  when("expert_selection_fn", "sigmoid", "softmax", router_scores="sigmoid")),
        **{**_LLAMA, "ffn_norm": _rms("input_layernorm.weight")},
    ),
    ArchSpec(
        # LayerNorm1P (1 + w); plain FFN with ReLU²
        model_types=("nemotron",),
        ffn=(_PLAIN,),
        **{**_LLAMA, "attn_norm": _rms("input_layernorm.weight", "layer_plus1"),
           "ffn_norm": _rms("post_attention_layernorm.weight", "layer_plus1"),
           "final_norm": _rms("norm.weight", "layer_plus1")},
    ),
    ArchSpec(
        # fused Wqkv (q, k, v one after another), LayerNorms without bias, ALiBi
        model_types=("mpt",),
        embed="wte.weight",
        layer="blocks.{i}.",
        base_prefix="transformer.",
        o=Proj("attn.out_proj.weight"),
        ffn=(FFN(up=Proj("ffn.up_proj.weight"), down=Proj("ffn.down_proj.weight")),),
        attn_norm=_ln("norm_1.weight"),
        ffn_norm=_ln("norm_2.weight"),
        final_norm=_ln("norm_f.weight"),
        rope=None,
        alibi=True,
        variants=(when("alibi", False, True, unsupported="MPT without ALiBi (learned positions, alibi=false)"),),
        **_fused_qkv("attn.Wqkv.weight", "qkv_split"),
    ),
    ArchSpec(
        # nn.Linear c_attn: multi-query (queries, one key head, one value head) or per head (q, k, v)
        model_types=("gpt_bigcode",),
        o=Proj("attn.c_proj.weight"),
        ffn=(FFN(up=Proj("mlp.c_fc.weight"), down=Proj("mlp.c_proj.weight")),),
        attn_norm=_ln("ln_1.weight"),
        ffn_norm=_ln("ln_2.weight"),
        added_embeds=(("wpe.weight", 0),),
        rope=None,
        n_kv_heads=1,
        variants=(when("multi_query", False, True, n_kv_heads=None, **_fused_qkv("attn.c_attn.weight", "qkv_heads")),),
        **_fused_qkv("attn.c_attn.weight", "qkv_split"),
        **_GPT,
    ),
    ArchSpec(
        model_types=("gpt2", "gpt-sw3"),
        q=Proj("attn.c_attn.weight", "qkv_split", "q", transposed=True),
        k=Proj("attn.c_attn.weight", "qkv_split", "k", transposed=True),
        v=Proj("attn.c_attn.weight", "qkv_split", "v", transposed=True),
        o=Proj("attn.c_proj.weight", transposed=True),
        ffn=(FFN(up=Proj("mlp.c_fc.weight", transposed=True), down=Proj("mlp.c_proj.weight", transposed=True)),),
        attn_norm=_ln("ln_1.weight"),
        ffn_norm=_ln("ln_2.weight"),
        added_embeds=(("wpe.weight", 0),),
        rope=None,
        **_GPT,
    ),
    ArchSpec(
        model_types=("gpt_neox",),
        embed="embed_in.weight",
        layer="layers.{i}.",
        base_prefix="gpt_neox.",
        o=Proj("attention.dense.weight"),
        ffn=(FFN(up=Proj("mlp.dense_h_to_4h.weight"), down=Proj("mlp.dense_4h_to_h.weight")),),
        attn_norm=_ln("input_layernorm.weight"),
        ffn_norm=_ln("post_attention_layernorm.weight"),
        final_norm=_ln("final_layer_norm.weight"),
        head="embed_out.weight",
        **_fused_qkv("attention.query_key_value.weight", "qkv_heads"),
    ),
    ArchSpec(
        model_types=("gptj",),
        q=Proj("attn.q_proj.weight"),
        k=Proj("attn.k_proj.weight"),
        v=Proj("attn.v_proj.weight"),
        o=Proj("attn.out_proj.weight"),
        ffn=(FFN(up=Proj("mlp.fc_in.weight"), down=Proj("mlp.fc_out.weight")),),
        attn_norm=_ln("ln_1.weight"),
        ffn_norm=_ln("ln_1.weight"),
        rope="pairs",
        **_GPT,
    ),
    ArchSpec(
        # gptj's parallel block with codegen's fused qkv_proj
        model_types=("codegen",),
        o=Proj("attn.out_proj.weight"),
        ffn=(FFN(up=Proj("mlp.fc_in.weight"), down=Proj("mlp.fc_out.weight")),),
        attn_norm=_ln("ln_1.weight"),
        ffn_norm=_ln("ln_1.weight"),
        rope="pairs",
        **_fused_qkv("attn.qkv_proj.weight", "qkv_mp4"),
        **_GPT,
    ),
    ArchSpec(
        # post-LN as BERT (ln_1 after attention is the FFN's input norm) without an embedding norm
        model_types=("openai-gpt",),
        embed="tokens_embed.weight",
        layer="h.{i}.",
        base_prefix="transformer.",
        o=Proj("attn.c_proj.weight", transposed=True),
        ffn=(FFN(up=Proj("mlp.c_fc.weight", transposed=True), down=Proj("mlp.c_proj.weight", transposed=True)),),
        ffn_norm=_ln("ln_1.weight"),
        residual_norm=_ln("ln_2.weight"),
        added_embeds=(("positions_embed.weight", 0),),
        rope=None,
        **{part: Proj("attn.c_attn.weight", "qkv_split", part, transposed=True) for part in "qkv"},
    ),
    ArchSpec(
        model_types=("gpt_neo",),
        q=Proj("attn.attention.q_proj.weight"),
        k=Proj("attn.attention.k_proj.weight"),
        v=Proj("attn.attention.v_proj.weight"),
        o=Proj("attn.attention.out_proj.weight"),
        ffn=(FFN(up=Proj("mlp.c_fc.weight"), down=Proj("mlp.c_proj.weight")),),
        attn_norm=_ln("ln_1.weight"),
        ffn_norm=_ln("ln_2.weight"),
        added_embeds=(("wpe.weight", 0),),
        rope=None,
        **_GPT,
    ),
    ArchSpec(
        # multi-query by default (one key/value head after the queries); the norms differ per
        # variant (ln_attn/ln_mlp, or one input_layernorm for a parallel block, or two in sequence)
        model_types=("falcon",),
        o=Proj("self_attention.dense.weight"),
        ffn=(FFN(up=Proj("mlp.dense_h_to_4h.weight"), down=Proj("mlp.dense_4h_to_h.weight")),),
        attn_norm=_ln("ln_attn.weight", "input_layernorm.weight"),
        ffn_norm=_ln("ln_mlp.weight", "post_attention_layernorm.weight", "input_layernorm.weight"),
        n_kv_heads=1,
        variants=(
            when("multi_query", False, True, n_kv_heads=None,
                 **_fused_qkv("self_attention.query_key_value.weight", "qkv_heads")),
            when("new_decoder_architecture", True, False, n_kv_heads=None,
                 **_fused_qkv("self_attention.query_key_value.weight", "qkv_groups")),
            when("alibi", True, False, rope=None, alibi=True),
        ),
        **_fused_qkv("self_attention.query_key_value.weight", "qkv_split"),
        **{**_GPT, "embed": "word_embeddings.weight"},
    ),
    ArchSpec(
        model_types=("opt",),
        embed="embed_tokens.weight",
        layer="layers.{i}.",
        base_prefix="model.decoder.",
        q=Proj("self_attn.q_proj.weight"),
        k=Proj("self_attn.k_proj.weight"),
        v=Proj("self_attn.v_proj.weight"),
        o=Proj("self_attn.out_proj.weight"),
        ffn=(FFN(up=Proj("fc1.weight"), down=Proj("fc2.weight")),),
        attn_norm=_ln("self_attn_layer_norm.weight"),
        ffn_norm=_ln("final_layer_norm.weight"),
        final_norm=_ln("final_layer_norm.weight"),
        embed_proj="project_in.weight",
        added_embeds=(("embed_positions.weight", 2),),  # OPT offsets positions by 2
        rope=None,
        variants=(when("do_layer_norm_before", False, True,
                       unsupported="post-LayerNorm OPT, e.g. opt-350m (do_layer_norm_before=false)"),),
    ),
    ArchSpec(
        model_types=("bloom",),
        o=Proj("self_attention.dense.weight"),
        ffn=(FFN(up=Proj("mlp.dense_h_to_4h.weight"), down=Proj("mlp.dense_4h_to_h.weight")),),
        attn_norm=_ln("input_layernorm.weight"),
        ffn_norm=_ln("post_attention_layernorm.weight"),
        embed_norm=_ln("word_embeddings_layernorm.weight"),
        rope=None,
        alibi=True,
        variants=(when("apply_residual_connection_post_layernorm", True, False, unsupported=(
            "BLOOM with post-LayerNorm residuals (apply_residual_connection_post_layernorm=true)")),),
        **_fused_qkv("self_attention.query_key_value.weight", "qkv_heads"),
        **{**_GPT, "embed": "word_embeddings.weight"},
    ),
    ArchSpec(
        # Post-LN encoder: each sublayer reads the stream as the previous LayerNorm left it, so the
        # FFN's input norm is the attention block's output LayerNorm.
        model_types=("bert",),
        embed="embeddings.word_embeddings.weight",
        layer="encoder.layer.{i}.",
        base_prefix="bert.",
        q=Proj("attention.self.query.weight"),
        k=Proj("attention.self.key.weight"),
        v=Proj("attention.self.value.weight"),
        o=Proj("attention.output.dense.weight"),
        ffn=(FFN(up=Proj("intermediate.dense.weight"), down=Proj("output.dense.weight")),),
        ffn_norm=_ln("attention.output.LayerNorm.weight"),
        residual_norm=_ln("output.LayerNorm.weight"),
        embed_norm=_ln("embeddings.LayerNorm.weight"),
        added_embeds=(("embeddings.position_embeddings.weight", 0), ("embeddings.token_type_embeddings.weight", 0)),
        head="cls.predictions.decoder.weight",
        head_bias="cls.predictions.bias",
        head_reader="cls.predictions.transform.dense.weight",
        rope=None,
    ),
)

_BY_TYPE = {t: spec for spec in ARCHITECTURES for t in spec.model_types}
# every llama.cpp architecture huref reads as GGUF, with the model_types written as it
GGUF_ARCHS: tuple[GGUFArch, ...] = tuple(entry for spec in ARCHITECTURES for entry in spec.gguf)


def supported_model_types() -> list[str]:
    """All `model_type` values huref knows, sorted."""
    return sorted(_BY_TYPE)


def arch_for_config(config: dict) -> ArchSpec:
    """Return the ArchSpec for a config.json dict, or raise a one-line HurefError."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise HurefError(f"config.json: model_type is {excerpt(model_type)}, not a string")
    if model_type not in _BY_TYPE:
        raise HurefError(
            f"unsupported model_type '{model_type}'; supported: {', '.join(supported_model_types())}"
        )
    spec = _BY_TYPE[model_type].for_config(config)
    if spec.unsupported:
        raise HurefError(f"unsupported variant of {model_type}: {spec.unsupported}")
    return spec

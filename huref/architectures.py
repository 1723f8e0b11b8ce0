"""Architectures as data: where each weight of a transformer layer lives in a checkpoint.

An `ArchSpec` names, for one family of `config.json` `model_type`s, the tensors the invariant
terms read (embedding, Q/K/V/O, FFN, the norms on each path) and how fused tensors are laid out.
Nothing here computes; `huref.layers` turns a spec plus a checkpoint into per-layer weights.

Conventions
- Tensor names are templates relative to the checkpoint's base prefix; `{i}` is the layer index,
  `{e}` the expert index. Some checkpoints drop the base prefix ("transformer.", "bert."): both
  spellings are accepted.
- Every matrix is used in Hugging Face orientation [out, in]; `transposed=True` marks tensors stored
  as [in, out] (GPT-2's Conv1D).
- `layout` says where a logical matrix sits inside a fused tensor (see `huref.layers.LAYOUTS`).
- `added_embeds`: embeddings added to every token's row on the way in (learned absolute positions,
  BERT's token types), as (name, first used row). The probe rows take their mean over used rows, the
  input at an average position: a vector moved from the token rows into the position rows, which
  leaves every input unchanged, then leaves the probe rows unchanged too.
- A norm tuple lists candidates: the first whose tensor exists is used (falcon names its norms
  differently per variant). `Norm(None, ...)` is a norm without parameters (OLMo).
- Norm kinds: "rms" (x / rms(x) * w), "rms_plus1" (gemma: x / rms(x) * (1 + w)), "layer"
  (centre, divide by std, * w; the bias is never used). QK norms have scope "head" (per head:
  qwen3, gemma3, phi) or "row" (the whole projection: olmo2).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from huref.errors import HurefError


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
    `shared`: an always-on expert beside the routed ones (qwen2_moe).
    """

    up: Proj
    down: Proj
    gate: Proj | None = None
    experts: bool = False
    shared: "FFN | None" = None


@dataclass(frozen=True)
class ArchSpec:
    """Where one architecture keeps the weights of its embedding and of layer `{i}`."""

    model_types: tuple[str, ...]
    embed: str
    layer: str
    q: Proj
    k: Proj
    v: Proj
    o: Proj
    ffn: tuple[FFN, ...]
    attn_norm: tuple[Norm, ...] = ()
    ffn_norm: tuple[Norm, ...] = ()
    attn_post_norm: tuple[Norm, ...] = ()
    ffn_post_norm: tuple[Norm, ...] = ()
    q_norm: tuple[Norm, ...] = ()
    k_norm: tuple[Norm, ...] = ()
    qk_norm_optional: bool = False
    embed_norm: tuple[Norm, ...] = ()
    embed_proj: str | None = None
    added_embeds: tuple[tuple[str, int], ...] = ()
    base_prefix: str = ""
    unsupported: tuple[tuple[str, object, str], ...] = field(default=())

    @property
    def layer_norm(self) -> bool:
        """True when the model uses LayerNorm, which cannot see the residual stream's mean."""
        norms = self.attn_norm + self.ffn_norm + self.attn_post_norm + self.ffn_post_norm + self.embed_norm
        return any(n.kind == "layer" for n in norms)


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
_GATED = FFN(gate=Proj("mlp.gate_proj.weight"), up=Proj("mlp.up_proj.weight"), down=Proj("mlp.down_proj.weight"))
_FUSED_EXPERTS = FFN(
    gate=Proj("mlp.experts.gate_up_proj", "experts_gate_up", "gate"),
    up=Proj("mlp.experts.gate_up_proj", "experts_gate_up", "up"),
    down=Proj("mlp.experts.down_proj", "experts"),
    experts=True,
)
_QWEN_SHARED_EXPERT = FFN(
    gate=Proj("mlp.shared_expert.gate_proj.weight"),
    up=Proj("mlp.shared_expert.up_proj.weight"),
    down=Proj("mlp.shared_expert.down_proj.weight"),
)
_LLAMA = dict(
    embed="embed_tokens.weight",
    layer="layers.{i}.",
    base_prefix="model.",
    attn_norm=_rms("input_layernorm.weight"),
    ffn_norm=_rms("post_attention_layernorm.weight"),
    **_LLAMA_ATTN,
)

ARCHITECTURES: tuple[ArchSpec, ...] = (
    ArchSpec(model_types=("llama", "mistral", "qwen2"), ffn=(_GATED,), **_LLAMA),
    ArchSpec(
        model_types=("qwen3",),
        ffn=(_GATED,),
        q_norm=(Norm("self_attn.q_norm.weight", "rms", "head"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms", "head"),),
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("mixtral",),
        ffn=(
            FFN(
                gate=Proj("block_sparse_moe.experts.{e}.w1.weight"),
                up=Proj("block_sparse_moe.experts.{e}.w3.weight"),
                down=Proj("block_sparse_moe.experts.{e}.w2.weight"),
                experts=True,
            ),
            _FUSED_EXPERTS,
        ),
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("qwen2_moe",),
        ffn=(
            FFN(
                gate=Proj("mlp.experts.{e}.gate_proj.weight"),
                up=Proj("mlp.experts.{e}.up_proj.weight"),
                down=Proj("mlp.experts.{e}.down_proj.weight"),
                experts=True,
                shared=_QWEN_SHARED_EXPERT,
            ),
            replace(_FUSED_EXPERTS, shared=_QWEN_SHARED_EXPERT),
            _GATED,  # layers listed in mlp_only_layers, or off decoder_sparse_step, are dense
        ),
        **_LLAMA,
    ),
    ArchSpec(
        model_types=("gemma",),
        ffn=(_GATED,),
        **{**_LLAMA, "attn_norm": _rms("input_layernorm.weight", "rms_plus1"),
           "ffn_norm": _rms("post_attention_layernorm.weight", "rms_plus1")},
    ),
    ArchSpec(
        model_types=("gemma2", "gemma3_text"),
        ffn=(_GATED,),
        attn_post_norm=_rms("post_attention_layernorm.weight", "rms_plus1"),
        ffn_post_norm=_rms("post_feedforward_layernorm.weight", "rms_plus1"),
        q_norm=(Norm("self_attn.q_norm.weight", "rms_plus1", "head"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms_plus1", "head"),),
        qk_norm_optional=True,
        **{**_LLAMA, "attn_norm": _rms("input_layernorm.weight", "rms_plus1"),
           "ffn_norm": _rms("pre_feedforward_layernorm.weight", "rms_plus1")},
    ),
    ArchSpec(
        model_types=("olmo",),
        ffn=(_GATED,),
        **{**_LLAMA, "attn_norm": (Norm(None, "layer"),), "ffn_norm": (Norm(None, "layer"),)},
    ),
    ArchSpec(
        model_types=("olmo2",),
        ffn=(_GATED,),
        attn_post_norm=_rms("post_attention_layernorm.weight"),
        ffn_post_norm=_rms("post_feedforward_layernorm.weight"),
        q_norm=(Norm("self_attn.q_norm.weight", "rms", "row"),),
        k_norm=(Norm("self_attn.k_norm.weight", "rms", "row"),),
        **{**_LLAMA, "attn_norm": (), "ffn_norm": ()},
    ),
    ArchSpec(
        model_types=("stablelm",),
        ffn=(_GATED,),
        unsupported=(("qk_layernorm", True, "StableLM with per-head QK LayerNorm"),),
        **{**_LLAMA, "attn_norm": _ln("input_layernorm.weight"),
           "ffn_norm": _ln("post_attention_layernorm.weight")},
    ),
    ArchSpec(
        model_types=("starcoder2",),
        ffn=(FFN(up=Proj("mlp.c_fc.weight"), down=Proj("mlp.c_proj.weight")),),
        **{**_LLAMA, "attn_norm": _ln("input_layernorm.weight"),
           "ffn_norm": _ln("post_attention_layernorm.weight")},
    ),
    ArchSpec(
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
        q_norm=(Norm("self_attn.q_layernorm.weight", "layer", "head"),),
        k_norm=(Norm("self_attn.k_layernorm.weight", "layer", "head"),),
        qk_norm_optional=True,
    ),
    ArchSpec(
        model_types=("phi3",),
        embed="embed_tokens.weight",
        layer="layers.{i}.",
        base_prefix="model.",
        q=Proj("self_attn.qkv_proj.weight", "qkv_split", "q"),
        k=Proj("self_attn.qkv_proj.weight", "qkv_split", "k"),
        v=Proj("self_attn.qkv_proj.weight", "qkv_split", "v"),
        o=Proj("self_attn.o_proj.weight"),
        ffn=(
            FFN(
                gate=Proj("mlp.gate_up_proj.weight", "gate_up_split", "gate"),
                up=Proj("mlp.gate_up_proj.weight", "gate_up_split", "up"),
                down=Proj("mlp.down_proj.weight"),
            ),
        ),
        attn_norm=_rms("input_layernorm.weight"),
        ffn_norm=_rms("post_attention_layernorm.weight"),
    ),
    ArchSpec(
        model_types=("gpt2",),
        embed="wte.weight",
        layer="h.{i}.",
        base_prefix="transformer.",
        q=Proj("attn.c_attn.weight", "qkv_split", "q", transposed=True),
        k=Proj("attn.c_attn.weight", "qkv_split", "k", transposed=True),
        v=Proj("attn.c_attn.weight", "qkv_split", "v", transposed=True),
        o=Proj("attn.c_proj.weight", transposed=True),
        ffn=(FFN(up=Proj("mlp.c_fc.weight", transposed=True), down=Proj("mlp.c_proj.weight", transposed=True)),),
        attn_norm=_ln("ln_1.weight"),
        ffn_norm=_ln("ln_2.weight"),
        added_embeds=(("wpe.weight", 0),),
    ),
    ArchSpec(
        model_types=("gpt_neox",),
        embed="embed_in.weight",
        layer="layers.{i}.",
        base_prefix="gpt_neox.",
        q=Proj("attention.query_key_value.weight", "qkv_heads", "q"),
        k=Proj("attention.query_key_value.weight", "qkv_heads", "k"),
        v=Proj("attention.query_key_value.weight", "qkv_heads", "v"),
        o=Proj("attention.dense.weight"),
        ffn=(FFN(up=Proj("mlp.dense_h_to_4h.weight"), down=Proj("mlp.dense_4h_to_h.weight")),),
        attn_norm=_ln("input_layernorm.weight"),
        ffn_norm=_ln("post_attention_layernorm.weight"),
    ),
    ArchSpec(
        model_types=("gptj",),
        embed="wte.weight",
        layer="h.{i}.",
        base_prefix="transformer.",
        q=Proj("attn.q_proj.weight"),
        k=Proj("attn.k_proj.weight"),
        v=Proj("attn.v_proj.weight"),
        o=Proj("attn.out_proj.weight"),
        ffn=(FFN(up=Proj("mlp.fc_in.weight"), down=Proj("mlp.fc_out.weight")),),
        attn_norm=_ln("ln_1.weight"),
        ffn_norm=_ln("ln_1.weight"),
    ),
    ArchSpec(
        model_types=("gpt_neo",),
        embed="wte.weight",
        layer="h.{i}.",
        base_prefix="transformer.",
        q=Proj("attn.attention.q_proj.weight"),
        k=Proj("attn.attention.k_proj.weight"),
        v=Proj("attn.attention.v_proj.weight"),
        o=Proj("attn.attention.out_proj.weight"),
        ffn=(FFN(up=Proj("mlp.c_fc.weight"), down=Proj("mlp.c_proj.weight")),),
        attn_norm=_ln("ln_1.weight"),
        ffn_norm=_ln("ln_2.weight"),
        added_embeds=(("wpe.weight", 0),),
    ),
    ArchSpec(
        model_types=("falcon",),
        embed="word_embeddings.weight",
        layer="h.{i}.",
        base_prefix="transformer.",
        q=Proj("self_attention.query_key_value.weight", "falcon_qkv", "q"),
        k=Proj("self_attention.query_key_value.weight", "falcon_qkv", "k"),
        v=Proj("self_attention.query_key_value.weight", "falcon_qkv", "v"),
        o=Proj("self_attention.dense.weight"),
        ffn=(FFN(up=Proj("mlp.dense_h_to_4h.weight"), down=Proj("mlp.dense_4h_to_h.weight")),),
        attn_norm=_ln("ln_attn.weight", "input_layernorm.weight"),
        ffn_norm=_ln("ln_mlp.weight", "post_attention_layernorm.weight", "input_layernorm.weight"),
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
        embed_proj="project_in.weight",
        added_embeds=(("embed_positions.weight", 2),),  # OPT offsets positions by 2
        unsupported=(("do_layer_norm_before", False, "post-LayerNorm OPT (e.g. opt-350m)"),),
    ),
    ArchSpec(
        model_types=("bloom",),
        embed="word_embeddings.weight",
        layer="h.{i}.",
        base_prefix="transformer.",
        q=Proj("self_attention.query_key_value.weight", "qkv_heads", "q"),
        k=Proj("self_attention.query_key_value.weight", "qkv_heads", "k"),
        v=Proj("self_attention.query_key_value.weight", "qkv_heads", "v"),
        o=Proj("self_attention.dense.weight"),
        ffn=(FFN(up=Proj("mlp.dense_h_to_4h.weight"), down=Proj("mlp.dense_4h_to_h.weight")),),
        attn_norm=_ln("input_layernorm.weight"),
        ffn_norm=_ln("post_attention_layernorm.weight"),
        embed_norm=_ln("word_embeddings_layernorm.weight"),
        unsupported=(("apply_residual_connection_post_layernorm", True, "BLOOM with post-LayerNorm residuals"),),
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
        embed_norm=_ln("embeddings.LayerNorm.weight"),
        added_embeds=(("embeddings.position_embeddings.weight", 0), ("embeddings.token_type_embeddings.weight", 0)),
    ),
)

_BY_TYPE = {t: spec for spec in ARCHITECTURES for t in spec.model_types}


def supported_model_types() -> list[str]:
    """All `model_type` values huref knows, sorted."""
    return sorted(_BY_TYPE)


def arch_for_config(config: dict) -> ArchSpec:
    """Return the ArchSpec for a config.json dict, or raise a one-line HurefError."""
    model_type = config.get("model_type")
    if model_type not in _BY_TYPE:
        raise HurefError(
            f"unsupported model_type '{model_type}'; supported: {', '.join(supported_model_types())}"
        )
    spec = _BY_TYPE[model_type]
    for key, value, what in spec.unsupported:
        if config.get(key) == value:
            raise HurefError(f"unsupported variant of {model_type}: {what} ({key}={value})")
    return spec

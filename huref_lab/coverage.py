"""Which of transformers' causal-LM model types huref fingerprints, and why not the others (data).

Every `model_type` of transformers' causal-LM mapping (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) is either
supported (a row of huref.architectures, with at least one tiny model in huref_lab.tiny_models that
the attack suite covers), not applicable (NOT_APPLICABLE: no decoder-only transformer whose terms
mean something), or not yet supported (NOT_YET, with the reason). `render()` gives the Markdown
table of docs/ARCHITECTURES.md; scripts/coverage.py writes it and tests/test_coverage.py checks it.

The table classifies the pinned transformers' model types (PINNED: the mapping of the version
constraints.txt names, snapshotted with gguf-py's architecture and quantization names), so a new
upstream release cannot fail the suite; `drift()` lists what the installed releases add that the
table has not classified (`python scripts/coverage.py --latest`).
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from huref.architectures import ARCHITECTURES, supported_model_types
from huref.config import TEXT_MODEL_TYPES
from huref_lab.tiny_models import MODEL_TYPE

_MLA = "DeepSeek's latent attention (read for deepseek_v2/v3)"
_PER_LAYER_MLA = ("deepseek_v32's sparse latent attention with sliding-window layers of other latent sizes and head "
                  "counts (per_layer_config): needs per-layer attention sizes")
_HYBRID = "hybrid layers (linear attention, gated delta-net, Mamba or convolution blocks beside attention)"
_ENCODER_DECODER = "the decoder of an encoder-decoder model: its layers cross-attend to an encoder's output"
_ENCODER = "encoder-only masked LM (bidirectional, BERT-like); bert's row shows how one would be added"
_RECURRENT = "pure recurrent / state-space model: no attention, so no QK or VO term"
_GATED_ATTENTION = "a learned gate multiplies each head's attention output before o_proj: the VO term would need it"
_SINUSOIDS = ("fixed sinusoidal positions added to the residual stream: they are not weights, so no rewrite of the "
              "stream preserves them and the probe rows would need the table")
_HYPER_CONNECTIONS = "hyper-connections (several residual streams mixed by learned matrices)"

NOT_APPLICABLE = {
    **{t: _ENCODER_DECODER for t in ("bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "marian", "mbart",
                                     "mvp", "pegasus", "plbart", "prophetnet")},
    "trocr": "image-to-text decoder cross-attending to a vision encoder",
    "whisper": "speech-to-text decoder cross-attending to an audio encoder",
    "musicgen": "audio-codebook decoder cross-attending to a text encoder",
    "musicgen_melody": "audio-codebook decoder conditioned on a text encoder",
    **{t: _RECURRENT for t in ("mamba", "mamba2", "falcon_mamba", "rwkv")},
    "xlstm": "recurrent mLSTM/sLSTM cells with exponential gating: no softmax attention",
}

NOT_YET = {
    "dots3_note_text": _PER_LAYER_MLA,
    "dots3_note": f"multimodal wrapper (audio and vision towers) of dots3_note_text: {_PER_LAYER_MLA}",
    "axk2": ("deepseek_v32's sparse latent attention with gated RMSNorms (a low-rank sigmoid gate on the output of "
             "the attention input norm and of MoE layers' FFN input norm): a data-dependent gate on the paths the "
             "terms read"),
    "axk1": (f"{_MLA} with post_mlp_layernorm, a norm on the FFN write of MoE layers only (dense layers store one "
             "they do not use): needs post norms per layer kind"),
    "longcat_flash": (f"{_MLA}, two attention and two dense-FFN sublayers per layer plus a shortcut MoE (with "
                      "zero-computation experts) beside them: a layer would carry two QK and VO terms"),
    "deepseek_v4": ("a latent query (q_a) with compressed key/value attention (HCA/CSA compressors and an indexer); "
                    f"also {_HYPER_CONNECTIONS}"),
    "hy_v4": f"glm_moe_dsa's sparse latent attention with {_HYPER_CONNECTIONS}",
    "bailing_hybrid": f"{_HYBRID}: its attention layers are MLA whose heads' outputs are multiplied by a sigmoid "
                      "gate read from the residual (g_proj, one per head) before o_proj: the VO term would need it",
    "lfm3": f"{_HYBRID}: its attention heads' outputs are multiplied by a sigmoid gate read from the residual "
            "(g_proj, one per head) before o_proj, which the VO term and the head attacks do not model yet",
    **{t: f"{_HYBRID}: one attention block shared across layers with LoRA adapters, reading the hidden state "
          "concatenated with the embeddings; its attention output feeds its FFN directly (no residual between "
          "them) and the block's output goes through a per-layer linear into one Mamba layer's input only, never "
          "onto the residual stream: the VO and FFN terms have no write side (a QK term alone could be defined)"
       for t in ("zamba", "zamba2")},
    "qwen4_exp": _HYPER_CONNECTIONS,
    "qwen4_exp_text": _HYPER_CONNECTIONS,
    "gemma4": "multimodal wrapper of gemma4_text: per-layer input embeddings, key/value sharing between layers, "
              "per-layer head sizes",
    "gemma4_unified": "multimodal wrapper of gemma4_unified_text: per-layer input embeddings, key/value sharing "
                      "between layers, per-layer head sizes",
    "mllama": ("cross-attention layers (cross_attention_layers) between the self-attention layers, reading the "
               "vision encoder's output with their own QK norms and tanh gates on both writes: no QK or VO term "
               "over the probe rows alone"),
    "git": ("BERT's post-LN layers (as bert's row) whose causal self-attention also reads the image encoder's "
            "projected tokens; the row (names under git.encoder, head `output`) is not written yet"),
    "phi4_multimodal": ("phi3's layers (qkv_proj, gate_up_proj) in a causal LM without text_config whose embedding "
                        "holds the image and audio embedders (model.embed_tokens_extend) and their projections into "
                        "the residual stream: a residual rewrite must rewrite those projections too, which the "
                        "attacks do not model yet"),
    "minimax_m3_vl_text": ("its sparse layers (layer_types minimax_m3_sparse) carry a lightning indexer (q_proj, "
                           "k_proj with QK norms, reading the attention input) beside ordinary attention, where a "
                           "row lists indexer readers only for latent attention; the rest (1 + w norms, per-head QK "
                           "norms, partial RoPE, gpt_oss's clamped SwiGLU with gate and up not interleaved, sigmoid "
                           "router with a choice-only bias, shared and dense FFNs) has rows' pieces"),
    "ergo": ("learned per-dimension residual gates on both sublayers (post_attention_residual.scale w: the write "
             "times sigmoid(w), the skip path times sqrt(1 + sigmoid(w))·exp(-softplus(w)/2)), which every residual "
             "rewrite would have to carry; each routed expert's output goes through an RMSNorm with a gain of its "
             "own (expert_output_norm.scale [experts, hidden]) and the shared expert's through another before the "
             "weighted sum, so the FFN term needs a norm per expert, which the table cannot name yet, and the "
             "expert permutation must carry those rows; the router is stored [hidden, experts] (gate_kernel). The "
             "rest (fused wqkv, per-head QK norms, post-norms, relu² MLPs without a gate, NoPE full-attention layers "
             "with a scalar qk_scale) has rows' pieces (docs/INVARIANTS.md)"),
    "mimo_v2_flash": ("sliding-window layers have twice the full-attention layers' key/value heads (and sinks only "
                      "on those layers): needs per-layer head counts. Its value heads are narrower than its "
                      "query/key heads (v_head_dim 128, head_dim 192); the VO term, per head X·Wv_hᵀ·Wo_hᵀ·Xᵀ, holds "
                      "for any value head size once the layer sizes carry it"),
    **{t: _ENCODER for t in ("bert-generation", "big_bird", "camembert", "data2vec-text", "electra", "ernie",
                             "megatron-bert", "rembert", "roberta", "roberta-prelayernorm", "roc_bert", "roformer",
                             "xlm", "xlm-roberta", "xlm-roberta-xl", "xmod")},
    "xlnet": "permutation LM with two-stream relative attention",
    "reformer": "LSH attention with shared query/key projections and reversible residual streams",
    **{t: _GATED_ATTENTION for t in ("afmoe", "beam", "laguna")},
    "hrm_text": f"hierarchical recurrent blocks iterated over steps; {_GATED_ATTENTION}",
    "dory": f"learned query/key scales (sqk) and no norms; {_GATED_ATTENTION}",
    **{t: _SINUSOIDS for t in ("ctrl", "xglm")},
    "biogpt": "the token embedding is scaled by sqrt(hidden) before learned positions are added: an embedding "
              "scale the table cannot express yet",
    "bitnet": "RMSNorms inside attention (before o_proj) and inside the FFN (before down_proj): sub-norms on the "
              "VO and FFN paths the terms do not model",
    "diffllama": "differential attention (two softmax maps subtracted with learned lambdas): new QK algebra",
    "doge": "dynamic mask attention and learned residual gains",
    "gemma3n": "per-layer input embeddings, AltUp and LAuReL blocks (and a multimodal wrapper)",
    "gemma3n_text": "per-layer input embeddings, AltUp and LAuReL blocks",
    "gemma4_text": "per-layer input embeddings, key/value sharing between layers, per-layer head sizes",
    "gemma4_unified_text": "per-layer input embeddings, key/value sharing between layers, per-layer head sizes",
    "gemma4_assistant": "draft model reading the target model's hidden states (pre/post projections)",
    "gemma4_unified_assistant": "draft model reading the target model's hidden states (pre/post projections)",
    **{t: "short convolutions on keys/values and a learned relative position bias"
       for t in ("inkling_text", "inkling2_text", "inkling2_loop_text")},
    "blt": "byte latent transformer: local byte encoder/decoder with cross-attention around a global transformer",
    "moshi": "speech-text model whose projections are per-codebook multi-linear weights",
    "cohere_compass_text": "not examined: its default config does not build a model in transformers 5.24 or 5.25",
    "cpmant": "segment embeddings and bucketed relative position biases not mapped yet",
    "gpt_neox_japanese": "not mapped yet (attention output bias kept apart from the dense layer)",
    "modernbert-decoder": "not mapped yet (ModernBERT's decoder: alternating local/global attention, its own names)",
    "zaya": "compressed convolutional attention: new QK/VO algebra",
}


PINNED = Path(__file__).with_name("pinned_upstream.json")


def pinned() -> dict:
    """The pinned upstream snapshot: {"transformers": {"version", "causal_lm_types"}, "gguf": {"version",
    "architectures", "quantization_types"}}."""
    return json.loads(PINNED.read_text())


def causal_lm_types() -> list[str]:
    """The model types of the pinned transformers' causal-LM mapping, in its order."""
    return pinned()["transformers"]["causal_lm_types"]


def installed_snapshot() -> dict:
    """What PINNED would hold for the installed transformers and gguf (scripts/coverage.py --snapshot)."""
    import gguf
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return {"transformers": {"version": version("transformers"),
                             "causal_lm_types": list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)},
            "gguf": {"version": version("gguf"), "architectures": sorted(gguf.MODEL_ARCH_NAMES.values()),
                     "quantization_types": [q.name for q in gguf.GGMLQuantizationType]}}


def drift(installed: dict | None = None) -> dict:
    """What the installed releases (or `installed`, shaped as PINNED) change against the pinned ones.

    {"transformers": {"pinned", "installed", "unclassified": model types of the installed causal-LM
    mapping with no status here, "removed": pinned types the installed mapping lacks}, "gguf":
    {"pinned", "installed", "new_architectures", "new_quantization_types", "removed_architectures",
    "removed_quantization_types"}}. Nothing is installed or fetched."""
    installed = installed or installed_snapshot()
    pin = pinned()
    known = (set(supported_model_types()) | set(supported_wrappers()) | set(NOT_APPLICABLE) | set(NOT_YET))
    types, pinned_types = installed["transformers"]["causal_lm_types"], pin["transformers"]["causal_lm_types"]
    gguf_now, gguf_pin = installed["gguf"], pin["gguf"]
    return {
        "transformers": {"pinned": pin["transformers"]["version"], "installed": installed["transformers"]["version"],
                         "unclassified": [t for t in types if t not in known],
                         "removed": [t for t in pinned_types if t not in types]},
        "gguf": {"pinned": gguf_pin["version"], "installed": gguf_now["version"],
                 **{f"{change}_{what}": sorted(set(a) - set(b))
                    for what in ("architectures", "quantization_types")
                    for change, a, b in (("new", gguf_now[what], gguf_pin[what]),
                                         ("removed", gguf_pin[what], gguf_now[what]))}},
    }


def tiny_models_of(model_type: str) -> list[str]:
    """Names of the huref_lab.tiny_models entries whose config.json has `model_type`."""
    return [name for name, t in MODEL_TYPE.items() if t == model_type]


def refused_variants(model_type: str) -> list[str]:
    """The reasons of the config variants huref refuses for `model_type` (from its ArchSpec row)."""
    spec = next(s for s in ARCHITECTURES if model_type in s.model_types)
    return [value for v in spec.variants for key, value in v.changes if key == "unsupported"]


def supported_wrappers() -> dict[str, str]:
    """Multimodal model types huref reads as their language model (huref.config.TEXT_MODEL_TYPES) whose
    language model is supported: wrapper model_type -> text model_type."""
    supported = set(supported_model_types())
    return {wrapper: text for wrapper, text in TEXT_MODEL_TYPES.items() if text in supported}


def statuses() -> list[tuple[str, str, str]]:
    """(model_type, status, detail) for every causal-LM type and every supported one, sorted by type:
    status "supported" (detail: its tiny models and refused variants; for a multimodal wrapper, the
    language model it is read as), "not applicable" or "not yet" (detail: the reason), or "missing"
    when a type has none (tests/test_coverage.py refuses that)."""
    supported = set(supported_model_types())
    wrappers = supported_wrappers()
    rows = []
    for model_type in sorted(set(causal_lm_types()) | supported):
        if model_type in supported:
            detail = ", ".join(f"`{name}`" for name in tiny_models_of(model_type)) or "no tiny model"
            refused = refused_variants(model_type)
            rows.append((model_type, "supported", detail + "".join(f"; refuses {r}" for r in refused)))
        elif model_type in wrappers:
            rows.append((model_type, "supported", f"multimodal wrapper, read as its language model "
                                                  f"`{wrappers[model_type]}` (tests/test_multimodal.py)"))
        elif model_type in NOT_APPLICABLE:
            rows.append((model_type, "not applicable", NOT_APPLICABLE[model_type]))
        elif model_type in NOT_YET:
            rows.append((model_type, "not yet", NOT_YET[model_type]))
        else:
            rows.append((model_type, "missing", ""))
    return rows


def summary() -> str:
    """The README's count: "N of the M causal-LM model types of transformers V"."""
    supported = sum(1 for _, status, _ in statuses() if status == "supported")
    total = len(causal_lm_types())
    return f"{supported} of the {total} causal-LM model types of transformers {pinned()['transformers']['version']}"


def render() -> str:
    """docs/ARCHITECTURES.md: counts, then one table row per model type."""
    rows = statuses()
    count = {status: sum(1 for _, s, _ in rows if s == status) for status in ("supported", "not applicable", "not yet")}
    lines = [
        "# Architectures",
        "",
        "Generated by `python scripts/coverage.py` from transformers' causal-LM mapping "
        f"(transformers {pinned()['transformers']['version']}, the version `constraints.txt` pins and CI tests, "
        f"{len(causal_lm_types())} model types) and huref's architecture table; the reasons live in "
        "`huref_lab/coverage.py`. Do not edit by hand. `python scripts/coverage.py --latest` lists the model types "
        "newer releases add that this table does not classify yet.",
        "",
        f"**{count['supported']} supported**, {count['not applicable']} not applicable, {count['not yet']} not yet.",
        "",
        "A supported model type has a row in `huref/architectures.py` and a tiny model in "
        "`huref_lab/tiny_models.py` (named below), on which `tests/test_attacks.py` checks that every "
        "function-preserving rewrite valid for it leaves the logits and the invariant terms unchanged. "
        "Any other model type is refused with one line (`unsupported model_type ...`).",
        "",
        "| model_type | status | tiny model / reason |",
        "|---|---|---|",
    ]
    lines += [f"| `{t}` | {status} | {detail} |" for t, status, detail in rows]
    return "\n".join(lines) + "\n"

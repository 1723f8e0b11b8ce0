"""The engine's float32 terms match a float64 reference computed another way.

The reference takes its weights from the transformers module (not from huref's readers), unfuses
fused tensors itself, materializes Σ_h Wv_g(h)ᵀ·Wo_hᵀ as a full d×d matrix, loops over heads
explicitly and writes the norms out as formulas, all in float64. huref reads the checkpoint lazily
in row blocks, sums query heads per group and uses other association orders, in float32 at
default settings. Both follow the definitions in `huref.invariants`.
"""

import pytest
import torch
import transformers

from huref.invariants import TERM_NAMES, invariant_terms
from huref.sources import load_model

from huref_lab import tiny_models

F64 = torch.float64
TOLERANCE = 1e-4  # default settings (float32), relative to the largest entry of each term
TOLERANCE_F64 = 1e-6  # huref's float64 check mode, whose output is rounded to float32 (~6e-8)


def _w(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(F64)


def _norm(module, kind: str = "rms"):
    """(kind, scale, eps) of a norm module; the bias is left out, as the definitions say."""
    if module is None:
        return None
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps")
    scale = _w(module.weight)
    return ("rms", 1.0 + scale, eps) if kind == "rms_plus1" else (kind, scale, eps)


def apply(norm, rows: torch.Tensor) -> torch.Tensor:
    """Normalize each row (or head slice, when the scale is one head wide) with the norm's scale."""
    if norm is None:
        return rows
    kind, scale, eps = norm
    x = rows.reshape(rows.shape[0], -1, scale.numel())
    if kind == "layer":
        x = x - x.mean(-1, keepdim=True)
    x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * scale
    return x.reshape(rows.shape)


def _llama_like(layer, attn_norm="input_layernorm", ffn_norm="post_attention_layernorm", kind="rms"):
    attn, mlp = layer.self_attn, layer.mlp
    if hasattr(attn, "qkv_proj"):  # phi3: [q; k; v] stacked
        q_out = attn.o_proj.weight.shape[1]
        kv = (attn.qkv_proj.weight.shape[0] - q_out) // 2
        q, k, v = _w(attn.qkv_proj.weight).split([q_out, kv, kv])
    else:
        q, k, v = _w(attn.q_proj.weight), _w(attn.k_proj.weight), _w(attn.v_proj.weight)
    if hasattr(mlp, "experts"):  # fused 3-D experts: gate_up [E, 2f, d] (gate first), down [E, d, f]
        ffns = [(*_w(gu).chunk(2), _w(dn)) for gu, dn in zip(mlp.experts.gate_up_proj, mlp.experts.down_proj)]
        shared = getattr(mlp, "shared_expert", None)
        if shared is not None:
            ffns.append((_w(shared.gate_proj.weight), _w(shared.up_proj.weight), _w(shared.down_proj.weight)))
    elif hasattr(mlp, "gate_up_proj"):  # phi3: [gate; up]
        ffns = [(*_w(mlp.gate_up_proj.weight).chunk(2), _w(mlp.down_proj.weight))]
    else:
        ffns = [(_w(mlp.gate_proj.weight), _w(mlp.up_proj.weight), _w(mlp.down_proj.weight))]
    get = lambda name: getattr(layer, name, None) if name else None  # noqa: E731
    return dict(
        q=q, k=k, v=v, o=_w(attn.o_proj.weight), ffns=ffns,
        attn_norm=_norm(get(attn_norm), kind), ffn_norm=_norm(get(ffn_norm), kind),
        q_norm=_norm(getattr(attn, "q_norm", None), kind), k_norm=_norm(getattr(attn, "k_norm", None), kind),
    )


def _gemma2(layer):
    weights = _llama_like(layer, ffn_norm="pre_feedforward_layernorm", kind="rms_plus1")
    weights["attn_post"] = _norm(layer.post_attention_layernorm, "rms_plus1")
    weights["ffn_post"] = _norm(layer.post_feedforward_layernorm, "rms_plus1")
    return weights


def _olmo2(layer):
    weights = _llama_like(layer, attn_norm=None, ffn_norm=None)
    weights["attn_post"] = _norm(layer.post_attention_layernorm)
    weights["ffn_post"] = _norm(layer.post_feedforward_layernorm)
    return weights


def _gpt_neox(layer):
    heads, d = layer.attention.config.num_attention_heads, layer.attention.dense.weight.shape[0]
    qkv = _w(layer.attention.query_key_value.weight).reshape(heads, 3, d // heads, d)  # per head [q, k, v]
    q, k, v = (qkv[:, j].reshape(d, d) for j in range(3))
    return dict(q=q, k=k, v=v, o=_w(layer.attention.dense.weight),
                ffns=[(None, _w(layer.mlp.dense_h_to_4h.weight), _w(layer.mlp.dense_4h_to_h.weight))],
                attn_norm=_norm(layer.input_layernorm, "layer"), ffn_norm=_norm(layer.post_attention_layernorm, "layer"))


def _falcon_gqa(layer):
    attn = layer.self_attention
    d, heads, kv_heads = attn.dense.weight.shape[0], attn.num_heads, attn.num_kv_heads
    hd, group = d // heads, heads // kv_heads
    qkv = _w(attn.query_key_value.weight).reshape(kv_heads, group + 2, hd, d)  # per kv head [q_1..q_g, k, v]
    return dict(q=qkv[:, :group].reshape(-1, d), k=qkv[:, group].reshape(-1, d), v=qkv[:, group + 1].reshape(-1, d),
                o=_w(attn.dense.weight),
                ffns=[(None, _w(layer.mlp.dense_h_to_4h.weight), _w(layer.mlp.dense_4h_to_h.weight))],
                attn_norm=_norm(layer.ln_attn, "layer"), ffn_norm=_norm(layer.ln_mlp, "layer"))


def _gpt2(layer):
    d = layer.attn.c_proj.weight.shape[0]
    q, k, v = _w(layer.attn.c_attn.weight).T.split(d)  # Conv1D stores [in, out]
    return dict(q=q, k=k, v=v, o=_w(layer.attn.c_proj.weight).T,
                ffns=[(None, _w(layer.mlp.c_fc.weight).T, _w(layer.mlp.c_proj.weight).T)],
                attn_norm=_norm(layer.ln_1, "layer"), ffn_norm=_norm(layer.ln_2, "layer"))


# tiny model -> (how to list its layers, how to read one layer's weights, LayerNorm model)
ARCHITECTURES = {
    "llama": (lambda m: m.model.layers, _llama_like, False),  # grouped-query attention
    "mixtral": (lambda m: m.model.layers, _llama_like, False),  # mixture of experts
    "qwen2_moe": (lambda m: m.model.layers, _llama_like, False),  # experts + a shared expert
    "phi3": (lambda m: m.model.layers, _llama_like, False),  # fused qkv, fused gate/up
    "qwen3": (lambda m: m.model.layers, _llama_like, False),  # per-head QK norm
    "gemma2": (lambda m: m.model.layers, _gemma2, False),  # post-norms, 1 + w scales
    "olmo2": (lambda m: m.model.layers, _olmo2, False),  # post-norms only, full-width QK norm
    "gpt_neox": (lambda m: m.gpt_neox.layers, _gpt_neox, True),  # per-head fused qkv, LayerNorm
    "falcon_gqa": (lambda m: m.transformer.h, _falcon_gqa, True),  # grouped fused qkv
    "gpt2": (lambda m: m.transformer.h, _gpt2, True),  # transposed (Conv1D) weights
}


def reference_layer(w: dict, x: torch.Tensor, layer_norm: bool, n_heads: int) -> torch.Tensor:
    """The three terms of one layer [3, n, n] in float64, straight from the definitions."""
    x_out = x - x.mean(1, keepdim=True) if layer_norm else x
    x_attn, x_ffn = apply(w["attn_norm"], x), apply(w["ffn_norm"], x)
    d, hd = x.shape[1], w["q"].shape[0] // n_heads
    group = n_heads // (w["k"].shape[0] // hd)
    queries = apply(w.get("q_norm"), x_attn @ w["q"].T).reshape(-1, n_heads, hd)
    keys = apply(w.get("k_norm"), x_attn @ w["k"].T).reshape(-1, n_heads // group, hd)
    qk = sum(queries[:, h] @ keys[:, h // group].T for h in range(n_heads))
    wv = w["v"].reshape(-1, hd, d)
    wo = w["o"].reshape(d, n_heads, hd)
    value_output = sum(wv[h // group].T @ wo[:, h].T for h in range(n_heads))  # [d, d]
    vo = apply(w.get("attn_post"), x_attn @ value_output) @ x_out.T
    written = 0
    for gate, up, down in w["ffns"]:
        hidden = x_ffn @ up.T
        if gate is not None:
            hidden = hidden * (x_ffn @ gate.T)
        written = written + hidden @ down.T
    ffn = apply(w.get("ffn_post"), written) @ x_out.T
    return torch.stack([qk, vo, ffn])


def reference_terms(directory, name: str, layers: list[int], token_keys: list[str]) -> torch.Tensor:
    """Reference terms [L, 3, n, n] of the tiny checkpoint in `directory`, loaded with transformers."""
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    vocab = {s: i for i, s in enumerate(tiny_models.token_strings())}
    ids = [vocab[key[len("s:"):]] for key in token_keys]
    x = _w(model.get_input_embeddings().weight)[ids]
    layer_list, read, layer_norm = ARCHITECTURES[name]
    if name == "gpt2":  # every input adds a learned position: probe rows carry their mean
        x = x + _w(model.transformer.wpe.weight).mean(0)
    n_heads = model.config.num_attention_heads
    with torch.no_grad():
        return torch.stack([reference_layer(read(layer_list(model)[i]), x, layer_norm, n_heads) for i in layers])


def relative_errors(values: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Per term: max |value - reference| over all layers and entries, divided by max |reference|."""
    values = values.to(F64)
    return {term: float((values[:, j] - reference[:, j]).abs().max() / reference[:, j].abs().max())
            for j, term in enumerate(TERM_NAMES)}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_default_terms_match_a_float64_reference(tiny_zoo, name):
    directory = tiny_zoo(name)
    terms = invariant_terms(load_model(str(directory)))
    assert terms.values.dtype == torch.float32 and len(terms.layers) == 2 and len(terms.tokens) > 300
    reference = reference_terms(directory, name, terms.layers, terms.tokens)
    errors = relative_errors(terms.values, reference)
    assert max(errors.values()) < TOLERANCE, errors
    # huref's float64 check mode agrees to the rounding of its float32 output: the algebra is exact
    check = invariant_terms(load_model(str(directory)), dtype=F64)
    errors64 = relative_errors(check.values.to(F64), reference)
    assert max(errors64.values()) < TOLERANCE_F64, errors64

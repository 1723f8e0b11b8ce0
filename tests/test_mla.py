"""Attention with its own algebra, the QK and VO terms against transformers' own attention module, run at
position 0 with an attention function that hands back its queries, keys and values: multi-head latent
attention (DeepSeek-V2/V3 and descendants), llama4's QK L2 norm (and its NoPE layer), jetmoe's attention
experts."""

import pytest
import torch
import transformers

from huref.invariants import invariant_terms
from huref.layers import embedding_rows, layer_weights
from huref.sources import load_model
from huref.tokens import select_tokens
from huref_lab import tiny_models

CAPTURED = {}


def capture(module, query, key, value, attention_mask, **kwargs):
    """An attention function that records q, k [1, heads, n, dim] (key/value heads repeated for each query
    head) and returns the values unmixed, so that o_proj sees head h's value rows: output = Σ_h V_h·Wo_hᵀ."""
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
    CAPTURED.update(q=query, k=key, v=value)
    return value.transpose(1, 2).contiguous(), None


transformers.AttentionInterface.register("huref_capture", capture)


def attention_at_zero(torch_model, i, x):
    """Layer i's attention of transformers' model on rows x [n, d] (float64), all at position 0: its write [n, d]."""
    block = torch_model.model.layers[i]
    with torch.no_grad():
        x_attn = block.input_layernorm(x)[None]                                # [1, n, d]
        at_zero = torch_model.model.rotary_emb(x_attn, torch.zeros(1, x.shape[0], dtype=torch.long))
        attention = getattr(block, "self_attn", None) or block.self_attention
        no_mask = torch.zeros(1, 1, x.shape[0], x.shape[0], dtype=x.dtype)   # (the sparse-attention indexer reads one)
        written = attention(x_attn, position_embeddings=at_zero, attention_mask=no_mask)[0]
    return written[0]


def check_terms(model, torch_model, layers, write_scale=1.0, write_bias=None):
    """The QK and VO terms of `layers` equal Σ_h q_h·k_hᵀ and (write_scale · (write - write_bias))·Xᵀ."""
    terms = invariant_terms(model, layers=layers, n_tokens=64, dtype=torch.float64)
    ids, _ = select_tokens(model.vocab, model.embedding_shape()[0], 64)
    x = embedding_rows(model, ids).double()
    for k, i in enumerate(terms.layers):
        written = attention_at_zero(torch_model, i, x)
        if write_bias is not None:
            written = written - write_bias(i).detach().double()
        qk = torch.einsum("hnd,hmd->nm", CAPTURED["q"][0], CAPTURED["k"][0])
        vo = write_scale * written @ x.T
        assert torch.allclose(terms.values[k, 0].double(), qk, rtol=1e-5, atol=1e-5 * float(qk.abs().max()))
        assert torch.allclose(terms.values[k, 1].double(), vo, rtol=1e-5, atol=1e-5 * float(vo.abs().max()))


def capturing(path):
    """transformers' model of the checkpoint in `path`, float64, with the capturing attention function."""
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64,
                                                             attn_implementation="huref_capture").eval()


@pytest.mark.parametrize("arch", ["deepseek_v3", "deepseek_v2", "glm4_moe_lite", "minicpm3", "youtu", "sarvam_mla",
                                  "deepseek_v32", "glm_moe_dsa"])
def test_latent_terms_match_the_attention_module(arch, tiny_zoo):
    layers = [0, 1] if arch == "glm_moe_dsa" else [0, 2]   # glm_moe_dsa's layer 2 reuses layer 1's choice of keys
    model = load_model(str(tiny_zoo(arch)))
    check_terms(model, capturing(tiny_zoo(arch)), layers)
    assert all(layer_weights(model, i).mla is not None for i in layers)


def test_llama4_terms_match_the_attention_module(tiny_zoo):
    """RoPE layers 0 and 2 normalize each head's query and key after RoPE (parameter-free RMS); NoPE layer 1
    does not, and its temperature is 1 at the positions the terms stand for (floor_scale raised here, as it
    is 8192 in the released models)."""
    path = tiny_zoo("llama4_text")
    torch_model = capturing(path)
    for block in torch_model.model.layers:
        block.self_attn.floor_scale = 8192
    check_terms(load_model(str(path)), torch_model, [0, 1, 2])


def test_jetmoe_terms_sum_over_every_attention_expert(tmp_path):
    """With every attention expert chosen for every token and a zero router (gates 1/E), the attention
    writes (1/E)·Σ_e Σ_j Wo_e,j·v_j plus its bias, and the captured queries are every expert's."""
    config = tiny_models.make_config("jetmoe", num_experts_per_tok=4)
    torch.manual_seed(0)
    torch_model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for layer in torch_model.model.layers:
            layer.self_attention.experts.router.layer.weight.zero_()
            layer.self_attention.experts.bias.normal_()
            layer.input_layernorm.weight.add_(0.3 * torch.randn(config.hidden_size))
    path = tiny_models.save_checkpoint(torch_model, tmp_path / "jetmoe", tiny_models.token_strings())
    model = load_model(str(path))
    assert len(layer_weights(model, 0).q_experts) == 4
    torch_model = capturing(path)
    check_terms(model, torch_model, [0, 1, 2], write_scale=4.0,
                write_bias=lambda i: torch_model.model.layers[i].self_attention.experts.bias)

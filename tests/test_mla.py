"""Attention with its own algebra, the QK and VO terms against transformers' own attention module, run at
position 0 with an attention function that hands back its queries, keys and values: multi-head latent
attention (DeepSeek-V2/V3 and descendants), llama4's QK L2 norm (and its NoPE layer), jetmoe's attention
experts, minicpm5_moe's output gate, param2moe's fused query_key_value, kolibri1_1's keys and values read
across layers."""

import pytest
import torch
import transformers
from transformers.cache_utils import KVSharingDict

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


def attention_at_zero(torch_model, i, x, **kwargs):
    """Layer i's attention of transformers' model on rows x [n, d] (float64), all at position 0: its write [n, d]
    (`kwargs`: more arguments of the attention module)."""
    block = torch_model.model.layers[i]
    with torch.no_grad():
        x_attn = block.input_layernorm(x)[None]                                # [1, n, d]
        at_zero = torch_model.model.rotary_emb(x_attn, torch.zeros(1, x.shape[0], dtype=torch.long))
        attention = getattr(block, "self_attn", None) or block.self_attention
        no_mask = torch.zeros(1, 1, x.shape[0], x.shape[0], dtype=x.dtype)   # (the sparse-attention indexer reads one)
        written = attention(x_attn, position_embeddings=at_zero, attention_mask=no_mask, **kwargs)[0]
    return written[0]


def check_terms(model, torch_model, layers, write_scale=1.0, write_bias=None, post_norm=None, **kwargs):
    """The QK and VO terms of `layers` equal Σ_h q_h·k_hᵀ and (write_scale · P(write - write_bias))·Xᵀ
    (P: `post_norm(i)`, the norm on layer i's write, if any; `kwargs` go to every attention module)."""
    terms = invariant_terms(model, layers=layers, n_tokens=64, dtype=torch.float64)
    ids, _ = select_tokens(model.vocab, model.embedding_shape()[0], 64)
    x = embedding_rows(model, ids).double()
    for k, i in enumerate(terms.layers):
        written = attention_at_zero(torch_model, i, x, **kwargs)
        if post_norm is not None:
            with torch.no_grad():
                written = post_norm(i)(written)
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


def test_minicpm5_moe_query_rows_are_the_first_half_of_each_heads_rows(tiny_zoo):
    """q_proj holds per head its query rows, then its output-gate rows. With the gate rows zeroed in transformers'
    model every gate is sigmoid(0) = 1/2, so the write is half the ungated Σ_h V_h·Wo_hᵀ the VO term reads; the
    captured queries are the query halves."""
    path = tiny_zoo("minicpm5_moe")
    torch_model = capturing(path)
    with torch.no_grad():
        for block in torch_model.model.layers:
            attention = block.self_attn
            rows = attention.q_gate_proj.weight.view(attention.config.num_attention_heads, 2, attention.head_dim, -1)
            rows[:, 1] = 0   # [heads, (query, gate), head_dim, hidden]: every gate row
    check_terms(load_model(str(path)), torch_model, [0, 1, 2], write_scale=2.0)


def test_param2moe_fused_query_key_value_splits_as_the_attention_module(tiny_zoo):
    """param2moe's checkpoint keeps sarvam_moe's fused query_key_value (q, k, v rows in turn) and query/key
    layernorms, which transformers splits into glm4_moe's q_proj, k_proj, v_proj, q_norm, k_norm."""
    path = tiny_zoo("param2moe")
    check_terms(load_model(str(path)), capturing(path), [0, 1, 2])


def test_kolibri1_1_terms_read_the_keys_and_values_of_their_source_layer(tiny_zoo):
    """Layer 2 of the tiny kolibri1_1 attends to the keys and values layer 1 computes from its own input norm
    (kv_source_layers [0, 1, 1]); each layer's write goes through its post-norm. The indexers are removed from
    transformers' model: their choice of keys is a mask, which the capturing attention ignores anyway, and the
    NVFP4 rounding of keys and values they come with is outside the terms' bilinear forms."""
    path = tiny_zoo("kolibri1_1")
    model = load_model(str(path))
    torch_model = capturing(path)
    for block in torch_model.model.layers:
        block.self_attn.indexer = None
    assert [layer_weights(model, i).kv_source for i in range(3)] == [None, None, 1]
    shared = KVSharingDict()   # layer 1 stores its keys and values here, layer 2 reads them (layers run in order)
    check_terms(model, torch_model, [0, 1, 2], shared_kv_states=shared,
                post_norm=lambda i: torch_model.model.layers[i].post_self_attn_layernorm)
    assert set(shared) == {"1"}

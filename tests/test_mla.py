"""Multi-head latent attention (DeepSeek-V2/V3): the QK and VO terms against transformers' own attention
module, run at position 0 with an attention function that hands back its queries, keys and values."""

import pytest
import torch
import transformers

from huref.invariants import invariant_terms
from huref.layers import apply_norm, embedding_rows, layer_weights
from huref.sources import load_model
from huref.tokens import select_tokens
from huref_lab import tiny_models

CAPTURED = {}


def capture(module, query, key, value, attention_mask, **kwargs):
    """An attention function that records q, k, v [1, heads, n, dim] and returns the values unmixed,
    so that o_proj sees head h's value rows: output = Σ_h V_h·Wo_hᵀ."""
    CAPTURED.update(q=query, k=key, v=value)
    return value.transpose(1, 2).contiguous(), None


transformers.AttentionInterface.register("huref_capture", capture)


@pytest.mark.parametrize("arch", ["deepseek_v3", "deepseek_v2", "glm4_moe_lite"])
def test_latent_terms_match_the_attention_module(arch, tiny_zoo):
    path = tiny_zoo(arch)
    model = load_model(str(path))
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64,
                                                                    attn_implementation="huref_capture").eval()
    terms = invariant_terms(model, layers=[0, 2], n_tokens=64, dtype=torch.float64)
    ids, _ = select_tokens(model.vocab, model.embedding_shape()[0], 64)
    x = embedding_rows(model, ids).double()
    for k, i in enumerate(terms.layers):
        block = torch_model.model.layers[i]
        with torch.no_grad():
            x_attn = block.input_layernorm(x)[None]                            # [1, n, d]
            at_zero = torch_model.model.rotary_emb(x_attn, torch.zeros(1, len(ids), dtype=torch.long))
            written, _ = block.self_attn(x_attn, position_embeddings=at_zero, attention_mask=None)  # position 0
        qk = torch.einsum("hnd,hmd->nm", CAPTURED["q"][0], CAPTURED["k"][0])
        vo = written[0] @ x.T
        assert torch.allclose(terms.values[k, 0].double(), qk, rtol=1e-5, atol=1e-5 * float(qk.abs().max()))
        assert torch.allclose(terms.values[k, 1].double(), vo, rtol=1e-5, atol=1e-5 * float(vo.abs().max()))
        assert layer_weights(model, i).mla is not None

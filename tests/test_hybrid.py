"""gpt-oss's fused experts and sinks, and hybrid models (qwen3_next, qwen3_5, granitemoehybrid, bamba,
lfm2, jamba, nemotron_h, kimi_linear, minimax) whose layers are not all attention.

The expert handles must read gpt-oss's [expert, in, out] tensors with gate and up interleaved as the
model's own module splits them; the default layers of a hybrid must be its middle attention layers; a
layer of another kind asked for is refused; head permutations must carry the attention sinks.
"""

import pytest
import torch
import transformers

from huref.architectures import arch_for_config
from huref.errors import HurefError
from huref.invariants import invariant_terms
from huref.config import attention_layers, layer_plan, model_dims
from huref.layers import layer_weights
from huref.sources import load_model
from huref.tokens import select_tokens
from huref_lab import attacks

from test_attacks import ATTACK_SEED, Reference, logit_difference


def test_gpt_oss_expert_handles_read_the_modules_gate_up_and_down(tiny_zoo):
    path = tiny_zoo("gpt_oss")
    module = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).model.layers[1].mlp.experts
    layer = layer_weights(load_model(str(path)), 1)
    inner = module.intermediate_size
    assert len(layer.ffns) == module.num_experts
    for e, ffn in enumerate(layer.ffns):
        gate_up = module.gate_up_proj[e].detach()              # [hidden, 2 * inner], gate on even columns
        assert torch.equal(ffn.gate.rows(0, inner), gate_up[:, ::2].T)
        assert torch.equal(ffn.up.rows(0, inner), gate_up[:, 1::2].T)
        assert torch.equal(ffn.up.rows(3, 11), gate_up[:, 1::2].T[3:11])
        assert torch.equal(ffn.down.rows(0, ffn.down.out_dim), module.down_proj[e].detach().T)


@pytest.mark.parametrize("arch", ["qwen3_next", "qwen3_5_text"])
def test_query_rows_exclude_the_output_gate_rows(arch, tiny_zoo):
    """The gated attention's q_proj holds per head its query rows, then its gate rows (the module chunks
    each head's 2 * head_dim outputs in two): the terms' query matrix is the first half of every head."""
    path = tiny_zoo(arch)
    attn = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).model.layers[0].self_attn
    layer = layer_weights(load_model(str(path)), 0)
    n, d = layer.n_heads, layer.head_dim
    per_head = attn.q_proj.weight.detach().reshape(n, 2, d, -1)       # [heads, (query, gate), head_dim, hidden]
    assert torch.equal(layer.q.rows(0, n * d), per_head[:, 0].reshape(n * d, -1))


@pytest.mark.parametrize("arch", ["qwen3_next", "qwen3_5_text", "granitemoehybrid", "bamba", "lfm2", "jamba"])
def test_default_layers_of_a_hybrid_are_its_middle_attention_layers(arch, tiny_zoo):
    model = load_model(str(tiny_zoo(arch)))
    assert attention_layers(model.config, model.arch, model.dims.n_layers) == (0, 2)
    assert invariant_terms(model, n_tokens=32).layers == [0, 2]   # layers 1 and 3 are not attention


@pytest.mark.parametrize("arch", ["qwen3_next", "jamba"])
def test_a_layer_that_is_not_attention_is_refused(arch, tiny_zoo):
    model = load_model(str(tiny_zoo(arch)))
    for asked in ([3], [0, 1], [-1]):
        with pytest.raises(HurefError, match="is not an attention layer") as error:
            invariant_terms(model, layers=asked, n_tokens=32)
        assert "\n" not in str(error.value) and "attention layers: 0, 2" in str(error.value)
    assert invariant_terms(model, layers=[2], n_tokens=32).layers == [2]


def test_layer_kinds_are_read_from_the_config():
    jamba = arch_for_config({"model_type": "jamba"})
    assert attention_layers({"num_hidden_layers": 16}, jamba, 16) == (4, 12)   # transformers' defaults 8, 4
    assert attention_layers({"attn_layer_period": 3, "attn_layer_offset": 1}, jamba, 7) == (1, 4)
    with pytest.raises(HurefError, match="attn_layer_period"):
        attention_layers({"attn_layer_period": 2, "attn_layer_offset": 2}, jamba, 4)
    qwen3_next = arch_for_config({"model_type": "qwen3_next"})
    kinds = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]
    assert attention_layers({"layer_types": kinds}, qwen3_next, 4) == (3,)
    with pytest.raises(HurefError, match="layer_types"):
        attention_layers({"layer_types": kinds[:3]}, qwen3_next, 4)
    granite = arch_for_config({"model_type": "granitemoehybrid"})   # granite-4.0's spelling, and transformers 5's
    assert attention_layers({"layer_types": ["mamba", "attention", "mamba"]}, granite, 3) == (1,)
    assert attention_layers({"layer_types": ["linear_attention", "full_attention"]}, granite, 2) == (1,)
    bamba = arch_for_config({"model_type": "bamba"})
    assert attention_layers({"attn_layer_indices": [5, 1]}, bamba, 8) == (1, 5)
    with pytest.raises(HurefError, match="attn_layer_indices"):
        attention_layers({"attn_layer_indices": [8]}, bamba, 8)
    assert attention_layers({}, arch_for_config({"model_type": "llama"}), 3) == (0, 1, 2)
    recurrent_gemma = arch_for_config({"model_type": "recurrent_gemma"})   # block_types cycles over the layers
    assert attention_layers({"block_types": ["recurrent", "recurrent", "attention"]}, recurrent_gemma, 7) == (2, 5)


def test_head_permutation_must_carry_the_attention_sinks(tiny_zoo, tmp_path):
    """Permuted heads with the sinks put back in their old order change the logits: the sinks matter and
    the attack (whose logits are unchanged in test_attacks) moves them with their heads."""
    ref = Reference(tiny_zoo("gpt_oss"), "gpt_oss")
    original = attacks.read_checkpoint(ref.path)
    permuted = attacks.head_permutation(original, torch.Generator().manual_seed(ATTACK_SEED))
    sinks = [name for name in original.tensors if name.endswith("self_attn.sinks")]
    assert sinks and any(not torch.equal(permuted.tensors[n], original.tensors[n]) for n in sinks)
    for name in sinks:
        permuted.tensors[name] = original.tensors[name]
    assert logit_difference(ref, attacks.write_checkpoint(permuted, tmp_path / "stale_sinks"), "gpt_oss") > 1e-2


def test_gpt_oss_with_mxfp4_experts(tiny_zoo, tmp_path):
    """gpt-oss as published: expert tensors in MXFP4 (quantization_config.quant_method "mxfp4"). Its terms
    equal those of the same checkpoint with transformers' dequantization of the experts saved unquantized,
    and stay close to the unquantized original's."""
    import json
    import shutil

    from safetensors.torch import save_file
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    from huref.similarity import compare_terms
    from huref_lab.quant_packing import pack_mxfp4

    original = tiny_zoo("gpt_oss")
    checkpoint = attacks.read_checkpoint(original)
    packed, dequantized = {}, dict(checkpoint.tensors)
    for name, value in checkpoint.tensors.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):   # [experts, in, out]
            blocks, scales = pack_mxfp4(value)
            packed[name + "_blocks"], packed[name + "_scales"] = blocks, scales
            dequantized[name] = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
        else:
            packed[name] = value
    quantized = tmp_path / "mxfp4"
    shutil.copytree(original, quantized)
    save_file(packed, str(quantized / "model.safetensors"), metadata={"format": "pt"})
    config = dict(checkpoint.config, quantization_config={"quant_method": "mxfp4"})
    (quantized / "config.json").write_text(json.dumps(config))
    reference = attacks.write_checkpoint(attacks.Checkpoint(dequantized, checkpoint.config, checkpoint.tokenizer,
                                                            checkpoint.extras), tmp_path / "dequantized")
    terms = invariant_terms(load_model(str(quantized)))
    assert torch.allclose(terms.values, invariant_terms(load_model(str(reference))).values, rtol=1e-5, atol=1e-6)
    assert compare_terms(invariant_terms(load_model(str(original))), terms)["ics"] >= 0.98   # measured 0.9933


def test_nemotron_h_pairs_each_attention_block_with_the_next_ffn_block(tiny_zoo):
    """Blocks: Mamba, attention, MoE, attention, Mamba, MLP, attention. Attention blocks 1 and 3 take the FFN
    of blocks 2 and 5 (a Mamba block in between); block 6 has no FFN after it, so it carries no term."""
    model = load_model(str(tiny_zoo("nemotron_h")))
    assert attention_layers(model.config, model.arch, 7) == (1, 3, 6)
    assert model.plan.term_layers == layer_plan(model.config, model.arch, 7).term_layers == (1, 3)
    for attention, ffn in ((1, 2), (3, 5)):
        layer = layer_weights(model, attention)
        assert f"layers.{attention}.mixer.q_proj" in layer.q.name
        assert all(f"layers.{ffn}.mixer." in f.up.name for f in layer.ffns)
        assert torch.equal(layer.ffn_norm.weight, model.reader.read(f"backbone.layers.{ffn}.norm.weight"))
    assert len(layer_weights(model, 1).ffns) == 5   # 4 routed experts and the shared one
    assert invariant_terms(model, n_tokens=32).layers == [1, 3]
    with pytest.raises(HurefError, match="is not an attention layer"):
        invariant_terms(model, layers=[6], n_tokens=32)


def test_nemotron_h_layer_kinds_from_the_older_pattern_string():
    arch = arch_for_config({"model_type": "nemotron_h"})
    config = {"hybrid_override_pattern": "M*E*M-*", "hidden_size": 64, "num_attention_heads": 4}
    assert model_dims(config, arch).n_layers == 7
    assert attention_layers(config, arch, 7) == (1, 3, 6) and layer_plan(config, arch, 7).term_layers == (1, 3)
    with pytest.raises(HurefError, match="hybrid_override_pattern"):
        attention_layers({"hybrid_override_pattern": "M*X"}, arch, 3)


def test_kimi_linear_reads_its_1_based_attention_layers():
    arch = arch_for_config({"model_type": "kimi_linear"})
    assert attention_layers({"linear_attn_config": {"full_attn_layers": [4, 8]}}, arch, 8) == (3, 7)
    kinds = ["linear_attention", "full_attention", "linear_attention", "linear_attention"]
    assert attention_layers({"layer_types": kinds, "linear_attn_config": {"full_attn_layers": [4]}}, arch, 4) == (1,)
    with pytest.raises(HurefError, match="full_attn_layers"):
        attention_layers({"linear_attn_config": {"full_attn_layers": [0, 4]}}, arch, 4)


def test_minimax_terms_read_the_norm_outputs_on_both_sides(tiny_zoo):
    """MiniMax carries each input norm's output on the residual path: vo = Σ_h X_a·Wv_hᵀ·Wo_hᵀ·X_aᵀ and
    ffn = Σ_e (X_f·Wg_eᵀ ⊙ X_f·Wu_eᵀ)·Wd_eᵀ·X_fᵀ, with X_a, X_f from transformers' own norm modules."""
    path = tiny_zoo("minimax")
    model = load_model(str(path))
    terms = invariant_terms(model, layers=[2], n_tokens=32)
    module = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).model
    ids, keys = select_tokens(model.vocab, model.embedding_shape()[0], 32)
    assert keys == terms.tokens
    layer = module.layers[2]
    with torch.no_grad():
        x = module.embed_tokens.weight[ids]
        x_a, x_f = layer.input_layernorm(x), layer.post_attention_layernorm(x)
        attn = layer.self_attn
        group = attn.config.num_attention_heads // attn.config.num_key_value_heads
        v = (x_a @ attn.v_proj.weight.T).reshape(len(ids), -1, attn.head_dim)
        written = v.repeat_interleave(group, 1).reshape(len(ids), -1) @ attn.o_proj.weight.T
        experts = layer.mlp.experts
        gate, up = experts.gate_up_proj.chunk(2, dim=1)     # [experts, inner, hidden] each
        hidden = torch.einsum("nh,eih->eni", x_f, gate) * torch.einsum("nh,eih->eni", x_f, up)
        ffn = torch.einsum("eni,ehi->nh", hidden, experts.down_proj)
    for got, want in ((terms.values[0, 1], written @ x_a.T), (terms.values[0, 2], ffn @ x_f.T)):
        assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))

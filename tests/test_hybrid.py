"""gpt-oss's fused experts and sinks, and hybrid models (qwen3_next, qwen3_5, granitemoehybrid, bamba,
lfm2, jamba) whose layers are not all attention.

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
from huref.layers import attention_layers, layer_weights
from huref.sources import load_model
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

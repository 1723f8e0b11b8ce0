"""The architecture table: one vocabulary for layouts and norm kinds, and config variants read as
transformers reads the config (a missing key means transformers' default)."""

import pytest
import transformers

from huref.architectures import ARCHITECTURES, arch_for_config
from huref.errors import HurefError
from huref.config import kv_sources, model_dims, qk_norm_layers
from huref.layers import LAYOUTS, layer_weights
from huref.sources import load_model

NORM_KINDS = {"rms", "rms_plus1", "layer", "layer_plus1"}
ROUTER_SCORINGS = {"softmax", "sigmoid", "sparsemixer"}


def every_variant(spec):
    """The row itself and the row under each of its variants."""
    return [spec] + [spec.for_config({v.key: v.value}) for v in spec.variants]


def projections(spec):
    ffns = list(spec.ffn) + [f.shared for f in spec.ffn if f.shared]
    attention = [spec.q, spec.k, spec.v, spec.o]
    if spec.mla:
        attention += [spec.mla.q, spec.mla.q_a, spec.mla.q_b, spec.mla.kv_a, spec.mla.kv_b]
    if spec.attn_experts:
        attention += [spec.attn_experts.q, spec.attn_experts.o]
    return [p for p in attention if p] + [p for f in ffns for p in (f.gate, f.up, f.down) if p]


def norms(spec):
    latent = [spec.mla.q_a_norm, spec.mla.kv_a_norm] if spec.mla else []
    return latent + [n for field in ("attn_norm", "ffn_norm", "attn_post_norm", "ffn_post_norm", "residual_norm",
                                     "q_norm", "k_norm", "embed_norm", "final_norm") for n in getattr(spec, field)]


@pytest.mark.parametrize("spec", ARCHITECTURES, ids=[s.model_types[0] for s in ARCHITECTURES])
def test_every_row_speaks_the_one_vocabulary(spec):
    for variant in every_variant(spec):
        assert {p.layout for p in projections(variant)} <= set(LAYOUTS)
        assert {n.kind for n in norms(variant)} <= NORM_KINDS
        assert {n.scope for n in norms(variant)} <= {"row", "head"}
        assert variant.rope in ("half", "pairs", None)
        assert variant.router_scores in ROUTER_SCORINGS


FALCON = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


FALCON_VARIANTS = [{}, {"multi_query": False}, {"new_decoder_architecture": True, "num_kv_heads": 2},
                   {"alibi": True, "multi_query": False}]


@pytest.mark.parametrize("variant", FALCON_VARIANTS)
def test_falcon_config_without_defaults_reads_as_transformers_fills_them(variant):
    """A config.json that leaves out falcon's structural keys is read like the full config transformers writes."""
    written = transformers.FalconConfig(**FALCON, **variant).to_dict()
    sparse = {"model_type": "falcon", **FALCON, **variant}
    assert arch_for_config(sparse) == arch_for_config(written)
    assert model_dims(sparse) == model_dims(written)
    expected_kv = 1 if not variant else variant.get("num_kv_heads", 4)
    assert model_dims(sparse).n_kv_heads == expected_kv


def test_an_unsupported_variant_is_one_clear_line():
    with pytest.raises(HurefError, match=r"^unsupported variant of opt: .*do_layer_norm_before=false\)$"):
        arch_for_config({"model_type": "opt", "do_layer_norm_before": False})


def test_dbrx_sizes_are_read_from_its_nested_sections():
    """DBRX's published config.json keeps the key/value heads and experts in attn_config / ffn_config only."""
    written = transformers.DbrxConfig(d_model=32, n_heads=4, n_layers=2, attn_config={"kv_n_heads": 2, "clip_qkv": 8},
                                      ffn_config={"ffn_hidden_size": 16, "moe_num_experts": 4}).to_dict()
    published = {"model_type": "dbrx", "d_model": 32, "n_heads": 4, "n_layers": 2,
                 "attn_config": {"kv_n_heads": 2, "clip_qkv": 8}, "ffn_config": {"ffn_hidden_size": 16, "moe_num_experts": 4}}
    assert model_dims(published) == model_dims(written)
    assert (model_dims(published).n_kv_heads, model_dims(published).n_experts) == (2, 4)
    with pytest.raises(HurefError, match="^config.json: attn_config is .*, not an object$"):
        model_dims({**published, "attn_config": [2]})


@pytest.mark.parametrize("given", [{}, {"no_rope_layers": []}, {"no_rope_layer_interval": 3}])
def test_llama4_qk_norm_layers_are_its_rope_layers_as_transformers_fills_them(given):
    """QK norms sit on llama4's RoPE layers: no_rope_layers, or when it is missing or empty (as in published
    configs) every layer but each no_rope_layer_interval-th (default 4)."""
    config = {"model_type": "llama4_text", "num_hidden_layers": 8, **given}
    filled = transformers.Llama4TextConfig(num_hidden_layers=8, **given).no_rope_layers
    spec = arch_for_config(config)
    assert qk_norm_layers(config, spec, 8) == tuple(i for i, rope in enumerate(filled) if rope)
    assert qk_norm_layers({**config, "no_rope_layers": filled}, spec, 8) == qk_norm_layers(config, spec, 8)
    assert qk_norm_layers({**config, "use_qk_norm": False}, arch_for_config({**config, "use_qk_norm": False}), 8) == ()


def test_llama4_nope_layer_reads_queries_and_keys_without_the_norm(tiny_zoo):
    """The tiny llama4_text model has RoPE (and the parameter-free QK norm) on layers 0 and 2 only."""
    model = load_model(str(tiny_zoo("llama4_text")))
    norms = [layer_weights(model, i) for i in range(3)]
    assert [layer.q_norm is not None for layer in norms] == [True, False, True]
    assert [layer.k_norm is not None for layer in norms] == [True, False, True]
    assert norms[0].q_norm.weight is None and norms[0].q_norm.scope == "head"


@pytest.mark.parametrize("given", [{"num_hidden_layers": 50}, {"num_hidden_layers": 12},
                                   {"num_hidden_layers": 6, "layer_types": ["indexed_attention"] * 6},
                                   {"num_hidden_layers": 4, "kv_source_layers": [0, 0, 2, 0],
                                    "layer_types": ["indexed_attention", "indexed_attention", "sliding_attention",
                                                    "indexed_attention"]}])
def test_kolibri1_1_kv_sources_are_read_as_transformers_fills_them(given):
    """Which layer's keys and values each layer attends to: kv_source_layers, or when it is missing (as a config
    written before it existed would be) Kolibri 1.1's layout over the indexed-attention layers of layer_types
    (itself every 5th layer when missing), as transformers' config class fills them."""
    config = {"model_type": "kolibri1_1", **given}
    filled = transformers.Kolibri1_1Config(**given).kv_source_layers
    n = given["num_hidden_layers"]
    assert list(kv_sources(config, arch_for_config(config), n)) == filled
    assert filled != list(range(n))


@pytest.mark.parametrize("listed", [[0, 0, 3, 0], [0, 0, 1, 0], [0, 1, 2], [0, 1.0, 2, 3], "0,0,2,0"])
def test_kolibri1_1_kv_sources_that_transformers_refuses_are_one_clear_line(listed):
    """A layer reading a later layer, or a layer that reads another's, or a list of the wrong length or type."""
    config = {"model_type": "kolibri1_1", "num_hidden_layers": 4, "kv_source_layers": listed}
    with pytest.raises(HurefError, match=r"^config.json's kv_source_layers should list, for each of the 4 layers, "
                                         r"itself or an earlier layer that reads its own keys and values$"):
        kv_sources(config, arch_for_config(config), 4)
    with pytest.raises(HurefError, match="^config.json lacks kv_source_layers, whose default layout covers 10 layers "
                                         "of this kind, not 11$"):
        kv_sources({"model_type": "kolibri1_1", "num_hidden_layers": 55}, arch_for_config(config), 55)

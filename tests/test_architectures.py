"""The architecture table: one vocabulary for layouts and norm kinds, and config variants read as
transformers reads the config (a missing key means transformers' default)."""

import pytest
import transformers

from huref.architectures import ARCHITECTURES, arch_for_config
from huref.errors import HurefError
from huref.layers import LAYOUTS, model_dims

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

"""GGUF checkpoints read as the Hugging Face checkpoints they were converted from.

Every GGUF file here is written by huref_lab/gguf_convert.py, which names tensors with llama.cpp's own
table (`gguf.get_tensor_name_map`) and applies llama.cpp's conventions (reversed dims, rotary row
order, gemma's `1 + w` norms), so these tests check huref's reverse mapping against llama.cpp's.
"""

import json

import gguf
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

import huref.readers.gguf as gguf_reader
from huref.errors import HurefError
from huref.invariants import invariant_terms
from huref.similarity import compare_terms
from huref.sources import load_model, load_vocab

from huref_lab import tiny_models
from huref_lab.gguf_convert import convert
from huref_lab.tiny_models import N_LAYERS

ALL_LAYERS = list(range(N_LAYERS))
ARCHITECTURES = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"]


def terms(spec):
    return invariant_terms(load_model(str(spec)), layers=ALL_LAYERS)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_f32_gguf_reads_back_every_tensor_config_and_token(name, tiny_zoo, tmp_path):
    source = tiny_zoo(name)
    model = load_model(str(convert(source, tmp_path / f"{name}.gguf", "F32")))
    original = load_file(source / "model.safetensors")
    assert sorted(model.reader.names()) == sorted(original)
    for tensor_name, value in original.items():
        assert model.reader.shape(tensor_name) == tuple(value.shape)
        # gemma norms come back from 1 + w stored in float32: equal up to one rounding of 1 + w
        torch.testing.assert_close(model.reader.read(tensor_name), value, rtol=0, atol=1e-7)
    config = json.loads((source / "config.json").read_text())
    expected_type = "llama" if name == "mistral" else config["model_type"]  # llama.cpp writes Mistral as llama
    assert model.config["model_type"] == expected_type
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        assert model.config[key] == config[key], key
    assert model.dims.head_dim == load_model(str(source)).dims.head_dim
    assert model.config["tie_word_embeddings"] == ("lm_head.weight" not in original)
    assert model.vocab == load_vocab(source)


def test_llama_query_and_key_biases_come_back_in_hugging_face_order(tmp_path):
    config = tiny_models.make_config("llama", attention_bias=True)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.bias.copy_(torch.randn(proj.bias.shape))
    source = tiny_models.save_checkpoint(model, tmp_path / "llama-bias", tiny_models.token_strings())
    reader = load_model(str(convert(source, tmp_path / "llama-bias.gguf", "F32"))).reader
    for name, value in load_file(source / "model.safetensors").items():
        assert torch.equal(reader.read(name), value), name


@pytest.mark.parametrize("name", ["llama", "gemma3_text"])
def test_quantized_gguf_keeps_the_invariants(name, tiny_zoo, tmp_path):
    """Same model: ICS ~1 at F32 and F16, >= 0.99 at Q8_0; at Q4_0 (the figure printed here and
    in docs/REAL_MODELS.md) still far above an unrelated model's."""
    source = tiny_zoo(name)
    reference = terms(source)
    ics = {}
    for qtype in ("F32", "F16", "Q8_0", "Q4_0"):
        gguf_terms = terms(convert(source, tmp_path / f"{name}-{qtype}.gguf", qtype))
        assert gguf_terms.tokens == reference.tokens  # the same tokens, selected by string
        ics[qtype] = compare_terms(reference, gguf_terms)["ics"]
    unrelated = compare_terms(reference, terms(tiny_zoo(name, seed=1)))["ics"]
    print(f"{name}: ICS GGUF vs safetensors {ics}; vs an unrelated seed {unrelated:.3f}")
    assert ics["F32"] > 0.99999 and ics["F16"] > 0.9999
    assert ics["Q8_0"] >= 0.99
    assert ics["Q4_0"] > unrelated + 0.5


def test_rotary_row_order_does_not_change_the_invariants(tiny_zoo, tmp_path, monkeypatch):
    """llama.cpp stores each llama Q and K head with its rows reordered (rotary halves interleaved).
    The reader undoes that, but the invariants would not need it: the same within-head row
    permutation P is applied to every query head and every key/value head, and the qk term only
    uses Wq_h^T Wk_h = Wq_h^T P^T P Wk_h (P^T P = I); vo and ffn do not involve Q or K. (A QK-norm
    scale would have to be permuted with its rows; llama.cpp only reorders `llama` files, which
    have none.)"""
    source = convert(tiny_zoo("llama"), tmp_path / "llama.gguf", "F32")
    original = load_file(tiny_zoo("llama") / "model.safetensors")
    in_hf_order = terms(source)
    monkeypatch.setattr(gguf_reader, "ROPE_INTERLEAVED", set())
    as_stored = load_model(str(source))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(as_stored.reader.read(q), original[q])  # the stored rows really differ
    in_stored_order = invariant_terms(as_stored, layers=ALL_LAYERS)
    torch.testing.assert_close(in_stored_order.values, in_hf_order.values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0"])
def test_row_reads_dequantize_only_those_rows(qtype, tiny_zoo, tmp_path, monkeypatch):
    model = load_model(str(convert(tiny_zoo("llama"), tmp_path / "llama.gguf", qtype)))
    seen = []
    real_dequantize = gguf.quants.dequantize
    monkeypatch.setattr(gguf.quants, "dequantize", lambda data, t: seen.append(data.shape[0]) or real_dequantize(data, t))
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.k_proj.weight"):
        full = model.reader.read(name)
        rows = [7, 0, 3, full.shape[0] - 1]
        seen.clear()
        torch.testing.assert_close(model.reader.read(name, rows=rows), full[rows], rtol=0, atol=0)
        assert seen == [len(rows)]
        torch.testing.assert_close(model.reader.read(name, rows=slice(2, 9)), full[2:9], rtol=0, atol=0)


def test_split_files_and_a_directory_read_as_one_model(tiny_zoo, tmp_path):
    whole = terms(convert(tiny_zoo("qwen2"), tmp_path / "whole" / "qwen2.gguf", "Q8_0"))
    first = convert(tiny_zoo("qwen2"), tmp_path / "split" / "qwen2.gguf", "Q8_0", split_max_tensors=10)
    parts = sorted(first.parent.glob("*.gguf"))
    assert first.name == "qwen2-00001-of-00004.gguf" and len(parts) == 4
    for spec in (first, parts[2], first.parent):
        assert torch.equal(terms(spec).values, whole.values)
    parts[1].unlink()
    with pytest.raises(HurefError, match="missing qwen2-00002-of-00004.gguf"):
        load_model(str(first))


def _write_gguf(path, arch: str):
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((8, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_unsupported_architecture_is_one_clear_line(tmp_path):
    _write_gguf(tmp_path / "m.gguf", "mamba")
    with pytest.raises(HurefError, match="unsupported GGUF architecture 'mamba'; supported: gemma, ") as error:
        load_model(str(tmp_path / "m.gguf"))
    assert "\n" not in str(error.value)


def test_truncated_or_foreign_files_are_errors(tiny_zoo, tmp_path, huref_cli):
    data = convert(tiny_zoo("llama"), tmp_path / "llama.gguf", "Q8_0").read_bytes()
    for cut in (len(data) * 3 // 4, 200, 10):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(HurefError, match="cut.gguf: (truncated or malformed GGUF|not a GGUF)"):
            load_model(str(tmp_path / "cut.gguf"))
    (tmp_path / "cut.gguf").write_bytes(b"PK\x03\x04 not a gguf file")
    code, _, err = huref_cli("invariants", str(tmp_path / "cut.gguf"), "-o", str(tmp_path / "t.st"))
    assert code == 2
    assert "not a GGUF file" in err


@pytest.mark.parametrize("qtype", ["BF16", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_types_gguf_cannot_quantize_are_read_row_by_row(qtype, tmp_path):
    """K-quants (256-value super-blocks) and BF16 from random block bytes; every byte is masked with
    0x3B so each float16 scale inside a block is finite. Reference: gguf's dequantizer on the whole."""
    quant = gguf.GGMLQuantizationType[qtype]
    shape = (12, 512)  # [rows, values per row], two super-blocks per row
    byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, quant)
    raw = (np.random.default_rng(0).integers(0, 256, byte_shape) & 0x3B).astype(np.uint8)
    writer = gguf.GGUFWriter(tmp_path / "m.gguf", "qwen2")
    writer.add_block_count(1)
    writer.add_embedding_length(shape[1])
    writer.add_head_count(4)
    writer.add_tensor("token_embd.weight", raw, raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reference = torch.from_numpy(gguf.quants.dequantize(raw, quant).astype(np.float32))
    assert torch.isfinite(reference).all() and reference.std() > 0
    _, reader, _ = gguf_reader.open_gguf(str(tmp_path / "m.gguf"))
    name = "model.embed_tokens.weight"
    assert reader.shape(name) == shape and reader.quant_type(name) == qtype
    assert torch.equal(reader.read(name), reference)
    assert torch.equal(reader.read(name, rows=[11, 2, 5]), reference[[11, 2, 5]])

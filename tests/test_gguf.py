"""GGUF checkpoints read as the Hugging Face checkpoints they were converted from.

Every GGUF file here is written by huref_lab/gguf_convert.py, which names tensors with llama.cpp's own
table (`gguf.get_tensor_name_map`) and applies llama.cpp's conventions (reversed dims, rotary row
order, gemma's `1 + w` norms), so these tests check huref's reverse mapping against llama.cpp's.
"""

import json
import math
import re

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


def test_a_large_vocabulary_costs_no_memory_beyond_its_token_strings(script, tmp_path):
    """`huref invariants` on a GGUF with a 151,936-token vocabulary (and as many merges) peaks within
    100 MB of the same model with a 512-token vocabulary: the header is parsed without per-element
    objects for tokenizer arrays, and only the selected embedding rows are read. (With gguf's
    GGUFReader the large vocabulary cost ~500 MB more and 15 s more.)"""
    memory = script("gguf_memory")
    peaks = {}
    for vocab in (512, 151936):
        path = memory.write_model(tmp_path / f"v{vocab}.gguf", 0, vocab=vocab, hidden=64, heads=4, kv_heads=2,
                                  ffn=128, layers=1)
        rss, _, done = memory.peak_rss(["invariants", str(path), "-o", str(tmp_path / f"v{vocab}.st"),
                                        "--tokens", "256", "-q"])
        assert done.returncode == 0, done.stderr
        peaks[vocab] = rss
    print(f"peak RSS: {peaks[512] / 2**20:.0f} MiB with 512 tokens, {peaks[151936] / 2**20:.0f} MiB with 151,936")
    assert peaks[151936] - peaks[512] < 100 * 2**20


def test_invariants_read_only_the_selected_embedding_rows(tiny_zoo, tmp_path, monkeypatch):
    """Bytes read from the file: the selected rows of token_embd and the tensors of the chosen layer."""
    path = convert(tiny_zoo("llama"), tmp_path / "llama.gguf", "Q8_0")
    model = load_model(str(path))
    read = {}
    real_read = gguf_reader.read_exactly
    monkeypatch.setattr(gguf_reader, "read_exactly", lambda file, buffer, offset, name: (
        read.__setitem__(offset, len(buffer)), real_read(file, buffer, offset, name))[1])
    terms = invariant_terms(model, layers=[N_LAYERS - 1], n_tokens=16)
    embed = model.reader.entries["model.embed_tokens.weight"].stored
    embed_bytes = sum(n for offset, n in read.items() if embed.offset <= offset < embed.offset + embed.shape[0] * embed.row_bytes)
    assert embed_bytes == len(terms.tokens) * embed.row_bytes
    layer_bytes = sum(e.stored.row_bytes * math.prod(e.shape[:-1]) for name, e in model.reader.entries.items()
                      if name.startswith(f"model.layers.{N_LAYERS - 1}."))
    assert sum(read.values()) == embed_bytes + layer_bytes


def _write_qwen3moe(path, tensors: dict, n_layers: int, n_experts: int, qtype):
    """A qwen3moe GGUF from Hugging Face tensors named as in a per-expert qwen3_moe checkpoint,
    named and stacked with llama.cpp's table as its converter does."""
    writer = gguf.GGUFWriter(path, "qwen3moe")
    writer.add_block_count(n_layers)
    writer.add_embedding_length(tensors["model.embed_tokens.weight"].shape[1])
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_key_length(16)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_expert_count(n_experts)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3MOE, n_layers)
    stacked = {}
    for name, value in tensors.items():
        base = name.removesuffix(".weight")
        expert = re.match(r"(.*\.experts)\.(\d+)\.(\w+)$", base)
        if expert:
            stacked.setdefault(f"{expert.group(1)}.{expert.group(3)}", {})[int(expert.group(2))] = value
        else:
            stacked[base] = value
    for base, value in stacked.items():
        value = np.stack([value[e] for e in range(n_experts)]) if isinstance(value, dict) else value
        name = name_map.get_name(base) + ".weight"
        if value.ndim == 1:
            writer.add_tensor(name, value)
        else:
            writer.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_qwen3moe_gguf_reads_back_per_expert_hugging_face_tensors(tmp_path):
    hidden, n_experts, expert_width = 64, 4, 32
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (96, hidden), "model.norm.weight": (hidden,), "lm_head.weight": (96, hidden)}
    for i in range(2):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (64, hidden), p + "self_attn.k_proj.weight": (32, hidden),
                       p + "self_attn.v_proj.weight": (32, hidden), p + "self_attn.o_proj.weight": (hidden, 64),
                       p + "self_attn.q_norm.weight": (16,), p + "self_attn.k_norm.weight": (16,),
                       p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                       p + "mlp.gate.weight": (n_experts, hidden)})
        for e in range(n_experts):
            shapes.update({p + f"mlp.experts.{e}.gate_proj.weight": (expert_width, hidden),
                           p + f"mlp.experts.{e}.up_proj.weight": (expert_width, hidden),
                           p + f"mlp.experts.{e}.down_proj.weight": (hidden, expert_width)})
    tensors = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}
    _write_qwen3moe(tmp_path / "m.gguf", tensors, 2, n_experts, gguf.GGMLQuantizationType.F32)
    config, reader, _ = gguf_reader.open_gguf(str(tmp_path / "m.gguf"))
    assert config["model_type"] == "qwen3_moe" and config["num_local_experts"] == n_experts
    assert sorted(reader.names()) == sorted(tensors)
    for name, value in tensors.items():
        assert reader.shape(name) == value.shape
        assert torch.equal(reader.read(name), torch.from_numpy(value)), name

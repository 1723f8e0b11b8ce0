"""GGUF checkpoints read as the Hugging Face checkpoints they were converted from.

Every GGUF file here is written by huref_lab/gguf_convert.py, which names tensors with llama.cpp's own
table (`gguf.get_tensor_name_map`) and applies llama.cpp's conventions (reversed dims, rotary row
order, gemma's `1 + w` norms), so these tests check huref's reverse mapping against llama.cpp's.
"""

import json
import math
from dataclasses import replace
import re

import gguf
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

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
    listed = re.escape(", ".join(sorted(gguf_reader.MODEL_TYPES)))
    with pytest.raises(HurefError, match=f"unsupported GGUF architecture 'mamba'; supported: {listed}$") as error:
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
        rss, _, done = memory.peak_rss(["invariants", str(path), "-o", str(tmp_path / f"v{vocab}.safetensors"),
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


def test_qwen3moe_gguf_reads_back_per_expert_hugging_face_tensors(tmp_path):
    """Stacked ffn_*_exps tensors come back as one [out, in] matrix per expert (llama.cpp's qwen3moe
    has no dense FFN tensors, so every layer here has experts)."""
    source = tiny_models.save_checkpoint(tiny_models.build_model("qwen3_moe", mlp_only_layers=[]),
                                         tmp_path / "qwen3_moe", tiny_models.token_strings())
    path = convert(source, tmp_path / "m.gguf", "F32")
    assert gguf_reader.read_gguf(path).tensors["blk.0.ffn_up_exps.weight"].shape == (4, 32, 64)
    config, reader, _ = gguf_reader.open_gguf(str(path))
    assert config["model_type"] == "qwen3_moe" and config["num_local_experts"] == 4
    original = load_file(source / "model.safetensors")
    assert sorted(reader.names()) == sorted(original)
    for name, value in original.items():
        assert reader.shape(name) == tuple(value.shape)
        assert torch.equal(reader.read(name), value), name


# families whose GGUF tensors llama.cpp renames, splits or stacks beyond the names (see huref.readers.gguf)
FAMILIES = ["deepseek_v2", "deepseek_v3", "gpt_oss", "glm4_moe", "olmoe", "exaone4", "smollm3", "seed_oss", "granite",
            "ernie4_5", "ernie4_5_moe", "hunyuan_v1_dense", "hunyuan_v1_moe", "cohere2", "phimoe"]


def _hugging_face_tensors(reader, original: dict, interleaved: bool = True) -> dict:
    """The reader's tensors under the names of `original`; fused experts ([E, in, 2 * inner] gate_up_proj
    with gate and up columns alternating (gpt-oss) or in halves (llama4), [E, inner, out] down_proj)
    rebuilt from per-expert reads."""
    fused = re.compile(r"^(.*\.experts)\.(gate_up_proj|down_proj)(_bias)?$")
    out = {}
    for name, value in original.items():
        match = fused.match(name)
        if not match:
            out[name] = reader.read(name)
            continue
        base, kind = match.group(1), ".bias" if match.group(3) else ".weight"
        parts = ["gate_proj", "up_proj"] if match.group(2) == "gate_up_proj" else ["down_proj"]
        per_expert = []
        for e in range(value.shape[0]):
            read = [reader.read(f"{base}.{e}.{part}{kind}") for part in parts]  # each [out, in] or [out]
            if interleaved:
                stacked = torch.stack(read, 1).flatten(0, 1)  # rows gate0, up0, gate1, ...
            else:
                stacked = torch.cat(read, 0)
            per_expert.append(stacked if kind == ".bias" else stacked.T)  # weights stored [in, out]
        out[name] = torch.stack(per_expert)
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_family_gguf_reads_back_the_checkpoint_and_its_invariants(name, tiny_zoo, tmp_path):
    """F32: every tensor of the Hugging Face checkpoint comes back (MLA's kv_b_proj re-fused from
    attn_k_b / attn_v_b, gpt-oss's gate_up_proj from ffn_gate_exps / ffn_up_exps); ICS against the
    safetensors original at F32, F16 and Q8_0 (the figures in docs/FORMATS.md)."""
    source = tiny_zoo(name)
    original = load_file(source / "model.safetensors")
    path = convert(source, tmp_path / f"{name}.gguf", "F32")
    model = load_model(str(path))
    assert model.config["model_type"] == json.loads((source / "config.json").read_text())["model_type"]
    dims = load_model(str(source)).dims
    assert replace(model.dims, eps=dims.eps) == dims and math.isclose(model.dims.eps, dims.eps, rel_tol=1e-6)  # float32 eps
    read = _hugging_face_tensors(model.reader, original)
    for tensor_name, value in original.items():
        torch.testing.assert_close(read[tensor_name], value, rtol=0, atol=0, msg=tensor_name)
    reference = terms(source)
    ics = {qtype: compare_terms(reference, terms(convert(source, tmp_path / f"{name}-{qtype}.gguf", qtype)))["ics"]
           for qtype in ("F32", "F16", "Q8_0")}
    print(f"{name}: ICS GGUF vs safetensors {ics}")
    assert ics["F32"] > 0.99999 and ics["F16"] >= 0.999 and ics["Q8_0"] >= 0.99


@pytest.mark.parametrize("name", FAMILIES)
def test_a_truncated_family_gguf_is_one_line_exit_2(name, tiny_zoo, tmp_path, huref_cli):
    data = convert(tiny_zoo(name), tmp_path / f"{name}.gguf", "Q8_0").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) * 2 // 3])
    code, _, err = huref_cli("invariants", str(tmp_path / "cut.gguf"), "-o", str(tmp_path / "t.st"))
    assert code == 2 and "cut.gguf: truncated or malformed GGUF file" in err
    assert len(err.strip().splitlines()) == 1


def test_mla_kv_b_reads_the_same_split_or_whole(tiny_zoo, tmp_path):
    """Newer llama.cpp converters write attn_k_b + attn_v_b, older ones attn_kv_b: both read as the
    checkpoint's kv_b_proj, also row by row."""
    source = tiny_zoo("deepseek_v3")
    split = load_model(str(convert(source, tmp_path / "split.gguf", "F32")))
    whole = load_model(str(convert(source, tmp_path / "whole.gguf", "F32", split_kv_b=False)))
    stored = gguf_reader.read_gguf(tmp_path / "split.gguf").tensors
    assert "blk.0.attn_kv_b.weight" not in stored and stored["blk.0.attn_k_b.weight"].shape == (4, 16, 8)
    assert "blk.0.attn_kv_b.weight" in gguf_reader.read_gguf(tmp_path / "whole.gguf").tensors
    name = "model.layers.2.self_attn.kv_b_proj.weight"
    expected = load_file(source / "model.safetensors")[name]
    for model in (split, whole):
        assert torch.equal(model.reader.read(name), expected)
        assert torch.equal(model.reader.read(name, rows=[79, 0, 9, 8]), expected[[79, 0, 9, 8]])
    assert torch.equal(split.reader.read(name, rows=slice(20, 40)), expected[20:40])


def test_glm4moe_next_token_prediction_layers_are_left_out(tiny_zoo, tmp_path):
    """glm4moe's block_count includes nextn_predict_layers MTP blocks after the causal stack; the
    reader drops them: the same tensors and terms with or without them in the file."""
    source = tiny_zoo("glm4_moe")
    original = load_file(source / "model.safetensors")
    with_mtp = tmp_path / "with-mtp"
    with_mtp.mkdir()
    for file in ("config.json", "tokenizer.json"):
        (with_mtp / file).write_bytes((source / file).read_bytes())
    mtp = {name.replace(".layers.2.", f".layers.{N_LAYERS}."): value + 1.0
           for name, value in original.items() if ".layers.2." in name}
    hidden = original["model.norm.weight"].shape[0]
    mtp.update({f"model.layers.{N_LAYERS}.eh_proj.weight": torch.randn(hidden, 2 * hidden),
                f"model.layers.{N_LAYERS}.enorm.weight": torch.ones(hidden),
                f"model.layers.{N_LAYERS}.hnorm.weight": torch.ones(hidden),
                f"model.layers.{N_LAYERS}.shared_head.norm.weight": torch.ones(hidden)})
    save_file({**original, **mtp}, with_mtp / "model.safetensors")
    path = convert(with_mtp, tmp_path / "mtp.gguf", "F32")
    file = gguf_reader.read_gguf(path)
    assert file.metadata["glm4moe.block_count"] == N_LAYERS + 1 and file.metadata["glm4moe.nextn_predict_layers"] == 1
    assert f"blk.{N_LAYERS}.nextn.eh_proj.weight" in file.tensors and f"blk.{N_LAYERS}.attn_q.weight" in file.tensors
    model = load_model(str(path))
    assert model.config["num_hidden_layers"] == N_LAYERS
    assert sorted(model.reader.names()) == sorted(original)
    assert torch.equal(terms(path).values, terms(convert(source, tmp_path / "plain.gguf", "F32")).values)


def test_gpt_oss_mxfp4_experts_keep_the_invariants(tiny_zoo, tmp_path):
    """gpt-oss GGUFs store the experts as MXFP4 (llama.cpp repacks the checkpoint's blocks), the
    rest here as Q8_0: ICS against the safetensors original, far above an unrelated seed's."""
    source = tiny_zoo("gpt_oss")
    path = convert(source, tmp_path / "mxfp4.gguf", "Q8_0", expert_qtype="MXFP4")
    model = load_model(str(path))
    assert model.reader.quant_type("model.layers.0.mlp.experts.3.down_proj.weight") == "MXFP4"
    reference = terms(source)
    ics = compare_terms(reference, terms(path))["ics"]
    unrelated = compare_terms(reference, terms(tiny_zoo("gpt_oss", seed=1)))["ics"]
    print(f"gpt_oss: ICS MXFP4 experts + Q8_0 vs safetensors {ics:.4f}; vs an unrelated seed {unrelated:.3f}")
    assert ics >= 0.98 and ics > unrelated + 0.5


def _tiny_llama4(directory):
    """A tiny Llama-4 text checkpoint (model_type llama4_text) whose layer 1 has 4 experts and a shared
    one and layers 0 and 2 a dense FFN (interleave_moe_layer_step, the published configs' schedule)."""
    config = transformers.Llama4TextConfig(
        vocab_size=tiny_models.VOCAB_SIZE, hidden_size=64, intermediate_size=32, intermediate_size_mlp=128,
        num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
        num_experts_per_tok=1, interleave_moe_layer_step=2, max_position_embeddings=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return tiny_models.save_checkpoint(model, directory, tiny_models.token_strings())


def test_llama4_gguf_reads_back_the_checkpoint(tmp_path):
    """llama4: gate_up_proj [E, in, 2 * inner] (gate half, up half) comes back from ffn_gate_exps /
    ffn_up_exps, down_proj from ffn_down_exps; dense, shared-expert and router tensors by name."""
    source = _tiny_llama4(tmp_path / "llama4")
    path = convert(source, tmp_path / "llama4.gguf", "F32")
    stored = gguf_reader.read_gguf(path).tensors
    assert stored["blk.1.ffn_gate_exps.weight"].shape == (4, 32, 64) and "blk.0.ffn_gate.weight" in stored
    config, reader, _ = gguf_reader.open_gguf(str(path))
    assert config["model_type"] == "llama4_text" and config["num_local_experts"] == 4
    original = load_file(source / "model.safetensors")
    read = _hugging_face_tensors(reader, original, interleaved=False)
    for name, value in original.items():
        torch.testing.assert_close(read[name], value, rtol=0, atol=0, msg=name)


def test_llama4_gguf_keeps_the_invariants(tmp_path):
    source = _tiny_llama4(tmp_path / "llama4")
    reference = terms(source)
    ics = {qtype: compare_terms(reference, terms(convert(source, tmp_path / f"llama4-{qtype}.gguf", qtype)))["ics"]
           for qtype in ("F32", "F16", "Q8_0")}
    print(f"llama4_text: ICS GGUF vs safetensors {ics}")
    assert ics["F32"] > 0.99999 and ics["F16"] >= 0.999 and ics["Q8_0"] >= 0.99

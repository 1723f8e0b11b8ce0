"""GGUF checkpoints read as the Hugging Face checkpoints they were converted from.

Every GGUF file here is written by huref_lab/gguf_convert.py, which names tensors with llama.cpp's own
table (`gguf.get_tensor_name_map`) and applies llama.cpp's conventions (reversed dims, rotary row
order, gemma's `1 + w` norms), so these tests check huref's reverse mapping against llama.cpp's.
"""

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
from huref.architectures import ARCHITECTURES, arch_for_config
from huref.errors import HurefError
from huref.invariants import invariant_terms
from huref.similarity import compare_terms
from huref.sources import load_model, load_vocab

from huref_lab import tiny_models
from huref_lab.gguf_convert import GGUF_SOURCE_OVERRIDES, WRITTEN_AS, convert, gate_up_interleaved, plus_one_norms
from huref_lab.tiny_models import N_LAYERS

ALL_LAYERS = list(range(N_LAYERS))
FAMILIES = sorted(WRITTEN_AS)  # every model_type llama.cpp's converter writes, as the rows' `gguf` say


def terms(spec):
    return invariant_terms(load_model(str(spec)), layers=ALL_LAYERS)


@pytest.fixture(scope="session")
def family_source(tiny_zoo, tmp_path_factory):
    """family_source(model_type) -> its tiny checkpoint as llama.cpp can hold it (GGUF_SOURCE_OVERRIDES)."""
    built = {}

    def source(name: str):
        if name not in GGUF_SOURCE_OVERRIDES:
            return tiny_zoo(name)
        if name not in built:
            model = tiny_models.build_model(name, **GGUF_SOURCE_OVERRIDES[name])
            built[name] = tiny_models.save_checkpoint(model, tmp_path_factory.mktemp(name), tiny_models.token_strings())
        return built[name]

    return source


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
    monkeypatch.setattr(gguf_reader, "GGUF_ARCHS", tuple(replace(entry, rope_interleaved=False)
                                                         for entry in gguf_reader.GGUF_ARCHS))
    as_stored = load_model(str(source))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(as_stored.reader.read(q), original[q])  # the stored rows really differ
    in_stored_order = invariant_terms(as_stored, layers=ALL_LAYERS)
    torch.testing.assert_close(in_stored_order.values, in_hf_order.values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0"])
def test_row_reads_dequantize_only_those_rows(qtype, tiny_zoo, tmp_path, monkeypatch):
    model = load_model(str(convert(tiny_zoo("llama"), tmp_path / "llama.gguf", qtype)))
    seen = []
    real_dequantize = gguf_reader.dequantize
    monkeypatch.setattr(gguf_reader, "dequantize",
                        lambda data, t, dtype: seen.append(data.shape[0]) or real_dequantize(data, t, dtype))
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
    listed = re.escape(", ".join(sorted({entry.arch for spec in ARCHITECTURES for entry in spec.gguf})))
    with pytest.raises(HurefError, match=f"unsupported GGUF architecture 'mamba'; supported: {listed}$") as error:
        load_model(str(tmp_path / "m.gguf"))
    assert "\n" not in str(error.value)


def test_metadata_values_of_every_scalar_type_read_back(tmp_path):
    """One metadata key of each GGUF scalar value type (gguf-py's GGUFValueType, written by its writer):
    read back as the value written, under the type name the key type checks use."""
    scalars = [t for t in gguf.GGUFValueType if t not in (gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY)]
    expected = {}
    writer = gguf.GGUFWriter(tmp_path / "m.gguf", "llama")
    for value_type in scalars:
        value = True if value_type == gguf.GGUFValueType.BOOL else 0.5 if "FLOAT" in value_type.name else 7
        writer.add_key_value(f"test.{value_type.name.lower()}", value, value_type)
        kind = ("bool" if value_type == gguf.GGUFValueType.BOOL else "number" if "FLOAT" in value_type.name
                else "integer")
        expected[f"test.{value_type.name.lower()}"] = (value, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    file = gguf_reader.read_gguf(tmp_path / "m.gguf")
    assert {key: (file.metadata[key], file.types[key]) for key in expected} == expected


def test_metadata_key_types_use_llama_cpps_spelling(tmp_path):
    """The separator token id is typed under the key llama.cpp writes and reads (gguf-py's
    Keys.Tokenizer.SEP_ID, "seperator"): a string there is refused, as llama.cpp's loader refuses it."""
    writer = gguf.GGUFWriter(tmp_path / "m.gguf", "llama")
    writer.add_block_count(1)
    writer.add_string(gguf.Keys.Tokenizer.SEP_ID, "1")
    writer.add_tensor("token_embd.weight", np.ones((8, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(HurefError, match="metadata tokenizer.ggml.seperator_token_id is of type string, not integer"):
        load_model(str(tmp_path / "m.gguf"))


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
    real_read = gguf_reader.read_pieces
    monkeypatch.setattr(gguf_reader, "read_pieces", lambda file, pieces, name: (
        read.update((offset, len(view)) for offset, view in pieces), real_read(file, pieces, name))[1])
    terms = invariant_terms(model, layers=[N_LAYERS - 1], n_tokens=16)
    embed = model.reader.entries["model.embed_tokens.weight"].stored
    embed_bytes = sum(n for offset, n in read.items() if embed.offset <= offset < embed.offset + embed.shape[0] * embed.row_bytes)
    assert embed_bytes == len(terms.tokens) * embed.row_bytes
    layer_bytes = sum(e.stored.row_bytes * math.prod(e.shape[:-1]) for name, e in model.reader.entries.items()
                      if name.startswith(f"model.layers.{N_LAYERS - 1}."))
    assert sum(read.values()) == embed_bytes + layer_bytes


FUSED_EXPERTS = re.compile(r"^(.*\.experts)\.(gate_up_proj|down_proj)(_bias)?$")  # [E, in, out] 3-D tensors


def _per_expert_names(name: str, value) -> list[str]:
    """The names a GGUF reader gives checkpoint tensor `name`: itself, or one per expert and part
    for a fused 3-D expert tensor."""
    match = FUSED_EXPERTS.match(name)
    if not match:
        return [name]
    base, kind = match.group(1), ".bias" if match.group(3) else ".weight"
    parts = ["gate_proj", "up_proj"] if match.group(2) == "gate_up_proj" else ["down_proj"]
    return [f"{base}.{e}.{part}{kind}" for e in range(value.shape[0]) for part in parts]


def _hugging_face_tensors(reader, original: dict, interleaved: bool) -> dict:
    """The reader's tensors under the names of `original`; fused experts ([E, in, 2 * inner] gate_up_proj
    with gate and up columns alternating (gpt-oss) or in halves (llama4), [E, inner, out] down_proj)
    rebuilt from per-expert reads."""
    out = {}
    for name, value in original.items():
        names = _per_expert_names(name, value)
        if names == [name]:
            out[name] = reader.read(name)
            continue
        per_part = len(names) // value.shape[0]  # gate and up, or down
        per_expert = []
        for e in range(value.shape[0]):
            read = [reader.read(part) for part in names[e * per_part:(e + 1) * per_part]]  # each [out, in] or [out]
            if interleaved:
                stacked = torch.stack(read, 1).flatten(0, 1)  # rows gate0, up0, gate1, ...
            else:
                stacked = torch.cat(read, 0)
            per_expert.append(stacked if name.endswith("_bias") else stacked.T)  # weights stored [in, out]
        out[name] = torch.stack(per_expert)
    return out


def test_every_gguf_entry_is_a_llama_cpp_architecture_of_its_row():
    """Each GGUFArch names a llama.cpp architecture and model_types of its own row (a file is read with the
    row of the model_type it gives); each architecture has one entry without a condition and its entries
    agree on what its converter does; each model_type is written as one architecture; rotary rows are
    reordered only in plain Q and K matrices."""
    by_arch = {}
    for spec in ARCHITECTURES:
        for entry in spec.gguf:
            assert entry.arch in gguf.MODEL_ARCH_NAMES.values() and set(entry.model_types) <= set(spec.model_types)
            assert entry.when in (None, "experts", "router_bias")
            assert not entry.rope_interleaved or spec.q.layout == spec.k.layout == "plain"
            by_arch.setdefault(entry.arch, []).append(entry)
    for arch, entries in by_arch.items():
        whens = [entry.when for entry in entries]
        assert whens.count(None) == 1 and len(set(whens)) == len(whens), arch
        assert len({(entry.rope_interleaved, entry.mtp_blocks) for entry in entries}) == 1, arch
    written = [t for entries in by_arch.values() for entry in entries for t in entry.model_types]
    assert len(written) == len(set(written))


def test_two_tensors_of_a_row_with_one_gguf_name_are_a_table_error():
    """Every family's tensors map to distinct GGUF names; a row whose two FFN alternatives have routers that
    llama.cpp both calls ffn_gate_inp is refused rather than read as either."""
    for entry in gguf_reader.GGUF_ARCHS:
        config = {"model_type": entry.model_types[0], **({entry.qk_norm_flag: True} if entry.qk_norm_flag else {})}
        assert gguf_reader.gguf_to_hf_names(entry.arch, arch_for_config(config), [0])
    mixtral = arch_for_config({"model_type": "mixtral"})
    two_routers = replace(mixtral, ffn=(mixtral.ffn[0], replace(mixtral.ffn[0], router="mlp.gate.weight")))
    with pytest.raises(ValueError, match="block_sparse_moe.gate and mlp.gate both map to GGUF ffn_gate_inp"):
        gguf_reader.gguf_to_hf_names("llama", two_routers, [0])


@pytest.mark.parametrize("name", FAMILIES)
def test_family_gguf_reads_back_the_checkpoint(name, family_source, tmp_path):
    """F32: the reader gives every tensor of the Hugging Face checkpoint under its name (fused 3-D experts
    one per expert), exactly (a plus-one norm's scale w as (w + 1) - 1 in float32: llama.cpp stores 1 + w),
    and nothing else; MLA's kv_b_proj re-fused from attn_k_b / attn_v_b; the model_type (mistral is
    written as llama, mixtral and deepseek_v3 told apart by their tensors), sizes, tied head and vocabulary."""
    source = family_source(name)
    original = load_file(source / "model.safetensors")
    model = load_model(str(convert(source, tmp_path / f"{name}.gguf", "F32")))
    assert model.config["model_type"] == WRITTEN_AS[name].model_types[0]
    reference = load_model(str(source))
    assert replace(model.dims, eps=reference.dims.eps) == reference.dims
    assert math.isclose(model.dims.eps, reference.dims.eps, rel_tol=1e-6)  # stored as float32
    assert model.config["tie_word_embeddings"] == ("lm_head.weight" not in original)
    assert model.vocab == load_vocab(source)
    expected_names = [expert_name for name, value in original.items() for expert_name in _per_expert_names(name, value)]
    assert sorted(model.reader.names()) == sorted(expected_names)
    plus_one = plus_one_norms(reference.arch)
    read = _hugging_face_tensors(model.reader, original, gate_up_interleaved(reference.arch))
    for tensor_name, value in original.items():
        expected = (value + 1.0) - 1.0 if plus_one and tensor_name.endswith("norm.weight") else value
        torch.testing.assert_close(read[tensor_name], expected, rtol=0, atol=0, msg=tensor_name)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_gguf_keeps_the_invariants(name, family_source, tmp_path):
    """ICS against the safetensors original at F32 (the config built from the metadata gives the layers the
    same structure: QK-norm and attention layers, experts), F16 and Q8_0 (the figures in docs/FORMATS.md)."""
    source = family_source(name)
    reference = terms(source)
    ics = {qtype: compare_terms(reference, terms(convert(source, tmp_path / f"{name}-{qtype}.gguf", qtype)))["ics"]
           for qtype in ("F32", "F16", "Q8_0")}
    print(f"{name}: ICS GGUF vs safetensors {ics}")
    assert ics["F32"] > 0.99999 and ics["F16"] >= 0.999 and ics["Q8_0"] >= 0.99


@pytest.mark.parametrize("name", FAMILIES)
def test_a_truncated_family_gguf_is_one_line_exit_2(name, family_source, tmp_path, huref_cli):
    data = convert(family_source(name), tmp_path / f"{name}.gguf", "Q8_0").read_bytes()
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

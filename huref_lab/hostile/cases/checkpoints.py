"""Cases on model directories: config.json, tokenizer files, safetensors headers, shard indexes,
special files where a file belongs, PyTorch `.bin` files, non-finite weights."""

from __future__ import annotations

import json
import os

from huref_lab.hostile.cases.base import TOKENS, Case, case, invariants_run
from huref_lab.hostile.forgers import (bin_model, binbytes8, copy_model, edit_json, generator_copy, long_binput,
                                       pickle_opcodes, safetensors_parts, scaled_copy, stride0, with_header_entry,
                                       write_safetensors_raw)


def config_case(name, klass="config", model="llama", **changes):
    @case(name, klass)
    def build(kit, directory):
        model_dir = copy_model(getattr(kit, model), directory)
        edit_json(model_dir / "config.json", **changes)
        return invariants_run(model_dir, directory)


BAD_CONFIGS = {
    "layers_string": dict(num_hidden_layers="abc"),
    "layers_1e9": dict(num_hidden_layers=1e9),
    "layers_zero": dict(num_hidden_layers=0),
    "layers_negative": dict(num_hidden_layers=-3),
    "layers_bool": dict(num_hidden_layers=True),
    "layers_fraction": dict(num_hidden_layers=2.5),
    "layers_2_63": dict(num_hidden_layers=2 ** 63),
    "heads_zero": dict(num_attention_heads=0),
    "heads_string": dict(num_attention_heads="4"),
    "kv_heads_not_dividing": dict(num_key_value_heads=3),
    "kv_heads_zero": dict(num_key_value_heads=0),
    "model_type_list": dict(model_type=["llama"]),
    "model_type_object": dict(model_type={"llama": 1}),
    "model_type_number": dict(model_type=7),
    "hidden_infinity": dict(hidden_size=float("inf")),
    "hidden_nan": dict(hidden_size=float("nan")),
    "hidden_1e12": dict(hidden_size=10 ** 12),
    "hidden_list": dict(hidden_size=[64]),
    "head_dim_zero": dict(head_dim=0),
    "head_dim_huge": dict(head_dim=2 ** 40),
    "eps_string": dict(rms_norm_eps="tiny"),
    "eps_negative": dict(rms_norm_eps=-1.0),
    "eps_nan": dict(rms_norm_eps=float("nan")),
    "eps_infinity": dict(rms_norm_eps=float("inf")),
    "quantization_config_list": dict(quantization_config=["gptq"]),
    "quantization_method_list": dict(quantization_config={"quant_method": ["gptq"]}),
}
for _name, _changes in BAD_CONFIGS.items():
    config_case(f"config_{_name}", **_changes)
config_case("config_experts_string", model="mixtral", num_local_experts="four")
config_case("config_experts_1e9", model="mixtral", num_local_experts=10 ** 9)
config_case("config_experts_negative", model="mixtral", num_local_experts=-4)


@case("config_nested_deeply", "config")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    (model / "config.json").write_text("[" * 200000 + "]" * 200000)
    return invariants_run(model, directory)


@case("config_not_utf8", "config")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    (model / "config.json").write_bytes(b'{"model_type": "\xff\xfe"}')
    return invariants_run(model, directory)


def tokenizer_case(name, file, content):
    @case(name, "tokenizer")
    def build(kit, directory):
        model = copy_model(kit.llama, directory)
        (model / "tokenizer.json").unlink()
        path = model / file
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        return invariants_run(model, directory)


BAD_TOKENIZERS = {
    "id_string": ("tokenizer.json", {"model": {"vocab": {"a": "5"}}}),
    "id_negative": ("tokenizer.json", {"model": {"vocab": {"a": -1}}}),
    "id_6e8": ("tokenizer.json", {"model": {"vocab": {"a": 600_000_000}}}),
    "id_float": ("tokenizer.json", {"model": {"vocab": {"a": 1.5}}}),
    "model_list": ("tokenizer.json", {"model": ["vocab"]}),
    "unigram_piece_number": ("tokenizer.json", {"model": {"vocab": [[5, 0.0]]}}),
    "added_tokens_object": ("tokenizer.json", {"model": {"vocab": {"a": 0}}, "added_tokens": {"id": 1}}),
    "added_token_no_id": ("tokenizer.json", {"model": {"vocab": {"a": 0}}, "added_tokens": [{"content": "x"}]}),
    "added_token_content_list": ("tokenizer.json", {"model": {"vocab": {"a": 0}},
                                                    "added_tokens": [{"id": 2, "content": ["x"]}]}),
    "decoder_sequence_string": ("tokenizer.json", {"model": {"vocab": {"a": 0}},
                                                   "decoder": {"type": "Sequence", "decoders": "x"}}),
    "nested_deeply": ("tokenizer.json", b'{"model": ' + b"[" * 200000 + b"]" * 200000 + b"}"),
    "vocab_json_id_list": ("vocab.json", {"a": [1]}),
    "vocab_json_piece_huge_id": ("vocab.json", {"a": 2 ** 40}),
    "vocab_txt_not_utf8": ("vocab.txt", b"a\n\xff\xfe\n"),
}
for _name, (_file, _content) in BAD_TOKENIZERS.items():
    tokenizer_case(f"tokenizer_{_name}", _file, _content)


def safetensors_case(name, tensor="model.embed_tokens.weight", **entry):
    @case(name, "safetensors")
    def build(kit, directory):
        model = copy_model(kit.llama, directory)
        with_header_entry(model, tensor, **entry)
        return invariants_run(model, directory)


safetensors_case("safetensors_embed_dims_2_40_no_bytes", shape=[2 ** 40, 0], data_offsets=[0, 0])
safetensors_case("safetensors_embed_rows_2_40_no_bytes", shape=[0, 2 ** 40], data_offsets=[0, 0])
safetensors_case("safetensors_q_dims_2_40_no_bytes", tensor="model.layers.2.self_attn.q_proj.weight",
                 shape=[2 ** 40, 0], data_offsets=[0, 0])
safetensors_case("safetensors_negative_dims", shape=[-384, -64])
safetensors_case("safetensors_bool_dims", shape=[True, 24576])
safetensors_case("safetensors_fraction_dims", shape=[384.0, 64.0])
safetensors_case("safetensors_dtype_unknown", dtype="F128")
safetensors_case("safetensors_dtype_list", dtype=["F32"])
safetensors_case("safetensors_offsets_strings", data_offsets=["0", "98304"])
safetensors_case("safetensors_offsets_past_end", data_offsets=[0, 2 ** 62])
safetensors_case("safetensors_shape_2_63", shape=[2 ** 63, 2 ** 63])


def raw_header_case(name, header_text: bytes, declared: int | None = None):
    @case(name, "safetensors")
    def build(kit, directory):
        model = copy_model(kit.llama, directory)
        path = model / "model.safetensors"
        data = safetensors_parts(path)[1]
        n = len(header_text) if declared is None else declared
        path.write_bytes(n.to_bytes(8, "little") + header_text + data)
        return invariants_run(model, directory)


raw_header_case("safetensors_header_nested_deeply", b"[" * 100000 + b"]" * 100000)
raw_header_case("safetensors_header_a_list", b"[]")
raw_header_case("safetensors_header_length_huge", b"{}", declared=2 ** 63)
raw_header_case("safetensors_header_not_utf8", b'{"\xff": 1}')
raw_header_case("safetensors_entry_a_string", b'{"model.embed_tokens.weight": "x"}')
raw_header_case("safetensors_metadata_a_list", b'{"__metadata__": [1]}')


@case("safetensors_nan_in_weights", "non-finite")
def _(kit, directory):
    from safetensors.torch import load_file, save_file

    model = copy_model(kit.llama, directory)
    tensors = load_file(str(model / "model.safetensors"))
    tensors["model.layers.2.mlp.down_proj.weight"][3, 5] = float("nan")
    save_file(tensors, str(model / "model.safetensors"))
    return invariants_run(model, directory)


@case("weights_scaled_1e19_overflow", "non-finite")
def _(kit, directory):
    return invariants_run(scaled_copy(kit.llama, directory), directory)


@case("weights_scaled_1e19_compare", "non-finite")
def _(kit, directory):
    return Case(["compare", str(scaled_copy(kit.llama, directory)), str(kit.llama), "--json", *TOKENS])



# --- special files ---

@case("fifo_as_model_safetensors", "special files")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    (model / "model.safetensors").unlink()
    os.mkfifo(model / "model.safetensors")
    return invariants_run(model, directory)


@case("fifo_as_loose_shard", "special files")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    (model / "model.safetensors").rename(model / "a.safetensors")
    os.mkfifo(model / "b.safetensors")
    return invariants_run(model, directory)


def index_case(name, make_shard):
    @case(name, "special files")
    def build(kit, directory):
        model = copy_model(kit.llama, directory)
        header, _ = safetensors_parts(model / "model.safetensors")
        (model / "model.safetensors").rename(model / "real.safetensors")
        make_shard(model / "shard.safetensors")
        weight_map = {name: "real.safetensors" for name in header if name != "__metadata__"}
        weight_map["model.embed_tokens.weight"] = "shard.safetensors"
        (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        return invariants_run(model, directory)


index_case("index_shard_a_fifo", os.mkfifo)
index_case("index_shard_a_directory", os.mkdir)
index_case("index_shard_a_link_to_dev_zero", lambda path: os.symlink("/dev/zero", path))


@case("index_shard_name_with_path", "sharded")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))
    return invariants_run(model, directory)


@case("index_weight_map_a_list", "sharded")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["model.safetensors"]}))
    return invariants_run(model, directory)


@case("fifo_as_model_argument", "special files")
def _(kit, directory):
    os.mkfifo(directory / "model.gguf")
    return invariants_run(directory / "model.gguf", directory)


@case("fifo_as_generator_pickle", "special files")
def _(kit, directory):
    os.mkfifo(directory / "gen.pkl")
    out = directory / "dog.png"
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--generator", str(directory / "gen.pkl"), *TOKENS],
                absent=[str(out)])


@case("fifo_as_generator_json", "special files")
def _(kit, directory):
    weights = generator_copy(kit.generator, directory)
    weights.with_suffix(".json").unlink()
    os.mkfifo(weights.with_suffix(".json"))
    out = directory / "dog.png"
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--generator", str(weights), *TOKENS],
                absent=[str(out)])


@case("fifo_as_generator_weights", "special files")
def _(kit, directory):
    weights = generator_copy(kit.generator, directory)
    weights.unlink()
    os.mkfifo(weights)
    out = directory / "dog.png"
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--generator", str(weights), *TOKENS],
                absent=[str(out)])



# --- PyTorch .bin ---

@case("torchbin_legacy_format_is_read", "valid inputs")
def _(kit, directory):
    return invariants_run(bin_model(kit.llama, directory, _use_new_zipfile_serialization=False), directory, expect=0)


def _stride0_embedding(state):
    state["model.embed_tokens.weight"] = stride0((1 << 28, 64))
    return state


@case("torchbin_stride0_embedding", "declared sizes")
def _(kit, directory):
    return invariants_run(bin_model(kit.llama, directory, _stride0_embedding), directory)


@case("torchbin_stride0_embedding_legacy", "declared sizes")
def _(kit, directory):
    return invariants_run(bin_model(kit.llama, directory, _stride0_embedding, _use_new_zipfile_serialization=False),
                          directory)


@case("torchbin_not_a_state_dict", "torchbin")
def _(kit, directory):
    return invariants_run(bin_model(kit.llama, directory, lambda state: [1, 2, 3]), directory)




# --- JSON nested deeply, or holding numbers Python will not parse, in every JSON huref reads ---

DEEP = "[" * 200_000 + "]" * 200_000
DIGITS_5000 = "1" * 5000  # an integer literal past Python's int-from-string limit (4300 digits)


def json_case(name: str, file: str, text, model: str = "llama"):
    """`huref invariants` of a copy of kit's `model` whose `file` is `text(its JSON text)`."""
    @case(name, "nested json")
    def build(kit, directory):
        copy = copy_model(getattr(kit, model), directory)
        path = copy / file
        path.write_text(text(path.read_text() if path.exists() else ""))
        return invariants_run(copy, directory)


def json_value(key: str, literal: str):
    """`text` for json_case: the JSON object with `key` set to the raw JSON `literal`."""
    def text(original: str) -> str:
        return json.dumps({**json.loads(original), key: "@@"}).replace('"@@"', literal)
    return text


json_case("config_quantization_config_nested_deeply", "config.json", json_value("quantization_config", DEEP))
json_case("config_model_type_nested_990", "config.json", json_value("model_type", "[" * 990 + "]" * 990))
json_case("config_integer_5000_digits", "config.json", json_value("num_hidden_layers", DIGITS_5000))
json_case("config_hidden_1e400", "config.json", json_value("hidden_size", "1e400"))
json_case("tokenizer_id_5000_digits", "tokenizer.json",
          lambda original: json.dumps({"model": {"vocab": {"a": "@@"}}}).replace('"@@"', DIGITS_5000))
json_case("index_nested_deeply", "model.safetensors.index.json", lambda original: '{"weight_map": ' + DEEP + "}")
json_case("index_integer_5000_digits", "model.safetensors.index.json",
          lambda original: '{"metadata": {"total_size": ' + DIGITS_5000 + '}, "weight_map": {}}')


@case("safetensors_header_integer_5000_digits", "nested json")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    path = model / "model.safetensors"
    header, data = safetensors_parts(path)
    text = json.dumps({**header, "__metadata__": {"x": "@@"}}).replace('"@@"', DIGITS_5000)
    write_safetensors_raw(path, None, data, text.encode())
    return invariants_run(model, directory)


# --- pickles inside PyTorch .bin files, declaring more than they hold ---

def bin_pickle_case(name: str, raw: bytes, legacy: bool):
    """A model whose pytorch_model.bin is the pickle `raw`: the whole file (legacy format) or its
    data.pkl (zip format)."""
    @case(name, "declared sizes")
    def build(kit, directory):
        import zipfile

        model = copy_model(kit.llama, directory)
        (model / "model.safetensors").unlink()
        if legacy:
            (model / "pytorch_model.bin").write_bytes(raw)
        else:
            with zipfile.ZipFile(model / "pytorch_model.bin", "w") as archive:
                archive.writestr("archive/data.pkl", raw)
                archive.writestr("archive/version", "3\n")
                archive.writestr("archive/byteorder", "little")
        return invariants_run(model, directory)


for _format in ("zip", "legacy"):
    bin_pickle_case(f"torchbin_{_format}_memo_index_2_32", pickle_opcodes(b"}", long_binput((1 << 32) - 1)),
                    _format == "legacy")
    bin_pickle_case(f"torchbin_{_format}_binbytes8_near_2_63", pickle_opcodes(binbytes8((1 << 63) - 16, b"xx")),
                    _format == "legacy")

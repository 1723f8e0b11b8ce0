"""Malformed and hostile inputs for huref, and a runner that executes many CLI runs in one process.

`CASES` maps a case name to (class, builder). `builder(kit, directory)` writes the case's files
into its own empty `directory` and returns a `Case`: the CLI arguments, the exit code expected
and the paths that must not exist afterwards. `Kit` holds what many cases start from (a tiny
llama and a tiny mixtral checkpoint, an FP.json, the bundled generator's files). The classes are
the ones listed in docs/SECURITY.md.

`python -m huref_lab.hostile CASES.json RESULTS.json` runs every case of CASES.json in this one
process (so torch and huref are imported once), each under a time limit, the whole batch under
an address-space cap (`MEMORY_CAP`), and writes per case: exit code, stdout, stderr, seconds, and
the growth of the peak resident memory during the case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import sys
import types
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

MEMORY_CAP = 3 << 30  # bytes of address space for a whole batch
CASE_SECONDS = 10  # time limit of one case beyond its normal run time (the tiny inputs take well under 1 s)
TOKENS = ["--tokens", "64", "-q"]


@dataclass
class Case:
    """One CLI run: argv after `huref`; expect: the exit code; absent: paths that must not exist
    afterwards (outputs a refused run must not leave); env: variables set for the run."""

    argv: list[str]
    expect: int = 2
    absent: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    interrupt_after: float | None = None  # send SIGINT this many seconds into the run
    concurrent: int = 0  # run this many copies at once (forked), all writing the same outputs
    limit: int | None = None  # seconds before the run is stopped (default CASE_SECONDS)


@dataclass
class Kit:
    """Inputs many cases start from (built once per batch)."""

    llama: Path
    mixtral: Path
    fingerprint: Path
    generator: Path  # the bundled generator's .safetensors (its .json beside it)
    small_generator: Path  # an 8x8 generator's .safetensors + .json (what the pickle cases start from)


def small_generator(directory: Path) -> Path:
    """An 8x8 random generator in huref's format at directory/small.safetensors (+ .json)."""
    import torch

    from stylegan2 import Generator, serialize_generator

    torch.manual_seed(0)
    G = Generator(z_dim=512, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 64, "channel_max": 8})
    weights, config = serialize_generator(G)
    (directory / "small.safetensors").write_bytes(weights)
    (directory / "small.json").write_bytes(config)
    return directory / "small.safetensors"


CASES: dict[str, tuple[str, Callable[[Kit, Path], Case]]] = {}


def case(name: str, klass: str):
    def register(builder):
        if name in CASES:
            raise ValueError(f"duplicate hostile case {name}")
        CASES[name] = (klass, builder)
        return builder
    return register


# --- helpers that write malformed files ---------------------------------------------------------

def copy_model(source: Path, directory: Path) -> Path:
    """A copy of a checkpoint directory at directory/model."""
    return Path(shutil.copytree(source, directory / "model"))


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header dict, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_safetensors_raw(path: Path, header, data: bytes, header_text: bytes | None = None) -> None:
    """A safetensors file with the given header (any JSON, or raw header bytes) and data."""
    text = header_text if header_text is not None else json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def with_header_entry(model: Path, tensor: str, **entry) -> None:
    """Change one tensor's header entry of model/model.safetensors."""
    header, data = safetensors_parts(model / "model.safetensors")
    header[tensor] = dict(header[tensor], **entry)
    write_safetensors_raw(model / "model.safetensors", header, data)


def invariants_file(path: Path, values_shape=(2, 3, 4, 4), layers=(1, 2), tokens=None, meta=None,
                    header_override: dict | None = None, sparse_bytes: int | None = None, fill: float = 1.0) -> Path:
    """A huref invariants file; every field may be replaced by a wrong one. sparse_bytes: declare the
    values' bytes and leave them as a hole in the file (nothing written)."""
    import math

    n = values_shape[2] if len(values_shape) > 2 else 4
    header = {"huref": "invariants", "layers": list(layers),
              "tokens": tokens if tokens is not None else [f"s:t{i}" for i in range(n)],
              "meta": meta if meta is not None else {}}
    header.update(header_override or {})
    count = math.prod(values_shape)
    size = sparse_bytes if sparse_bytes is not None else 4 * count
    entry = {"dtype": "F32", "shape": list(values_shape), "data_offsets": [0, 4 * count]}
    text = json.dumps({"__metadata__": {"huref": json.dumps(header)}, "values": entry}).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        if sparse_bytes is None:
            f.write(struct.pack(f"<{count}f", *([fill] * count)))
        else:
            f.truncate(8 + len(text) + size)
    return path


# --- GGUF, written byte by byte so that every field can lie --------------------------------------

GGUF_TYPES = {"u8": (0, "<B"), "i8": (1, "<b"), "u16": (2, "<H"), "i16": (3, "<h"), "u32": (4, "<I"),
              "i32": (5, "<i"), "f32": (6, "<f"), "bool": (7, "<?"), "str": (8, None), "arr": (9, None),
              "u64": (10, "<Q"), "i64": (11, "<q"), "f64": (12, "<d")}


def _gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _gguf_value(kind: str, value) -> bytes:
    if kind == "str":
        return _gguf_string(value)
    if kind == "arr":  # value: (element kind, [elements], declared length or None)
        element, items, declared = value
        body = b"".join(_gguf_value(element, v) for v in items)
        return struct.pack("<IQ", GGUF_TYPES[element][0], len(items) if declared is None else declared) + body
    return struct.pack(GGUF_TYPES[kind][1], value)


def gguf_bytes(metadata: list[tuple[str, str, object]], tensors: list[tuple[str, list[int], bytes]]) -> bytes:
    """A GGUF v3 file: metadata [(key, kind, value)], F32 tensors [(name, ggml dims fastest-first, data)]."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(metadata))]
    for key, kind, value in metadata:
        out += [_gguf_string(key), struct.pack("<I", GGUF_TYPES[kind][0]), _gguf_value(kind, value)]
    offset, blobs = 0, []
    for name, dims, data in tensors:
        out += [_gguf_string(name), struct.pack("<I", len(dims)), struct.pack(f"<{len(dims)}Q", *dims),
                struct.pack("<IQ", 0, offset)]
        blobs.append(data + b"\0" * (-len(data) % 32))
        offset += len(blobs[-1])
    head = b"".join(out)
    return head + b"\0" * (-len(head) % 32) + b"".join(blobs)


def tiny_gguf(path: Path, llama: Path, **override) -> Path:
    """The tiny llama checkpoint as a GGUF file; override replaces metadata (key -> (kind, value), or
    None to drop it); `dims` (tensor name -> ggml dims) replaces a tensor's declared dims."""
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((llama / "config.json").read_text())
    vocab = [None] * config["vocab_size"]
    for piece, i in json.loads((llama / "tokenizer.json").read_text())["model"]["vocab"].items():
        vocab[i] = piece
    dims_override = override.pop("dims", {})
    meta = {
        "general.architecture": ("str", "llama"),
        "llama.block_count": ("u32", config["num_hidden_layers"]),
        "llama.embedding_length": ("u32", config["hidden_size"]),
        "llama.feed_forward_length": ("u32", config["intermediate_size"]),
        "llama.attention.head_count": ("u32", config["num_attention_heads"]),
        "llama.attention.head_count_kv": ("u32", config["num_key_value_heads"]),
        "llama.attention.layer_norm_rms_epsilon": ("f32", config["rms_norm_eps"]),
        "llama.context_length": ("u32", 128),
        "tokenizer.ggml.model": ("str", "llama"),
        "tokenizer.ggml.tokens": ("arr", ("str", [v or f"<unused{i}>" for i, v in enumerate(vocab)], None)),
    }
    meta.update(override)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    tensors = []
    for hf_name, value in load_file(str(llama / "model.safetensors")).items():
        if hf_name in names:
            name = names[hf_name]
        else:
            _, _, i, *rest = hf_name.split(".")
            name = f"blk.{i}.{parts['.'.join(rest[:-1])]}.weight"
        value = np.ascontiguousarray(value, dtype="<f4")
        tensors.append((name, dims_override.get(name, list(value.shape[::-1])), value.tobytes()))
    metadata = [(k, kind, v) for k, item in meta.items() if item is not None for kind, v in [item]]
    path.write_bytes(gguf_bytes(metadata, tensors))
    return path


# --- NVIDIA-style network pickles ----------------------------------------------------------------

class Reduce:
    """Pickles as the call fn(*args)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@contextlib.contextmanager
def nvidia_globals():
    """Stand-in modules torch_utils.persistence and dnnlib.util while a pickle is written (never called)."""
    def _reconstruct_persistent_obj(meta):
        raise AssertionError("called")

    persistence = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    saved = {name: sys.modules.get(name) for name in ("torch_utils", "torch_utils.persistence")}
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence})
    try:
        yield _reconstruct_persistent_obj
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def network_pickle(path: Path, generator_file: Path, init_kwargs=None, module_src="", replace_tensors=None) -> Path:
    """An NVIDIA-layout pickle {"G_ema": record} of a generator (the bundled one by default) whose
    record tree is flattened into one module record; replace_tensors: name -> object put in the
    record's _parameters instead of that tensor (anything, to lie)."""
    import pickle

    from safetensors.torch import load_file

    tensors = load_file(str(generator_file))
    kwargs = json.loads(generator_file.with_suffix(".json").read_text())["init_kwargs"]
    kwargs = kwargs if init_kwargs is None else init_kwargs
    tensors.update(replace_tensors or {})
    with nvidia_globals() as reconstruct:
        def record(prefix, names, kwargs_):
            children = sorted({n[len(prefix):].split(".")[0] for n in names if "." in n[len(prefix):]})
            own = OrderedDict((n[len(prefix):], tensors[n]) for n in names if "." not in n[len(prefix):])
            state = {"_parameters": own, "_buffers": OrderedDict(), "_init_args": (), "_init_kwargs": kwargs_,
                     "_modules": OrderedDict((c, record(f"{prefix}{c}.", [n for n in names if n.startswith(f"{prefix}{c}.")], {}))
                                             for c in children)}
            meta = dict(type="class", version=6, module_src=module_src, class_name="Generator" if not prefix else "M",
                        state=state)
            return Reduce(reconstruct, meta)

        data = {"G_ema": record("", list(tensors), kwargs)}
        path.write_bytes(pickle.dumps(data, protocol=3))
    return path


def laughs(depth: int = 60):
    """A list of two references to a list of two references ... (2^depth leaves in a pickle of O(depth) bytes)."""
    node: object = [0]
    for _ in range(depth):
        node = [node, node]
    return node


def generator_copy(kit: Kit, directory: Path, **kwargs_changes) -> Path:
    """The bundled generator's files copied to directory/gen.safetensors + gen.json, with init_kwargs
    keys replaced (a key path "mapping_kwargs.num_layers" reaches a nested dict)."""
    weights = Path(shutil.copy(kit.generator, directory / "gen.safetensors"))
    config = json.loads(kit.generator.with_suffix(".json").read_text())
    for key, value in kwargs_changes.items():
        target = config["init_kwargs"]
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    weights.with_suffix(".json").write_text(json.dumps(config))
    return weights


# --- the cases -----------------------------------------------------------------------------------

def invariants_run(model: Path, directory: Path, expect: int = 2, extra=()) -> Case:
    out = directory / "out.safetensors"
    return Case(["invariants", str(model), "-o", str(out), *TOKENS, *extra], expect,
                [str(out)] if expect else [])


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


def scaled_copy(kit, directory):
    """A copy of the tiny llama whose projection matrices are scaled by 1e19 (finite, but terms overflow)."""
    from safetensors.torch import load_file, save_file

    model = copy_model(kit.llama, directory)
    tensors = {k: v * 1e19 if "proj" in k else v for k, v in load_file(str(model / "model.safetensors")).items()}
    save_file(tensors, str(model / "model.safetensors"))
    return model


@case("weights_scaled_1e19_overflow", "non-finite")
def _(kit, directory):
    return invariants_run(scaled_copy(kit, directory), directory)


@case("weights_scaled_1e19_compare", "non-finite")
def _(kit, directory):
    return Case(["compare", str(scaled_copy(kit, directory)), str(kit.llama), "--json", *TOKENS])


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
    weights = generator_copy(kit, directory)
    weights.with_suffix(".json").unlink()
    os.mkfifo(weights.with_suffix(".json"))
    out = directory / "dog.png"
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--generator", str(weights), *TOKENS],
                absent=[str(out)])


@case("fifo_as_generator_weights", "special files")
def _(kit, directory):
    weights = generator_copy(kit, directory)
    weights.unlink()
    os.mkfifo(weights)
    out = directory / "dog.png"
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--generator", str(weights), *TOKENS],
                absent=[str(out)])


# --- PyTorch .bin ---

def _bin_model(kit, directory, transform=None, **save_kwargs) -> Path:
    import torch
    from safetensors.torch import load_file

    model = copy_model(kit.llama, directory)
    state = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    state = transform(state) if transform else state
    torch.save(state, model / "pytorch_model.bin", **save_kwargs)
    return model


@case("torchbin_legacy_format_is_read", "valid inputs")
def _(kit, directory):
    return invariants_run(_bin_model(kit, directory, _use_new_zipfile_serialization=False), directory, expect=0)


def _stride0_embedding(state):
    import torch

    state["model.embed_tokens.weight"] = torch.ones(1).as_strided((1 << 28, 64), (0, 0))
    return state


@case("torchbin_stride0_embedding", "declared sizes")
def _(kit, directory):
    return invariants_run(_bin_model(kit, directory, _stride0_embedding), directory)


@case("torchbin_stride0_embedding_legacy", "declared sizes")
def _(kit, directory):
    return invariants_run(_bin_model(kit, directory, _stride0_embedding, _use_new_zipfile_serialization=False),
                          directory)


@case("torchbin_not_a_state_dict", "torchbin")
def _(kit, directory):
    return invariants_run(_bin_model(kit, directory, lambda state: [1, 2, 3]), directory)


# --- invariants files ---

def invariants_case(name, klass="invariants", **kwargs):
    @case(name, klass)
    def build(kit, directory):
        path = invariants_file(directory / "terms.safetensors", **kwargs)
        return Case(["compare", str(path), str(path), "--json", "-q"])


invariants_case("invariants_layers_strings", layers=("a", "b"))
invariants_case("invariants_layers_floats", layers=(1.0, 2.0))
invariants_case("invariants_tokens_numbers", tokens=[1, 2, 3, 4])
invariants_case("invariants_tokens_repeated", tokens=["a", "a", "b", "c"])
invariants_case("invariants_meta_a_list", meta=[1])
invariants_case("invariants_meta_n_layers_string", meta={"n_layers": "x", "layer_choice": "given"})
invariants_case("invariants_meta_model_type_object", meta={"model_type": {"a": [1]}, "token_strategy": [2]})
invariants_case("invariants_values_three_dims", values_shape=(2, 3, 4))
invariants_case("invariants_header_not_invariants", header_override={"huref": "other"})
invariants_case("invariants_values_1e38", fill=3e38)
invariants_case("invariants_values_nan", fill=float("nan"))
invariants_case("invariants_sparse_5_gb", "declared sizes", values_shape=(2, 3, 20000, 20000),
                tokens=[f"s:{i}" for i in range(20000)], sparse_bytes=2 * 3 * 20000 * 20000 * 4)


@case("invariants_metadata_nested_deeply", "invariants")
def _(kit, directory):
    path = directory / "terms.safetensors"
    text = json.dumps({"__metadata__": {"huref": "[" * 100000 + "]" * 100000},
                       "values": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})
    write_safetensors_raw(path, None, b"", text.encode())
    return Case(["compare", str(path), str(path), "-q"])


# --- FP.json ---

def fingerprint_case(name, klass="fingerprint", command="compare", **changes):
    @case(name, klass)
    def build(kit, directory):
        data = json.loads(kit.fingerprint.read_text())
        data.update(changes)
        path = directory / "fp.json"
        path.write_text(json.dumps(data))
        if command == "compare":
            return Case(["compare", str(path), str(kit.fingerprint), "--json", "-q"])
        out = directory / "dog.png"
        return Case(["show", str(path), "-o", str(out), "-q", "--generator", "bundled"], absent=[str(out)])


fingerprint_case("fingerprint_latent_1e300", "non-finite", latent=[1e300] * 512)
fingerprint_case("fingerprint_latent_1e300_show", "non-finite", command="show", latent=[1e300] * 512)
fingerprint_case("fingerprint_latent_strings", latent=["1"] * 512)
fingerprint_case("fingerprint_latent_short", latent=[0.5] * 3)
fingerprint_case("fingerprint_layers_strings", layers=["a", "b"], layer_choice="given", n_layers=5)
fingerprint_case("fingerprint_layers_floats", layers=[1.5], layer_choice="given", n_layers=5)
fingerprint_case("fingerprint_n_layers_object", layers=[1, 2], layer_choice="given", n_layers={"a": 1})
fingerprint_case("fingerprint_n_tokens_negative", n_tokens=-5)
fingerprint_case("fingerprint_n_tokens_string", n_tokens="64")
fingerprint_case("fingerprint_model_type_list", model_type=["llama"])
fingerprint_case("fingerprint_generator_name_list", command="show", generator={"name": ["bundled"], "sha256": "x"})
fingerprint_case("fingerprint_commitment_list", commitment=[1])
fingerprint_case("fingerprint_format_version_string", format_version="1")


@case("fingerprint_nested_deeply", "fingerprint")
def _(kit, directory):
    path = directory / "fp.json"
    path.write_text('{"format": "huref-fingerprint", "x": ' + "[" * 200000 + "]" * 200000 + "}")
    return Case(["compare", str(path), str(kit.fingerprint), "-q"])


@case("fingerprint_not_utf8", "fingerprint")
def _(kit, directory):
    path = directory / "fp.json"
    path.write_bytes(b'{"format": "\xff"}')
    return Case(["compare", str(path), str(kit.fingerprint), "-q"])


# --- generators: huref's JSON + safetensors, and NVIDIA pickles ---

def generator_case(name, klass="generator", **kwargs_changes):
    @case(name, klass)
    def build(kit, directory):
        weights = generator_copy(kit, directory, **kwargs_changes)
        out = directory / "dog.png"
        return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(weights), "-q"],
                    absent=[str(out)])


BAD_GENERATOR_KWARGS = {
    "resolution_2_40": dict(img_resolution=2 ** 40),
    "resolution_string": dict(img_resolution="64"),
    "resolution_3": dict(img_resolution=3),
    "channel_base_zero": dict(synthesis_kwargs__channel_base=0),
    "channel_max_negative": dict(synthesis_kwargs__channel_max=-1),
    "w_dim_negative": dict(w_dim=-256),
    "z_dim_zero": dict(z_dim=0),
    "z_dim_float": dict(z_dim=512.0),
    "c_dim_huge": dict(c_dim=2 ** 40),
    "img_channels_zero": dict(img_channels=0),
    "mapping_layers_1e7": dict(mapping_kwargs__num_layers=10 ** 7),
    "mapping_layers_zero": dict(mapping_kwargs__num_layers=0),
    "mapping_lr_nan": dict(mapping_kwargs__lr_multiplier=float("nan")),
    "conv_clamp_string": dict(synthesis_kwargs__conv_clamp="256"),
    "unknown_kwarg": dict(synthesis_kwargs__evil=1),
    "mapping_kwargs_list": dict(mapping_kwargs=[1]),
    "resample_filter_huge": dict(synthesis_kwargs__resample_filter=[1] * 100000),
}
for _name, _changes in BAD_GENERATOR_KWARGS.items():
    generator_case(f"generator_json_{_name}", **_changes)


@case("generator_json_nested_deeply", "generator")
def _(kit, directory):
    weights = generator_copy(kit, directory)
    weights.with_suffix(".json").write_text('{"format": "huref-stylegan2", "a": ' + "[" * 200000 + "]" * 200000 + "}")
    out = directory / "dog.png"
    return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(weights), "-q"], absent=[str(out)])


@case("generator_json_not_utf8", "generator")
def _(kit, directory):
    weights = generator_copy(kit, directory)
    weights.with_suffix(".json").write_bytes(b'{"format": "\xff"}')
    out = directory / "dog.png"
    return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(weights), "-q"], absent=[str(out)])


@case("generator_weights_nan", "non-finite")
def _(kit, directory):
    from safetensors.torch import load_file, save_file

    weights = generator_copy(kit, directory)
    tensors = load_file(str(weights))
    name = next(n for n in tensors if n.endswith("affine.weight"))
    tensors[name][0, 0] = float("inf")
    save_file(tensors, str(weights))
    out = directory / "dog.png"
    return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(weights), "-q"], absent=[str(out)])


def pickle_case(name, klass="generator pickle", **kwargs):
    """A show run drawing with a network pickle; kwargs for network_pickle (a callable value is
    called when the case is built)."""
    @case(name, klass)
    def build(kit, directory):
        made = {key: value() if callable(value) else value for key, value in kwargs.items()}
        path = network_pickle(directory / "gen.pkl", kit.small_generator, **made)
        out = directory / "dog.png"
        return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(path), "-q"],
                    absent=[str(out)])


def _bad_kwargs(**changes):
    kwargs = {"z_dim": 512, "c_dim": 0, "w_dim": 8, "img_resolution": 8, "img_channels": 3,
              "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 64, "channel_max": 8}}
    return dict(kwargs, **changes)


def _stride0(shape):
    import torch

    return torch.ones(1).as_strided(shape, (0,) * len(shape))


pickle_case("pickle_resolution_2_40", init_kwargs=_bad_kwargs(img_resolution=2 ** 40))
pickle_case("pickle_channel_base_zero", init_kwargs=_bad_kwargs(synthesis_kwargs={"channel_base": 0}))
pickle_case("pickle_w_dim_negative", init_kwargs=_bad_kwargs(w_dim=-1))
pickle_case("pickle_z_dim_zero", init_kwargs=_bad_kwargs(z_dim=0))
pickle_case("pickle_mapping_layers_1e7", init_kwargs=_bad_kwargs(mapping_kwargs={"num_layers": 10 ** 7}))
pickle_case("pickle_kwargs_billion_laughs", "declared sizes", init_kwargs=_bad_kwargs(mapping_kwargs=laughs()))
pickle_case("pickle_source_billion_laughs", "declared sizes", module_src=laughs())
pickle_case("pickle_parameter_not_a_tensor", replace_tensors={"mapping.fc0.weight": "not a tensor"})
pickle_case("pickle_parameter_a_list", replace_tensors={"mapping.fc0.weight": [[1.0] * 4] * 4})
pickle_case("pickle_stride0_tensor_1_gib", "declared sizes",
            replace_tensors=lambda: {"mapping.fc0.weight": _stride0((1 << 18, 1 << 10))})  # 1 GiB as float32


def forged_storage_tensor(declared_bytes: int):
    """A tensor pickled the way torch pickles one (a storage saved by torch.save in the legacy
    format), whose storage record declares `declared_bytes` while 4660 bytes follow."""
    import torch

    buffer = io.BytesIO()
    torch.save(torch.zeros(0x1234, dtype=torch.uint8).untyped_storage(), buffer, _use_new_zipfile_serialization=False)
    blob = buffer.getvalue()
    at = blob.index(b"M\x34\x12")  # the storage's byte count in its record (pickle BININT2)
    forged = blob[:at] + b"\x8a\x08" + struct.pack("<q", declared_bytes) + blob[at + 3:]  # LONG1, 8 bytes
    return Reduce(torch._utils._rebuild_tensor_v2, Reduce(torch.storage._load_from_bytes, forged), 0, (1,), (1,),
                  False, OrderedDict())


pickle_case("pickle_storage_declares_2_40_bytes", "declared sizes",
            replace_tensors=lambda: {"mapping.fc0.weight": forged_storage_tensor(1 << 40)})
pickle_case("pickle_storage_declares_1_gib", "declared sizes",
            replace_tensors=lambda: {"mapping.fc0.weight": forged_storage_tensor(1 << 30)})


# --- flags and outputs ---

def flags_case(name, argv_of, expect=2, klass="flags"):
    @case(name, klass)
    def build(kit, directory):
        argv, absent = argv_of(kit, directory)
        return Case(argv, expect, absent)


flags_case("verify_min_ics_nan", lambda k, d: (["verify", str(k.llama), "--base", str(k.fingerprint),
                                                 "--min-ics", "nan", *TOKENS], []))
flags_case("verify_min_latent_infinity", lambda k, d: (["verify", str(k.llama), "--base", str(k.fingerprint),
                                                        "--min-latent", "inf", *TOKENS], []))


@case("tokens_over_the_memory_budget", "declared sizes")
def _(kit, directory):
    out = directory / "o.safetensors"
    return Case(["invariants", str(kit.llama), "-o", str(out), "--tokens", "40000", "-q"], 2, [str(out)],
                {"HUREF_MEMORY_GB": "0.001"})


flags_case("tokens_negative", lambda k, d: (["invariants", str(k.llama), "-o", str(d / "o.safetensors"),
                                             "--tokens", "-5", "-q"], [str(d / "o.safetensors")]))
flags_case("layers_not_numbers", lambda k, d: (["invariants", str(k.llama), "-o", str(d / "o.safetensors"),
                                                "--layers", "a,b", *TOKENS], [str(d / "o.safetensors")]))
flags_case("layers_out_of_range", lambda k, d: (["invariants", str(k.llama), "-o", str(d / "o.safetensors"),
                                                 "--layers", "99999999999999999999", *TOKENS],
                                                [str(d / "o.safetensors")]))
flags_case("truncation_nan", lambda k, d: (["show", str(k.fingerprint), "-o", str(d / "o.png"), "--truncation",
                                            "nan", "-q"], [str(d / "o.png")]))
@case("hub_offline", "flags")
def _(kit, directory):
    out = directory / "o.safetensors"
    return Case(["invariants", "nobody-here/no-model", "-o", str(out), "-q"], 2, [str(out)], {"HF_HUB_OFFLINE": "1"})
flags_case("registry_not_a_folder", lambda k, d: (["verify", str(k.llama), "--registry", str(k.fingerprint)], []))
flags_case("message_of_2_mb", lambda k, d: (["invariants", "x" * 2_000_000, "-o", str(d / "o.safetensors")],
                                            [str(d / "o.safetensors")]))


@case("output_is_the_model_file", "outputs")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    return Case(["invariants", str(model), "-o", str(model / "model.safetensors"), *TOKENS])


@case("output_png_over_config", "outputs")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    (model / "config.png").symlink_to(model / "config.json")
    return Case(["fingerprint", str(model), "-o", str(model / "config.png"), *TOKENS])


@case("output_image_over_input_fingerprint", "outputs")
def _(kit, directory):
    fp = Path(shutil.copy(kit.fingerprint, directory / "fp.json"))
    link = directory / "fp.png"
    link.symlink_to(fp)
    return Case(["compare", str(fp), str(kit.fingerprint), "--image", str(link), "-q"])


@case("output_save_fingerprint_equals_output", "outputs")
def _(kit, directory):
    out = directory / "x.json"
    return Case(["fingerprint", str(kit.llama), "-o", str(out) + ".png", "--save-fingerprint", str(out) + ".png",
                 *TOKENS], absent=[str(out) + ".png"])


@case("output_directory_missing", "outputs")
def _(kit, directory):
    out = directory / "missing" / "o.safetensors"
    return Case(["invariants", str(kit.llama), "-o", str(out), *TOKENS])


@case("output_dev_full", "outputs")
def _(kit, directory):
    return Case(["invariants", str(kit.llama), "-o", "/dev/full", *TOKENS])


@case("output_a_directory", "outputs")
def _(kit, directory):
    (directory / "o.png").mkdir()
    return Case(["fingerprint", str(kit.llama), "-o", str(directory / "o.png"), *TOKENS])


@case("output_a_fifo", "outputs")
def _(kit, directory):
    os.mkfifo(directory / "o.safetensors")
    return Case(["invariants", str(kit.llama), "-o", str(directory / "o.safetensors"), *TOKENS])


@case("output_second_fails_first_not_left", "partial outputs")
def _(kit, directory):
    out = directory / "dog.png"
    (directory / "fp.private.safetensors").mkdir()
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--save-fingerprint", str(directory / "fp.json"),
                 *TOKENS], absent=[str(out), str(directory / "fp.json")])


@case("output_fingerprint_into_missing_folder", "partial outputs")
def _(kit, directory):
    out = directory / "dog.png"
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--save-fingerprint",
                 str(directory / "none" / "fp.json"), *TOKENS], absent=[str(out)])


# --- valid inputs that must work ---

@case("nan_outside_the_probe_rows_compares", "valid inputs")
def _(kit, directory):
    """A NaN in an embedding row that no probe selects: the terms are fine; PCS (a side metric over
    the whole embedding) must not block the comparison."""
    from safetensors.torch import load_file, save_file

    from huref.sources import load_vocab
    from huref.tokens import select_tokens

    model = copy_model(kit.llama, directory)
    tensors = load_file(str(model / "model.safetensors"))
    vocab = load_vocab(model)
    ids, _ = select_tokens(vocab, len(vocab), 64)
    unused = next(i for i in range(len(vocab)) if i not in set(ids))
    tensors["model.embed_tokens.weight"][unused, 0] = float("nan")
    save_file(tensors, str(model / "model.safetensors"))
    return Case(["compare", str(model), str(kit.llama), "--json", *TOKENS], expect=0)


# --- interrupts and concurrent runs ---

INTERRUPT_DELAYS = tuple(0.002 * 1.35 ** k for k in range(24))  # 2 ms to 2 s: a run takes about 0.06 s
for _delay in INTERRUPT_DELAYS:
    @case(f"interrupt_after_{_delay * 1000:.0f}ms", "interrupts")
    def _(kit, directory, delay=_delay):
        out = directory / "o.safetensors"
        return Case(["invariants", str(kit.llama), "-o", str(out), "--tokens", "384", "--layers", "0,1,2",
                     "--precision", "float64", "-q"], 130, [], interrupt_after=delay)


@case("concurrent_runs_same_output", "concurrent runs")
def _(kit, directory):
    out = directory / "o.safetensors"
    return Case(["invariants", str(kit.llama), "-o", str(out), *TOKENS], 0, [], concurrent=4)


# --- GGUF (huref/readers/gguf.py) ---

def gguf_case(name, klass="gguf", **override):
    @case(name, klass)
    def build(kit, directory):
        path = tiny_gguf(directory / "model.gguf", kit.llama, **override)
        return invariants_run(path, directory)


gguf_case("gguf_array_length_2_40", "declared sizes",
          **{"tokenizer.ggml.tokens": ("arr", ("str", ["a", "b"], 2 ** 40))})
gguf_case("gguf_architecture_an_array", **{"general.architecture": ("arr", ("str", ["llama"], None))})
gguf_case("gguf_block_count_a_string", **{"llama.block_count": ("str", "three")})
gguf_case("gguf_head_count_zero", **{"llama.attention.head_count": ("u32", 0)})
gguf_case("gguf_heads_not_dividing", **{"llama.attention.head_count_kv": ("u32", 3)})
gguf_case("gguf_embedding_length_huge", **{"llama.embedding_length": ("u64", 2 ** 40)})
gguf_case("gguf_dims_2_40_no_bytes", "declared sizes", dims={"token_embd.weight": [0, 2 ** 40]})
gguf_case("gguf_string_length_2_40", "declared sizes",
          **{"general.name": ("arr", ("u8", [], 2 ** 40))})


# --- the runner ---------------------------------------------------------------------------------

class CaseTimeout(BaseException):
    """A case ran past its time limit (not an Exception: huref's handlers must not catch it)."""


def run_case(case_: dict, seconds: int) -> dict:
    """Run `huref ARGV` in this process: {"code", "stdout", "stderr", "seconds", "rss_growth_mb"}.
    With `interrupt_after`, SIGINT is sent that many seconds into the run (as Ctrl-C would); it
    interrupts huref only while huref runs, never the runner."""
    import resource
    import signal
    import threading
    import time

    from huref import cli

    running = [False]

    def expire(signum, frame):
        raise CaseTimeout()

    def interrupt(signum, frame):
        if running[0]:
            raise KeyboardInterrupt

    saved_env = {key: os.environ.get(key) for key in case_["env"]}
    os.environ.update(case_["env"])
    out, err = io.StringIO(), io.StringIO()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    old = signal.signal(signal.SIGALRM, expire)
    old_interrupt = signal.signal(signal.SIGINT, interrupt)
    timer = None
    if case_.get("interrupt_after") is not None:
        timer = threading.Timer(case_["interrupt_after"], os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
    signal.alarm(seconds)
    sys.argv = ["huref", *case_["argv"]]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            running[0] = True
            cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except CaseTimeout:
        code = "timeout"
    except BaseException as error:  # what main() let escape: reported, never hidden
        code = f"escaped {type(error).__name__}: {error}"[:300]
    finally:
        running[0] = False
        signal.alarm(0)
        if timer is not None:
            timer.cancel()
            timer.join()
        signal.signal(signal.SIGALRM, old)
        signal.signal(signal.SIGINT, old_interrupt)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds_taken = time.monotonic() - start
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"code": code, "stdout": out.getvalue()[-2000:], "stderr": err.getvalue()[-5000:],
            "stderr_chars": len(err.getvalue()), "seconds": round(seconds_taken, 3), "rss_growth_mb": round(growth, 1)}


def run_concurrently(case_: dict, seconds: int) -> dict:
    """`concurrent` forked copies of run_case at once: {"code": [exit codes], ...}."""
    children = []
    for _ in range(case_["concurrent"]):
        pid = os.fork()
        if pid == 0:
            try:
                code = run_case(case_, seconds)["code"]
            finally:
                os._exit(code if isinstance(code, int) else 99)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    return {"code": codes, "stdout": "", "stderr": "", "stderr_chars": 0, "seconds": 0.0, "rss_growth_mb": 0.0}


def main(argv: list[str]) -> None:
    """python -m huref_lab.hostile CASES.json RESULTS.json: run each case, write {name: result}."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    import torch

    torch.set_num_threads(1)
    cases = json.loads(Path(argv[0]).read_text())
    results = {}
    for name, case_ in cases.items():
        run = run_concurrently if case_["concurrent"] else run_case
        results[name] = run(case_, case_.get("limit") or CASE_SECONDS)
        Path(argv[1]).write_text(json.dumps(results))


def cases_json(kit: Kit, root: Path, names=None) -> dict:
    """Build every case (or those named) under root/NAME/; {name: Case as a dict}."""
    built = {}
    for name in names or CASES:
        directory = root / name
        directory.mkdir(parents=True)
        built[name] = asdict(CASES[name][1](kit, directory))
    return built


if __name__ == "__main__":
    main(sys.argv[1:])

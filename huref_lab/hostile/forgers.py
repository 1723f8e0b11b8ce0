"""Forgers: writers of malformed files, each able to make any field of its format lie.

Model directories copied and edited (config.json, safetensors headers and data, PyTorch `.bin`),
huref invariants files, GGUF files written byte by byte, NVIDIA-style network pickles, and the
generator files huref reads. The cases (`huref_lab.hostile.cases`) combine them.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import sys
import types
from collections import OrderedDict
from pathlib import Path


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


def tiny_gguf(path: Path, llama: Path, extra_metadata=(), extra_tensors=(), **override) -> Path:
    """The tiny llama checkpoint as a GGUF file (`tiny_gguf_parts`), with `extra_metadata` [(key,
    kind, value)] and `extra_tensors` [(name, ggml dims, data)] written after its own (a key or
    name may repeat one, a key may be bytes that are not UTF-8)."""
    metadata, tensors = tiny_gguf_parts(llama, **override)
    path.write_bytes(gguf_bytes(metadata + list(extra_metadata), tensors + list(extra_tensors)))
    return path


def tiny_gguf_parts(llama: Path, **override) -> tuple[list, list]:
    """The tiny llama checkpoint as GGUF metadata [(key, kind, value)] and F32 tensors [(name, ggml
    dims, data)]; override replaces metadata (key -> (kind, value), or None to drop it); `dims`
    (tensor name -> ggml dims) replaces a tensor's declared dims."""
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
    return metadata, tensors


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


def generator_copy(generator: Path, directory: Path, **kwargs_changes) -> Path:
    """A generator's files (`generator`: its .safetensors, the .json beside it) copied to
    directory/gen.safetensors + gen.json, with init_kwargs keys replaced (a key path
    "mapping_kwargs__num_layers" reaches a nested dict)."""
    weights = Path(shutil.copy(generator, directory / "gen.safetensors"))
    config = json.loads(generator.with_suffix(".json").read_text())
    for key, value in kwargs_changes.items():
        target = config["init_kwargs"]
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    weights.with_suffix(".json").write_text(json.dumps(config))
    return weights




def with_tensors(model: Path, changes: dict) -> None:
    """Replace, add or (with None) remove tensors of model/model.safetensors."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(model / "model.safetensors"))
    for name, tensor in changes.items():
        if tensor is None:
            tensors.pop(name)
        else:
            tensors[name] = tensor.contiguous()
    save_file(tensors, str(model / "model.safetensors"))


def bytes_tensor(raw: bytes):
    """A uint8 tensor holding `raw` (how bitsandbytes stores its JSON quant state)."""
    import torch

    return torch.tensor(list(raw), dtype=torch.uint8)


def scaled_copy(source: Path, directory: Path) -> Path:
    """A copy of a checkpoint whose projection matrices are scaled by 1e19 (finite, but terms overflow)."""
    from safetensors.torch import load_file, save_file

    model = copy_model(source, directory)
    tensors = {k: v * 1e19 if "proj" in k else v for k, v in load_file(str(model / "model.safetensors")).items()}
    save_file(tensors, str(model / "model.safetensors"))
    return model


def bin_model(source: Path, directory: Path, transform=None, **save_kwargs) -> Path:
    """A copy of a checkpoint with its model.safetensors saved as pytorch_model.bin (torch.save
    with `save_kwargs`), its state dict passed through `transform` first."""
    import torch
    from safetensors.torch import load_file

    model = copy_model(source, directory)
    state = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    state = transform(state) if transform else state
    torch.save(state, model / "pytorch_model.bin", **save_kwargs)
    return model


def stride0(shape):
    """A float32 tensor of `shape` over one stored number (every stride 0)."""
    import torch

    return torch.ones(1).as_strided(shape, (0,) * len(shape))


def storage_blob() -> bytes:
    """A storage of 4660 bytes (0x1234) saved by torch.save in the legacy format (a stream of pickles)."""
    import torch

    buffer = io.BytesIO()
    torch.save(torch.zeros(0x1234, dtype=torch.uint8).untyped_storage(), buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def storage_tensor(blob: bytes):
    """A tensor pickled the way torch pickles one: rebuilt over the storage that `blob` (a
    torch.save stream) holds."""
    import torch

    return Reduce(torch._utils._rebuild_tensor_v2, Reduce(torch.storage._load_from_bytes, blob), 0, (1,), (1,),
                  False, OrderedDict())


def forged_storage_tensor(declared_bytes: int):
    """`storage_tensor` whose storage record declares `declared_bytes` while 4660 bytes follow."""
    blob = storage_blob()
    at = blob.index(b"M\x34\x12")  # the storage's byte count in its record (pickle BININT2)
    return storage_tensor(blob[:at] + b"\x8a\x08" + struct.pack("<q", declared_bytes) + blob[at + 3:])  # LONG1, 8 bytes


def pickle_opcodes(*opcodes: bytes) -> bytes:
    """A protocol-4 pickle stream of the given raw opcodes (with their arguments), then STOP."""
    return b"\x80\x04" + b"".join(opcodes) + b"."


def long_binput(index: int) -> bytes:
    """Pickle opcode LONG_BINPUT: store the top of the stack in memo slot `index` (4-byte index)."""
    return b"r" + struct.pack("<I", index)


def binbytes8(declared: int, data: bytes = b"") -> bytes:
    """Pickle opcode BINBYTES8 declaring `declared` bytes, followed by `data` only."""
    return b"\x8e" + struct.pack("<Q", declared) + data

"""Reader for GGUF checkpoints (llama.cpp's format), presented as if they were Hugging Face ones.

`open_gguf(path)` returns what a Hugging Face directory would give: a config dict holding the keys
huref reads (`huref.config.model_dims`, `huref.architectures.arch_for_config`) built from the GGUF
metadata, a `TensorReader` whose names, shapes and orientation are the Hugging Face ones ([out, in]
for Linear weights), and the vocabulary from `tokenizer.ggml.tokens`.

Reading is lazy, as for safetensors: the header is parsed here (not with `gguf.GGUFReader`, which
builds numpy views for every element of every metadata array, 300,000 of them for a 150k-token
vocabulary with its merges), only the token strings are kept, and tensor bytes are read with
positioned reads, never memory-mapped, so that pages of the file do not count in resident memory.
A row of a GGUF matrix is always a whole number of quant blocks: reading some rows reads and
dequantizes (`gguf.quants`) those rows only.

Names come from llama.cpp's own table: for each llama.cpp architecture, `HF_LAYER_PARTS` lists the
Hugging Face tensor names of its model_type, and `gguf.get_tensor_name_map` (the table llama.cpp's
converter uses) says which GGUF tensor each one became. What else the translation undoes, so that
a GGUF file and the checkpoint it was converted from read alike:
- shapes: GGUF lists dimensions fastest-first (ggml's `ne`); here they are reversed.
- experts: a 3-D `ffn_{gate,up,down}_exps` tensor becomes one 2-D tensor per expert (names with
  `{e}` in `HF_LAYER_PARTS`); gpt-oss's and llama4's too, whose Hugging Face checkpoints fuse gate
  and up (`huref.architectures` lists their per-expert names as an alternative).
- multi-head latent attention (deepseek2): newer converters split `kv_b_proj` into `attn_k_b`
  [heads, kv_rank, nope] (each head's key rows transposed) and `attn_v_b` [heads, v, kv_rank];
  the reader fuses them back into `kv_b_proj` [heads * (nope + v), kv_rank], per head its key rows
  then its value rows (`Entry.value_rows`). Older files hold `attn_kv_b` as is.
- renamed parameters: the converter appends `.weight` to gpt-oss's `sinks` and writes
  `e_score_correction_bias` as `e_score_correction.bias` (`PARAMETER_NAMES` undoes both).
- next-token-prediction layers (glm4moe's nextn/MTP blocks after the causal stack, counted in
  `block_count`): `{arch}.nextn_predict_layers` of them are left out, as they are not part of
  the model's forward pass.
- rotary row order: for `llama` (also Mistral and Mixtral files) llama.cpp's converter reorders the
  rows of each Q and K head from the "rotate half" layout to interleaved pairs; the reader reads
  them back in Hugging Face order (`ROPE_INTERLEAVED`).
- gemma norms: llama.cpp stores `1 + w` for every gemma norm scale; the reader returns `w`, so the
  `rms_plus1` convention of `huref.architectures` gives the stored scale back (`NORM_PLUS_ONE`).

Adding an architecture: a row in `MODEL_TYPES` (llama.cpp name -> model_type), its tensor names in
`HF_LAYER_PARTS`, and membership in `ROPE_INTERLEAVED` / `NORM_PLUS_ONE` where the converter does that
(llama.cpp's `LlamaModel` subclasses permute unless they set `undo_permute = False`).
"""

from __future__ import annotations

import math
import os
import re
import struct
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from huref.config import MAX_SIZE, config_value
from huref.errors import HurefError, excerpt
from huref.readers import TensorReader, as_row_index, open_regular, read_exactly
from huref.readers.safetensors import consecutive_runs

# llama.cpp `general.architecture` -> Hugging Face model_type; a file with experts may be another type.
MODEL_TYPES = {
    "llama": "llama",  # also Mistral: llama.cpp writes it as llama
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen3moe": "qwen3_moe",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "phi3": "phi3",
    "deepseek2": "deepseek_v2",  # also DeepSeek-V3 and GLM-4.7-Flash: see WITH_ROUTER_BIAS
    "glm4moe": "glm4_moe",
    "gpt-oss": "gpt_oss",
    "olmoe": "olmoe",
    "exaone4": "exaone4",
    "smollm3": "smollm3",
    "seed_oss": "seed_oss",
    "granite": "granite",
    "ernie4_5": "ernie4_5",
    "ernie4_5-moe": "ernie4_5_moe",
    "hunyuan-dense": "hunyuan_v1_dense",
    "hunyuan-moe": "hunyuan_v1_moe",
    "cohere2": "cohere2",
    "phimoe": "phimoe",
    "llama4": "llama4_text",
}
WITH_EXPERTS = {"llama": "mixtral"}
# a file whose routers have a choice-only bias (`exp_probs_b`, sigmoid routing) is this model_type
WITH_ROUTER_BIAS = {"deepseek2": "deepseek_v3"}
# config.json flag that says the layers have QK norms, set when the file holds them
QK_NORM_FLAGS = {"glm4moe": "use_qk_norm"}
ROPE_INTERLEAVED = {"llama", "smollm3", "granite"}  # Q/K rows written per head as interleaved rotary pairs
NORM_PLUS_ONE = {"gemma", "gemma2", "gemma3"}  # norm scales written as 1 + w

_ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_QK_NORMS = ("self_attn.q_norm", "self_attn.k_norm")
_NORMS = ("input_layernorm", "post_attention_layernorm")
_GATED = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_EXPERTS = ("mlp.gate", "mlp.experts.{e}.gate_proj", "mlp.experts.{e}.up_proj", "mlp.experts.{e}.down_proj")
_MIXTRAL_EXPERTS = ("block_sparse_moe.gate", "block_sparse_moe.experts.{e}.w1", "block_sparse_moe.experts.{e}.w2",
                    "block_sparse_moe.experts.{e}.w3")
_HUNYUAN_QK_NORMS = ("self_attn.query_layernorm", "self_attn.key_layernorm")
_SHARED = ("mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj", "mlp.shared_experts.down_proj")
_ROUTER_BIAS = ("mlp.gate.e_score_correction",)  # written e_score_correction.bias: see PARAMETER_NAMES
_MLA = ("self_attn.q_proj", "self_attn.q_a_proj", "self_attn.q_a_layernorm", "self_attn.q_b_proj",
        "self_attn.kv_a_proj_with_mqa", "self_attn.kv_a_layernorm", "self_attn.kv_b_proj", "self_attn.o_proj")
# model_type -> Hugging Face tensor names inside model.layers.N (no .weight/.bias); {e}: one per expert
HF_LAYER_PARTS = {
    "llama": _ATTENTION + _NORMS + _GATED,
    "qwen2": _ATTENTION + _NORMS + _GATED,
    "qwen3": _ATTENTION + _QK_NORMS + _NORMS + _GATED,
    "gemma": _ATTENTION + _NORMS + _GATED,
    "gemma2": _ATTENTION + _NORMS + ("pre_feedforward_layernorm", "post_feedforward_layernorm") + _GATED,
    "gemma3_text": _ATTENTION + _QK_NORMS + _NORMS + ("pre_feedforward_layernorm", "post_feedforward_layernorm")
    + _GATED,
    "phi3": ("self_attn.qkv_proj", "self_attn.o_proj") + _NORMS + ("mlp.gate_up_proj", "mlp.down_proj"),
    "mixtral": _ATTENTION + _NORMS + _MIXTRAL_EXPERTS,
    "qwen3_moe": _ATTENTION + _QK_NORMS + _NORMS + _EXPERTS,
    "deepseek_v2": _MLA + _NORMS + _GATED + _EXPERTS + _SHARED,  # dense layers: first_k_dense_replace
    "deepseek_v3": _MLA + _NORMS + _GATED + _EXPERTS + _SHARED + _ROUTER_BIAS,
    "glm4_moe": _ATTENTION + _QK_NORMS + _NORMS + _GATED + _EXPERTS + _SHARED + _ROUTER_BIAS,
    "gpt_oss": _ATTENTION + ("self_attn.sinks",) + _NORMS + ("mlp.router", "mlp.experts.{e}.gate_proj",
                                                          "mlp.experts.{e}.up_proj", "mlp.experts.{e}.down_proj"),
    "olmoe": _ATTENTION + _QK_NORMS + _NORMS + _EXPERTS,
    "exaone4": _ATTENTION + _QK_NORMS + ("post_attention_layernorm", "post_feedforward_layernorm") + _GATED,
    "smollm3": _ATTENTION + _NORMS + _GATED,
    "seed_oss": _ATTENTION + _NORMS + _GATED,
    "granite": _ATTENTION + _NORMS + _GATED,
    "ernie4_5": _ATTENTION + _NORMS + _GATED,
    "ernie4_5_moe": _ATTENTION + _NORMS + _GATED + _EXPERTS + _SHARED + ("mlp.moe_statics.e_score_correction",),
    "hunyuan_v1_dense": _ATTENTION + _HUNYUAN_QK_NORMS + _NORMS + _GATED,
    "hunyuan_v1_moe": _ATTENTION + _HUNYUAN_QK_NORMS + _NORMS + ("mlp.gate.wg",) + _EXPERTS[1:]
    + ("mlp.shared_mlp.gate_proj", "mlp.shared_mlp.up_proj", "mlp.shared_mlp.down_proj"),
    "cohere2": _ATTENTION + ("input_layernorm",) + _GATED,  # one LayerNorm for both sublayers
    "phimoe": _ATTENTION + _NORMS + _MIXTRAL_EXPERTS,
    # dense layers between MoE ones (interleave_moe_layer_step); the checkpoint fuses the experts'
    # gate and up (`huref.architectures` lists per-expert names as an alternative)
    "llama4_text": _ATTENTION + _NORMS + tuple(f"feed_forward.{part}" for part in (
        "gate_proj", "up_proj", "down_proj", "router", "experts.{e}.gate_proj", "experts.{e}.up_proj",
        "experts.{e}.down_proj", "shared_expert.gate_proj", "shared_expert.up_proj", "shared_expert.down_proj")),
}
# Hugging Face name as the reader builds it (table name + .weight/.bias) -> the parameter's real name
PARAMETER_NAMES = {"self_attn.sinks.weight": "self_attn.sinks",
                   "e_score_correction.bias": "e_score_correction_bias"}
HF_GLOBAL_NAMES = ("model.embed_tokens", "model.norm", "lm_head")
EMBEDDING = "model.embed_tokens.weight"
SPLIT_NAME = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")
BLOCK_NAME = re.compile(r"blk\.(0|[1-9][0-9]{0,7})\.")  # a tensor of block N (below 10^8)
MAX_DIMS = 4  # GGML_MAX_DIMS
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9  # gguf.GGUFValueType
_KIND_NAMES = {**dict.fromkeys((0, 1, 2, 3, 4, 5, 10, 11), "integer"), 6: "number", 12: "number", 7: "bool",
               _STRING: "string"}  # GGUF value type -> what a key's type check calls it (arrays: "<item> array")
INTEGER, NUMBER, STRING = {"integer"}, {"number"}, {"string"}
PER_LAYER = {"integer", "integer array"}  # a size, or one per layer (`_single` takes one value)
# The types of the metadata keys huref reads, and of the standard keys whose type the GGUF
# specification (ggml's docs/gguf.md) fixes; a key of another type is refused, as llama.cpp's loader
# refuses it. "{arch}." is the file's general.architecture.
KEY_TYPES = {
    "general.architecture": STRING, "general.name": STRING, "general.alignment": INTEGER,
    "split.no": INTEGER, "split.count": INTEGER, "split.tensors.count": INTEGER,
    "tokenizer.ggml.model": STRING, "tokenizer.ggml.tokens": {"string array"},
    "tokenizer.ggml.token_type": {"integer array"}, "tokenizer.ggml.scores": {"number array"},
    "tokenizer.ggml.merges": {"string array"},
    **{f"tokenizer.ggml.{token}_token_id": INTEGER for token in ("bos", "eos", "unknown", "separator", "padding")},
    "{arch}.block_count": INTEGER, "{arch}.context_length": INTEGER, "{arch}.embedding_length": INTEGER,
    "{arch}.feed_forward_length": PER_LAYER, "{arch}.expert_count": INTEGER, "{arch}.expert_used_count": INTEGER,
    "{arch}.nextn_predict_layers": INTEGER, "{arch}.rope.dimension_count": INTEGER,
    "{arch}.attention.head_count": PER_LAYER, "{arch}.attention.head_count_kv": PER_LAYER,
    "{arch}.attention.key_length": INTEGER, "{arch}.attention.value_length": INTEGER,
    "{arch}.attention.key_length_mla": INTEGER, "{arch}.attention.value_length_mla": INTEGER,
    "{arch}.attention.q_lora_rank": INTEGER, "{arch}.attention.kv_lora_rank": INTEGER,
    "{arch}.attention.layer_norm_epsilon": NUMBER, "{arch}.attention.layer_norm_rms_epsilon": NUMBER,
}


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as a GGUF file stores it: dims slowest-first (reversed ggml `ne`), type, bytes."""

    path: str
    name: str
    shape: tuple[int, ...]
    qtype: object  # gguf.GGMLQuantizationType
    offset: int  # absolute file offset of its first byte
    row_bytes: int  # bytes of one row (shape[-1] values, whole quant blocks)


@dataclass(frozen=True)
class GGUFFile:
    """What huref keeps of one GGUF file's header."""

    metadata: dict  # scalars as Python values, numeric arrays as numpy arrays; string arrays left out
    tokens: list[str] | None  # tokenizer.ggml.tokens
    tensors: dict[str, StoredTensor]
    types: dict[str, str]  # each key's type ("integer", "string", "integer array", ...)


@dataclass(frozen=True)
class Entry:
    """Where one Hugging Face tensor lives in a GGUF file, and how to turn it back."""

    stored: StoredTensor
    shape: tuple[int, ...]  # Hugging Face shape
    expert: int | None = None  # index into a 3-D expert tensor
    row_order: np.ndarray | None = None  # Hugging Face row (bias: element) -> stored one
    minus_one: bool = False
    # MLA: `stored` is attn_k_b [heads, kv_rank, nope] and this attn_v_b [heads, v, kv_rank]; the
    # Hugging Face kv_b_proj holds per head k_b[h]^T, then v_b[h]
    value_rows: StoredTensor | None = None


class GGUFTensorReader(TensorReader):
    """A GGUF file (or its splits) read under Hugging Face tensor names, dequantized to float32."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        super().__init__()
        self.entries = entries
        self._files: dict[str, object] = {}

    def names(self) -> list[str]:
        return list(self.entries)

    def has(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def quant_type(self, name: str) -> str:
        """The GGML storage type of tensor `name` ("Q4_K", "F32", ...)."""
        return self.entries[name].stored.qtype.name

    def _read(self, name: str, rows: Sequence[int] | slice | None):
        entry = self.entries[name]
        n_rows = math.prod(entry.shape[:-1]) if len(entry.shape) > 1 else 1
        index = as_row_index(rows, n_rows)
        index = np.arange(n_rows)[index] if isinstance(index, slice) else index
        if entry.value_rows is not None:
            return self._fused_kv_b(entry, index)
        vector_order = entry.row_order if len(entry.shape) == 1 else None  # a Q/K bias
        if entry.row_order is not None and vector_order is None:
            index = entry.row_order[index]
        values, raw = self._rows(entry.stored, index, (entry.expert or 0) * n_rows)
        if vector_order is not None:
            values = values[:, torch.from_numpy(vector_order)]
        if entry.minus_one:
            values = values - 1.0
        values = values.reshape(entry.shape) if rows is None else values.reshape(-1, entry.shape[-1])
        return values, raw

    def _rows(self, stored: StoredTensor, index: np.ndarray, first_row: int = 0):
        """Rows `first_row + index` of `stored` viewed as [rows, shape[-1]], dequantized to float32
        [len(index), shape[-1]], with the bytes read."""
        from gguf.quants import dequantize

        start = stored.offset + first_row * stored.row_bytes
        picked = np.empty((len(index), stored.row_bytes), dtype=np.uint8)  # whole quant blocks per row
        file = self._file(stored.path)
        for first, count, at in consecutive_runs(index):
            read_exactly(file, picked[at : at + count].reshape(-1), start + first * stored.row_bytes, stored.path)
        try:
            values = dequantize(picked, stored.qtype)
        except NotImplementedError:
            raise HurefError(
                f"tensor '{stored.name}' is stored as {stored.qtype.name}, which the installed "
                "gguf package cannot dequantize"
            ) from None
        values = torch.from_numpy(np.asarray(values, dtype=np.float32)).reshape(len(index), stored.shape[-1])
        return values, memoryview(picked).cast("B")

    def _fused_kv_b(self, entry: Entry, index: np.ndarray):
        """Rows `index` of MLA's kv_b_proj [heads * (nope + v), kv_rank] from attn_k_b and attn_v_b
        (both read whole: a key row of kv_b is a column of k_b)."""
        k_b, v_b = entry.stored, entry.value_rows
        heads, rank, nope = k_b.shape
        keys, raw_k = self._rows(k_b, np.arange(heads * rank))
        values, raw_v = self._rows(v_b, np.arange(math.prod(v_b.shape[:-1])))
        keys = keys.reshape(heads, rank, nope).transpose(1, 2)  # [heads, nope, kv_rank]
        fused = torch.cat([keys, values.reshape(heads, -1, rank)], dim=1).reshape(-1, rank)  # [heads * (nope + v), kv_rank]
        return fused[torch.from_numpy(np.asarray(index, dtype=np.int64))], memoryview(bytes(raw_k) + bytes(raw_v))

    def _file(self, path: str):
        if path not in self._files:
            self._files[path] = file = open(path, "rb", buffering=0)
            weakref.finalize(self, file.close)
        return self._files[path]

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files = {}


def open_gguf(path: str) -> tuple[dict, GGUFTensorReader, list[str | None] | None]:
    """Open a .gguf file, a directory holding one, or split files (give any one of them).

    Returns (config: dict with the Hugging Face config.json keys huref reads, reader with Hugging
    Face tensor names and [out, in] orientation, vocab: token strings by id with control tokens as
    None, or None).
    """
    paths = gguf_paths(Path(path))
    files = [read_gguf(p) for p in paths]
    meta = files[0].metadata
    arch = meta.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise HurefError(
            f"{path}: unsupported GGUF architecture '{str(arch)[:40]}'; supported: {', '.join(sorted(MODEL_TYPES))}"
        )
    tensors = joined_splits(paths, files)
    if "token_embd.weight" not in tensors:
        raise HurefError(f"{path}: no token_embd.weight tensor in the GGUF file")
    config = hf_config(meta, arch, tensors)
    entries = hf_entries(tensors, arch, config)
    return config, GGUFTensorReader(entries), _vocab(files[0])


def joined_splits(paths: list[Path], files: list[GGUFFile]) -> dict[str, StoredTensor]:
    """The tensors of a model's GGUF files, by name, once each file is found to be the split its name
    says (split.no, split.count, split.tensors.count where written; the architecture of the first
    where a later one names one); a tensor in two files is refused."""
    tensors: dict[str, StoredTensor] = {}
    arch = files[0].metadata.get("general.architecture")
    for i, (path, file) in enumerate(zip(paths, files)):
        said = {"split.no": i, "split.count": len(files), "general.architecture": arch}
        for key, expected in said.items():
            if key in file.metadata and file.metadata[key] != expected:
                raise HurefError(f"{path}: GGUF metadata {key} is {excerpt(file.metadata[key])}, but this file is "
                                 f"split {i + 1} of {len(files)} of a '{arch}' model")
        for name, stored in file.tensors.items():
            if name in tensors:
                raise HurefError(f"{path}: tensor {excerpt(name)} is also in {tensors[name].path}")
            tensors[name] = stored
    declared = files[0].metadata.get("split.tensors.count")
    if declared is not None and declared != len(tensors):
        raise HurefError(f"{paths[0]}: GGUF metadata split.tensors.count is {declared}, the splits hold {len(tensors)}")
    return tensors


def gguf_paths(path: Path) -> list[Path]:
    """The file(s) of one GGUF model: the file itself, all its splits, or the one in a directory."""
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        models = sorted({SPLIT_NAME.sub(r"\1", p.name) if SPLIT_NAME.match(p.name) else p.name for p in found})
        if not found:
            raise HurefError(f"{path}: no .gguf file in the directory")
        if len(models) > 1:
            raise HurefError(f"{path}: several GGUF models in the directory ({', '.join(models)}); name one file")
        path = found[0]
    if not path.is_file():
        raise HurefError(f"{path}: no such file")
    split = SPLIT_NAME.match(path.name)
    if not split:
        return [path]
    stem, index, count = split.group(1), int(split.group(2)), int(split.group(3))
    if not 1 <= index <= count:
        raise HurefError(f"{path}: split {index} of {count} is not a split of a GGUF model (1 <= split <= count)")
    names = [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    listed = {entry.name for entry in os.scandir(path.parent) if entry.is_file()}  # one listing, not one stat per part
    missing = [name for name in names if name not in listed]
    if missing:
        more = f" and {len(missing) - 3} more of {count}" if len(missing) > 3 else ""
        raise HurefError(f"{path}: split GGUF is incomplete, missing {', '.join(missing[:3])}{more}")
    return [path.with_name(name) for name in names]


class _Malformed(Exception):
    """The header does not parse; the message says where."""


class _HeaderCursor:
    """Sequential reads from a GGUF header, each checked against the file's size."""

    def __init__(self, file, size: int) -> None:
        self.file, self.size, self.position = file, size, file.tell()

    def take(self, n: int) -> bytes:
        if n < 0 or self.position + n > self.size:
            raise _Malformed("the header runs past the end of the file")
        data = self.file.read(n)
        self.position += n
        return data

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        """A GGUF string: its length, then that many bytes of UTF-8 (the specification's encoding)."""
        raw = self.take(self.scalar("<Q"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"a string that is not UTF-8 ({excerpt(raw)})") from None

    def value(self, kind: int, keep_strings: bool = False) -> tuple[object, str]:
        """One metadata value of GGUFValueType `kind` and its type's name (`_KIND_NAMES`, arrays
        "<item> array"): a Python scalar or str, a numpy array for a numeric array, a list of str for
        a string array when keep_strings, else None (skipped)."""
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind]), _KIND_NAMES[kind]
        if kind == _STRING:
            return self.string(), "string"
        if kind != _ARRAY:
            raise _Malformed(f"unknown metadata value type {kind}")
        item_kind, count = self.scalar("<I"), self.scalar("<Q")
        if count > self.size:  # every item takes at least one byte
            raise _Malformed("a metadata array claims more items than the file holds")
        if item_kind in _SCALARS:
            dtype = np.dtype(_SCALARS[item_kind])
            return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype), _KIND_NAMES[item_kind] + " array"
        items = [self.value(item_kind)[0] for _ in range(count)]
        return (items if keep_strings and item_kind == _STRING else None), f"{_KIND_NAMES.get(item_kind, 'array')} array"


def read_gguf(path: Path) -> GGUFFile:
    """Parse a GGUF header (version 2 or 3, little-endian): metadata, token strings and the place of
    every tensor, each checked to lie inside the file. Nothing else of the file is read."""
    import gguf

    try:
        with open_regular(str(path), buffering=1 << 20) as file:  # a FIFO or device is refused, not waited on
            size = os.fstat(file.fileno()).st_size
            if file.read(4) != b"GGUF":
                raise HurefError(f"{path}: not a GGUF file (no GGUF magic)")
            try:
                return _parse_header(_HeaderCursor(file, size), str(path), gguf)
            except (_Malformed, struct.error, ValueError, OverflowError) as e:  # ValueError: an unknown tensor type
                raise HurefError(f"{path}: truncated or malformed GGUF file ({e})") from None
    except OSError as e:
        raise HurefError(f"{path}: cannot read ({e.strerror})") from None


def _parse_header(cursor: _HeaderCursor, path: str, gguf) -> GGUFFile:
    version = cursor.scalar("<I")
    if version & 0xFFFF == 0:
        raise _Malformed("big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise _Malformed(f"GGUF version {version} is not supported")
    n_tensors, n_fields = cursor.scalar("<Q"), cursor.scalar("<Q")
    if max(n_tensors, n_fields) > cursor.size:
        raise _Malformed("the header claims more entries than the file holds")
    metadata, tokens, types = {}, None, {}
    for _ in range(n_fields):
        key = cursor.string()
        if key in types:
            raise _Malformed(f"metadata key {excerpt(key)} is given twice")
        value, types[key] = cursor.value(cursor.scalar("<I"), keep_strings=key == gguf.Keys.Tokenizer.LIST)
        if key == gguf.Keys.Tokenizer.LIST:
            tokens = value
        elif value is not None:
            metadata[key] = value
    check_types(types, metadata.get("general.architecture"))
    infos = []
    for _ in range(n_tensors):
        name = cursor.string()
        n_dims = cursor.scalar("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Malformed(f"tensor {excerpt(name)} has {n_dims} dimensions")
        ne = [cursor.scalar("<Q") for _ in range(n_dims)]
        infos.append((name, tuple(reversed(ne)), gguf.GGMLQuantizationType(cursor.scalar("<I")), cursor.scalar("<Q")))
    alignment = metadata.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)
    if alignment <= 0 or alignment % 8:
        raise _Malformed(f"general.alignment {alignment} is not a positive multiple of 8")
    data_start = -(-cursor.position // alignment) * alignment
    tensors = {}
    for name, shape, qtype, offset in infos:
        if name in tensors:
            raise _Malformed(f"tensor {excerpt(name)} is listed twice")
        if 0 in shape:  # nothing a model reads is empty; a 0 beside a million experts would still drive a loop
            raise _Malformed(f"tensor {excerpt(name)} declares a dimension of 0")
        block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        if shape[-1] % block:
            raise _Malformed(f"tensor {name} rows are not whole {qtype.name} blocks")
        row_bytes = shape[-1] // block * block_bytes
        if data_start + offset + math.prod(shape[:-1]) * row_bytes > cursor.size:
            raise _Malformed(f"tensor {name} is cut short")
        if any(d > cursor.size for d in shape):  # a 2^40 dimension beside a zero one has no bytes yet drives loops
            raise _Malformed(f"tensor {name} declares a dimension larger than the file")
        tensors[name] = StoredTensor(path, name, shape, qtype, data_start + offset, row_bytes)
    return GGUFFile(metadata, tokens, tensors, types)


def check_types(types: dict[str, str], arch) -> None:
    """Refuse a metadata key of `KEY_TYPES` whose value has another type (`_Malformed`)."""
    for pattern, allowed in KEY_TYPES.items():
        key = pattern.format(arch=arch) if isinstance(arch, str) else pattern
        if key in types and types[key] not in allowed:
            raise _Malformed(f"metadata {key} is of type {types[key]}, not {' or '.join(sorted(allowed))}")


def _vocab(file: GGUFFile) -> list[str | None] | None:
    """Token strings by id; control tokens (tokenizer.ggml.token_type CONTROL) are None."""
    import gguf

    if file.tokens is None:
        return None
    vocab: list[str | None] = list(file.tokens)
    types = file.metadata.get(gguf.Keys.Tokenizer.TOKEN_TYPE)
    if isinstance(types, np.ndarray):
        for i in np.flatnonzero(types[: len(vocab)] == gguf.TokenType.CONTROL).tolist():
            vocab[i] = None
    return vocab


def _single(value, key: str):
    """A per-layer array in the metadata must hold one value for the whole model."""
    if isinstance(value, np.ndarray):
        if value.size == 0 or (value != value[0]).any():
            raise HurefError(f"GGUF metadata '{key}' differs between layers, which huref does not support")
        return value[0].item()
    return value


def hf_config(meta: dict, arch: str, tensors: dict[str, StoredTensor]) -> dict:
    """The config.json keys huref reads (model_type and the sizes `huref.config.model_dims` takes),
    plus vocab_size, tie_word_embeddings and _name_or_path (general.name), from GGUF metadata (`{arch}.embedding_length`, ...)."""
    from gguf import Keys

    def get(key: str, default=None):
        name = key.format(arch=arch)
        return _single(meta.get(name, default), name)

    def size(key: str, default=None, low: int = 1) -> int:
        """A size from the metadata, checked: an integer in [low, MAX_SIZE]."""
        value = get(key, default)
        if value is None:
            raise HurefError(f"GGUF metadata lacks {key.format(arch=arch)}")
        if isinstance(value, (np.integer, np.floating)):
            value = value.item()
        name = key.format(arch=arch)
        return config_value({name: value}, name, kind=int, low=low, high=MAX_SIZE, where="GGUF metadata")

    hidden = size(Keys.LLM.EMBEDDING_LENGTH)
    n_layers = size(Keys.LLM.BLOCK_COUNT) - size(Keys.LLM.NEXTN_PREDICT_LAYERS, 0, low=0)
    if n_layers <= 0:
        raise HurefError("GGUF metadata declares no layers before its next-token-prediction layers")
    n_heads = size(Keys.Attention.HEAD_COUNT)
    n_kv_heads = size(Keys.Attention.HEAD_COUNT_KV, n_heads)
    if hidden % n_heads or n_heads % n_kv_heads:
        raise HurefError(f"GGUF metadata declares {n_heads} heads and {n_kv_heads} key/value heads for hidden "
                         f"size {hidden}, which do not divide")
    n_experts = size(Keys.LLM.EXPERT_COUNT, 0, low=0)
    eps = get(Keys.Attention.LAYERNORM_RMS_EPS, get(Keys.Attention.LAYERNORM_EPS, 1e-6))
    if isinstance(eps, (np.integer, np.floating)):
        eps = eps.item()
    eps = config_value({"norm epsilon": eps}, "norm epsilon", kind=float, low=0.0, where="GGUF metadata")
    model_type = WITH_EXPERTS.get(arch, MODEL_TYPES[arch]) if n_experts else MODEL_TYPES[arch]
    if arch in WITH_ROUTER_BIAS and any(name.endswith(".exp_probs_b.bias") for name in tensors):
        model_type = WITH_ROUTER_BIAS[arch]
    config = {
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": size(Keys.Attention.KEY_LENGTH, 0, low=0) or hidden // n_heads,
        "rms_norm_eps": eps,
        "vocab_size": tensors["token_embd.weight"].shape[0],
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    if n_experts:
        config["num_local_experts"] = n_experts
    if arch in QK_NORM_FLAGS:
        config[QK_NORM_FLAGS[arch]] = any(name.endswith(".attn_q_norm.weight") for name in tensors)
    if get(Keys.Attention.KV_LORA_RANK) is not None:  # MLA: llama.cpp writes it as one key/value head
        rope = size(Keys.Rope.DIMENSION_COUNT)
        key_length = size(Keys.Attention.KEY_LENGTH_MLA, get(Keys.Attention.KEY_LENGTH))
        if key_length <= rope:
            raise HurefError(f"GGUF metadata declares MLA keys of {key_length} dimensions, {rope} of them rotary")
        config.update(num_key_value_heads=n_heads, head_dim=rope, q_lora_rank=size(Keys.Attention.Q_LORA_RANK, 0, low=0),
                      kv_lora_rank=size(Keys.Attention.KV_LORA_RANK), qk_rope_head_dim=rope,
                      qk_nope_head_dim=key_length - rope,
                      v_head_dim=size(Keys.Attention.VALUE_LENGTH_MLA, get(Keys.Attention.VALUE_LENGTH)))
    name = meta.get(Keys.General.NAME)
    if isinstance(name, str) and name.strip():
        config["_name_or_path"] = name.strip()[:200]  # the published name: huref's label for the model
    return config


def _rope_row_order(n_rows: int, n_heads: int) -> np.ndarray:
    """Hugging Face row -> stored row, undoing llama.cpp's per-head rotary reordering.

    llama.cpp writes row (h, i, j) of the Hugging Face head layout [n_heads, 2, head_dim/2] at
    position (h, j, i): the two rotary halves become interleaved pairs.
    """
    if n_heads <= 0 or n_rows % (2 * n_heads):
        raise HurefError(f"a rotary projection of {n_rows} rows does not split into {n_heads} heads")
    stored_from_hf = np.arange(n_rows).reshape(n_heads, 2, n_rows // n_heads // 2).swapaxes(1, 2).reshape(-1)
    return np.argsort(stored_from_hf)


def blocks_present(tensors, n_layers: int) -> list[int]:
    """The block indices below n_layers that name a tensor ("blk.3.attn_q.weight"), ascending: what
    the file holds, whatever its block_count claims (`huref.config.check_depth` refuses a claim the
    blocks do not back when the model is opened)."""
    return sorted({int(match.group(1)) for name in tensors
                   if (match := BLOCK_NAME.match(name)) and int(match.group(1)) < n_layers})


def name_map_of(arch: str):
    """llama.cpp's tensor name table (`gguf.get_tensor_name_map`) for `arch`, built for block 0
    alone: every block names its tensors alike ("blk.{i}." before the same part), so a table sized
    by a claimed block count is never built."""
    import gguf

    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    return gguf.get_tensor_name_map(arch_enum, 1)


def block_part(name_map, part: str) -> str | None:
    """The GGUF name of a layer's Hugging Face tensor `part` ("self_attn.q_proj") after its block's
    "blk.{i}." ("attn_q"), or None when the architecture has no such tensor."""
    gguf_name = name_map.get_name(f"model.layers.0.{part}")
    return gguf_name[len("blk.0."):] if gguf_name is not None and gguf_name.startswith("blk.0.") else None


def gguf_to_hf_names(arch: str, model_type: str, blocks: list[int]) -> dict[str, str]:
    """GGUF tensor base name -> Hugging Face one ("blk.3.attn_q" -> "model.layers.3.self_attn.q_proj"),
    asked of llama.cpp's own table for every name in `HF_LAYER_PARTS[model_type]`, for the given
    blocks; a 3-D expert tensor maps to a name with `{e}`."""
    name_map = name_map_of(arch)
    names = {}
    for hf_name in HF_GLOBAL_NAMES:
        gguf_name = name_map.get_name(hf_name)
        if gguf_name is not None:  # None: a tensor the architecture never has (gemma's lm_head)
            names[gguf_name] = hf_name
    for part in HF_LAYER_PARTS[model_type]:
        stored = block_part(name_map, part.replace(".{e}", ""))  # llama.cpp names the stacked tensor
        if stored is not None:
            names.update({f"blk.{i}.{stored}": f"model.layers.{i}.{part}" for i in blocks})
    return names


def hf_entries(tensors: dict[str, StoredTensor], arch: str, config: dict) -> dict[str, Entry]:
    """Map every GGUF tensor huref can use to its Hugging Face name (others are left out)."""
    names = gguf_to_hf_names(arch, config["model_type"], blocks_present(tensors, config["num_hidden_layers"]))
    entries: dict[str, Entry] = {}
    for name, stored in tensors.items():
        base, _, kind = name.rpartition(".")
        hf_base = names.get(base)
        if hf_base is None or kind not in ("weight", "bias"):
            continue
        if "{e}" in hf_base:  # [n_experts, out, in] weights, [n_experts, out] biases
            if len(stored.shape) != (3 if kind == "weight" else 2) or stored.shape[0] != config.get("num_local_experts"):
                raise HurefError(f"GGUF tensor {name} should hold one {kind} per expert "
                                 f"({config.get('num_local_experts', 0)} experts) but has shape {stored.shape}")
            for e in range(stored.shape[0]):
                entries[f"{hf_base.format(e=e)}.{kind}"] = Entry(stored, stored.shape[1:], expert=e)
            continue
        row_order = None
        if arch in ROPE_INTERLEAVED and hf_base.endswith(("self_attn.q_proj", "self_attn.k_proj")):
            key = "num_attention_heads" if hf_base.endswith("q_proj") else "num_key_value_heads"
            row_order = _rope_row_order(stored.shape[0], config[key])
        minus_one = arch in NORM_PLUS_ONE and hf_base.endswith("norm") and kind == "weight"
        entries[_parameter_name(f"{hf_base}.{kind}")] = Entry(stored, stored.shape, row_order=row_order,
                                                               minus_one=minus_one)
    if "kv_lora_rank" in config:
        entries.update(_fused_kv_b_entries(tensors, arch, config, entries))
    return entries


def _parameter_name(hf_name: str) -> str:
    """The real parameter name of a table-built Hugging Face name (see PARAMETER_NAMES)."""
    for built, real in PARAMETER_NAMES.items():
        if hf_name.endswith("." + built):
            return hf_name[: -len(built)] + real
    return hf_name


def _fused_kv_b_entries(tensors: dict[str, StoredTensor], arch: str, config: dict, found: dict) -> dict[str, Entry]:
    """`self_attn.kv_b_proj.weight` of each layer whose file holds attn_k_b and attn_v_b instead,
    their shapes checked against the MLA sizes."""
    name_map = name_map_of(arch)
    k_part, v_part = block_part(name_map, "self_attn.k_b_proj"), block_part(name_map, "self_attn.v_b_proj")
    heads, rank = config["num_attention_heads"], config["kv_lora_rank"]
    nope, v = config["qk_nope_head_dim"], config["v_head_dim"]
    entries = {}
    for i in blocks_present(tensors, config["num_hidden_layers"]):
        prefix = f"model.layers.{i}.self_attn."
        k_b = tensors.get(f"blk.{i}.{k_part}.weight")
        v_b = tensors.get(f"blk.{i}.{v_part}.weight")
        if prefix + "kv_b_proj.weight" in found or k_b is None or v_b is None:
            continue
        if k_b.shape != (heads, rank, nope) or v_b.shape != (heads, v, rank):
            raise HurefError(f"GGUF tensors {k_b.name} {k_b.shape} and {v_b.name} {v_b.shape} do not fit "
                             f"{heads} heads of {nope} key and {v} value dimensions over a latent of {rank}")
        entries[prefix + "kv_b_proj.weight"] = Entry(k_b, (heads * (nope + v), rank), value_rows=v_b)
    return entries

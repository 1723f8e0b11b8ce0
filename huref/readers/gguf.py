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
dequantizes (`huref.readers.ggml_blocks`, straight into the dtype asked for) those rows only.

Names come from llama.cpp's own table: the row of `huref.architectures` for the file's model_type
names each role's tensor, and `gguf.get_tensor_name_map` (the table llama.cpp's converter uses) says
which GGUF tensor each one became. The row's `gguf` entries (`GGUFArch`) say which llama.cpp
architecture is read as which model_type, and what else the converter changed. What the translation
undoes, so that a GGUF file and the checkpoint it was converted from read alike:
- shapes: GGUF lists dimensions fastest-first (ggml's `ne`); here they are reversed.
- experts: a 3-D `ffn_{gate,up,down}_exps` tensor becomes one 2-D tensor per expert (the row's
  per-expert names, with `{e}`); gpt-oss's and llama4's too, whose Hugging Face checkpoints fuse gate
  and up (their rows list per-expert names as an alternative).
- multi-head latent attention (deepseek2): newer converters split `kv_b_proj` into `attn_k_b`
  [heads, kv_rank, nope] (each head's key rows transposed) and `attn_v_b` [heads, v, kv_rank];
  the reader fuses them back into `kv_b_proj` [heads * (nope + v), kv_rank], per head its key rows
  then its value rows (`Entry.value_rows`). Older files hold `attn_kv_b` as is.
- renamed parameters: the converter appends `.weight` to gpt-oss's `sinks` and writes
  `e_score_correction_bias` as `e_score_correction.bias` (`PARAMETER_NAMES`).
- next-token-prediction layers (glm4moe's nextn/MTP blocks after the causal stack, counted in
  `block_count`): `{arch}.nextn_predict_layers` of them are left out, as they are not part of
  the model's forward pass.
- rotary row order: where the converter reorders the rows of each Q and K head from the "rotate
  half" layout to interleaved pairs (`GGUFArch.rope_interleaved`: llama, also Mistral and Mixtral
  files, smollm3, granite), the reader reads them back in Hugging Face order.
- plus-one norms: llama.cpp stores `1 + w` for a norm of a plus-one kind (`rms_plus1`: gemma's), as
  ggml's norms multiply by the stored scale; the reader returns `w`, so the row's norm kind gives the
  stored scale back.
- a config flag the file leaves out (glm4moe's `use_qk_norm`, `GGUFArch.qk_norm_flag`) is set from
  whether the file holds QK norms.

Adding an architecture: a `GGUFArch` in the `gguf` of its row in `huref.architectures`.
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

import gguf
import numpy as np
import torch
from gguf import Keys

from huref.architectures import GGUF_ARCHS, PLUS_ONE_KINDS, FFN, ArchSpec, GGUFArch, Norm, Proj, arch_for_config
from huref.config import MAX_SIZE, config_value
from huref.errors import HurefError, excerpt
from huref.readers import TensorReader, as_row_index, file_size, open_regular, read_pieces
from huref.readers.ggml_blocks import dequantize
from huref.readers.safetensors import consecutive_runs

ARCH_NAMES = sorted({entry.arch for entry in GGUF_ARCHS})  # the llama.cpp architectures huref reads
# llama.cpp's name for a parameter (the converter renames these before asking its table) -> the checkpoint's
PARAMETER_NAMES = {"self_attn.sinks.weight": "self_attn.sinks",
                   "e_score_correction.bias": "e_score_correction_bias"}
SPLIT_NAME = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")
BLOCK_NAME = re.compile(r"blk\.(0|[1-9][0-9]{0,7})\.")  # a tensor of block N (below 10^8)
MAX_DIMS = 4  # GGML_MAX_DIMS
_STRING, _ARRAY = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY
# GGUF scalar value type -> its little-endian numpy type, named as in gguf-py's GGUFValueType (UINT32 -> uint32)
_SCALARS = {int(t): np.dtype(t.name.lower()).newbyteorder("<") for t in gguf.GGUFValueType
            if t not in (_STRING, _ARRAY)}
# GGUF value type -> what a key's type check calls it (arrays: "<item> array")
_KIND_NAMES = {**{t: {"u": "integer", "i": "integer", "f": "number", "b": "bool"}[d.kind] for t, d in _SCALARS.items()},
               int(_STRING): "string"}
INTEGER, NUMBER, STRING = {"integer"}, {"number"}, {"string"}
PER_LAYER = {"integer", "integer array"}  # a size, or one per layer (`_single` takes one value)
# The types of the metadata keys huref reads, and of the standard keys whose type the GGUF
# specification (ggml's docs/gguf.md) fixes; a key of another type is refused, as llama.cpp's loader
# refuses it. The keys are gguf-py's constants, spelled as llama.cpp writes and reads them (the
# specification's separator_token_id is llama.cpp's seperator_token_id); gguf-py has no table of
# their types (its writer's add_* methods fix them in code), so the types are listed here.
# "{arch}." is the file's general.architecture.
KEY_TYPES = {
    Keys.General.ARCHITECTURE: STRING, Keys.General.NAME: STRING, Keys.General.ALIGNMENT: INTEGER,
    **dict.fromkeys((Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT),
                    INTEGER),
    Keys.Tokenizer.MODEL: STRING, Keys.Tokenizer.LIST: {"string array"}, Keys.Tokenizer.TOKEN_TYPE: {"integer array"},
    Keys.Tokenizer.SCORES: {"number array"}, Keys.Tokenizer.MERGES: {"string array"},
    **dict.fromkeys((Keys.Tokenizer.BOS_ID, Keys.Tokenizer.EOS_ID, Keys.Tokenizer.UNK_ID, Keys.Tokenizer.SEP_ID,
                     Keys.Tokenizer.PAD_ID), INTEGER),
    **dict.fromkeys((Keys.LLM.BLOCK_COUNT, Keys.LLM.CONTEXT_LENGTH, Keys.LLM.EMBEDDING_LENGTH, Keys.LLM.EXPERT_COUNT,
                     Keys.LLM.EXPERT_USED_COUNT, Keys.LLM.NEXTN_PREDICT_LAYERS, Keys.Rope.DIMENSION_COUNT,
                     Keys.Attention.KEY_LENGTH, Keys.Attention.VALUE_LENGTH, Keys.Attention.KEY_LENGTH_MLA,
                     Keys.Attention.VALUE_LENGTH_MLA, Keys.Attention.Q_LORA_RANK, Keys.Attention.KV_LORA_RANK),
                    INTEGER),
    **dict.fromkeys((Keys.LLM.FEED_FORWARD_LENGTH, Keys.Attention.HEAD_COUNT, Keys.Attention.HEAD_COUNT_KV), PER_LAYER),
    **dict.fromkeys((Keys.Attention.LAYERNORM_EPS, Keys.Attention.LAYERNORM_RMS_EPS), NUMBER),
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
    """A GGUF file (or its splits) read under Hugging Face tensor names, dequantized into the dtype asked for."""

    def __init__(self, entries: dict[str, Entry], metadata: dict | None = None) -> None:
        super().__init__()
        self.entries = entries
        self.metadata = metadata or {}  # the (first) file's metadata: general.base_model.*, general.name, ...
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

    def _read(self, name: str, rows: Sequence[int] | slice | None, dtype: torch.dtype = torch.float32):
        entry = self.entries[name]
        n_rows = math.prod(entry.shape[:-1]) if len(entry.shape) > 1 else 1
        index = as_row_index(rows, n_rows)
        index = np.arange(n_rows)[index] if isinstance(index, slice) else index
        if entry.value_rows is not None:
            return self._fused_kv_b(entry, index, dtype)
        vector_order = entry.row_order if len(entry.shape) == 1 else None  # a Q/K bias
        if entry.row_order is not None and vector_order is None:
            index = entry.row_order[index]
        # a norm stored as 1 + w is decoded in float32, so w is rounded once
        values, raw = self._rows(entry.stored, index, (entry.expert or 0) * n_rows,
                                 torch.float32 if entry.minus_one else dtype)
        if vector_order is not None:
            values = values[:, torch.from_numpy(vector_order)]
        if entry.minus_one:
            values = values.to(torch.float32) - 1.0
        values = values.reshape(entry.shape) if rows is None else values.reshape(-1, entry.shape[-1])
        return values, raw

    def _rows(self, stored: StoredTensor, index: np.ndarray, first_row: int = 0, dtype: torch.dtype = torch.float32):
        """Rows `first_row + index` of `stored` viewed as [rows, shape[-1]], decoded into `dtype`
        [len(index), shape[-1]] (`huref.readers.ggml_blocks`; plain float types as stored), with the
        bytes read."""
        start = stored.offset + first_row * stored.row_bytes
        picked = np.empty((len(index), stored.row_bytes), dtype=np.uint8)  # whole quant blocks per row
        read_pieces(self._file(stored.path), [(start + first * stored.row_bytes, picked[at : at + count].reshape(-1))
                                              for first, count, at in consecutive_runs(index)], stored.path)
        try:
            values = dequantize(picked, stored.qtype, dtype)
        except NotImplementedError:
            raise HurefError(
                f"tensor '{stored.name}' is stored as {stored.qtype.name}, which the installed "
                "gguf package cannot dequantize"
            ) from None
        return values.reshape(len(index), stored.shape[-1]), memoryview(picked).cast("B")

    def _fused_kv_b(self, entry: Entry, index: np.ndarray, dtype: torch.dtype):
        """Rows `index` of MLA's kv_b_proj [heads * (nope + v), kv_rank] from attn_k_b and attn_v_b
        (both read whole: a key row of kv_b is a column of k_b)."""
        k_b, v_b = entry.stored, entry.value_rows
        heads, rank, nope = k_b.shape
        keys, raw_k = self._rows(k_b, np.arange(heads * rank), dtype=dtype)
        values, raw_v = self._rows(v_b, np.arange(math.prod(v_b.shape[:-1])), dtype=dtype)
        keys = keys.reshape(heads, rank, nope).transpose(1, 2)  # [heads, nope, kv_rank]
        fused = torch.cat([keys, values.reshape(heads, -1, rank)], dim=1).reshape(-1, rank)  # [heads * (nope + v), kv_rank]
        return fused[torch.from_numpy(np.asarray(index, dtype=np.int64))], memoryview(bytes(raw_k) + bytes(raw_v))

    def _file(self, path: str):
        if path not in self._files:
            self._files[path] = file = open_regular(path, buffering=0)
            weakref.finalize(self, file.close)
        return self._files[path]

    def prefetch(self, name: str) -> None:
        """Ask the kernel to start reading tensor `name`'s stored bytes into the page cache."""
        entry = self.entries[name]
        for stored in (entry.stored, entry.value_rows):
            if stored is not None and hasattr(os, "posix_fadvise") and not hasattr(stored.path, "open_remote"):
                n_rows = math.prod(stored.shape[:-1])
                first = stored.offset + (entry.expert or 0) * math.prod(entry.shape[:-1]) * stored.row_bytes
                size = (math.prod(entry.shape[:-1]) if entry.expert is not None else n_rows) * stored.row_bytes
                os.posix_fadvise(self._file(stored.path).fileno(), first, size, os.POSIX_FADV_WILLNEED)

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
    return open_gguf_files(gguf_paths(Path(path)), path)


def open_gguf_files(paths: list, where) -> tuple[dict, "GGUFTensorReader", list[str | None] | None]:
    """`open_gguf` of one model's GGUF file or splits, in order: local paths or files on the Hub
    (`huref.readers.remote.HubFile`); `where` names the model in messages. The reader keeps the first
    file's metadata (`metadata`)."""
    files = [read_gguf(p) for p in paths]
    meta = files[0].metadata
    arch = meta.get("general.architecture")
    if arch not in ARCH_NAMES:
        raise HurefError(f"{where}: unsupported GGUF architecture '{str(arch)[:40]}'; supported: {', '.join(ARCH_NAMES)}")
    tensors = joined_splits(paths, files)
    if "token_embd.weight" not in tensors:
        raise HurefError(f"{where}: no token_embd.weight tensor in the GGUF file")
    config, written = hf_config(meta, arch, tensors)
    return config, GGUFTensorReader(hf_entries(tensors, written, config), meta), _vocab(files[0])


def joined_splits(paths: list, files: list[GGUFFile]) -> dict[str, StoredTensor]:
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
            return np.frombuffer(self.take(_SCALARS[kind].itemsize), dtype=_SCALARS[kind])[0].item(), _KIND_NAMES[kind]
        if kind == _STRING:
            return self.string(), "string"
        if kind != _ARRAY:
            raise _Malformed(f"unknown metadata value type {kind}")
        item_kind, count = self.scalar("<I"), self.scalar("<Q")
        if count > self.size:  # every item takes at least one byte
            raise _Malformed("a metadata array claims more items than the file holds")
        if item_kind in _SCALARS:
            dtype = _SCALARS[item_kind]
            return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype), _KIND_NAMES[item_kind] + " array"
        items = [self.value(item_kind)[0] for _ in range(count)]
        return (items if keep_strings and item_kind == _STRING else None), f"{_KIND_NAMES.get(item_kind, 'array')} array"


def read_gguf(path) -> GGUFFile:
    """Parse a GGUF header (version 2 or 3, little-endian): metadata, token strings and the place of
    every tensor, each checked to lie inside the file. Nothing else of the file is read. `path`: a
    local path or a file on the Hub (`huref.readers.remote.HubFile`, its header fetched ahead)."""
    source = path if hasattr(path, "open_remote") else str(path)
    try:
        with open_regular(source, buffering=1 << 20) as file:  # a FIFO or device is refused, not waited on
            size = file_size(file)
            if file.read(4) != b"GGUF":
                raise HurefError(f"{path}: not a GGUF file (no GGUF magic)")
            try:
                return _parse_header(_HeaderCursor(file, size), source)
            except (_Malformed, struct.error, ValueError, OverflowError) as e:  # ValueError: an unknown tensor type
                raise HurefError(f"{path}: truncated or malformed GGUF file ({e})") from None
    except OSError as e:
        raise HurefError(f"{path}: cannot read ({e.strerror})") from None


def _parse_header(cursor: _HeaderCursor, path) -> GGUFFile:
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


def hf_config(meta: dict, arch: str, tensors: dict[str, StoredTensor]) -> tuple[dict, GGUFArch]:
    """The config.json keys huref reads (model_type and the sizes `huref.config.model_dims` takes),
    plus vocab_size, tie_word_embeddings and _name_or_path (general.name), from GGUF metadata
    (`{arch}.embedding_length`, ...); and the `GGUFArch` the file is read with (`read_as`)."""

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
    written = read_as(arch, n_experts, tensors)
    config = {
        "model_type": written.model_types[0],
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
    if written.qk_norm_flag:
        config[written.qk_norm_flag] = any(name.endswith(".attn_q_norm.weight") for name in tensors)
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
    return config, written


def read_as(arch: str, n_experts: int, tensors) -> GGUFArch:
    """The `GGUF_ARCHS` entry a file of llama.cpp architecture `arch` is read with: the one whose `when`
    holds for the file (it has experts; its routers have a choice-only bias, `exp_probs_b`), else the
    one without a condition."""
    def holds(when: str | None) -> bool:
        if when == "experts":
            return n_experts > 0
        if when == "router_bias":
            return any(name.endswith(".exp_probs_b.bias") for name in tensors)
        return True

    return max((entry for entry in GGUF_ARCHS if entry.arch == arch and holds(entry.when)),
               key=lambda entry: entry.when is not None)


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
    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    return gguf.get_tensor_name_map(arch_enum, 1)


def block_part(name_map, layer: str, part: str) -> str | None:
    """The GGUF name of a layer's Hugging Face tensor `part` ("self_attn.q_proj") after its block's
    "blk.{i}." ("attn_q"), or None when the architecture has no such tensor; `layer` is the row's
    layer prefix ("model.layers.{i}.")."""
    gguf_name = name_map.get_name(layer.format(i=0) + part)
    return gguf_name[len("blk.0."):] if gguf_name is not None and gguf_name.startswith("blk.0.") else None


def llama_cpp_name(name: str) -> str:
    """A checkpoint parameter's name as llama.cpp's converter renames it before asking its table
    (`PARAMETER_NAMES`: "mlp.gate.e_score_correction_bias" -> "mlp.gate.e_score_correction.bias");
    other names as they are."""
    for stored, real in PARAMETER_NAMES.items():
        if name == real or name.endswith("." + real):
            return name[: len(name) - len(real)] + stored
    return name


def stored_base(name: str) -> str:
    """The name llama.cpp's table is asked for a checkpoint tensor by: `llama_cpp_name` without
    .weight / .bias ("mlp.gate.e_score_correction")."""
    name = llama_cpp_name(name)
    return name.rpartition(".")[0] if name.endswith((".weight", ".bias")) else name


def layer_parts(spec: ArchSpec) -> dict[str, Proj | Norm | None]:
    """The tensors of one layer of `spec` a GGUF file can hold, by base name inside the layer
    ("self_attn.q_proj"; per expert "mlp.experts.{e}.gate_proj"), each with the Proj or Norm of the
    row that names it (None: a router, router bias or sinks). Attention (plain or latent), norms and
    every FFN alternative with its router, router bias and shared expert, except an alternative whose
    experts are one fused or transposed 3-D tensor: llama.cpp stores experts stacked [expert, out, in],
    which the row's per-expert alternative reads."""
    mla = spec.mla
    projs = [spec.q, spec.k, spec.v, spec.o] + ([mla.q, mla.q_a, mla.q_b, mla.kv_a, mla.kv_b] if mla else [])
    norms = (spec.attn_norm + spec.ffn_norm + spec.attn_post_norm + spec.ffn_post_norm + spec.q_norm + spec.k_norm
             + ((mla.q_a_norm, mla.kv_a_norm) if mla else ()))
    roles = projs + [norm for norm in norms if norm.name] + [part for ffn in spec.ffn for part in _ffn_parts(ffn)]
    parts: dict[str, Proj | Norm | None] = {}
    for role in roles + [spec.sinks]:
        if isinstance(role, str):  # a router, router bias or sinks
            parts.setdefault(stored_base(role), None)
        elif role is not None:
            parts.setdefault(stored_base(role.name), role)
    return parts


def _ffn_parts(ffn: FFN) -> list[Proj | str]:
    """The matrices of one FFN alternative (Projs; router and router bias by name) and of its shared
    expert, or none when its experts are stored as one 3-D tensor (see `layer_parts`)."""
    projs = [proj for proj in (ffn.gate, ffn.up, ffn.down) if proj is not None]
    if any(proj.transposed or proj.layout.startswith("experts") for proj in projs):
        return []
    named = [name for name in (ffn.router, ffn.router_bias) if name]
    return projs + named + (_ffn_parts(ffn.shared) if ffn.shared else [])


def global_parts(spec: ArchSpec) -> list[tuple[str, Norm | None]]:
    """The tensors outside the layers a GGUF file can hold, by full base name ("model.embed_tokens"),
    each with its Norm (None: the embedding, the head)."""
    norms = [norm for norm in spec.embed_norm + spec.final_norm if norm.name]
    return ([(stored_base(spec.base_prefix + spec.embed), None)]
            + [(stored_base(spec.base_prefix + norm.name), norm) for norm in norms] + [(stored_base(spec.head), None)])


def gguf_to_hf_names(arch: str, spec: ArchSpec, blocks: list[int]) -> dict[str, tuple[str, Proj | Norm | None]]:
    """GGUF tensor base name -> (Hugging Face one, the row's Proj or Norm naming it): "blk.3.attn_q" ->
    ("model.layers.3.self_attn.q_proj", Proj(...)), asked of llama.cpp's own table for every tensor of
    `spec` a GGUF file can hold (`global_parts`, `layer_parts`), for the given blocks; a 3-D expert
    tensor maps to a name with `{e}`. Two of the row's tensors with one GGUF name are a table error."""
    name_map = name_map_of(arch)
    layer = spec.base_prefix + spec.layer
    claimed: dict[str, str] = {}  # GGUF name -> the Hugging Face part that claims it

    def claim(gguf_name: str, part: str) -> None:
        if claimed.setdefault(gguf_name, part) != part:
            raise ValueError(f"{spec.model_types[0]}: {claimed[gguf_name]} and {part} both map to GGUF {gguf_name}")

    names = {}
    for hf_name, norm in global_parts(spec):
        gguf_name = name_map.get_name(hf_name)
        if gguf_name is not None:  # None: a tensor the architecture never has (gemma's lm_head)
            claim(gguf_name, hf_name)
            names[gguf_name] = (hf_name, norm)
    for part, role in layer_parts(spec).items():
        stored = block_part(name_map, layer, part.replace(".{e}", ""))  # llama.cpp names the stacked tensor
        if stored is not None:
            claim(stored, part)
            names.update({f"blk.{i}.{stored}": (layer.format(i=i) + part, role) for i in blocks})
    return names


def hf_entries(tensors: dict[str, StoredTensor], written: GGUFArch, config: dict) -> dict[str, Entry]:
    """Map every GGUF tensor huref can use to its Hugging Face name (others are left out)."""
    spec = arch_for_config(config)
    names = gguf_to_hf_names(written.arch, spec, blocks_present(tensors, config["num_hidden_layers"]))
    rope_heads = {spec.q: "num_attention_heads", spec.k: "num_key_value_heads"} if written.rope_interleaved else {}
    entries: dict[str, Entry] = {}
    for name, stored in tensors.items():
        base, _, kind = name.rpartition(".")
        if base not in names or kind not in ("weight", "bias"):
            continue
        hf_base, role = names[base]
        if "{e}" in hf_base:  # [n_experts, out, in] weights, [n_experts, out] biases
            if len(stored.shape) != (3 if kind == "weight" else 2) or stored.shape[0] != config.get("num_local_experts"):
                raise HurefError(f"GGUF tensor {name} should hold one {kind} per expert "
                                 f"({config.get('num_local_experts', 0)} experts) but has shape {stored.shape}")
            for e in range(stored.shape[0]):
                entries[f"{hf_base.format(e=e)}.{kind}"] = Entry(stored, stored.shape[1:], expert=e)
            continue
        row_order = None
        if role in rope_heads:  # a Q or K weight, or its bias
            row_order = _rope_row_order(stored.shape[0], config[rope_heads[role]])
        minus_one = isinstance(role, Norm) and role.kind in PLUS_ONE_KINDS and kind == "weight"
        entries[_parameter_name(f"{hf_base}.{kind}")] = Entry(stored, stored.shape, row_order=row_order,
                                                               minus_one=minus_one)
    if "kv_lora_rank" in config:
        entries.update(_fused_kv_b_entries(tensors, written.arch, spec, config, entries))
    return entries


def _parameter_name(hf_name: str) -> str:
    """The real parameter name of a table-built Hugging Face name (see PARAMETER_NAMES)."""
    for built, real in PARAMETER_NAMES.items():
        if hf_name.endswith("." + built):
            return hf_name[: -len(built)] + real
    return hf_name


def _fused_kv_b_entries(tensors: dict[str, StoredTensor], arch: str, spec: ArchSpec, config: dict,
                        found: dict) -> dict[str, Entry]:
    """`kv_b_proj.weight` of each layer whose file holds attn_k_b and attn_v_b instead (llama.cpp's
    converter names them after kv_b_proj, as k_b_proj and v_b_proj), their shapes checked against the
    MLA sizes."""
    name_map, layer, kv_b = name_map_of(arch), spec.base_prefix + spec.layer, spec.mla.kv_b.name
    k_part = block_part(name_map, layer, stored_base(kv_b.replace("kv_b_proj", "k_b_proj")))
    v_part = block_part(name_map, layer, stored_base(kv_b.replace("kv_b_proj", "v_b_proj")))
    heads, rank = config["num_attention_heads"], config["kv_lora_rank"]
    nope, v = config["qk_nope_head_dim"], config["v_head_dim"]
    entries = {}
    for i in blocks_present(tensors, config["num_hidden_layers"]):
        fused = layer.format(i=i) + kv_b
        k_b = tensors.get(f"blk.{i}.{k_part}.weight")
        v_b = tensors.get(f"blk.{i}.{v_part}.weight")
        if fused in found or k_b is None or v_b is None:
            continue
        if k_b.shape != (heads, rank, nope) or v_b.shape != (heads, v, rank):
            raise HurefError(f"GGUF tensors {k_b.name} {k_b.shape} and {v_b.name} {v_b.shape} do not fit "
                             f"{heads} heads of {nope} key and {v} value dimensions over a latent of {rank}")
        entries[fused] = Entry(k_b, (heads * (nope + v), rank), value_rows=v_b)
    return entries

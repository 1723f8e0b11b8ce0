"""Reader for GGUF checkpoints (llama.cpp's format), presented as if they were Hugging Face ones.

`open_gguf(path)` returns what a Hugging Face directory would give: a config dict in config.json
form built from the GGUF metadata, a `TensorReader` whose names, shapes and orientation are the
Hugging Face ones ([out, in] for Linear weights), and the vocabulary from `tokenizer.ggml.tokens`.

What the translation undoes, so that a GGUF file and the checkpoint it was converted from read
alike:
- names: `blk.N.attn_q.weight` -> `model.layers.N.self_attn.q_proj.weight`, ... (`LAYER_NAMES`);
  3-D expert tensors `ffn_{gate,up,down}_exps` become one 2-D tensor per expert (Mixtral names).
- shapes: GGUF lists dimensions fastest-first (ggml's `ne`); here they are reversed.
- rotary row order: for `llama` (also Mistral and Mixtral files) llama.cpp's converter reorders the
  rows of each Q and K head from the "rotate half" layout to interleaved pairs; the reader reads
  them back in Hugging Face order (`ROPE_INTERLEAVED`).
- gemma norms: llama.cpp stores `1 + w` for every gemma norm scale; the reader returns `w`, so the
  `rms_plus1` convention of `huref.architectures` gives the stored scale back.
Quantized tensors are dequantized with `gguf.quants` one tensor (or some of its rows) at a time
from the memory-mapped file; a row of a GGUF matrix is always a whole number of quant blocks, so
reading rows never touches the rest of the tensor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from huref.errors import HurefError
from huref.readers import TensorReader, as_row_index

# GGUF `general.architecture` -> Hugging Face model_type and model class.
MODEL_TYPES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("mistral", "MistralForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "gemma": ("gemma", "GemmaForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
    "phi3": ("phi3", "Phi3ForCausalLM"),
}
MIXTRAL = ("mixtral", "MixtralForCausalLM")  # a `llama` file with experts
NORM_PLUS_ONE = {"gemma", "gemma2", "gemma3"}
ROPE_INTERLEAVED = {"llama"}

GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# llama.cpp name inside block N -> Hugging Face name inside model.layers.N
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "block_sparse_moe.gate",
}
# gemma2/3 have four norms per layer: the GGUF `ffn_norm` is the one before the FFN.
GEMMA_LAYER_NAMES = {**LAYER_NAMES, "ffn_norm": "pre_feedforward_layernorm"}
EXPERT_NAMES = {
    "ffn_gate_exps": "block_sparse_moe.experts.{e}.w1",
    "ffn_down_exps": "block_sparse_moe.experts.{e}.w2",
    "ffn_up_exps": "block_sparse_moe.experts.{e}.w3",
}
BLOCK_NAME = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
GLOBAL_NAME = re.compile(r"^(\w+)\.(weight|bias)$")
SPLIT_NAME = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")
TOKEN_CONTROL = 3  # tokenizer.ggml.token_type of special/control tokens


@dataclass(frozen=True)
class Entry:
    """Where one Hugging Face tensor lives in a GGUF file, and how to turn it back."""

    tensor: object  # gguf.ReaderTensor
    shape: tuple[int, ...]  # Hugging Face shape
    expert: int | None = None  # index into a 3-D expert tensor
    row_order: np.ndarray | None = None  # Hugging Face row (bias: element) -> stored one
    minus_one: bool = False


class GGUFTensorReader(TensorReader):
    """A GGUF file (or its splits) read under Hugging Face tensor names, dequantized to float32."""

    def __init__(self, entries: dict[str, Entry], files: list) -> None:
        super().__init__()
        self.entries = entries
        self.files = files

    def names(self) -> list[str]:
        return list(self.entries)

    def has(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def quant_type(self, name: str) -> str:
        """The GGML storage type of tensor `name` ("Q4_K", "F32", ...)."""
        return self.entries[name].tensor.tensor_type.name

    def _read(self, name: str, rows: Sequence[int] | slice | None):
        from gguf.quants import dequantize

        entry = self.entries[name]
        tensor = entry.tensor
        data = tensor.data if entry.expert is None else tensor.data[entry.expert]
        n_rows = math.prod(entry.shape[:-1]) if len(entry.shape) > 1 else 1
        stored = data.reshape(n_rows, -1)  # quantized: bytes of whole blocks per row
        index = as_row_index(rows, n_rows)
        vector_order = entry.row_order if len(entry.shape) == 1 else None  # a Q/K bias
        if entry.row_order is not None and vector_order is None:
            index = entry.row_order[index]
        picked = np.ascontiguousarray(stored[index])
        try:
            values = dequantize(picked, tensor.tensor_type)
        except NotImplementedError:
            raise HurefError(
                f"tensor '{tensor.name}' is stored as {tensor.tensor_type.name}, which the installed "
                "gguf package cannot dequantize"
            ) from None
        values = torch.from_numpy(np.array(values, dtype=np.float32))
        if vector_order is not None:
            values = values[:, torch.from_numpy(vector_order)]
        if entry.minus_one:
            values = values - 1.0
        values = values.reshape(entry.shape) if rows is None else values.reshape(-1, entry.shape[-1])
        return values, memoryview(picked).cast("B")

    def close(self) -> None:
        self.entries, self.files = {}, []


def open_gguf(path: str) -> tuple[dict, GGUFTensorReader, list[str | None] | None]:
    """Open a .gguf file, a directory holding one, or split files (give any one of them).

    Returns (config: dict in Hugging Face config.json form, reader with Hugging Face tensor names
    and [out, in] orientation, vocab: token strings by id with control tokens as None, or None).
    """
    files = [_parse(p) for p in gguf_paths(Path(path))]
    meta = _metadata(files[0])
    arch = meta.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise HurefError(
            f"{path}: unsupported GGUF architecture '{arch}'; supported: {', '.join(sorted(MODEL_TYPES))}"
        )
    tensors = {t.name: t for f in files for t in f.tensors}
    config = hf_config(meta, arch, tensors)
    entries = hf_entries(tensors, arch, config)
    if "model.embed_tokens.weight" not in entries:
        raise HurefError(f"{path}: no token_embd.weight tensor in the GGUF file")
    return config, GGUFTensorReader(entries, files), _vocab(files[0])


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
    stem, count = split.group(1), int(split.group(3))
    parts = [path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise HurefError(f"{path}: split GGUF is incomplete, missing {', '.join(missing)}")
    return parts


def _parse(path: Path):
    from gguf import GGUFReader

    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise HurefError(f"{path}: cannot read ({e.strerror})") from None
    if magic != b"GGUF":
        raise HurefError(f"{path}: not a GGUF file (no GGUF magic)")
    try:
        reader = GGUFReader(str(path), "r")
        for t in reader.tensors:  # a truncated file shows as a tensor shorter than its shape
            if t.data.size * t.data.itemsize != int(t.n_bytes):
                raise ValueError(f"tensor {t.name} is cut short")
    except (ValueError, IndexError, KeyError, OverflowError, MemoryError) as e:
        raise HurefError(f"{path}: truncated or malformed GGUF file ({str(e).splitlines()[0]})") from None
    return reader


def _metadata(reader) -> dict:
    """Scalar and short-array metadata as Python values (token lists are read separately)."""
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "scores", "token_type", "merges")):
            continue
        try:
            meta[key] = field.contents()
        except (ValueError, IndexError, UnicodeDecodeError):
            continue
    return meta


def _vocab(reader) -> list[str | None] | None:
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        return None
    vocab = tokens.contents()
    types = reader.fields.get("tokenizer.ggml.token_type")
    if types is not None:
        for i, kind in enumerate(types.contents()):
            if kind == TOKEN_CONTROL and i < len(vocab):
                vocab[i] = None
    return vocab


def _single(value, key: str):
    """A per-layer list in the metadata must hold one value for the whole model."""
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise HurefError(f"GGUF metadata '{key}' differs between layers, which huref does not support")
        return value[0]
    return value


def hf_config(meta: dict, arch: str, tensors: dict) -> dict:
    """A Hugging Face config.json dict from GGUF metadata (`{arch}.embedding_length`, ...)."""

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        return _single(value, f"{arch}.{key}")

    try:
        hidden = int(get("embedding_length"))
        n_layers = int(get("block_count"))
        n_heads = int(get("attention.head_count"))
    except TypeError:
        raise HurefError(f"GGUF metadata lacks {arch}.embedding_length, block_count or attention.head_count") from None
    n_experts = int(get("expert_count", 0) or 0)
    model_type, model_class = MIXTRAL if arch == "llama" and n_experts else MODEL_TYPES[arch]
    embed = tensors.get("token_embd.weight")
    vocab_size = int(embed.shape[-1]) if embed is not None else 0  # no embedding: open_gguf refuses the file
    head_dim = int(get("attention.key_length", 0) or hidden // n_heads)
    config = {
        "architectures": [model_class],
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(get("attention.head_count_kv", n_heads)),
        "head_dim": head_dim,
        "intermediate_size": int(get("feed_forward_length", 0)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "vocab_size": vocab_size,
        "tie_word_embeddings": "output.weight" not in tensors,
        "torch_dtype": "float32",
    }
    for key, hf_key in (("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id")):
        if key in meta:
            config[hf_key] = int(meta[key])
    if get("attention.sliding_window") is not None:
        config["sliding_window"] = int(get("attention.sliding_window"))
    if arch in NORM_PLUS_ONE:
        config["query_pre_attn_scalar"] = head_dim
        config["hidden_activation"] = "gelu_pytorch_tanh"
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if get(key) is not None:
                config[key] = float(get(key))
    if n_experts:
        config["num_local_experts"] = n_experts
        config["num_experts_per_tok"] = int(get("expert_used_count", 2))
    return config


def _rope_row_order(n_rows: int, n_heads: int) -> np.ndarray:
    """Hugging Face row -> stored row, undoing llama.cpp's per-head rotary reordering.

    llama.cpp writes row (h, i, j) of the Hugging Face head layout [n_heads, 2, head_dim/2] at
    position (h, j, i): the two rotary halves become interleaved pairs.
    """
    stored_from_hf = np.arange(n_rows).reshape(n_heads, 2, n_rows // n_heads // 2).swapaxes(1, 2).reshape(-1)
    return np.argsort(stored_from_hf)


def hf_entries(tensors: dict, arch: str, config: dict) -> dict[str, Entry]:
    """Map every GGUF tensor huref can use to its Hugging Face name (others are left out)."""
    layer_names = GEMMA_LAYER_NAMES if arch in NORM_PLUS_ONE else LAYER_NAMES
    fused_gate_up = arch == "phi3"  # phi3 stores mlp.gate_up_proj as ffn_up
    entries: dict[str, Entry] = {}
    for name, tensor in tensors.items():
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        block = BLOCK_NAME.match(name)
        if block:
            layer, part, kind = block.groups()
            prefix = f"model.layers.{layer}."
            if part in EXPERT_NAMES:
                for e in range(shape[0]):
                    entries[prefix + EXPERT_NAMES[part].format(e=e) + "." + kind] = Entry(tensor, shape[1:], expert=e)
                continue
            if part not in layer_names:
                continue
            hf_part = "mlp.gate_up_proj" if fused_gate_up and part == "ffn_up" else layer_names[part]
            hf_name = prefix + hf_part + "." + kind
        else:
            plain = GLOBAL_NAME.match(name)
            if not plain or plain.group(1) not in GLOBAL_NAMES:
                continue
            part, kind = plain.groups()
            hf_name = GLOBAL_NAMES[part] + "." + kind
        row_order = None
        if arch in ROPE_INTERLEAVED and part in ("attn_q", "attn_k"):
            heads = config["num_attention_heads"] if part == "attn_q" else config["num_key_value_heads"]
            row_order = _rope_row_order(shape[0], heads)
        minus_one = arch in NORM_PLUS_ONE and part.endswith("norm") and kind == "weight"
        entries[hf_name] = Entry(tensor, shape, row_order=row_order, minus_one=minus_one)
    return entries

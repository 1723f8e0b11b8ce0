"""A small Hugging Face -> GGUF converter following llama.cpp's conventions (tests and experiments).

It is written against llama.cpp's own name table (`gguf.get_tensor_name_map`), not against
huref's reader, so a round trip HF -> GGUF -> huref checks the reader's reverse mapping:
- tensor names from `gguf.get_tensor_name_map(arch, n_layers)`; Mixtral's per-expert matrices
  stacked into 3-D `ffn_{gate,up,down}_exps` tensors,
- numpy (row-major) arrays handed to `GGUFWriter`, which records the dims reversed as ggml does,
- `llama` Q/K rows reordered per head from "rotate half" to interleaved pairs (llama.cpp's
  `LlamaModel.permute`), gemma norm scales stored as `1 + w`,
- matrices quantized with `gguf.quants.quantize` (Q8_0, Q4_0, Q4_1, Q5_0, ...; F16/F32 as is),
  vectors kept in F32, as llama.cpp does.
"""

import json
import re
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType, MODEL_ARCH_NAMES
from safetensors.numpy import load_file

# config.json model_type -> llama.cpp architecture
GGUF_ARCH = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
}
GEMMA = ("gemma2", "gemma3")
TOKEN_NORMAL, TOKEN_CONTROL = 1, 3


def rope_interleave(rows: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's reordering of a Q or K matrix [n_heads * head_dim, in]: per head, the rows of
    the two rotary halves (i, j) are written as interleaved pairs (j, i)."""
    head_half = rows.shape[0] // n_heads // 2
    return rows.reshape(n_heads, 2, head_half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _vocab(directory: Path) -> tuple[list[str], list[int]] | None:
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    by_id = {i: tok for tok, i in vocab.items()} if isinstance(vocab, dict) else {i: e[0] for i, e in enumerate(vocab)}
    special = set()
    for added in data.get("added_tokens") or []:
        by_id[added["id"]] = added["content"]
        if added.get("special"):
            special.add(added["id"])
    size = max(by_id) + 1
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    return tokens, [TOKEN_CONTROL if i in special else TOKEN_NORMAL for i in range(size)]


EXPERT = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe\.experts)\.(\d+)\.(w[123])\.weight$")


def _stack_experts(tensors: dict) -> dict:
    """Per-expert Mixtral matrices `...experts.{e}.w1.weight` stacked to `...experts.w1` [E, out, in]."""
    out, experts = {}, {}
    for name, value in tensors.items():
        match = EXPERT.match(name)
        if match:
            experts.setdefault(f"{match.group(1)}.{match.group(3)}", {})[int(match.group(2))] = value
        else:
            out[name] = value
    for name, by_index in experts.items():
        out[name] = np.stack([by_index[e] for e in sorted(by_index)])
    return out


def _gguf_name(hf_name: str, name_map) -> str:
    base, kind = hf_name.rsplit(".", 1) if hf_name.endswith((".weight", ".bias")) else (hf_name, "weight")
    gguf_base = name_map.get_name(base)
    if gguf_base is None:
        raise ValueError(f"no llama.cpp name for {hf_name}")
    return f"{gguf_base}.{kind}"


def convert(hf_dir, out_path, qtype: str = "F32", split_max_tensors: int = 0) -> Path:
    """Write the HF checkpoint in `hf_dir` (config.json, model.safetensors, tokenizer.json) as GGUF.

    `qtype` names a `GGMLQuantizationType` for the matrices ("F32", "F16", "Q8_0", "Q4_0", ...);
    `split_max_tensors > 0` writes `-0000i-of-0000N.gguf` splits. Returns the (first) file's path.
    """
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    config = json.loads((hf_dir / "config.json").read_text())
    arch = GGUF_ARCH[config["model_type"]]
    arch_enum = next(a for a, n in MODEL_ARCH_NAMES.items() if n == arch)
    n_layers = config["num_hidden_layers"]
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_heads
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads
    quant = GGMLQuantizationType[qtype]

    writer = gguf.GGUFWriter(out_path, arch, split_max_tensors=split_max_tensors)
    writer.add_name(hf_dir.name)
    writer.add_block_count(n_layers)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    rope = config.get("rope_parameters") or {}
    rope = rope.get("full_attention", rope)  # gemma3: one entry per attention type
    writer.add_rope_freq_base(config.get("rope_theta") or rope.get("rope_theta", 1e4))
    if config.get("num_local_experts"):
        writer.add_expert_count(config["num_local_experts"])
        writer.add_expert_used_count(config["num_experts_per_tok"])
    vocab = _vocab(hf_dir)
    if vocab is not None:
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(vocab[0])
        writer.add_token_types(vocab[1])

    name_map = gguf.get_tensor_name_map(arch_enum, n_layers)
    tensors = _stack_experts(load_file(str(hf_dir / "model.safetensors")))
    for hf_name, value in sorted(tensors.items()):
        name = _gguf_name(hf_name, name_map)
        data = np.ascontiguousarray(value, dtype=np.float32)
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight", "attn_q.bias", "attn_k.bias")):
            data = rope_interleave(data, n_heads if "attn_q" in name else n_kv)
        if arch in GEMMA and name.endswith("norm.weight"):
            data = data + 1.0
        if data.ndim < 2 or quant == GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif quant == GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors and len(writer.tensors) > 1:
        return out_path.with_name(gguf.SHARD_NAME_FORMAT.format(out_path.stem, 1, len(writer.tensors)))
    return out_path

"""A small Hugging Face -> GGUF converter following llama.cpp's conventions (tests and experiments).

It is written against llama.cpp's own name table (`gguf.get_tensor_name_map`) and its converter
(convert_hf_to_gguf.py), not against huref's reader, so a round trip HF -> GGUF -> huref checks the
reader's reverse mapping:
- tensor names from `gguf.get_tensor_name_map(arch, block_count)`; per-expert matrices
  (`...experts.{e}.w1` / `.gate_proj`) stacked into 3-D `ffn_{gate,up,down}_exps` tensors,
- numpy (row-major) arrays handed to `GGUFWriter`, which records the dims reversed as ggml does,
- Q/K rows reordered per head from "rotate half" to interleaved pairs where the row's `GGUFArch`
  says llama.cpp's converter does (`rope_interleaved`: its `LlamaModel.permute`), every `norm.weight`
  stored as `1 + w` in a model whose row has plus-one norms (llama.cpp's Gemma converters),
- deepseek2 (MLA): one key/value head of kv_rank + rope dimensions in the metadata, the MLA sizes
  under `attention.*_lora_rank` / `key_length_mla` / `value_length_mla`, and `kv_b_proj` split into
  `attn_k_b` [heads, kv_rank, nope] (transposed key rows) and `attn_v_b` [heads, v, kv_rank],
- fused 3-D experts (gpt-oss, llama4): `gate_up_proj` [E, in, 2 * inner] (gate and up columns
  alternating where the row's layout is `experts_gate_up_interleaved`, else gate half, then up half)
  written as `ffn_gate_exps` / `ffn_up_exps` [E, inner, in], `down_proj` transposed, biases split
  alike; the converter's renames (`huref.readers.gguf.llama_cpp_name`: `sinks` as
  `attn_sinks.weight`, `e_score_correction_bias` as `exp_probs_b.bias`),
- where the row's `GGUFArch` has `mtp_blocks` (glm4moe), the block count includes the
  next-token-prediction layers (`num_nextn_predict_layers`) and whatever tensors the checkpoint
  holds for them,
- matrices quantized with `gguf.quants.quantize` (Q8_0, Q4_0, Q4_1, Q5_0, MXFP4, ...; F16/F32 as
  is; a matrix whose rows are not whole blocks stays F16), vectors kept in F32, as llama.cpp does.
"""

import json
import re
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType, MODEL_ARCH_NAMES
from safetensors.numpy import load_file

from huref.architectures import GGUF_ARCHS, PLUS_ONE_KINDS, ArchSpec, arch_for_config
from huref.readers.gguf import llama_cpp_name

WRITTEN_AS = {model_type: entry for entry in GGUF_ARCHS for model_type in entry.model_types}  # model_type -> GGUFArch
# tiny_models.build_model keywords for the tiny checkpoints llama.cpp cannot hold as the zoo builds them:
# its qwen3moe has no dense FFN tensors, its llama4 no per-layer list of RoPE layers (only the interval)
GGUF_SOURCE_OVERRIDES = {"qwen3_moe": dict(mlp_only_layers=[]), "llama4_text": dict(no_rope_layers=None)}
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


EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(\w+)\.weight$")


def _stack_experts(tensors: dict) -> dict:
    """Per-expert matrices `...experts.{e}.NAME.weight` stacked to `...experts.NAME.weight` [E, out, in]."""
    out, experts = {}, {}
    for name, value in tensors.items():
        match = EXPERT.match(name)
        if match:
            experts.setdefault(f"{match.group(1)}.{match.group(3)}.weight", {})[int(match.group(2))] = value
        else:
            out[name] = value
    for name, by_index in experts.items():
        out[name] = np.stack([by_index[e] for e in sorted(by_index)])
    return out


def plus_one_norms(spec: ArchSpec) -> bool:
    """Whether the row's norms scale by 1 + w (gemma), which llama.cpp's converters store as 1 + w."""
    return any(norm.kind in PLUS_ONE_KINDS for norm in spec.attn_norm + spec.ffn_norm + spec.final_norm)


def gate_up_interleaved(spec: ArchSpec) -> bool:
    """Whether the row's fused 3-D experts alternate gate and up columns (gpt-oss), rather than holding
    the gate half, then the up half (llama4)."""
    return any(proj is not None and proj.layout == "experts_gate_up_interleaved" for ffn in spec.ffn
               for proj in (ffn.gate, ffn.up))


def _llama_cpp_tensors(tensors: dict, config: dict, split_kv_b: bool = True) -> dict:
    """The renames, splits and transposes llama.cpp's converter applies before naming (see the
    module doc): HF-style names in, HF-style names of what llama.cpp writes out; `split_kv_b=False`
    keeps MLA's kv_b_proj whole, as converters before the split did."""
    interleaved = gate_up_interleaved(arch_for_config(config))
    out = {}
    for name, value in _stack_experts(tensors).items():
        if llama_cpp_name(name) != name:
            out[llama_cpp_name(name)] = value
        elif name.endswith("experts.gate_up_proj"):  # [E, in, 2 * inner] -> [E, 2 * inner, in]
            fused = value.swapaxes(1, 2)
            inner = fused.shape[1] // 2
            gate, up = (fused[:, ::2], fused[:, 1::2]) if interleaved else (fused[:, :inner], fused[:, inner:])
            out[name.replace("gate_up_proj", "gate_proj.weight")] = gate
            out[name.replace("gate_up_proj", "up_proj.weight")] = up
        elif name.endswith("experts.gate_up_proj_bias"):  # [E, 2 * inner]
            out[name.replace("gate_up_proj_bias", "gate_proj.bias")] = value[..., ::2]
            out[name.replace("gate_up_proj_bias", "up_proj.bias")] = value[..., 1::2]
        elif name.endswith("experts.down_proj"):  # [E, inner, hidden] -> [E, hidden, inner]
            out[name + ".weight"] = value.swapaxes(1, 2)
        elif name.endswith("experts.down_proj_bias"):
            out[name.replace("down_proj_bias", "down_proj.bias")] = value
        elif name.endswith("kv_b_proj.weight") and split_kv_b:  # MLA: [heads * (nope + v), kv_rank] -> k_b, v_b
            heads, nope = config["num_attention_heads"], config["qk_nope_head_dim"]
            kv_b = value.reshape(heads, -1, value.shape[-1])  # [heads, nope + v, kv_rank]
            out[name.replace("kv_b_proj", "k_b_proj")] = kv_b[:, :nope].swapaxes(1, 2)  # [heads, kv_rank, nope]
            out[name.replace("kv_b_proj", "v_b_proj")] = kv_b[:, nope:]  # [heads, v, kv_rank]
        else:
            out[name] = value
    return out


def _gguf_name(hf_name: str, name_map) -> str:
    base, kind = hf_name.rsplit(".", 1) if hf_name.endswith((".weight", ".bias")) else (hf_name, "weight")
    gguf_base = name_map.get_name(base)
    if gguf_base is None:
        raise ValueError(f"no llama.cpp name for {hf_name}")
    return f"{gguf_base}.{kind}"


def convert(hf_dir, out_path, qtype: str = "F32", split_max_tensors: int = 0, expert_qtype: str | None = None,
            split_kv_b: bool = True) -> Path:
    """Write the HF checkpoint in `hf_dir` (config.json, model.safetensors, tokenizer.json) as GGUF.

    `qtype` names a `GGMLQuantizationType` for the matrices ("F32", "F16", "Q8_0", "Q4_0", ...),
    `expert_qtype` (default: `qtype`) the one for 3-D expert tensors ("MXFP4" for gpt-oss);
    `split_max_tensors > 0` writes `-0000i-of-0000N.gguf` splits; `split_kv_b=False` writes MLA's
    kv_b_proj as one `attn_kv_b` tensor (older converters). Returns the (first) file's path.
    """
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    config = json.loads((hf_dir / "config.json").read_text())
    written = WRITTEN_AS[config["model_type"]]
    arch = written.arch
    arch_enum = next(a for a, n in MODEL_ARCH_NAMES.items() if n == arch)
    plus_one = plus_one_norms(arch_for_config(config))
    n_layers = config["num_hidden_layers"]
    n_nextn = (config.get("num_nextn_predict_layers") or 0) if written.mtp_blocks else 0
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_heads
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads
    quant = GGMLQuantizationType[qtype]
    expert_quant = GGMLQuantizationType[expert_qtype or qtype]

    writer = gguf.GGUFWriter(out_path, arch, split_max_tensors=split_max_tensors)
    writer.add_name(hf_dir.name)
    writer.add_block_count(n_layers + n_nextn)
    if n_nextn:
        writer.add_nextn_predict_layers(n_nextn)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_heads)
    if config.get("kv_lora_rank"):  # MLA, as llama.cpp's DeepseekV2Model writes it
        rank, rope = config["kv_lora_rank"], config["qk_rope_head_dim"]
        writer.add_head_count_kv(1)
        if config.get("q_lora_rank"):
            writer.add_q_lora_rank(config["q_lora_rank"])
        writer.add_kv_lora_rank(rank)
        writer.add_key_length(rank + rope)
        writer.add_value_length(rank)
        writer.add_key_length_mla(config["qk_nope_head_dim"] + rope)
        writer.add_value_length_mla(config["v_head_dim"])
        writer.add_rope_dimension_count(rope)
    else:
        writer.add_head_count_kv(n_kv)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if config.get("rms_norm_eps") is None and config.get("layer_norm_eps") is not None:  # cohere2's LayerNorms
        writer.add_layer_norm_eps(config["layer_norm_eps"])
    else:
        writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    rope = config.get("rope_parameters") or {}
    rope = rope.get("full_attention", rope)  # gemma3: one entry per attention type
    writer.add_rope_freq_base(config.get("rope_theta") or rope.get("rope_theta", 1e4))
    n_experts = next((config[k] for k in ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
                      if config.get(k)), None)
    if n_experts:
        writer.add_expert_count(n_experts)
        writer.add_expert_used_count(next(config[k] for k in ("num_experts_per_tok", "moe_k", "moe_topk") if config.get(k)))
    vocab = _vocab(hf_dir)
    if vocab is not None:
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(vocab[0])
        writer.add_token_types(vocab[1])

    name_map = gguf.get_tensor_name_map(arch_enum, n_layers + n_nextn)
    tensors = _llama_cpp_tensors(load_file(str(hf_dir / "model.safetensors")), config, split_kv_b)
    for hf_name, value in sorted(tensors.items()):
        name = _gguf_name(hf_name, name_map)
        data = np.ascontiguousarray(value, dtype=np.float32)
        if written.rope_interleaved and name.endswith(("attn_q.weight", "attn_k.weight", "attn_q.bias", "attn_k.bias")):
            data = rope_interleave(data, n_heads if "attn_q" in name else n_kv)
        if plus_one and name.endswith("norm.weight"):
            data = data + 1.0
        kind = expert_quant if data.ndim == 3 else quant
        if kind not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) and data.shape[-1] % gguf.GGML_QUANT_SIZES[kind][0]:
            kind = GGMLQuantizationType.F16  # rows that are not whole blocks
        if data.ndim < 2 or kind == GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif kind == GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors and len(writer.tensors) > 1:
        return out_path.with_name(gguf.SHARD_NAME_FORMAT.format(out_path.stem, 1, len(writer.tensors)))
    return out_path

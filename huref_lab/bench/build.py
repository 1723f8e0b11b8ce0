"""Synthetic checkpoints shaped like real models, for the benchmarks: random weights, real layouts.

- Llama-2 7B / 13B / 70B shapes in bfloat16 sharded safetensors (`build_llama`), with a complete
  model.safetensors.index.json and a tokenizer.json of 32000 distinct strings; 7B is complete, 13B
  and 70B hold only the shards huref reads at default settings (embedding, the default layers), as
  after a partial hub download.
- The same 7B in other storage formats: FP8 block-scaled safetensors (`build_llama_fp8`, DeepSeek's
  `quant_method: fp8`, 128x128 blocks) and GGUF Q8_0 / Q4_K_M (`build_llama_gguf`; Q4_K_M mixes Q4_K
  and Q6_K as llama.cpp's quantizer does).
- DeepSeek-V3 (`build_deepseek`): 61 layers (the first 3 dense), 256 routed + 1 shared expert,
  hidden 7168, multi-head latent attention, FP8 block-scaled, with only the shards the default
  terms read (the embedding and the two middle layers, 25 GB of its 690 GB).

Weights are seeded per tensor name (crc32), so a rebuilt checkpoint has the same bytes. Quantized
blocks are random codes under small finite scales: the readers decode them exactly as they would
a real file's, which is all a timing needs.
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from huref.architectures import arch_for_config
from huref.files import write_atomically
from huref.invariants import resolve_layers

MAX_SHARD_BYTES = 2 * 10**9  # "a few GB" per shard, in the state-dict order transformers writes
VOCAB = 32000
LLAMA = arch_for_config({"model_type": "llama"})  # the tensor names, from huref's architecture table

SHAPES = {
    "7b": dict(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, partial=False),
    "13b": dict(layers=40, hidden=5120, ffn=13824, heads=40, kv_heads=40, partial=True),
    "70b": dict(layers=80, hidden=8192, ffn=28672, heads=64, kv_heads=8, partial=True),
}
FP8_BLOCK = 128  # weight_block_size [128, 128], as DeepSeek-V3 and Qwen3 FP8 releases


def _generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


# --- llama-shaped, bfloat16 safetensors ------------------------------------------------------------

def layer_prefix(i: int) -> str:
    """Full name prefix of layer i's tensors."""
    return LLAMA.base_prefix + LLAMA.layer.format(i=i)


def tensor_shapes(shape: dict) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor of a Llama checkpoint, in the order transformers saves them."""
    d, f, hd = shape["hidden"], shape["ffn"], shape["hidden"] // shape["heads"]
    kv = shape["kv_heads"] * hd
    (ffn,) = LLAMA.ffn
    tensors = [(LLAMA.base_prefix + LLAMA.embed, [VOCAB, d])]
    for i in range(shape["layers"]):
        p = layer_prefix(i)
        tensors += [
            (p + LLAMA.q.name, [d, d]), (p + LLAMA.k.name, [kv, d]), (p + LLAMA.v.name, [kv, d]),
            (p + LLAMA.o.name, [d, d]), (p + ffn.gate.name, [f, d]), (p + ffn.up.name, [f, d]),
            (p + ffn.down.name, [d, f]), (p + LLAMA.attn_norm[0].name, [d]), (p + LLAMA.ffn_norm[0].name, [d]),
        ]
    return tensors + [(LLAMA.base_prefix + LLAMA.final_norm[0].name, [d]), (LLAMA.head, [VOCAB, d])]


def shard_plan(tensors: list[tuple[str, list[int], str]], max_bytes: int = MAX_SHARD_BYTES,
               boundary=lambda name: None) -> list[list]:
    """Split (name, shape, dtype) entries, in order, into shards of at most max_bytes each; a new
    shard also starts wherever `boundary(name)` changes (one layer per shard for DeepSeek-V3)."""
    shards, current, size, group = [], [], 0, None
    for entry in tensors:
        nbytes = stored_bytes(*entry[1:])
        if current and (size + nbytes > max_bytes or boundary(entry[0]) != group):
            shards.append(current)
            current, size = [], 0
        current.append(entry)
        size += nbytes
        group = boundary(entry[0])
    return shards + [current]


SAFETENSORS_DTYPES = {"BF16": 2, "F32": 4, "F8_E4M3": 1}


def stored_bytes(shape: list[int], dtype: str) -> int:
    return SAFETENSORS_DTYPES[dtype] * math.prod(shape)


def tensor_data(name: str, shape: list[int], dtype: str = "BF16"):
    """The bytes of a random tensor, a few million values at a time: bfloat16 (std 0.02; vectors ~1),
    float8 e4m3 codes (every code but NaN), or float32 block scales (~1e-4, so the weights are ~0.02)."""
    numel = math.prod(shape)
    chunk = 1 << 23
    if dtype == "F8_E4M3":
        rng = _rng(name)
        for start in range(0, numel, chunk):
            codes = rng.integers(0, 256, min(chunk, numel - start), dtype=np.uint8)
            codes[(codes & 0x7F) == 0x7F] -= 1  # 0x7F and 0xFF are NaN in e4m3fn
            yield codes.tobytes()
        return
    if dtype == "F32":
        yield (1e-4 * (1.0 + _rng(name).random(numel))).astype(np.float32).tobytes()
        return
    generator = _generator(name)
    for start in range(0, numel, chunk):
        count = min(chunk, numel - start)
        if len(shape) == 1:
            values = 1.0 + 0.1 * torch.randn(count, generator=generator)
        else:
            values = 0.02 * torch.randn(count, generator=generator)
        yield values.to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def write_shard(path: Path, tensors: list[tuple[str, list[int], str]]) -> None:
    """Write one safetensors shard (header, then each tensor's data), atomically."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, dtype in tensors:
        nbytes = stored_bytes(shape, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    chunks = (tensor_data(name, shape, dtype) for name, shape, dtype in tensors)
    write_atomically(path, itertools.chain([len(text).to_bytes(8, "little"), text], *chunks))


def vocabulary(size: int) -> list[str]:
    """`size` distinct lowercase words (word 0 is "<unk>")."""
    words, seen, i = [], set(), 0
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    while len(words) < size:
        word, k = "", i
        while True:
            word += alphabet[k % 26]
            k //= 26
            if k == 0:
                break
        i += 7919  # a stride coprime with 26**k mixes the lengths
        if word not in seen:
            seen.add(word)
            words.append(word)
    words[0] = "<unk>"
    return words


def write_tokenizer(directory: Path, size: int = VOCAB) -> None:
    """tokenizer.json: a word-level vocabulary of `size` distinct strings (id i -> string i)."""
    from tokenizers import Tokenizer, models

    words = vocabulary(size)
    tokenizer = Tokenizer(models.WordLevel({w: j for j, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.save(str(directory / "tokenizer.json"))


def llama_config(shape: dict) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
        "vocab_size": VOCAB, "hidden_size": shape["hidden"], "intermediate_size": shape["ffn"],
        "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape["kv_heads"], "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2,
    }


def write_sharded(directory: Path, tensors: list[tuple[str, list[int], str]], config: dict, vocab: int,
                  keep=lambda name: True, **plan) -> Path:
    """Write a sharded safetensors checkpoint: its index over every tensor, config.json, tokenizer.json,
    and the shards holding a tensor `keep` accepts (all by default)."""
    directory.mkdir(parents=True, exist_ok=True)
    shards = shard_plan(tensors, **plan)
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    index = {"metadata": {"total_size": sum(stored_bytes(s, t) for _, s, t in tensors)},
             "weight_map": {name: file for file, shard in zip(names, shards) for name, _, _ in shard}}
    for file, shard in zip(names, shards):
        if any(keep(name) for name, _, _ in shard) and not (directory / file).exists():
            print(f"writing {directory / file}", flush=True)
            write_shard(directory / file, shard)
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    if not (directory / "tokenizer.json").exists():
        write_tokenizer(directory, vocab)
    return directory


def needed(name: str, n_layers: int) -> bool:
    """Whether huref reads this tensor at default settings: the embedding and the default layers."""
    read = {layer_prefix(i) for i in resolve_layers(n_layers, None)}
    return name == LLAMA.base_prefix + LLAMA.embed or any(name.startswith(p) for p in read)


def build_llama(size: str, cache: Path, partial: bool | None = None) -> Path:
    """Build (or finish building) the bfloat16 checkpoint of one size in `cache`; return its directory.
    `partial`: only the shards huref reads at default settings (default: as SHAPES says)."""
    shape = SHAPES[size]
    tensors = [(name, s, "BF16") for name, s in tensor_shapes(shape)]
    partial = shape["partial"] if partial is None else partial
    keep = (lambda name: needed(name, shape["layers"])) if partial else (lambda name: True)
    return write_sharded(cache / f"llama-{size}", tensors, llama_config(shape), VOCAB, keep)


def fp8_linear(name: str, shape: list[int]) -> list[tuple[str, list[int], str]]:
    """A Linear weight stored FP8 with its block scales (weight_scale_inv [ceil(out/128), ceil(in/128)])."""
    blocks = [-(-shape[0] // FP8_BLOCK), -(-shape[1] // FP8_BLOCK)]
    return [(name, shape, "F8_E4M3"), (name + "_scale_inv", blocks, "F32")]


def fp8_config() -> dict:
    return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
            "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}


def build_llama_fp8(size: str, cache: Path) -> Path:
    """The 7B-shaped (or other) checkpoint with every layer matrix FP8 block-scaled (embedding,
    head and norms bfloat16)."""
    shape = SHAPES[size]
    tensors = []
    for name, s in tensor_shapes(shape):
        layer_matrix = ".layers." in name and len(s) == 2
        tensors += fp8_linear(name, s) if layer_matrix else [(name, s, "BF16")]
    config = {**llama_config(shape), "quantization_config": fp8_config()}
    keep = (lambda name: needed(name, shape["layers"])) if shape["partial"] else (lambda name: True)
    return write_sharded(cache / f"llama-{size}-fp8", tensors, config, VOCAB, keep)


# --- llama-shaped GGUF ---------------------------------------------------------------------------

GGUF_LAYER_NAMES = {  # Hugging Face part -> llama.cpp tensor name inside blk.N
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def more_bits(i: int, n_layers: int) -> bool:
    """llama.cpp's `use_more_bits`: the layers whose attn_v and ffn_down Q4_K_M stores as Q6_K."""
    return i < n_layers // 8 or i >= 7 * n_layers // 8 or (i - n_layers // 8) % 3 == 2


def gguf_type(kind: str, part: str, i: int, n_layers: int) -> str:
    """The GGML type of a 2-D tensor in a `kind` file (Q8_0, or Q4_K_M's mix: Q6_K for the output
    matrix and for attn_v / ffn_down of the `more_bits` layers, Q4_K elsewhere)."""
    if kind == "Q8_0":
        return "Q8_0"
    if part == "output" or (part in ("attn_v", "ffn_down") and more_bits(i, n_layers)):
        return "Q6_K"
    return "Q4_K"


def ggml_blocks(name: str, rows: int, cols: int, qtype: str) -> np.ndarray:
    """Random GGML blocks [rows, row_bytes] of `qtype` whose values are ~1e-2: random codes, small
    finite float16 scales (and Q4_K's 6-bit scales and mins random)."""
    import gguf

    quant = gguf.GGMLQuantizationType[qtype]
    size, nbytes = gguf.GGML_QUANT_SIZES[quant]
    rng = _rng(name)
    blocks = rng.integers(0, 256, (rows * cols // size, nbytes), dtype=np.uint8)  # [blocks, bytes]
    half = lambda value: np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)  # noqa: E731
    if qtype == "Q8_0":
        blocks[:, 0:2] = half(2e-4)
    elif qtype == "Q4_K":  # d·sc·q − dmin·m: the mins roughly centre the values
        blocks[:, 0:2], blocks[:, 2:4] = half(1e-4), half(7.5e-4)
    elif qtype == "Q6_K":
        blocks[:, 208:210] = half(2e-5)
    return blocks.reshape(rows, -1)


def build_llama_gguf(size: str, cache: Path, kind: str) -> Path:
    """The checkpoint of one size as a llama.cpp GGUF file, `kind` Q8_0 or Q4_K_M (norms float32)."""
    import gguf

    shape = SHAPES[size]
    path = cache / f"llama-{size}-{kind.lower()}.gguf"
    if path.exists():
        return path
    n_layers, d = shape["layers"], shape["hidden"]
    tmp = path.with_suffix(".partial")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_block_count(n_layers)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(shape["ffn"])
    writer.add_head_count(shape["heads"])
    writer.add_head_count_kv(shape["kv_heads"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_context_length(4096)
    writer.add_name(f"llama-{size}-{kind}")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocabulary(VOCAB))
    entries = []  # (gguf name, hf shape, GGML type or None for float32)
    for name, s in tensor_shapes(shape):
        if name == LLAMA.base_prefix + LLAMA.embed:
            entries.append(("token_embd.weight", s, gguf_type(kind, "token_embd", 0, n_layers)))
        elif name == LLAMA.head:
            entries.append(("output.weight", s, gguf_type(kind, "output", 0, n_layers)))
        elif ".layers." not in name:
            entries.append(("output_norm.weight", s, None))
        else:
            i, part = int(name.split(".")[2]), name.split(".", 3)[3].removesuffix(".weight")
            short = GGUF_LAYER_NAMES[part]
            entries.append((f"blk.{i}.{short}.weight", s, gguf_type(kind, short, i, n_layers) if len(s) == 2 else None))
    for name, s, qtype in entries:
        if qtype is None:
            writer.add_tensor_info(name, s, np.dtype(np.float32), 4 * math.prod(s))
        else:
            quant = gguf.GGMLQuantizationType[qtype]
            byte_shape = gguf.quants.quant_shape_to_byte_shape(s, quant)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), math.prod(byte_shape), raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    print(f"writing {path}", flush=True)
    for name, s, qtype in entries:
        if qtype is None:
            writer.write_tensor_data((1.0 + 0.1 * _rng(name).standard_normal(s)).astype(np.float32))
        else:
            writer.write_tensor_data(ggml_blocks(name, s[0], s[1], qtype))
    writer.close()
    tmp.rename(path)
    return path


# --- DeepSeek-V3-shaped, FP8, the fingerprint's layers only ----------------------------------------

DEEPSEEK_V3 = dict(layers=61, dense_layers=3, hidden=7168, heads=128, q_rank=1536, kv_rank=512, nope=128, rope=64,
                   v=128, expert=2048, dense_ffn=18432, experts=256, vocab=129280)
DEEPSEEK_SHARD_BYTES = 4_400_000_000  # its release's shards hold ~4.3 GB, never two layers here


def deepseek_tensors(experts: int) -> list[tuple[str, list[int], str]]:
    """(name, shape, dtype) of every tensor of a DeepSeek-V3 checkpoint with `experts` routed experts
    per MoE layer, in its release's order; the matrices FP8 with block scales, as released."""
    s = DEEPSEEK_V3
    d, h, f = s["hidden"], s["heads"], s["expert"]
    tensors = [("model.embed_tokens.weight", [s["vocab"], d], "BF16")]
    for i in range(s["layers"]):
        at = f"model.layers.{i}."
        tensors += [(at + "input_layernorm.weight", [d], "BF16"), (at + "post_attention_layernorm.weight", [d], "BF16"),
                    (at + "self_attn.q_a_layernorm.weight", [s["q_rank"]], "BF16"),
                    (at + "self_attn.kv_a_layernorm.weight", [s["kv_rank"]], "BF16")]
        tensors += fp8_linear(at + "self_attn.q_a_proj.weight", [s["q_rank"], d])
        tensors += fp8_linear(at + "self_attn.q_b_proj.weight", [h * (s["nope"] + s["rope"]), s["q_rank"]])
        tensors += fp8_linear(at + "self_attn.kv_a_proj_with_mqa.weight", [s["kv_rank"] + s["rope"], d])
        tensors += fp8_linear(at + "self_attn.kv_b_proj.weight", [h * (s["nope"] + s["v"]), s["kv_rank"]])
        tensors += fp8_linear(at + "self_attn.o_proj.weight", [d, h * s["v"]])
        if i < s["dense_layers"]:
            ffns, width = ["mlp."], s["dense_ffn"]
        else:
            tensors += [(at + "mlp.gate.weight", [experts, d], "BF16"), (at + "mlp.gate.e_score_correction_bias", [experts], "F32")]
            ffns, width = [f"mlp.experts.{e}." for e in range(experts)] + ["mlp.shared_experts."], f
        for ffn in ffns:
            for m in ("gate", "up", "down"):
                tensors += fp8_linear(f"{at}{ffn}{m}_proj.weight", [width, d] if m != "down" else [d, width])
    return tensors + [("model.norm.weight", [d], "BF16"), ("lm_head.weight", [s["vocab"], d], "BF16")]


def deepseek_config(experts: int) -> dict:
    s = DEEPSEEK_V3
    return {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": s["hidden"],
            "num_hidden_layers": s["layers"], "num_attention_heads": s["heads"], "num_key_value_heads": s["heads"],
            "q_lora_rank": s["q_rank"], "kv_lora_rank": s["kv_rank"], "qk_nope_head_dim": s["nope"],
            "qk_rope_head_dim": s["rope"], "v_head_dim": s["v"], "moe_intermediate_size": s["expert"],
            "intermediate_size": s["dense_ffn"], "n_routed_experts": experts, "n_shared_experts": 1,
            "num_experts_per_tok": 8, "first_k_dense_replace": s["dense_layers"], "rms_norm_eps": 1e-6,
            "vocab_size": s["vocab"], "torch_dtype": "bfloat16", "tie_word_embeddings": False,
            "quantization_config": fp8_config()}


def build_deepseek(cache: Path, experts: int = DEEPSEEK_V3["experts"]) -> Path:
    """The DeepSeek-V3-shaped checkpoint (`experts` routed experts per MoE layer; 256 as released),
    with only the shards the default terms read (`huref invariants`, the ICS): the embedding and the two
    middle layers."""
    def keep(name: str) -> bool:
        return needed(name, DEEPSEEK_V3["layers"])

    def layer_of(name: str):
        return name.split(".")[2] if name.startswith("model.layers.") else name

    return write_sharded(cache / f"deepseek-v3-{experts}e", deepseek_tensors(experts), deepseek_config(experts),
                         DEEPSEEK_V3["vocab"], keep, max_bytes=DEEPSEEK_SHARD_BYTES, boundary=layer_of)

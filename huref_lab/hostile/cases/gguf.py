"""Cases on GGUF files (huref/readers/gguf.py), written byte by byte: metadata of the wrong type or
encoding, names given twice, claimed block and expert counts, and split files that do not fit
together."""

from __future__ import annotations

import struct

from huref.config import MAX_SIZE  # the largest size huref takes from a config or metadata
from huref_lab.hostile.cases.base import case, invariants_run
from huref_lab.hostile.forgers import gguf_bytes, tiny_gguf, tiny_gguf_parts

HIDDEN, N_EXPERTS, EXPERT_FFN = 64, 4, 32  # the tiny llama's width; the experts the MoE cases add


def gguf_case(name, klass="gguf", extra_metadata=(), extra_tensors=(), expect=2, **override):
    """`huref invariants` of the tiny llama as one GGUF file (`forgers.tiny_gguf` arguments)."""
    @case(name, klass)
    def build(kit, directory):
        path = tiny_gguf(directory / "model.gguf", kit.llama, extra_metadata, extra_tensors, **override)
        return invariants_run(path, directory, expect)


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

# --- metadata of the wrong type, encoding or multiplicity ---

for _name, _value in {"array": ("arr", ("u32", [32, 32], None)), "infinity": ("f32", float("inf")),
                      "nan": ("f32", float("nan")), "string": ("str", "32"), "seven": ("u32", 7), "zero": ("u32", 0),
                      "2_40": ("u64", 1 << 40), "negative": ("i32", -32), "float": ("f32", 32.0)}.items():
    gguf_case(f"gguf_alignment_{_name}", "gguf metadata", **{"general.alignment": _value})
for _name, _value in {"scalar": ("str", "abc"), "integers": ("arr", ("i32", list(range(384)), None)),
                      "floats": ("arr", ("f32", [0.5] * 384, None)), "nested": ("arr", ("arr", [], None))}.items():
    gguf_case(f"gguf_tokens_{_name}", "gguf metadata", **{"tokenizer.ggml.tokens": _value})
gguf_case("gguf_token_types_string", "gguf metadata", **{"tokenizer.ggml.token_type": ("str", "normal")})
gguf_case("gguf_token_types_floats", "gguf metadata", **{"tokenizer.ggml.token_type": ("arr", ("f32", [1.0] * 384, None))})
gguf_case("gguf_bos_a_string", "gguf metadata", **{"tokenizer.ggml.bos_token_id": ("str", "1")})
gguf_case("gguf_eos_an_array", "gguf metadata", **{"tokenizer.ggml.eos_token_id": ("arr", ("u32", [1, 2], None))})
gguf_case("gguf_bos_a_float", "gguf metadata", **{"tokenizer.ggml.bos_token_id": ("f32", 1.0)})
gguf_case("gguf_name_an_array", "gguf metadata", **{"general.name": ("arr", ("str", ["x"], None))})
gguf_case("gguf_name_not_utf8", "gguf metadata", **{"general.name": ("str", b"tiny \xff\xfe")})
gguf_case("gguf_token_not_utf8", "gguf metadata",
          **{"tokenizer.ggml.tokens": ("arr", ("str", [b"\xff"] + [f"t{i}" for i in range(383)], None))})
gguf_case("gguf_epsilon_a_string", "gguf metadata", **{"llama.attention.layer_norm_rms_epsilon": ("str", "1e-5")})
gguf_case("gguf_key_not_utf8", "gguf metadata", extra_metadata=[(b"llama.\xff\xfe", "u32", 1)])
gguf_case("gguf_key_twice", "gguf metadata", extra_metadata=[("llama.block_count", "u32", 3)])
gguf_case("gguf_key_twice_other_value", "gguf metadata", extra_metadata=[("llama.block_count", "u32", 2)])
gguf_case("gguf_tensor_twice", "gguf metadata",
          extra_tensors=[("output_norm.weight", [HIDDEN], struct.pack(f"<{HIDDEN}f", *[1.0] * HIDDEN))])
gguf_case("gguf_tensor_twice_other_shape", "gguf metadata",
          extra_tensors=[("output_norm.weight", [HIDDEN // 2], struct.pack(f"<{HIDDEN // 2}f", *[1.0] * (HIDDEN // 2)))])

# --- claimed block and expert counts ---

for _name, _count in {"100k": 100_000, "1m": 1_000_000, "16m": MAX_SIZE}.items():
    gguf_case(f"gguf_block_count_{_name}", "claimed sizes", **{"llama.block_count": ("u32", _count)})


def expert_tensors(n_experts: int) -> list:
    """3-D expert tensors (ggml dims fastest-first) and routers for each of the tiny llama's 3 layers."""
    def f32(count):
        return struct.pack(f"<{count}f", *[0.01 * (k % 7 - 3) for k in range(count)])
    tensors = []
    for i in range(3):
        tensors += [(f"blk.{i}.ffn_gate_inp.weight", [HIDDEN, n_experts], f32(HIDDEN * n_experts)),
                    (f"blk.{i}.ffn_gate_exps.weight", [HIDDEN, EXPERT_FFN, n_experts], f32(HIDDEN * EXPERT_FFN * n_experts)),
                    (f"blk.{i}.ffn_up_exps.weight", [HIDDEN, EXPERT_FFN, n_experts], f32(HIDDEN * EXPERT_FFN * n_experts)),
                    (f"blk.{i}.ffn_down_exps.weight", [EXPERT_FFN, HIDDEN, n_experts], f32(HIDDEN * EXPERT_FFN * n_experts))]
    return tensors


gguf_case("gguf_experts_are_read", "valid inputs", extra_tensors=expert_tensors(N_EXPERTS), expect=0,
          **{"llama.expert_count": ("u32", N_EXPERTS), "llama.expert_used_count": ("u32", 2)})
gguf_case("gguf_expert_count_beyond_tensors", "claimed sizes", extra_tensors=expert_tensors(N_EXPERTS),
          **{"llama.expert_count": ("u32", 2 * N_EXPERTS), "llama.expert_used_count": ("u32", 2)})
gguf_case("gguf_expert_count_16m", "claimed sizes", extra_tensors=expert_tensors(N_EXPERTS),
          **{"llama.expert_count": ("u32", MAX_SIZE), "llama.expert_used_count": ("u32", 2)})
gguf_case("gguf_million_experts_no_bytes", "claimed sizes",  # a dimension of 0: no bytes behind a million experts
          extra_tensors=[(f"blk.0.ffn_{part}_exps.weight", [HIDDEN, 0, 1_000_000], b"") for part in ("gate", "up", "down")],
          **{"llama.expert_count": ("u32", 1_000_000), "llama.expert_used_count": ("u32", 2),
             "general.description": ("str", "x" * 1_100_000)})  # the file outgrows every dimension

# --- split files ---


def split_case(name: str, names: tuple[str, ...], given: int = 0, klass: str = "gguf splits", expect: int = 2,
               second_metadata=None, second_tensors=()):
    """The tiny llama as two GGUF splits written under names[0] and names[1] (the metadata in the
    first, the tensors halved, split.no / split.count / split.tensors.count as llama.cpp's
    gguf-split writes them; the second split's metadata updated by `second_metadata` {key: (kind,
    value)} and `second_tensors` added to it; a third name, if any, a copy of the second);
    `huref invariants` of names[given]."""
    @case(name, klass)
    def build(kit, directory):
        metadata, tensors = tiny_gguf_parts(kit.llama)
        half = len(tensors) // 2
        for i, (own, part) in enumerate(((metadata, tensors[:half]), ([], tensors[half:] + list(second_tensors)))):
            split = {"split.no": ("u16", i), "split.count": ("u16", 2), "split.tensors.count": ("i32", len(tensors))}
            if i:
                split.update(second_metadata or {})
            data = gguf_bytes(own + [(key, kind, value) for key, (kind, value) in split.items()], part)
            for file in names[i:] if i else names[:1]:
                (directory / file).write_bytes(data)
        return invariants_run(directory / names[given], directory, expect)


split_case("split_is_read", ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"), 1, "valid inputs", expect=0)
split_case("split_one_of_zero", ("x-00001-of-00000.gguf", "x-00002-of-00000.gguf"))
split_case("split_zero_of_zero", ("y-00000-of-00000.gguf", "y-00001-of-00000.gguf"))
split_case("split_three_of_two", ("z-00001-of-00002.gguf", "z-00002-of-00002.gguf", "z-00003-of-00002.gguf"), 2)
split_case("split_architecture_differs", ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"),
           second_metadata={"general.architecture": ("str", "qwen2")})
split_case("split_count_disagrees", ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"),
           second_metadata={"split.count": ("u16", 3)})
split_case("split_number_disagrees", ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"),
           second_metadata={"split.no": ("u16", 0)})
split_case("split_tensor_repeated_other_shape", ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"),
           second_tensors=[("token_embd.weight", [HIDDEN // 2, 384], b"\0" * (HIDDEN // 2 * 384 * 4))])
split_case("split_tensor_repeated_same_shape", ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"),
           second_tensors=[("token_embd.weight", [HIDDEN, 384], b"\0" * (HIDDEN * 384 * 4))])


@case("split_of_99999_parts", "gguf splits")
def _(kit, directory):
    return invariants_run(tiny_gguf(directory / "w-00001-of-99999.gguf", kit.llama), directory)

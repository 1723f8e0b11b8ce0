"""Cases on GGUF files (huref/readers/gguf.py), written byte by byte."""

from __future__ import annotations

from huref_lab.hostile.cases.base import case, invariants_run
from huref_lab.hostile.forgers import tiny_gguf


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



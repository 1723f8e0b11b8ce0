"""Peak memory of `huref compare` / `huref report` on small GGUF models with a large vocabulary.

    python scripts/gguf_memory.py build              # once: GGUF files in CACHE ($HUREF_GGUF_MEMORY_CACHE,
                                                     # else gguf_memory/ in huref's cache folder)
    python scripts/gguf_memory.py invariants         # peak RSS of `huref invariants A.gguf -o T.safetensors -q`
    python scripts/gguf_memory.py compare            # peak RSS of `huref compare A.gguf B.gguf -q`
    python scripts/gguf_memory.py report             # peak RSS of `huref report` over four models

The models are llama-shaped like a Qwen2.5-0.5B GGUF: a 151,936-token vocabulary of synthetic
distinct strings with as many BPE merges (tokenizer.ggml.tokens / token_type / merges), hidden
1024, 16 query and 8 key/value heads, FFN 2816, 2 layers, tied embedding, every matrix Q8_0
(token_embd 165 MB). Peak resident memory is ru_maxrss of the child process (what
/usr/bin/time -v reports), which counts the pages of a memory-mapped file that were touched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from huref.files import cache_dir

CACHE = Path(os.environ.get("HUREF_GGUF_MEMORY_CACHE") or cache_dir() / "gguf_memory")
REPO = Path(__file__).resolve().parent.parent
SHAPE = dict(vocab=151936, hidden=1024, heads=16, kv_heads=8, ffn=2816, layers=2)
CHUNK_ROWS = 8192  # rows quantized at a time while writing, so building stays small too


def token_strings(n: int) -> list[str]:
    """n distinct token strings, mostly byte-level BPE looking ('Ġ' + letters), a few thousand long."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = []
    for i in range(n):
        word, k = "", i
        while True:
            word += letters[k % 26]
            k //= 26
            if not k:
                break
        tokens.append(("\u0120" if i % 3 else "") + word * (1 + (i % 7 == 0)))
    return tokens


def write_model(path: Path, seed: int, vocab: int = SHAPE["vocab"], hidden: int = SHAPE["hidden"],
                heads: int = SHAPE["heads"], kv_heads: int = SHAPE["kv_heads"], ffn: int = SHAPE["ffn"],
                layers: int = SHAPE["layers"], qtype: str = "Q8_0") -> Path:
    """Write a llama GGUF with random weights (matrices in `qtype`, norms F32) and a full tokenizer."""
    import gguf

    quant = gguf.GGMLQuantizationType[qtype]
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(path.stem)
    writer.add_block_count(layers)
    writer.add_context_length(32768)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1e6)
    tokens = token_strings(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i >= vocab - 64 else 1 for i in range(vocab)])
    writer.add_token_merges([f"{tokens[i]} {tokens[i + 1]}" for i in range(vocab - 1)])

    def matrix(rows: int, cols: int) -> np.ndarray:
        """Random [rows, cols] weights quantized chunk by chunk; quantized bytes [rows, bytes per row]."""
        parts = []
        for start in range(0, rows, CHUNK_ROWS):
            values = rng.standard_normal((min(CHUNK_ROWS, rows - start), cols), dtype=np.float32) * 0.02
            parts.append(gguf.quants.quantize(values, quant) if quant != gguf.GGMLQuantizationType.F32 else values)
        return np.concatenate(parts)

    def add(name: str, data: np.ndarray) -> None:
        raw = quant if data.dtype == np.uint8 else None
        writer.add_tensor(name, data, raw_dtype=raw)

    add("token_embd.weight", matrix(vocab, hidden))
    add("output_norm.weight", 1 + 0.1 * rng.standard_normal(hidden, dtype=np.float32))
    for i in range(layers):
        for part, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv_heads * head_dim, hidden)),
                            ("attn_v", (kv_heads * head_dim, hidden)), ("attn_output", (hidden, hidden)),
                            ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))):
            add(f"blk.{i}.{part}.weight", matrix(*shape))
        for part in ("attn_norm", "ffn_norm"):
            add(f"blk.{i}.{part}.weight", 1 + 0.1 * rng.standard_normal(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def model_paths(n: int) -> list[Path]:
    return [CACHE / f"model{i}.gguf" for i in range(n)]


def peak_rss(args: list[str], env: dict | None = None) -> tuple[int, float, subprocess.CompletedProcess]:
    """Run `python -m huref.cli ARGS` from the repository; (peak RSS in bytes, seconds, the process).

    The child's ru_maxrss comes from wait4(), so earlier children of this process do not count."""
    command = [sys.executable, "-c", "from huref.cli import main; main()", *args]
    child_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    out, err = process.stdout.read(), process.stderr.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(command, process.returncode, out, err)
    return usage.ru_maxrss * 1024, seconds, done  # Linux reports ru_maxrss in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["build", "invariants", "compare", "report"])
    what = parser.parse_args().what
    if what == "build":
        for seed, path in enumerate(model_paths(4)):
            if not path.is_file():
                write_model(path, seed)
            print(f"{path}  {path.stat().st_size / 1e6:.0f} MB")
        return
    missing = [str(p) for p in model_paths(4) if not p.is_file()]
    if missing:
        sys.exit(f"run `python scripts/gguf_memory.py build` first (missing {', '.join(missing)})")
    if what == "invariants":
        args = ["invariants", str(model_paths(1)[0]), "-o", str(CACHE / "terms.safetensors"), "-q"]
    elif what == "compare":
        args = ["compare", *map(str, model_paths(2)), "-q", "--json"]
    else:
        args = ["report", *map(str, model_paths(4)), "-o", str(CACHE / "report.html"), "-q"]
    rss, seconds, done = peak_rss(args)
    if done.returncode not in (0, 1):
        sys.exit(f"huref {what} failed ({done.returncode}): {done.stderr.strip()}")
    print(f"huref {what}: peak RSS {rss / 2**30:.2f} GiB, {seconds:.1f} s")


if __name__ == "__main__":
    main()

"""Benchmark huref on checkpoints shaped like Llama-2 7B, 13B and 70B; write docs/PERFORMANCE.md.

    python scripts/bench.py build                 # once: synthetic checkpoints in the cache (--cache)
    python scripts/bench.py measure --label final # time huref (and the transformers baseline) -> results/final.json
    python scripts/bench.py report --label final  # docs/PERFORMANCE.md from that results file
    python scripts/bench.py pair                  # lineage and compare of two 7B-shaped models -> results/pair.json
    python scripts/bench.py generator-step --photos P  # images/s of the dog generator's training step

The checkpoints hold random bfloat16 weights in sharded safetensors with a complete
model.safetensors.index.json and a tokenizer.json of 32000 distinct strings. 7B is complete; for
13B and 70B only the shards that huref reads (embedding, the default layers) exist, as after a
partial hub download. Wall time and peak resident memory come from wait4() on the child process
(ru_maxrss, what /usr/bin/time -v reports); the machine's load average is recorded next to each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import torch

from huref.architectures import arch_for_config
from huref.files import cache_dir, write_atomically
from huref.invariants import DEFAULT_LAYERS as N_LAYERS_READ, resolve_layers
from huref.invariants import DEFAULT_TOKENS as N_TOKENS

REPO = Path(__file__).resolve().parent.parent
MAX_SHARD_BYTES = 2 * 10**9  # "a few GB" per shard, in the state-dict order transformers writes
VOCAB = 32000
LLAMA = arch_for_config({"model_type": "llama"})  # the tensor names, from huref's architecture table

SHAPES = {
    "7b": dict(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, partial=False),
    "13b": dict(layers=40, hidden=5120, ffn=13824, heads=40, kv_heads=40, partial=True),
    "70b": dict(layers=80, hidden=8192, ffn=28672, heads=64, kv_heads=8, partial=True),
}


# --- building the checkpoints -------------------------------------------------------------------

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


def shard_plan(tensors: list[tuple[str, list[int]]]) -> list[list[tuple[str, list[int]]]]:
    """Split tensors, in order, into shards of at most MAX_SHARD_BYTES (bfloat16) each."""
    shards, current, size = [], [], 0
    for name, shape in tensors:
        nbytes = 2 * math.prod(shape)
        if current and size + nbytes > MAX_SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    return shards + [current]


def needed(name: str, n_layers: int) -> bool:
    """Whether huref reads this tensor at default settings: the embedding and the default layers."""
    read = {layer_prefix(i) for i in resolve_layers(n_layers, None)}
    return name == LLAMA.base_prefix + LLAMA.embed or any(name.startswith(p) for p in read)


def tensor_data(name: str, shape: list[int]):
    """The bytes of a random bfloat16 tensor, yielded a few million values at a time (std 0.02; norms ~1)."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    numel = math.prod(shape)
    chunk = 1 << 23
    for start in range(0, numel, chunk):
        count = min(chunk, numel - start)
        if len(shape) == 1:
            values = 1.0 + 0.1 * torch.randn(count, generator=generator)
        else:
            values = 0.02 * torch.randn(count, generator=generator)
        yield values.to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def write_shard(path: Path, tensors: list[tuple[str, list[int]]]) -> None:
    """Write one safetensors shard (header, then each tensor's data), atomically."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        nbytes = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    data = itertools.chain([len(text).to_bytes(8, "little"), text], *(tensor_data(name, shape) for name, shape in tensors))
    write_atomically(path, data)


def write_tokenizer(directory: Path) -> None:
    """tokenizer.json: a word-level vocabulary of VOCAB distinct strings (id i -> string i)."""
    from tokenizers import Tokenizer, models

    words, seen, i = [], set(), 0
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    while len(words) < VOCAB:
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
    tokenizer = Tokenizer(models.WordLevel({w: j for j, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.save(str(directory / "tokenizer.json"))


def write_config(directory: Path, shape: dict) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
        "vocab_size": VOCAB, "hidden_size": shape["hidden"], "intermediate_size": shape["ffn"],
        "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape["kv_heads"], "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def build(size: str, cache: Path) -> Path:
    """Build (or finish building) the checkpoint of one size in `cache`; return its directory."""
    shape = SHAPES[size]
    directory = cache / f"llama-{size}"
    directory.mkdir(parents=True, exist_ok=True)
    tensors = tensor_shapes(shape)
    shards = shard_plan(tensors)
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    index = {"metadata": {"total_size": sum(2 * math.prod(s) for _, s in tensors)},
             "weight_map": {name: file for file, shard in zip(names, shards) for name, _ in shard}}
    for file, shard in zip(names, shards):
        if shape["partial"] and not any(needed(name, shape["layers"]) for name, _ in shard):
            continue
        if not (directory / file).exists():
            print(f"writing {directory / file}", flush=True)
            write_shard(directory / file, shard)
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    write_config(directory, shape)
    if not (directory / "tokenizer.json").exists():
        write_tokenizer(directory)
    return directory


# --- one deepseek_v3-shaped MoE layer: memory with 256 experts listed ----------------------------

DEEPSEEK_V3 = dict(hidden=7168, heads=128, q_rank=1536, kv_rank=512, nope=128, rope=64, v=128, expert=2048)
MOE_VOCAB = 8192  # embedding rows; no tokenizer: tokens are chosen by id


def moe_tensors(experts: int) -> list[tuple[str, list[int]]]:
    """(name, shape) of a one-layer deepseek_v3 checkpoint with `experts` routed experts and one shared."""
    s = DEEPSEEK_V3
    d, h, f = s["hidden"], s["heads"], s["expert"]
    at = "model.layers.0."
    tensors = [("model.embed_tokens.weight", [MOE_VOCAB, d]), (at + "input_layernorm.weight", [d]),
               (at + "post_attention_layernorm.weight", [d]),
               (at + "self_attn.q_a_proj.weight", [s["q_rank"], d]), (at + "self_attn.q_a_layernorm.weight", [s["q_rank"]]),
               (at + "self_attn.q_b_proj.weight", [h * (s["nope"] + s["rope"]), s["q_rank"]]),
               (at + "self_attn.kv_a_proj_with_mqa.weight", [s["kv_rank"] + s["rope"], d]),
               (at + "self_attn.kv_a_layernorm.weight", [s["kv_rank"]]),
               (at + "self_attn.kv_b_proj.weight", [h * (s["nope"] + s["v"]), s["kv_rank"]]),
               (at + "self_attn.o_proj.weight", [d, h * s["v"]]), (at + "mlp.gate.weight", [experts, d])]
    for expert in [f"experts.{e}." for e in range(experts)] + ["shared_experts."]:
        tensors += [(f"{at}mlp.{expert}{m}_proj.weight", [f, d] if m != "down" else [d, f]) for m in ("gate", "up", "down")]
    return tensors


def moe_build(cache: Path, experts: int) -> Path:
    """Write the one-layer deepseek_v3-shaped checkpoint with `experts` routed experts into the cache."""
    s = DEEPSEEK_V3
    directory = cache / f"deepseek-v3-layer-{experts}e"
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "model.safetensors").exists():
        write_shard(directory / "model.safetensors", moe_tensors(experts))
    config = {"model_type": "deepseek_v3", "hidden_size": s["hidden"], "num_hidden_layers": 1,
              "num_attention_heads": s["heads"], "num_key_value_heads": s["heads"], "q_lora_rank": s["q_rank"],
              "kv_lora_rank": s["kv_rank"], "qk_nope_head_dim": s["nope"], "qk_rope_head_dim": s["rope"],
              "v_head_dim": s["v"], "moe_intermediate_size": s["expert"], "intermediate_size": 18432,
              "n_routed_experts": experts, "n_shared_experts": 1, "first_k_dense_replace": 0,
              "rms_norm_eps": 1e-6, "vocab_size": MOE_VOCAB, "torch_dtype": "bfloat16"}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def moe_measure(cache: Path, experts: list[int], tokens: int, device: str = "cpu") -> dict:
    """Time `huref invariants --layers 0` on each one-layer checkpoint; add to results/moe_layer.json."""
    path = cache / "results" / "moe_layer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() else {"machine": machine(), "runs": []}
    for e in experts:
        directory = moe_build(cache, e)
        run = timed(huref_command("invariants", directory, cache / "moe.safetensors",
                                  ["--layers", "0", "--tokens", str(tokens), "--device", device]))
        run.update(experts=e, tokens=tokens, device=device, machine=machine()["cpu"],
                   checkpoint_bytes=(directory / "model.safetensors").stat().st_size)
        results["runs"].append(run)
        print(run, flush=True)
    path.write_text(json.dumps(results, indent=1))
    return results


def _moe_section(results: dict) -> list[str]:
    lines = ["", "## One deepseek_v3-shaped MoE layer", "",
             "A one-layer checkpoint with deepseek_v3's real shapes (hidden 7168, 128 heads, q latent 1536, kv latent",
             "512, per head 128 + 64 query/key and 128 value dims, experts of width 2048, one shared expert), random",
             "bf16; `huref invariants --layers 0` in a child process (`scripts/bench.py moe`). The experts are",
             "listed as lazy handles and read one block (one expert's matrix, 59 MB in float32) at a time, so the",
             "peak does not grow with the expert count while the time grows linearly. Rows marked extrapolated",
             "extend the line through two measured counts to 256; the others are measurements.", "",
             "| routed experts | checkpoint | tokens | device | wall | peak RSS | machine, load |",
             "|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in sorted(results["runs"], key=lambda r: (r.get("device", "cpu"), r["tokens"], r["experts"])):
        where = f"{r.get('machine', results['machine']['cpu'])}, {r['load_before']}"
        lines.append(f"| {r['experts']} | {_gb(r['checkpoint_bytes'])} | {r['tokens']} | {r.get('device', 'cpu')} | "
                     f"{r['wall_s']} s | {r['peak_rss_mb'] / 1024:.2f} GiB | {where} |")
        groups.setdefault((r.get("device", "cpu"), r["tokens"], r.get("machine")), []).append(r)
    for (device, n, _), group in groups.items():
        a, b = group[0], group[-1]
        if b["experts"] > a["experts"] and b["experts"] < 256:
            per_expert = (b["wall_s"] - a["wall_s"]) / (b["experts"] - a["experts"])
            size = (b["checkpoint_bytes"] - a["checkpoint_bytes"]) / (b["experts"] - a["experts"])
            lines.append(f"| 256 (extrapolated) | {_gb(a['checkpoint_bytes'] + (256 - a['experts']) * size)} | {n} | "
                         f"{device} | {a['wall_s'] + (256 - a['experts']) * per_expert:.0f} s | "
                         f"{max(r['peak_rss_mb'] for r in group) / 1024:.2f} GiB (flat) | |")
    lines += ["", "Reproduce: `python scripts/bench.py moe --experts 4,12 --tokens 1024` (add `--device cuda`), then",
              "`python scripts/bench.py report`."]
    return lines


# --- two 7B-shaped models: lineage and compare -------------------------------------------------

PAIR_COMMANDS = {
    "huref lineage": ["lineage"],
    "huref compare --verdict ics": ["compare", "--verdict", "ics"],
    "huref compare (default verdict)": ["compare"],
}


def pair_measure(cache: Path, results: Path, runs: int, extra: list[str] = ()) -> dict:
    """Time each PAIR_COMMANDS entry on the 7B-shaped checkpoint against itself (two subjects: both
    sides are read and computed), with a matmul-rate sample before each run (the floor the load
    leaves); append to `results` (JSON) and print each run."""
    directory = build("7b", cache)
    found = json.loads(results.read_text()) if results.exists() else {"machine": machine(), "runs": []}
    for _ in range(runs):
        for name, args in PAIR_COMMANDS.items():
            gflops = matmul_gflops()
            command = [sys.executable, "-c", "from huref.cli import main; main()", args[0], str(directory),
                       str(directory), "-q", *args[1:], *extra]
            run = timed(command)
            run.update(command=name, extra=list(extra), matmul_gflops_before=round(gflops, 1),
                       commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                             text=True, cwd=REPO).stdout.strip())
            found["runs"].append(run)
            results.write_text(json.dumps(found, indent=1))
            print(json.dumps(run), flush=True)
    return found


# --- the floors: bytes to read, flops to do, what the machine sustains ---------------------------

def floor_counts(size: str, n: int = N_TOKENS) -> dict:
    """Bytes huref must read and the matmul flops of the cheapest evaluation order, for two
    layers over n tokens (Llama: no norms on Q/K or on the writes, so query heads can be summed per
    key/value head on the weights before projecting)."""
    s = SHAPES[size]
    d, f, hd = s["hidden"], s["ffn"], s["hidden"] // s["heads"]
    q_out, kv = d, s["kv_heads"] * hd
    layer_params = 2 * d * q_out + 2 * d * kv + 3 * d * f + 2 * d
    flops = {
        "qk": 2 * n * d * kv * 2 + 2 * n * n * kv,  # X·Wq_sumᵀ, X·Wkᵀ, then [n, kv]·[kv, n]
        "vo": 2 * n * d * kv * 2 + 2 * n * n * kv,  # X·Wvᵀ, X_o·Wo_sum, then [n, kv]·[kv, n]
        "ffn": 3 * 2 * n * d * f + 2 * n * n * d,  # X·Wgᵀ, X·Wuᵀ, H·Wdᵀ, then [n, d]·[d, n]
    }
    return {
        "bytes_read": 2 * (N_LAYERS_READ * layer_params + n * d),
        "checkpoint_bytes": 2 * sum(math.prod(shape) for _, shape in tensor_shapes(s)),
        "flops": {k: N_LAYERS_READ * v for k, v in flops.items()},
        "total_flops": N_LAYERS_READ * sum(flops.values()),
    }


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """Median GFLOP/s of a size x size float32 matmul at torch's default thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def evict(directory: Path) -> None:
    """Drop a checkpoint's files from the page cache (posix_fadvise DONTNEED; no root needed)."""
    for path in directory.glob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_speed(path: Path, nbytes: int = 1 << 30) -> dict:
    """GB/s reading nbytes of a file sequentially, from disk (after eviction) and from the page cache."""
    import numpy as np

    buffer = np.empty(64 << 20, dtype=np.uint8)
    speeds = {}
    for label in ("disk", "page_cache"):
        if label == "disk":
            evict(path.parent)
        done, start = 0, time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while done < nbytes:
                got = f.readinto(buffer)
                if not got:
                    break
                done += got
        speeds[label] = done / (time.perf_counter() - start) / 1e9
    return speeds


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(meminfo_gib("MemTotal"), 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


# --- timing a command ---------------------------------------------------------------------------

def _status_kb(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/status") as f:
            return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("RssAnon", "RssFile")}
    except (OSError, ValueError):
        return {}


def timed(command: list[str], env: dict | None = None) -> dict:
    """Run a command; return wall seconds, peak RSS (ru_maxrss, as /usr/bin/time -v), the peaks of
    its anonymous and file-backed parts (polled every 50 ms), load averages and the exit code."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peaks = {"RssAnon": 0, "RssFile": 0}
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        for key, kb in _status_kb(child.pid).items():
            peaks[key] = max(peaks[key], kb)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    stderr = child.stderr.read().decode(errors="replace").strip().splitlines()
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "peak_anon_mb": round(peaks["RssAnon"] / 1024), "peak_file_mb": round(peaks["RssFile"] / 1024),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "rc": os.waitstatus_to_exitcode(status), "stderr_tail": stderr[-1:] if stderr else [],
            "utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")}


def huref_command(tool: str, directory: Path, out: Path, extra: list[str] = ()) -> list[str]:
    """`huref TOOL DIRECTORY -o OUT -q EXTRA...` (tool: invariants | fingerprint) in this interpreter."""
    return [sys.executable, "-c", "from huref.cli import main; main()", tool, str(directory), "-o", str(out), "-q", *extra]


def baseline(directory: Path, dtype: str, out: Path) -> None:
    """The paper's way: load the whole model with transformers, then compute the same terms from the
    loaded weights (huref's engine over an in-memory reader), in this one process."""
    import transformers

    from huref.invariants import invariant_terms, save_terms
    from huref.readers import TensorReader
    from huref.sources import Model, _read_json, load_vocab

    class LoadedWeights(TensorReader):
        def __init__(self, state: dict) -> None:
            super().__init__()
            self.state = state

        def names(self):
            return list(self.state)

        def has(self, name):
            return name in self.state

        def shape(self, name):
            return tuple(self.state[name].shape)

        def _read(self, name, rows):
            t = self.state[name]
            t = t if rows is None else t.reshape(-1, t.shape[-1])[rows]
            return t, t.contiguous().view(torch.uint8).numpy().tobytes()

    loaded = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype))
    state = {k: v.detach() for k, v in loaded.state_dict().items()}
    model = Model(str(directory), _read_json(directory / "config.json"), LoadedWeights(state), load_vocab(directory))
    save_terms(invariant_terms(model), out)


def breakdown(directory: Path, out: Path) -> dict:
    """Where one `huref invariants` run spends its time, measured in-process: interpreter start and
    imports, opening the model, reading (read, finite check, hash, bfloat16 -> float32), the rest of
    the terms (matmuls, norms), writing the file."""
    since_start = time.time() - _process_start()
    from huref.invariants import invariant_terms, save_terms
    from huref.readers import TensorReader
    from huref.sources import load_model

    spent = {"start_and_imports_s": since_start, "read_s": 0.0}
    original = TensorReader.read

    def timed_read(self, name, rows=None):
        start = time.perf_counter()
        try:
            return original(self, name, rows)
        finally:
            spent["read_s"] += time.perf_counter() - start

    TensorReader.read = timed_read
    start = time.perf_counter()
    model = load_model(str(directory))
    spent["open_s"] = time.perf_counter() - start
    start = time.perf_counter()
    terms = invariant_terms(model)
    spent["terms_s"] = time.perf_counter() - start
    start = time.perf_counter()
    save_terms(terms, out)
    spent["save_s"] = time.perf_counter() - start
    spent["compute_s"] = spent["terms_s"] - spent["read_s"]
    return {k: round(v, 2) for k, v in spent.items()}


def _process_start() -> float:
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def relative_difference(a: Path, b: Path) -> float:
    """max |a - b| / max |b| over two invariants files."""
    from huref.invariants import load_terms

    va, vb = load_terms(a).values.double(), load_terms(b).values.double()
    return float((va - vb).abs().max() / vb.abs().max())


def meminfo_gib(key: str) -> float:
    """A /proc/meminfo figure (MemTotal, MemAvailable, ...) in GiB."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info[key] / 2**20


FINGERPRINT_SIZES = ("7b", "70b")  # the fingerprint targets; 13B shows memory growth with invariants alone


def measure(cache: Path, label: str, runs: int, sizes: list[str], with_baseline: bool, with_precision: bool,
            runs_large: int = 2) -> Path:
    """Time huref (and the baseline) on the checkpoints built in `cache`; write cache/results/<label>.json.
    7B gets `runs` runs per tool, 13B and 70B `runs_large`; the first of each starts cold."""
    results_dir = cache / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    scratch = cache / "scratch"
    scratch.mkdir(exist_ok=True)
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    result = {"label": label, "git": git.stdout.strip(), "machine": machine(), "runs": [],
              "floors": {size: floor_counts(size) for size in SHAPES},
              "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")}
    path = results_dir / f"{label}.json"

    def save():
        path.write_text(json.dumps(result, indent=1))

    print("machine:", result["machine"], flush=True)
    result["matmul_gflops"] = round(matmul_gflops(), 1)
    result["matmul_load"] = round(os.getloadavg()[0], 2)
    result["read_gbps"] = {k: round(v, 2) for k, v in read_speed(next((cache / "llama-7b").glob("*.safetensors"))).items()}
    print("matmul GFLOP/s:", result["matmul_gflops"], "read GB/s:", result["read_gbps"], flush=True)
    for size in sizes:
        directory = cache / f"llama-{size}"
        for tool in ["invariants"] + (["fingerprint"] if size in FINGERPRINT_SIZES else []):
            out = scratch / f"{tool}-{size}.{'safetensors' if tool == 'invariants' else 'png'}"
            for k in range(runs if size == "7b" else runs_large):
                if k == 0:
                    evict(directory)
                run = {"tool": tool, "size": size, "run": k, "cold": k == 0, **timed(huref_command(tool, directory, out))}
                print(run, flush=True)
                result["runs"].append(run)
                save()
    if "7b" in sizes:
        command = [sys.executable, __file__, "breakdown", str(cache / "llama-7b"), "-o", str(scratch / "breakdown.safetensors")]
        load = os.getloadavg()[0]
        found = subprocess.run(command, capture_output=True, text=True)
        if found.returncode == 0:
            result["breakdown_7b"] = {**json.loads(found.stdout.strip().splitlines()[-1]), "load_before": round(load, 2)}
            print("breakdown:", result["breakdown_7b"], flush=True)
        save()
    if with_precision:
        directory = cache / "llama-7b"
        out = scratch / "invariants-7b-float64.safetensors"
        run = {"tool": "invariants --precision float64", "size": "7b", "run": 0, "cold": False,
               **timed(huref_command("invariants", directory, out, ["--precision", "float64"]))}
        if run["rc"] == 0:
            run["max_rel_diff_float32_vs_float64"] = relative_difference(scratch / "invariants-7b.safetensors", out)
        print(run, flush=True)
        result["runs"].append(run)
        save()
    if with_baseline:
        for dtype in ("bfloat16", "float32"):
            directory = cache / "llama-7b"
            need = floor_counts("7b")["checkpoint_bytes"] * (2 if dtype == "float32" else 1) / 2**30 + 2
            base = {"tool": f"baseline transformers ({dtype})", "size": "7b", "run": 0, "cold": False}
            if need > result["machine"]["ram_gb"]:
                base.update(skipped=f"the weights alone need ~{need - 2:.0f} GiB, more than the machine's "
                                    f"{result['machine']['ram_gb']} GiB")
            elif meminfo_gib("MemAvailable") < need:
                base.update(skipped=f"needs ~{need:.0f} GiB; only {meminfo_gib('MemAvailable'):.0f} GiB were free beside "
                                    f"other jobs when measured")
            else:
                out = scratch / f"baseline-7b-{dtype}.safetensors"
                base.update(timed([sys.executable, __file__, "baseline", str(directory), "--dtype", dtype, "-o", str(out)]))
                if base["rc"] == 0:
                    base["max_rel_diff_vs_huref"] = relative_difference(out, scratch / "invariants-7b.safetensors")
            print(base, flush=True)
            result["runs"].append(base)
            save()
    result["finished_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    save()
    return path


# --- docs/PERFORMANCE.md ------------------------------------------------------------------------

def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB"


def _summary(runs: list[dict]) -> dict:
    """Median wall and peak RSS over the warm runs (all runs if there is only a cold one), the cold
    run apart, and the range of load averages seen."""
    done = [r for r in runs if r.get("rc") == 0]
    warm = [r for r in done if not r["cold"]] or done
    cold = [r for r in done if r["cold"]]
    loads = [r[k] for r in runs if "load_before" in r for k in ("load_before", "load_after")]
    return {
        "n": len(warm), "wall": statistics.median(r["wall_s"] for r in warm) if warm else None,
        "rss": statistics.median(r["peak_rss_mb"] for r in warm) if warm else None,
        "anon": max((r["peak_anon_mb"] for r in warm), default=None),
        "file": max((r["peak_file_mb"] for r in warm), default=None),
        "cold": cold[0]["wall_s"] if cold else None,
        "load": f"{min(loads):.1f}-{max(loads):.1f}" if loads else "",
        "when": runs[0].get("utc", ""), "failed": [r for r in runs if r.get("rc") not in (0, None)],
        "skipped": next((r["skipped"] for r in runs if "skipped" in r), None),
    }


def _targets(groups: dict, floors: dict, gflops: float) -> list[str]:
    """The issue's targets, each with the measured figure and whether it holds."""
    def get(tool, size):
        return _summary(groups[tool, size]) if (tool, size) in groups else None

    lines = ["", "## Targets", "", "| target | measured | holds |", "|---|---|---|"]
    fp7, fp70, inv7 = get("fingerprint", "7b"), get("fingerprint", "70b"), get("invariants", "7b")
    if fp7 and fp7["wall"]:
        lines.append(f"| 7B `huref fingerprint`: peak RSS <= 3 GB | {fp7['rss'] / 1024:.2f} GiB | "
                     f"{'yes' if fp7['rss'] * 2**20 <= 3e9 else 'no'} |")
        lines.append(f"| 7B `huref fingerprint`: wall <= 2 min | {fp7['wall']:.1f} s (load {fp7['load']}) | "
                     f"{'yes' if fp7['wall'] <= 120 else 'no'} |")
    if fp70 and fp70["wall"]:
        lines.append(f"| 70B-shaped `huref fingerprint`: peak RSS <= 6 GB, completes | {fp70['rss'] / 1024:.2f} GiB, "
                     f"{fp70['wall']:.1f} s | {'yes' if fp70['rss'] * 2**20 <= 6e9 else 'no'} |")
    sizes = [size for size in SHAPES if get("invariants", size) and get("invariants", size)["rss"]]
    if len(sizes) > 1:
        rss = ", ".join(f"{size.upper()} {get('invariants', size)['rss'] / 1024:.2f} GiB" for size in sizes)
        lines.append(f"| memory grows with one layer, not the number of layers | {rss} | see Memory |")
    if inv7 and inv7["wall"]:
        floor_s = floors["7b"]["total_flops"] / (gflops * 1e9)
        ratio = inv7["wall"] / floor_s
        lines.append(f"| 7B `huref invariants` within 1.2x of the matmul floor | {ratio:.2f}x "
                     f"({inv7['wall']:.1f} s vs {floor_s:.1f} s) | {'yes' if ratio <= 1.2 else 'no'} |")
    return lines


def _gpu_section(gpu: dict) -> list[str]:
    tiny = {k[len("tiny_"):-len("_rel_diff")]: v for k, v in gpu.items() if k.startswith("tiny_")}
    worst = max(tiny.values()) if tiny else float("nan")
    lines = ["", "## GPU (`--device cuda`)", "",
             f"Checked once on a device machine ({gpu['gpu']}, torch {gpu['torch']}, TF32 "
             f"{'on' if gpu['tf32'] else 'off'}): the terms of {len(tiny)} tiny architectures "
             f"({', '.join(tiny)}) computed with `--device cuda` match the CPU's to {worst:.1e} relative "
             f"(max |difference| / max |term|), with the same tokens, layers and tensor hashes; "
             f"`huref invariants --device cuda` exited {gpu['cli_rc']}."]
    if "7b_cuda_wall_s_1" in gpu:
        lines.append(f"On a 7B-shaped checkpoint (embedding + two layers, bf16) there, `invariant_terms` took "
                     f"{gpu['7b_cuda_wall_s_1']:.1f} s on the GPU (warm page cache; {gpu['7b_cuda_wall_s_0']:.1f} s "
                     f"the first time) against {gpu['7b_cpu_wall_s']:.1f} s on its {gpu['7b_cpu_threads']} CPU threads, "
                     f"agreeing to {gpu['7b_rel_diff']:.1e}: on a GPU the matmuls are nearly free and reading, hashing "
                     f"and converting the 0.8 GB of weights on the CPU is what remains.")
    return lines


def report(results: dict, cache: Path) -> str:
    """The text of docs/PERFORMANCE.md for one results file."""
    m, gflops = results["machine"], results["matmul_gflops"]
    floors = results["floors"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in results["runs"]:
        groups.setdefault((run["tool"], run["size"]), []).append(run)
    lines = [
        "# Performance",
        "",
        "How fast and in how little memory huref computes a model's invariant terms (and its fingerprint),",
        "on checkpoints shaped exactly like Llama-2 7B, 13B and 70B, against the way the paper's code works:",
        "load the whole model with transformers, then compute. Generated by `scripts/bench.py` (see the end).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, torch {m['torch']} "
        f"({m['torch_threads']} threads), Python {m['python']}. Measured {results['started_utc']}"
        f"-{results.get('finished_utc', '?')} UTC at commit `{results['git']}`.",
        "",
        "Other jobs may run beside the benchmark, so every timing carries the 1-minute load average seen",
        "before and after it (2.0 = both cores busy with our job alone; higher = other jobs shared them).",
        "Timings taken at a load above ~2.5 are pessimistic by about load / 2.",
        "",
        "## Results",
        "",
        f"Defaults: the {N_LAYERS_READ} middle layers, {N_TOKENS} probe tokens, float32 arithmetic, CPU. Wall time and peak resident",
        "memory (ru_maxrss, as `/usr/bin/time -v` reports it) are medians over the warm runs (checkpoint",
        "bytes in the page cache); *cold* is the first run, after the checkpoint's files were evicted from",
        "the page cache.",
        "",
        "| checkpoint | command | warm runs | wall (median) | cold run | peak RSS (median) | peak anon / file-backed | load | when (UTC) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (tool, size), runs in groups.items():
        s = _summary(runs)
        label = f"{size.upper()}-shaped" + (" (partial download)" if SHAPES[size]["partial"] else "")
        name = tool if tool.startswith("baseline") else f"huref {tool}"
        if s["skipped"]:
            lines.append(f"| {label} | {name} | - | cannot run: {s['skipped']} | | | | | |")
        elif s["wall"] is None:
            tail = " ".join(s["failed"][0].get("stderr_tail", [])) if s["failed"] else "no result"
            lines.append(f"| {label} | {name} | 0 | failed: {tail[:120]} | | | | {s['load']} | {s['when']} |")
        else:
            cold = f"{s['cold']:.1f} s" if s["cold"] is not None else "-"
            lines.append(f"| {label} | {name} | {s['n']} | {s['wall']:.1f} s | {cold} | {s['rss'] / 1024:.2f} GiB "
                         f"| {s['anon'] / 1024:.2f} / {s['file'] / 1024:.2f} GiB | {s['load']} | {s['when']} |")
    checks = [r for r in results["runs"] if "max_rel_diff_vs_huref" in r or "max_rel_diff_float32_vs_float64" in r]
    if checks:
        lines += ["", "Agreement:"]
        for r in checks:
            if "max_rel_diff_vs_huref" in r:
                lines.append(f"- {r['tool']} vs huref: max |difference| / max |term| = {r['max_rel_diff_vs_huref']:.1e} "
                             "(the same terms, from the same bytes).")
            else:
                lines.append(f"- huref float32 (default) vs `--precision float64` on 7B: max |difference| / max |term| = "
                             f"{r['max_rel_diff_float32_vs_float64']:.1e} (the tested bound is 1e-4).")

    if any(r["tool"].startswith("baseline") for r in results["runs"]):
        lines += ["", "The baseline loads with `AutoModelForCausalLM.from_pretrained` and then computes the same terms",
                  "from the loaded weights (huref's algebra over an in-memory reader), in one process. With the dtype",
                  "as stored (bfloat16), transformers 5 memory-maps the shards instead of copying them, so its resident",
                  "memory counts only the pages the computation touched (13.5 GB stay mapped, and anything that runs",
                  "the model touches them all); in float32 (the issue: ~27 GB for the paper's way) it must materialize every",
                  "weight and cannot run on this machine."]
    lines += [
        "", "## Floors", "",
        "What cannot be avoided: reading the bytes of the embedding rows and the two layers, and the matmul",
        "flops of the cheapest evaluation order (`huref/invariants.py`; the query heads of a group are summed",
        f"on the weights, so 70B's 64 query heads cost what 8 do). This machine sustains "
        f"**{gflops:.0f} GFLOP/s** on a 4096x4096 float32 matmul (the best sample; load {results['matmul_load']:.1f} then), "
        f"reads {results['read_gbps']['disk']:.2f} GB/s from disk and {results['read_gbps']['page_cache']:.2f} GB/s "
        f"from the page cache.",
        "",
        "| checkpoint | whole checkpoint | bytes huref must read | read time, disk / cache | flops qk + vo + ffn | matmul floor | huref wall (median) | wall / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in SHAPES:
        f = floors[size]
        if ("invariants", size) not in groups:
            continue
        s = _summary(groups["invariants", size])
        floor_s = f["total_flops"] / (gflops * 1e9)
        ratio = f"{s['wall'] / floor_s:.2f}x" if s["wall"] else "-"
        wall = f"{s['wall']:.1f} s" if s["wall"] else "-"
        flops = " + ".join(f"{f['flops'][k] / 1e12:.2f}" for k in ("qk", "vo", "ffn"))
        lines.append(f"| {size.upper()} | {_gb(f['checkpoint_bytes'])} | {_gb(f['bytes_read'])} | "
                     f"{f['bytes_read'] / results['read_gbps']['disk'] / 1e9:.1f} s / "
                     f"{f['bytes_read'] / results['read_gbps']['page_cache'] / 1e9:.1f} s | "
                     f"{flops} = {f['total_flops'] / 1e12:.2f} TFLOP | {floor_s:.1f} s | {wall} | {ratio} |")
    b = results.get("breakdown_7b")
    if b:
        compute_rate = floors["7b"]["total_flops"] / b["compute_s"] / 1e9
        lines += [
            "", f"Where a 7B run's time goes (one run, measured in-process, load {b['load_before']:.1f} at its start):", "",
            "| phase | seconds |", "|---|---|",
            f"| interpreter start, imports (torch) | {b['start_and_imports_s']:.1f} |",
            f"| open the checkpoint (config, index, tokenizer.json) | {b['open_s']:.1f} |",
            f"| read tensors: read, SHA-256, finite check, bfloat16 -> float32 | {b['read_s']:.1f} |",
            f"| compute the terms (matmuls at {compute_rate:.0f} GFLOP/s, norms) | {b['compute_s']:.1f} |",
            f"| write the invariants file ({N_LAYERS_READ} x 3 x {N_TOKENS} x {N_TOKENS} float32, {N_LAYERS_READ * 3 * N_TOKENS**2 * 4 / 1e6:.0f} MB) "
            f"| {b['save_s']:.1f} |",
        ]
    if b:
        other = b["start_and_imports_s"] + b["open_s"] + b["read_s"] + b["save_s"]
        lines += [
            "", "The gap to the matmul floor, and what would close it:", "",
            f"- Work around the matmuls: {other:.1f} s of this run (start and imports, reading, writing). Reading is",
            "  mostly per-byte passes over the 0.8 GB of weights: SHA-256 (kept: the metadata names the bytes),",
            "  bfloat16 -> float32 (a bit placement, ~4x faster than torch's conversion) and the finite check",
            "  (`torch.aminmax`, one vectorised pass; NaN and infinities propagate to its result).",
            f"- The matmuls run at {compute_rate:.0f} GFLOP/s against the best 4096x4096 sample's {gflops:.0f}: the",
            "  other shapes (the FFN's [4096 x 11008] hidden rows times blocks of the down projection, the last",
            "  short block of each matrix) and the passes between matmuls (the gate product, norms, stacking the",
            "  terms) cost the difference.",
            "- Other jobs: at a load above 2 the two cores are shared, and every figure here stretches with it.",
            "- Overlapping reading with computing (a reader thread one block ahead) would hide the reads only",
            "  where there are idle cores or the disk is cold; on 2 busy cores it moves work, not removes it.",
        ]
    lines += ["", "## Memory", "",
              "Peak memory follows the size of one layer's working set, not the model: huref holds the probe rows",
              "X [n, d], one layer's projections (the FFN's [n, ffn] hidden rows once: the gate is multiplied in",
              "block by block), one weight block of ~64 MB in float32 at a time, and the finished terms (3 x n x n",
              "float32 = 201 MB per layer). Weight rows are read with positioned reads into fresh buffers, so no",
              "checkpoint pages stay mapped into the process.", "",
              "| checkpoint | layers | whole checkpoint | one layer (bf16) | huref peak RSS |", "|---|---|---|---|---|"]
    for size, shape in SHAPES.items():
        if ("invariants", size) not in groups or _summary(groups["invariants", size])["rss"] is None:
            continue
        layer_bytes = (floors[size]["bytes_read"] - 2 * N_TOKENS * shape["hidden"]) / N_LAYERS_READ
        lines.append(f"| {size.upper()} | {shape['layers']} | {_gb(floors[size]['checkpoint_bytes'])} | "
                     f"{_gb(layer_bytes)} | {_summary(groups['invariants', size])['rss'] / 1024:.2f} GiB |")
    lines += _targets(groups, floors, gflops)
    gpu = cache / "results" / "gpu.json"
    if gpu.exists():
        lines += _gpu_section(json.loads(gpu.read_text()))
    moe = cache / "results" / "moe_layer.json"
    if moe.exists():
        lines += _moe_section(json.loads(moe.read_text()))
    lines += ["", "## Reproduce", "", "```",
              "python scripts/bench.py build                 # once, ~25 GB in the cache (--cache)",
              f"python scripts/bench.py measure --label {results['label']}",
              f"python scripts/bench.py report --label {results['label']}   # this file",
              "```", ""]
    return "\n".join(lines)


# --- the dog generator's training step ------------------------------------------------------------

GENERATOR_STEP_BEFORE = 480  # images/s of the training step before huref_lab.generator_training, one H100 (docs/GENERATOR.md)


def host_synchronisations(trainer, pictures, steps: int = 4) -> float:
    """Calls that make the host wait for the GPU, per training step (CUDA's sync debug mode, counted over
    `steps` steps, one of which adjusts the augmentation probability: that one waits by design)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.step(pictures)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def generator_step(photos: Path, batches: list[int], steps: int, device: str, precision: str, compile_: bool) -> dict:
    """Images/s of the dog generator's training step (huref_lab.generator_training.loop.Trainer.step, the
    shipped network's shape, fresh weights, lazy R1 every 16 steps) at each batch size, with augmentation
    off (p = 0) and at p = 0.6, and the share of a step that drawing the photo batch and augmenting take.
    Three untimed steps first (torch.compile compiles there); CUDA is synchronized before each clock read."""
    from huref_lab.generator_training.loop import Options, Trainer, new_state, real_batch
    from huref_lab.generator_training.photos import load_photos

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pictures = load_photos(photos, 64).to(device)
    rows = []
    for batch in batches:
        parts, meta = new_state()
        trainer = Trainer(parts, meta, Options(batch=batch, precision=precision, compile=compile_, ada_interval=1 << 30),
                          device)
        seconds = {}
        for p in (0.0, 0.6):
            trainer.ada.p = p
            for _ in range(3):
                trainer.step(pictures)
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step(pictures)
            sync()
            seconds[p] = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        for _ in range(steps):
            real_batch(pictures, batch)
        sync()
        data = (time.perf_counter() - start) / steps
        rows.append({"batch": batch, "images_per_second_p0": batch / seconds[0.0],
                     "images_per_second_p0.6": batch / seconds[0.6],
                     "augmentation_share_p0.6": 1 - seconds[0.0] / seconds[0.6], "data_share": data / seconds[0.6],
                     "host_synchronisations_per_step": host_synchronisations(trainer, pictures) if device.type == "cuda" else None})
        print(json.dumps(rows[-1]), flush=True)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "precision": precision, "compile": compile_, "steps": steps,
            "load_average": os.getloadavg(), "before_images_per_second_h100": GENERATOR_STEP_BEFORE, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("HUREF_BENCH_CACHE") or cache_dir() / "bench"),
                        help="where the checkpoints and results live (default: $HUREF_BENCH_CACHE, else huref's "
                             "cache directory / bench)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write the synthetic checkpoints into the cache")
    p.add_argument("--sizes", default="7b,13b,70b")
    p = sub.add_parser("measure", help="time huref and the baseline; write results/LABEL.json in the cache")
    p.add_argument("--label", default="latest")
    p.add_argument("--runs", type=int, default=3, help="runs per tool on 7B; the first starts cold")
    p.add_argument("--runs-large", type=int, default=2, help="runs per tool on 13B and 70B")
    p.add_argument("--sizes", default="7b,13b,70b")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--no-precision", action="store_true", help="skip the float64 check run on 7B")
    p = sub.add_parser("baseline", help="(internal) load with transformers, then compute the terms")
    p.add_argument("directory", type=Path)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("matmul", help="add a matmul-rate sample (with the load) to results/LABEL.matmul.json")
    p.add_argument("--label", default="latest")
    p = sub.add_parser("breakdown", help="(internal) time the phases of one run in-process")
    p.add_argument("directory", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("moe", help="time one deepseek_v3-shaped MoE layer; results/moe_layer.json in the cache")
    p.add_argument("--experts", default="4,12", help="routed expert counts, one checkpoint each")
    p.add_argument("--tokens", type=int, default=N_TOKENS)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("pair", help="time lineage and compare of the 7B-shaped checkpoint against itself")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--results", type=Path, default=None, help="JSON to append to (default: results/pair.json "
                                                               "in the cache)")
    p.add_argument("extra", nargs="*", help="more arguments for every command (after --)")
    p = sub.add_parser("generator-step", help="images/s of the dog generator's training step")
    p.add_argument("--photos", type=Path, required=True, help="the dog photos (a folder, or packed by pack-photos)")
    p.add_argument("--batches", default="64,256,1024")
    p.add_argument("--steps", type=int, default=32, help="timed steps per setting")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p = sub.add_parser("report", help="write docs/PERFORMANCE.md from results/LABEL.json")
    p.add_argument("--label", default="latest")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "PERFORMANCE.md")
    args = parser.parse_args()
    if args.command == "build":
        torch.set_num_threads(1)
        for size in args.sizes.split(","):
            print(build(size, args.cache), flush=True)
    elif args.command == "measure":
        print(measure(args.cache, args.label, args.runs, args.sizes.split(","), not args.no_baseline, not args.no_precision,
                      args.runs_large))
    elif args.command == "moe":
        moe_measure(args.cache, [int(e) for e in args.experts.split(",")], args.tokens, args.device)
    elif args.command == "pair":
        pair_measure(args.cache, args.results or args.cache / "results" / "pair.json", args.runs, args.extra)
    elif args.command == "baseline":
        baseline(args.directory, args.dtype, args.output)
    elif args.command == "generator-step":
        figures = generator_step(args.photos, [int(b) for b in args.batches.split(",")], args.steps, args.device,
                                 args.precision, args.compile)
        if args.json:
            write_atomically(args.json, (json.dumps(figures, indent=1) + "\n").encode())
    elif args.command == "breakdown":
        print(json.dumps(breakdown(args.directory, args.output)))
    elif args.command == "matmul":
        path = args.cache / "results" / f"{args.label}.matmul.json"
        samples = json.loads(path.read_text()) if path.exists() else []
        samples.append({"gflops": round(matmul_gflops(), 1), "load": round(os.getloadavg()[0], 2),
                        "utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")})
        path.write_text(json.dumps(samples, indent=1))
        print(samples[-1])
    elif args.command == "report":
        results = json.loads((args.cache / "results" / f"{args.label}.json").read_text())
        extra = args.cache / "results" / f"{args.label}.matmul.json"
        if extra.exists():  # the best rate seen is what the machine sustains when nothing else runs
            best = max(json.loads(extra.read_text()), key=lambda sample: sample["gflops"])
            if best["gflops"] > results["matmul_gflops"]:
                results["matmul_gflops"], results["matmul_load"] = best["gflops"], best["load"]
        args.output.write_text(report(results, args.cache))
        print(args.output)


if __name__ == "__main__":
    main()

"""Timing huref on the synthetic checkpoints (`huref_lab.bench.build`), with the floors measured in
the same run: what the machine sustains then (page-cache read rate of the very files, the matmul
time of the products the arithmetic does) and its load average.

Every suite appends its runs to one JSON file in the cache's results folder (`results_path`):
- `llama`: `huref invariants` / `fingerprint` at default settings on the 7B, 13B and 70B shapes,
  the float64 check, and the paper's way (load with transformers, then compute);
- `read_bound`: reads that cost more than their arithmetic, in every storage format: all layers
  at 16 tokens, and whole-depth lineage of a 7B-shaped checkpoint against itself;
- `pair`: lineage and compare of two 7B-shaped models;
- `deepseek`: the DeepSeek-V3-shaped fingerprint and the MoE layer's cost by expert count;
- `precision`: what bfloat16 products do to ICS, latents and verdicts on the attack suite and zoo;
- `gpu`: `--device cuda` on the 7B, 70B and DeepSeek-V3 shapes (scripts/bench_gpu.sh).

Wall time and peak resident memory come from wait4() on the child process (ru_maxrss, what
/usr/bin/time -v reports).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from huref_lab.bench.build import DEEPSEEK_V3, SHAPES, build_deepseek, build_llama

REPO = Path(__file__).resolve().parents[2]
FORMATS = ("bf16", "fp8", "q8_0", "q4_k_m")  # storage formats of the 7B shape (`checkpoint`)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")


def commit() -> str:
    found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip()


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(meminfo_gib("MemTotal"), 1), "bf16_instructions": bf16,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "gpu": gpu}


def meminfo_gib(key: str) -> float:
    """A /proc/meminfo figure (MemTotal, MemAvailable, ...) in GiB."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info[key] / 2**20


def results_path(cache: Path, suite: str) -> Path:
    return cache / "results" / f"{suite}.json"


def load_results(cache: Path, suite: str) -> dict:
    path = results_path(cache, suite)
    return json.loads(path.read_text()) if path.exists() else {"machine": machine(), "runs": []}


def append_run(cache: Path, suite: str, run: dict) -> None:
    """Add one run (with the commit, the time and the machine's load) to the suite's results file."""
    results = load_results(cache, suite)
    results["runs"].append({"commit": commit(), **run})
    path = results_path(cache, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(json.dumps(run), flush=True)


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
            "rc": os.waitstatus_to_exitcode(status), "stderr_tail": stderr[-1:] if stderr else [], "utc": now()}


def huref(*args: str) -> list[str]:
    """`huref ARGS... -q` in this interpreter."""
    return [sys.executable, "-c", "from huref.cli import main; main()", *map(str, args), "-q"]


# --- the floors ---------------------------------------------------------------------------------

def checkpoint_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.safetensors")) + sorted(path.glob("*.gguf"))


def evict(path: Path) -> None:
    """Drop a checkpoint's files from the page cache (posix_fadvise DONTNEED; no root needed)."""
    for file in checkpoint_files(path):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_rate(files: list[Path], nbytes: int | None = None, cold: bool = False) -> float:
    """GB/s reading the files sequentially (at most nbytes) with 64 MB reads, after a first pass that
    puts them in the page cache (or, with `cold`, after evicting them)."""
    import numpy as np

    buffer = np.empty(64 << 20, dtype=np.uint8)

    def read_all() -> int:
        done = 0
        for file in files:
            with open(file, "rb", buffering=0) as f:
                while nbytes is None or done < nbytes:
                    got = f.readinto(buffer)
                    if not got:
                        break
                    done += got
        return done

    for file in files:
        if cold:
            evict(file)
    if not cold:
        read_all()
    start = time.perf_counter()
    done = read_all()
    return done / (time.perf_counter() - start) / 1e9


def product_seconds(products: list[tuple], device: str = "cpu", repeats: int = 3) -> float:
    """The matmul floor of an arithmetic: seconds for `products`, each (count, m, k, p, dtype) an
    [m, k] x [k, p] product in dtype (bfloat16: float32 accumulation), operands already in memory;
    the best of `repeats` timings of each, times its count."""
    total = 0.0
    for count, m, k, p, dtype in products:
        a, b = torch.randn(m, k, device=device).to(dtype), torch.randn(p, k, device=device).to(dtype).T
        a @ b
        best = float("inf")
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        total += count * best
        del a, b
    return total


def timed_beside_floor(command: list[str], floor) -> dict:
    """`timed(command)` with the matmul floor (`floor()`, seconds) measured right before and right
    after it: matmul_floor_s is their mean, as the load may change during the run."""
    before = floor()
    run = timed(command)
    after = floor()
    return {**run, "matmul_floor_s": round((before + after) / 2, 2), "matmul_floor_before_s": round(before, 2),
            "matmul_floor_after_s": round(after, 2)}


def products_flops(products: list[tuple]) -> float:
    return sum(2 * count * m * k * p for count, m, k, p, _ in products)


def llama_products(shape: dict, n: int, weights: torch.dtype) -> list[tuple]:
    """The products of one Llama layer's terms over n tokens, in huref's evaluation order
    (`huref.invariants`): the query heads of a group summed on the weights, the output matrix read
    from X_o's side, the gate multiplied in; weight products in `weights`, the n x n ones float32."""
    d, f = shape["hidden"], shape["ffn"]
    kv = shape["kv_heads"] * d // shape["heads"]
    return [(4, n, d, kv, weights),                 # X·Wq_sumᵀ, X·Wkᵀ, X·Wvᵀ, X_o·Wo_sum
            (2, n, d, f, weights), (1, n, f, d, weights),  # gate, up; hidden·Wdᵀ
            (2, n, kv, n, torch.float32), (1, n, d, n, torch.float32)]  # q·kᵀ, v·readᵀ; written·X_oᵀ


def deepseek_products(n: int, weights: torch.dtype, experts: int) -> list[tuple]:
    """The products of one DeepSeek-V3 MoE layer's terms over n tokens (`huref.invariants`: MLA
    through its latents, the latent forms built from the weights once, every expert's FFN)."""
    s = DEEPSEEK_V3
    d, h, f, rank = s["hidden"], s["heads"], s["expert"], s["kv_rank"]
    f32 = torch.float32
    return [(1, n, d, s["q_rank"], weights), (1, n, d, rank + s["rope"], weights),  # C_q, C_kv and k_pe
            (1, s["q_rank"], h * s["nope"], rank, f32), (1, d, h * s["v"], rank, f32),  # B = Σ Wq_nopeᵀ·Wk, W = Σ Wo·Wv
            (1, n, s["q_rank"], rank, f32), (1, n, rank, n, f32), (1, n, d, rank, f32), (1, n, rank, n, f32),
            (2 * (experts + 1), n, d, f, weights), (experts + 1, n, f, d, weights),  # every expert's gate, up, down
            (1, n, d, n, f32)]


# --- what a run reads ---------------------------------------------------------------------------

LAYER_OF = re.compile(r"(?:^|\.)(?:layers|h|blk)\.(\d+)\.")


def stored_bytes(path: Path, layers: set[int] | None, n_tokens: int) -> int:
    """Bytes huref reads from a checkpoint (safetensors folder or GGUF file): every stored tensor of
    the given layers (None: all), and n_tokens rows of the embedding."""
    from huref.readers.safetensors import read_header

    sizes, embedding = {}, 0
    if path.is_file():
        from huref.readers.gguf import read_gguf

        for name, t in read_gguf(path).tensors.items():
            rows = 1
            for dim in t.shape[:-1]:
                rows *= dim
            sizes[name] = rows * t.row_bytes
            if name == "token_embd.weight":
                embedding = t.row_bytes * n_tokens
    else:
        for file in sorted(path.glob("*.safetensors")):
            header, _, _ = read_header(str(file))
            for name, entry in header.items():
                begin, end = entry["data_offsets"]
                sizes[name] = end - begin
                if name.endswith("embed_tokens.weight"):
                    embedding = (end - begin) // entry["shape"][0] * n_tokens
    picked = 0
    for name, size in sizes.items():
        found = LAYER_OF.search(name)
        if found and (layers is None or int(found.group(1)) in layers):
            picked += size
    return picked + embedding


# --- suites -------------------------------------------------------------------------------------

def checkpoint(cache: Path, form: str) -> Path:
    """The 7B-shaped checkpoint in storage format `form` (FORMATS), built if missing."""
    from huref_lab.bench import build

    if form == "bf16":
        return build.build_llama("7b", cache)
    if form == "fp8":
        return build.build_llama_fp8("7b", cache)
    return build.build_llama_gguf("7b", cache, {"q8_0": "Q8_0", "q4_k_m": "Q4_K_M"}[form])


def arithmetic(form: str, precision: str, lineage: bool) -> torch.dtype:
    """The dtype huref's weight products run in: bfloat16 under --precision bfloat16, and in lineage
    reads for weights stored in bfloat16; float32 otherwise."""
    if precision == "bfloat16" or (lineage and form == "bf16"):
        return torch.bfloat16
    return torch.float32


def read_bound(cache: Path, forms: list[str], precision: str = "float32", runs: int = 1,
               kinds: tuple[str, ...] = ("invariants", "lineage")) -> None:
    """Time the read-bound runs on the 7B shape in each storage format: `huref invariants` over every
    layer at 16 tokens, and `huref lineage` of the checkpoint against itself (32 layers each side
    at 256 tokens), each beside the page-cache read rate of its files and the matmul floor of the
    arithmetic it uses, both measured right before it."""
    shape = SHAPES["7b"]
    every_layer = ",".join(map(str, range(shape["layers"])))
    for form in forms:
        path = checkpoint(cache, form)
        files = checkpoint_files(path)
        for _ in range(runs):
            for kind, n, sides, command in (
                    ("invariants, all layers, 16 tokens", 16, 1,
                     huref("invariants", path, "-o", cache / "scratch" / "read-bound.safetensors", "--tokens", 16,
                           "--layers", every_layer, "--precision", precision)),
                    ("lineage against itself, 256 tokens", 256, 2, huref("lineage", path, path, "--precision", precision))):
                if kind.split(",")[0].split(" ")[0] not in kinds:
                    continue
                (cache / "scratch").mkdir(parents=True, exist_ok=True)
                rate = read_rate(files)  # also leaves the files in the page cache
                dtype = arithmetic(form, precision, lineage=kind.startswith("lineage"))
                products = llama_products(shape, n, dtype)
                run = timed_beside_floor(command, lambda: sides * shape["layers"] * product_seconds(products))
                append_run(cache, "read_bound", {
                    "format": form, "run": kind, "precision": precision, "arithmetic": str(dtype).removeprefix("torch."),
                    "bytes_read": sides * stored_bytes(path, None, n), "page_cache_gbps": round(rate, 2),
                    "flops": sides * shape["layers"] * products_flops(products), **run})


def read_paths(cache: Path, forms: list[str], n_layers: int = 4) -> None:
    """Bytes per second of each read path alone, in process: every weight block of the first
    n_layers layers of the 7B shape read as huref's products take them (`Matrix.blocks`), per storage
    format, product dtype and with or without the SHA-256 (on its thread; lineage reads skip it),
    beside the page-cache rate of the same files and SHA-256's own rate, measured in the same run."""
    import hashlib

    import numpy as np

    from huref.layers import layer_weights
    from huref.sources import load_model

    sample = np.random.default_rng(0).integers(0, 256, 1 << 28, dtype=np.uint8)
    start = time.perf_counter()
    hashlib.sha256(memoryview(sample)).hexdigest()
    sha_gbps = sample.nbytes / (time.perf_counter() - start) / 1e9
    del sample
    for form in forms:
        path = checkpoint(cache, form)
        nbytes = stored_bytes(path, set(range(n_layers)), 0)
        rate = read_rate(checkpoint_files(path), nbytes=max(nbytes, 1 << 30))  # the first layers' files
        for dtype in (torch.float32, torch.bfloat16):
            for hashing in (True, False):
                model = load_model(str(path))
                model.reader.hashing = hashing
                load = os.getloadavg()[0]
                start = time.perf_counter()
                for i in range(n_layers):
                    for matrix in layer_weights(model, i, dtype).matrices():
                        for _ in matrix.blocks():
                            pass
                model.reader.digests  # noqa: B018 (waits for the last hashes)
                wall = time.perf_counter() - start
                append_run(cache, "read_paths", {
                    "format": form, "dtype": str(dtype).removeprefix("torch."), "sha256": hashing, "layers": n_layers,
                    "bytes": nbytes, "wall_s": round(wall, 2), "gbps": round(nbytes / wall / 1e9, 2),
                    "page_cache_gbps": round(rate, 2), "sha256_gbps": round(sha_gbps, 2), "load_before": round(load, 2),
                    "load_after": round(os.getloadavg()[0], 2), "rc": 0, "utc": now()})


def deepseek(cache: Path, experts: list[int], tokens: int, precision: str, commands: list[str]) -> None:
    """Time `huref fingerprint` (and `invariants`) of the DeepSeek-V3-shaped checkpoint with each
    routed-expert count, beside the matmul floor of its two layers measured right before."""
    for e in experts:
        path = build_deepseek(cache, e)
        (cache / "scratch").mkdir(parents=True, exist_ok=True)
        products = deepseek_products(tokens, torch.bfloat16 if precision == "bfloat16" else torch.float32, e)
        rate = read_rate(checkpoint_files(path), nbytes=4 * 10**9)
        for tool in commands:
            out = cache / "scratch" / ("deepseek.png" if tool == "fingerprint" else "deepseek.safetensors")
            run = timed_beside_floor(huref(tool, path, "-o", out, "--tokens", tokens, "--precision", precision),
                                     lambda: 2 * product_seconds(products, repeats=1))
            append_run(cache, "deepseek", {"tool": tool, **_encoder(tool), "experts": e, "tokens": tokens, "precision": precision,
                                           "bytes_read": stored_bytes(path, {30, 31}, tokens),
                                           "page_cache_gbps": round(rate, 2), "flops": 2 * products_flops(products), **run})


PAIR_COMMANDS = {
    "huref lineage": ["lineage"],
    "huref compare --verdict ics": ["compare", "--verdict", "ics"],
    "huref compare (default verdict)": ["compare"],
}


def pair(cache: Path, runs: int, precision: str) -> None:
    """Time each PAIR_COMMANDS entry on the 7B-shaped checkpoint against itself (two subjects: both
    sides are read and computed), with the 4096x4096 matmul rate sampled before each run."""
    directory = build_llama("7b", cache)
    for _ in range(runs):
        for name, args in PAIR_COMMANDS.items():
            gflops = matmul_gflops()
            run = timed(huref(args[0], directory, directory, *args[1:], "--precision", precision))
            append_run(cache, "pair", {"command": name, "precision": precision, "matmul_gflops_before": round(gflops, 1),
                                       **run})


def matmul_gflops(size: int = 4096, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Median GFLOP/s of a size x size matmul in dtype at torch's default thread count."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def _encoder(tool: str) -> dict:
    """{"encoder_version": V} for a fingerprint run (what its latent reads depends on the version)."""
    from huref.encoder import ENCODER_VERSION

    return {"encoder_version": ENCODER_VERSION} if tool == "fingerprint" else {}


FINGERPRINT_SIZES = ("7b",)  # fingerprints read every layer: only the whole 7B checkpoint holds them (70B, 13B are partial)


def llama(cache: Path, runs: int, sizes: list[str], precision: str, with_baseline: bool) -> None:
    """Time `huref invariants` and `fingerprint` at default settings on each size (the first run
    cold: its files evicted from the page cache), each beside the matmul floor of its two layers at
    4096 tokens in the arithmetic used; on 7B also the float64 check and the paper's way."""
    from huref.invariants import DEFAULT_LAYERS, DEFAULT_TOKENS

    scratch = cache / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    for size in sizes:
        directory = build_llama(size, cache)
        products = llama_products(SHAPES[size], DEFAULT_TOKENS, dtype)
        for tool in ["invariants"] + (["fingerprint"] if size in FINGERPRINT_SIZES else []):
            out = scratch / f"{tool}-{size}.{'safetensors' if tool == 'invariants' else 'png'}"
            for k in range(runs):
                if k == 0:
                    evict(directory)
                run = timed_beside_floor(huref(tool, directory, "-o", out, "--precision", precision),
                                         lambda: DEFAULT_LAYERS * product_seconds(products, repeats=2))
                append_run(cache, "llama", {"tool": tool, **_encoder(tool), "size": size, "cold": k == 0, "precision": precision,
                                            "flops": DEFAULT_LAYERS * products_flops(products),
                                            "bytes_read": stored_bytes(directory, _default_layers(size), DEFAULT_TOKENS),
                                            **run})
    if "7b" in sizes:
        directory = cache / "llama-7b"
        reference = scratch / "invariants-7b.safetensors"
        for check in ("float64", "float32") if precision != "float32" else ("float64",):
            out = scratch / f"invariants-7b-{check}.safetensors"
            run = timed(huref("invariants", directory, "-o", out, "--precision", check))
            if run["rc"] == 0:
                run["max_rel_diff"] = relative_difference(reference, out)
            append_run(cache, "llama", {"tool": f"invariants --precision {check}", "size": "7b", "cold": False,
                                        "compared_with": precision, **run})
        breakdown_run = subprocess.run([sys.executable, "-m", "huref_lab.bench", "--cache", str(cache), "breakdown",
                                        str(directory), "-o", str(scratch / "breakdown.safetensors"),
                                        "--precision", precision], capture_output=True, text=True)
        if breakdown_run.returncode == 0:
            append_run(cache, "llama", {"tool": "breakdown", "size": "7b", "precision": precision,
                                        "load_before": round(os.getloadavg()[0], 2),
                                        **json.loads(breakdown_run.stdout.strip().splitlines()[-1])})
    if with_baseline and "7b" in sizes:
        for dtype_name in ("bfloat16", "float32"):
            directory = cache / "llama-7b"
            need = stored_bytes(directory, None, 0) * (2 if dtype_name == "float32" else 1) / 2**30 + 2
            base = {"tool": f"baseline transformers ({dtype_name})", "size": "7b", "cold": False}
            if need > meminfo_gib("MemTotal"):
                base["skipped"] = (f"the weights alone need ~{need - 2:.0f} GiB, more than the machine's "
                                   f"{meminfo_gib('MemTotal'):.1f} GiB")
            elif meminfo_gib("MemAvailable") < need:
                base["skipped"] = f"needs ~{need:.0f} GiB; only {meminfo_gib('MemAvailable'):.0f} GiB were free"
            else:
                out = scratch / f"baseline-7b-{dtype_name}.safetensors"
                base.update(timed([sys.executable, "-m", "huref_lab.bench", "--cache", str(cache), "baseline",
                                   str(directory), "--dtype", dtype_name, "-o", str(out)]))
                if base["rc"] == 0:
                    base["max_rel_diff"] = relative_difference(out, scratch / "invariants-7b.safetensors")
            append_run(cache, "llama", base)


def gpu(cache: Path) -> None:
    """`huref invariants --device cuda` at default settings on the 7B and 70B shapes (partial
    downloads) and the DeepSeek-V3 shape, in float32 and bfloat16, each beside its matmul floor on
    the GPU; the terms of 7B and 70B also on the CPU, for agreement."""
    from huref.invariants import DEFAULT_LAYERS, DEFAULT_TOKENS

    scratch = cache / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    checkpoints = {"7B-shaped": (build_llama("7b", cache, partial=True), "7b"),
                   "70B-shaped": (build_llama("70b", cache), "70b"),
                   "DeepSeek-V3-shaped": (build_deepseek(cache), "deepseek")}
    for label, (path, shape) in checkpoints.items():
        read_rate(checkpoint_files(path))  # in the page cache, as the CPU runs were measured
        for precision in ("float32", "bfloat16"):
            dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
            products = (deepseek_products(DEFAULT_TOKENS, dtype, DEEPSEEK_V3["experts"]) if shape == "deepseek"
                        else llama_products(SHAPES[shape], DEFAULT_TOKENS, dtype))
            out = scratch / f"gpu-{shape}-{precision}.safetensors"
            run = timed_beside_floor(huref("invariants", path, "-o", out, "--device", "cuda", "--precision", precision),
                                     lambda: DEFAULT_LAYERS * product_seconds(products, device="cuda"))
            run.update(checkpoint=label, command=f"invariants --precision {precision}", device="cuda")
            if shape != "deepseek" and run["rc"] == 0:
                on_cpu = scratch / f"cpu-{shape}-{precision}.safetensors"
                cpu = timed(huref("invariants", path, "-o", on_cpu, "--precision", precision))
                append_run(cache, "gpu", {"checkpoint": label, "command": f"invariants --precision {precision}",
                                          "device": "cpu", **cpu})
                if cpu["rc"] == 0:
                    run["max_rel_diff"] = relative_difference(out, on_cpu)
            append_run(cache, "gpu", run)


def _default_layers(size: str) -> set[int]:
    from huref.invariants import resolve_layers

    return set(resolve_layers(SHAPES[size]["layers"], None))


def relative_difference(a: Path, b: Path) -> float:
    """max |a - b| / max |b| over two invariants files."""
    from huref.invariants import load_terms

    va, vb = load_terms(a).values.double(), load_terms(b).values.double()
    return float((va - vb).abs().max() / vb.abs().max())


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

        def _read(self, name, rows, dtype=torch.float32):
            t = self.state[name]
            t = t if rows is None else t.reshape(-1, t.shape[-1])[rows]
            return t, t.contiguous().view(torch.uint8).numpy().tobytes()

    loaded = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype))
    state = {k: v.detach() for k, v in loaded.state_dict().items()}
    model = Model(str(directory), _read_json(directory / "config.json"), LoadedWeights(state), load_vocab(directory))
    save_terms(invariant_terms(model), out)


def breakdown(directory: Path, out: Path, precision: str) -> dict:
    """Where one `huref invariants` run spends its time, measured in-process: interpreter start and
    imports, opening the model, reading (read, convert; hashing runs on its own thread), waiting for
    the last hashes, the rest of the terms (matmuls, norms), writing the file."""
    since_start = time.time() - _process_start()
    from huref.invariants import PRECISIONS, invariant_terms, save_terms
    from huref.readers import Digests, TensorReader
    from huref.sources import load_model

    spent = {"start_and_imports_s": since_start, "read_s": 0.0, "hash_wait_s": 0.0}
    read, result = TensorReader.read, Digests.result

    def timed_read(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return read(self, *args, **kwargs)
        finally:
            spent["read_s"] += time.perf_counter() - start

    def timed_result(self):
        start = time.perf_counter()
        try:
            return result(self)
        finally:
            spent["hash_wait_s"] += time.perf_counter() - start

    TensorReader.read, Digests.result = timed_read, timed_result
    start = time.perf_counter()
    model = load_model(str(directory))
    spent["open_s"] = time.perf_counter() - start
    start = time.perf_counter()
    terms = invariant_terms(model, dtype=PRECISIONS[precision])
    spent["terms_s"] = time.perf_counter() - start
    start = time.perf_counter()
    save_terms(terms, out)
    spent["save_s"] = time.perf_counter() - start
    spent["compute_s"] = spent["terms_s"] - spent["read_s"] - spent["hash_wait_s"]
    return {k: round(v, 2) for k, v in spent.items()}


def _process_start() -> float:
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")

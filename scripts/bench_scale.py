"""Benchmark registry entries from the local test Hub (huref_lab.hub_server): bytes fetched for
large synthetic repos, and `huref registry add --from LIST` throughput, the local process pool
against Ray on this machine.

    python scripts/bench_scale.py bytes --sizes 7b,70b     # -> docs/results/scale_bytes.json
    python scripts/bench_scale.py throughput --models 40   # -> docs/results/scale_throughput.json

bytes: a Llama-2-7B- or 70B-shaped repo (huref_lab.bench.build's shapes, shards and tokenizer) published as
synthetic safetensors recipes (the server generates each byte range asked; a 138 GB repo takes no
disk), and one entry (sketch and fingerprint) computed from it in a child process, as `registry add`
computes it. Reported: the bytes the client counted, the bytes the server's front counted, the repo's
size, and the needed bytes (`needed_bytes`: the headers of the shards read, the embedding rows of the
probe tokens and every tensor of the layers read), all for the same run.

throughput: N tiny llamas (huref_lab.tiny_models, seeds 0..N-1; 384-token vocabularies, so the
fingerprint's probe rows are all of them) are published to a local Hub (olah and its front; the weights are
symbolic links), listed, and indexed twice into fresh registries: `--engine local --jobs 2` and
`--engine ray --address local` (a private Ray instance of this machine's CPUs). The front's own byte
counts are summed beside what the tasks report. Needed bytes, per model: its safetensors header, the
embedding rows of its probe tokens and every tensor of the layers the terms read (the sketch's layers
and the fingerprint's), read from the file's header, not from the client.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def needed_bytes(header_bytes: int, tensors: dict[str, tuple[int, list[int]]], layers: set[int], probe_rows: int) -> int:
    """Header bytes + probe embedding rows + every tensor of `layers`; tensors: {name: (bytes, shape)}."""
    total = header_bytes
    for name, (size, shape) in tensors.items():
        if name.startswith("model.layers.") and int(name.split(".")[2]) in layers:
            total += size
        elif name == "model.embed_tokens.weight":
            total += size * min(probe_rows, shape[0]) // shape[0]
    return total


def read_layers(row: dict) -> set[int]:
    """The layers an entry reads: its sketch's and the fingerprint's (the default rule's two)."""
    from huref.invariants import default_layer_order

    return set(row["sketch_layers"]) | set(default_layer_order(list(range(row["n_layers"])))[:2])


def hub_env(port: int, work: Path) -> dict:
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": "hf_bench",
           "HF_HUB_CACHE": str(work / "hf"), "HUREF_CACHE": str(work / "huref")}
    env.pop("HF_HUB_OFFLINE", None)
    return env


ENTRY = """
import json, resource, sys, time
from huref.registry.entries import build_entry
from huref.sources import load_model
start, cpu = time.perf_counter(), time.process_time()
model = load_model(sys.argv[1])
row = build_entry(model)
print(json.dumps({"transfer": model.hub.transfer.to_json(), "sketch_layers": row["sketch_layers"],
                  "n_layers": row["n_layers"], "wall_seconds": time.perf_counter() - start,
                  "cpu_seconds": time.process_time() - cpu,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bytes_stage(sizes: list[str], work: Path) -> dict:
    """One entry of each synthetic repo size from the local Hub: bytes fetched, counted both sides."""
    from huref_lab.bench import build as bench
    from huref.invariants import DEFAULT_TOKENS
    from huref_lab.hub_server import free_port_pair, publish, serve, synthetic_safetensors

    hub_root = Path(tempfile.mkdtemp(prefix="hub-", dir=work))
    port = free_port_pair()
    front, olah = serve(hub_root, port)
    handler = front.RequestHandlerClass
    results = {}
    try:
        for size in sizes:
            small = work / f"files-{size}"
            small.mkdir(parents=True, exist_ok=True)
            (small / "config.json").write_text(json.dumps(bench.llama_config(bench.SHAPES[size]), indent=2))
            bench.write_tokenizer(small)
            shards = bench.shard_plan([(name, shape, "BF16") for name, shape in bench.tensor_shapes(bench.SHAPES[size])])
            files = {"config.json": small / "config.json", "tokenizer.json": small / "tokenizer.json"}
            weight_map, tensors, headers, total = {}, {}, {}, 0
            for k, shard in enumerate(shards):
                name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
                recipe = synthetic_safetensors([(tensor, shape) for tensor, shape, _ in shard], seed=k)
                files[name] = recipe
                headers[name] = len(base64.b64decode(recipe["head"]))
                total += recipe["size"]
                for tensor, shape, _ in shard:
                    weight_map[tensor] = name
                    tensors[tensor] = (2 * int(np.prod(shape)), shape)
            index = small / "model.safetensors.index.json"
            index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
            files[index.name] = index
            publish(hub_root, f"bench/llama-{size}", files)
            served_before = sum(handler.served.values())
            load = os.getloadavg()[0]
            done = subprocess.run([sys.executable, "-c", ENTRY, f"bench/llama-{size}"], capture_output=True, text=True,
                                  env=hub_env(port, work))
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            got = json.loads(done.stdout.splitlines()[-1])
            layers = read_layers(got)
            shards_read = {weight_map[t] for t in tensors if t == "model.embed_tokens.weight"
                           or (t.startswith("model.layers.") and int(t.split(".")[2]) in layers)}
            needed = needed_bytes(sum(headers[s] for s in shards_read), tensors, layers, DEFAULT_TOKENS)
            results[size] = {"load_average": load, **got, "layers_read": sorted(layers), "needed_bytes": needed,
                             "server_bytes": sum(handler.served.values()) - served_before,
                             "fetched_over_needed": got["transfer"]["fetched_bytes"] / needed,
                             "fetched_over_repo": got["transfer"]["fetched_bytes"] / got["transfer"]["repo_bytes"]}
            print(json.dumps({size: results[size]}), flush=True)
    finally:
        front.shutdown()
        olah.terminate()
        olah.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(hub_root)], check=False)
    out = REPO / "docs" / "results" / "scale_bytes.json"
    earlier = json.loads(out.read_text())["runs"] if out.exists() else {}  # the other sizes' last runs stay
    out.write_text(json.dumps({"cpus": os.cpu_count(), "runs": {**earlier, **results}}, indent=1) + "\n")
    return results


def throughput_stage(count: int, work: Path) -> dict:
    """`registry add --from` of `count` tiny Hub models with each engine (module docstring)."""
    from huref.invariants import DEFAULT_TOKENS
    from huref.readers.safetensors import read_header
    from huref.registry.format import Registry
    from huref_lab import tiny_models
    from huref_lab.hub_server import free_port_pair, publish, serve

    work.mkdir(parents=True, exist_ok=True)
    hub_root = Path(tempfile.mkdtemp(prefix="hub-", dir=work))
    models = []
    for k in range(count):
        folder = work / "models" / f"m{k}"
        if not (folder / "model.safetensors").exists():
            tiny_models.build_checkpoint("llama", folder, seed=k)
        models.append(folder)
    port = free_port_pair()
    front, olah = serve(hub_root, port)
    handler = front.RequestHandlerClass
    try:
        for k, folder in enumerate(models):
            publish(hub_root, f"bench/m{k}", {f.name: f for f in folder.iterdir() if f.is_file()})
        listed = work / "list.txt"
        listed.write_text("".join(f"bench/m{k}\n" for k in range(count)))
        env = hub_env(port, work)
        results = {}
        for engine, extra in (("local", ["--jobs", "2"]), ("ray", ["--address", "local"])):
            registry = work / f"R-{engine}"
            subprocess.run(["rm", "-rf", str(registry)], check=True)
            served_before = sum(handler.served.values())
            load, start = os.getloadavg()[0], time.perf_counter()
            done = subprocess.run([sys.executable, "-c", "from huref.cli import main; main()", "registry", "add", "--from", str(listed), "-r",
                                   str(registry), "--engine", engine, *extra, "--json", "-q"],
                                  capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            report = json.loads(done.stdout)
            outcomes = report["outcomes"]
            added = [o for o in outcomes if o["status"] == "added"]
            results[engine] = {
                "exit_code": done.returncode, "wall_seconds": wall, "load_average": load, "added": len(added),
                "failed": [o["reason"] for o in outcomes if o["status"] == "failed"],
                "cpu_seconds_per_model": sum(o["cpu_seconds"] for o in added) / max(1, len(added)),
                "fetched_bytes_per_model": sum(o["fetched_bytes"] for o in added) / max(1, len(added)),
                "repo_bytes_per_model": sum(o["repo_bytes"] or 0 for o in added) / max(1, len(added)),
                "server_bytes": sum(handler.served.values()) - served_before,
                "client_bytes": sum(o["fetched_bytes"] for o in outcomes),
                "peak_rss_mib": max((o["peak_rss_mib"] for o in added), default=0.0),
            }
            print(json.dumps({engine: results[engine]}), flush=True)
        row = next(r for _, r in Registry(work / "R-local").rows(["name", "sketch_layers", "n_layers"]))
        header, data_start, _ = read_header(str(models[0] / "model.safetensors"))
        tensors = {name: (e["data_offsets"][1] - e["data_offsets"][0], e["shape"])
                   for name, e in header.items() if name != "__metadata__"}
        needed = needed_bytes(data_start, tensors, read_layers(row), DEFAULT_TOKENS)
        same = {e: {p.entry_id for p in Registry(work / f"R-{e}").parts()} for e in results}
        summary = {"models": count, "cpus": os.cpu_count(), "engines": results,
                   "needed_bytes_per_model": needed,
                   "fetched_over_needed": results["local"]["fetched_bytes_per_model"] / needed,
                   "same_entries": same["local"] == same["ray"]}
        out = REPO / "docs" / "results" / "scale_throughput.json"
        out.write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary, indent=1))
        return summary
    finally:
        front.shutdown()
        olah.terminate()
        olah.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(hub_root)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["bytes", "throughput"])
    parser.add_argument("--models", type=int, default=40, help="throughput: how many tiny models")
    parser.add_argument("--sizes", default="7b,70b", help="bytes: repo shapes (huref_lab.bench.build.SHAPES), comma-separated")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for models, registries and the HF cache (default: $HUREF_BENCH_SCRATCH)")
    args = parser.parse_args()
    from huref_lab.experiments.paths import cache_root

    work = cache_root("HUREF_BENCH_SCRATCH", args.work, "--work")
    work.mkdir(parents=True, exist_ok=True)
    if args.stage == "bytes":
        bytes_stage(args.sizes.split(","), work)
    else:
        throughput_stage(args.models, work)


if __name__ == "__main__":
    from huref.errors import HurefError

    try:
        main()
    except HurefError as error:
        print(f"bench_scale: error: {error}", file=sys.stderr)
        sys.exit(2)

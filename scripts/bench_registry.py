"""Benchmark `huref identify` against large generated registries: time after the query's terms, and
peak memory, for N registered entries and K candidates.

    python scripts/bench_registry.py build --entries 1000      # once: models, query terms, registries
    python scripts/bench_registry.py measure                   # -> docs/results/registry_scale.json, docs/REGISTRY.md

build: a tiny llama (huref_lab.tiny_models) registered for real, a fine-tune-like copy of it as the
query (its sketch saved as an invariants file), and N - 1 generated entries beside the real one: the
real entry's row with another id and name, and a sketch and summary of standardized Gaussian noise
shaped as an 8-layer model's ([8, 3, 256, 256] float16, 3 MB a part, the largest a sketch can be).
Registries of 100 and N entries share their part files (hard links).
measure: each (N, K) for the registry as built (parts only: every small column read from its part)
and for a copy of it (hard links under $HUREF_BENCH_SCRATCH) whose index `huref registry compact` wrote, each in a
fresh child process that reads the saved query terms, records its peak
resident memory (ru_maxrss), runs identify, and records the peak again, the wall and CPU time, and
then the floor: the time to read the small columns the prefilter reads, scoring nothing. The load
average is recorded beside each run. Memory bounded by K means the growth stays flat as N grows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from huref_lab.experiments.cli import run_main
from huref_lab.experiments.paths import cache_root

REPO = Path(__file__).resolve().parent.parent
SKETCH_LAYERS = 8
START, END = "<!-- registry-scale:start -->", "<!-- registry-scale:end -->"

CHILD = """
import json, resource, sys, time
from huref.invariants import load_terms
from huref.registry.format import Registry
from huref.registry.identify import Query, identify
query = Query("query", "query", load_terms(sys.argv[2]))
registry = Registry(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start, cpu = time.perf_counter(), time.process_time()
found = identify(registry, query, top=int(sys.argv[3]))
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start, cpu = time.perf_counter(), time.process_time()
for _ in registry.rows(["name", "token_strategy", "sketch_layers", "sketch_tokens", "summary"]):
    pass  # the floor: reading what the prefilter reads, scoring nothing
floor, floor_cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "floor_seconds": floor, "floor_cpu_seconds": floor_cpu,
                  "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
                  "bases": [m.name for m in found.bases], "n_entries": found.n_entries}))
"""



def root() -> Path:
    """The benchmark's models, query and registries: $HUREF_REGISTRY_CACHE/scale (one line, exit 2, when unset)."""
    return cache_root("HUREF_REGISTRY_CACHE") / "scale"


def scratch() -> Path:
    """The indexed copies (hard links): $HUREF_BENCH_SCRATCH."""
    return cache_root("HUREF_BENCH_SCRATCH")

def build(entries: int) -> None:
    """Models, the query's terms and the registries of 100 and `entries` entries under $HUREF_REGISTRY_CACHE/scale."""
    import torch

    from huref.invariants import save_terms
    from huref.registry.entries import build_entry, sketch_terms
    from huref.registry.format import PARTS, Registry, float16_bytes
    from huref.sources import load_model
    from huref_lab import attacks, tiny_models

    base_dir = tiny_models.build_checkpoint("llama", root() / "models" / "base", seed=0)
    checkpoint = attacks.read_checkpoint(base_dir)
    generator = torch.Generator().manual_seed(8)
    checkpoint.tensors = {k: v + 0.05 * v.std().clamp_min(1e-3) * torch.randn(v.shape, generator=generator)
                          for k, v in checkpoint.tensors.items()}
    query_dir = attacks.write_checkpoint(checkpoint, root() / "models" / "finetune")
    save_terms(sketch_terms(load_model(str(query_dir))), root() / "query.safetensors")
    big = Registry(root() / f"R{entries}", create=True)
    row = build_entry(load_model(str(base_dir)), name="base")
    big.add(row)
    rng = np.random.default_rng(0)
    n, m = len(row["sketch_tokens"]), int(np.sqrt(len(row["summary"]) // (2 * 3 * len(row["sketch_layers"]))))
    for k in range(1, entries):
        sketch = rng.standard_normal((SKETCH_LAYERS, 3, n, n), dtype=np.float32)
        big.add(dict(row, entry_id=f"generated:{k}", name=f"generated-{k}", sketch_layers=list(range(SKETCH_LAYERS)),
                     sketch=float16_bytes(sketch), summary=float16_bytes(sketch[:, :, :m, :m])))
    small = Registry(root() / "R100", create=True)
    base_part = next(part.path for part, r in big.rows(["name"]) if r["name"] == "base")
    generated = [p for p in sorted((big.root / PARTS).iterdir()) if p != base_part][:99]
    for part in [base_part, *generated]:
        os.link(part, small.root / PARTS / part.name)
    print(f"built {root()}: {entries} and {len(list((small.root / PARTS).iterdir()))} entries")


def indexed_copy(n: int) -> Path:
    """$HUREF_BENCH_SCRATCH/R{n}: the registry R{n} of hard links (no part copied) with its index compacted."""
    from huref.registry.format import MANIFEST, PARTS, TOMBSTONES, Registry

    source, copy = root() / f"R{n}", scratch() / f"R{n}"
    if not copy.exists():
        (copy / PARTS).mkdir(parents=True)
        (copy / TOMBSTONES).mkdir()
        for path in (source / PARTS).iterdir():
            os.link(path, copy / PARTS / path.name)
        os.link(source / MANIFEST, copy / MANIFEST)
        Registry(copy).compact()
    return copy


def measure(entries: list[int], tops: list[int], runs: int) -> dict:
    """Time and peak memory of identify for each registry size, K and layout (parts only, indexed),
    each in a fresh child process."""
    results = []
    for n in entries:
        for layout, registry in (("parts", root() / f"R{n}"), ("index", indexed_copy(n))):
            for top in tops:
                for _ in range(runs):
                    load = os.getloadavg()[0]
                    done = subprocess.run([sys.executable, "-c", CHILD, str(registry), str(root() / "query.safetensors"),
                                           str(top)], capture_output=True, text=True, check=True)
                    result = json.loads(done.stdout.splitlines()[-1])
                    results.append({"entries": n, "layout": layout, "top": top, "load_average": load, **result,
                                    "rss_growth_mib": result["rss_after_mib"] - result["rss_before_mib"]})
                    print(json.dumps(results[-1]))
    out = REPO / "docs" / "results" / "registry_scale.json"
    out.write_text(json.dumps({"runs": results, "cpus": os.cpu_count()}, indent=1) + "\n")
    report()
    return {"runs": results}


def report() -> None:
    """The table of docs/REGISTRY.md's scale section, from docs/results/registry_scale.json."""
    runs = json.loads((REPO / "docs" / "results" / "registry_scale.json").read_text())["runs"]
    lines = [START, "", "| entries | small columns from | K | load average | wall s | CPU s | floor CPU s (reading the small columns) | "
             "peak RSS growth MiB | base found |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['entries']} | {r.get('layout', 'parts')} | {r['top']} | {r['load_average']:.1f} | {r['seconds']:.1f} | {r['cpu_seconds']:.2f} | "
                     f"{r['floor_cpu_seconds']:.2f} | {r['rss_growth_mib']:.0f} | {', '.join(r['bases']) or 'no'} |")
    lines += ["", END]
    doc = REPO / "docs" / "REGISTRY.md"
    text = doc.read_text()
    doc.write_text(text[:text.index(START)] + "\n".join(lines) + text[text.index(END) + len(END):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["build", "measure", "report"])
    parser.add_argument("--entries", default="1000", help="build: the large registry's size; measure: sizes, comma-separated")
    parser.add_argument("--top", default="8,32", help="measure: values of K, comma-separated")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    if args.stage == "build":
        build(int(args.entries))
    elif args.stage == "report":
        report()
    else:
        measure([100] + [int(n) for n in args.entries.split(",")], [int(k) for k in args.top.split(",")], args.runs)


if __name__ == "__main__":
    run_main(main)

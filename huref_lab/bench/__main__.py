"""python -m huref_lab.bench (or scripts/bench.py): build the synthetic checkpoints, time huref on
them, write docs/PERFORMANCE.md (and time the dog generator's training step, `generator_step`).
Checkpoints and results live in --cache (default $HUREF_BENCH_CACHE, else huref's cache folder /
bench); the report is made from the results alone.

    python -m huref_lab.bench build --sizes 7b,13b,70b --formats fp8,q8_0,q4_k_m --deepseek 256
    python -m huref_lab.bench llama                 # 7B/13B/70B invariants and fingerprint, the paper's way
    python -m huref_lab.bench read-paths            # bytes/s of each read path alone, per format and dtype
    python -m huref_lab.bench read-bound            # all layers at 16 tokens, lineage; every storage format
    python -m huref_lab.bench pair                  # lineage and compare of two 7B-shaped models
    python -m huref_lab.bench deepseek --experts 8,256 --commands fingerprint
    python -m huref_lab.bench accuracy              # bfloat16 vs float32 on the attack suite and the zoo
    python -m huref_lab.bench gpu                   # --device cuda (scripts/bench_gpu.sh)
    python -m huref_lab.bench generator-step --photos P  # images/s of the dog generator's training step
    python -m huref_lab.bench report                # docs/PERFORMANCE.md
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from huref.files import cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m huref_lab.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("HUREF_BENCH_CACHE") or cache_dir() / "bench"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write synthetic checkpoints into the cache")
    p.add_argument("--sizes", default="7b", help="bfloat16 Llama shapes: 7b, 13b, 70b")
    p.add_argument("--formats", default="", help="more storage formats of 7B: fp8, q8_0, q4_k_m")
    p.add_argument("--deepseek", default="", help="routed expert counts of DeepSeek-V3-shaped checkpoints")
    p = sub.add_parser("llama", help="invariants and fingerprint on the Llama shapes; results/llama.json")
    p.add_argument("--sizes", default="7b,13b,70b")
    p.add_argument("--runs", type=int, default=2, help="runs per size and tool; the first starts cold")
    p.add_argument("--precision", default="float32")
    p.add_argument("--no-baseline", action="store_true")
    p = sub.add_parser("read-bound", help="all layers at 16 tokens and lineage, per format; results/read_bound.json")
    p.add_argument("--formats", default="bf16,fp8,q8_0,q4_k_m")
    p.add_argument("--precision", default="float32")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--kinds", default="invariants,lineage", help="which runs: invariants, lineage")
    p = sub.add_parser("read-paths", help="bytes/s of each read path alone; results/read_paths.json")
    p.add_argument("--formats", default="bf16,fp8,q8_0,q4_k_m")
    p.add_argument("--layers", type=int, default=4)
    p = sub.add_parser("pair", help="lineage and compare of the 7B shape against itself; results/pair.json")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--precision", default="float32")
    p = sub.add_parser("deepseek", help="the DeepSeek-V3-shaped fingerprint; results/deepseek.json")
    p.add_argument("--experts", default="256")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--precision", default="float32")
    p.add_argument("--commands", default="invariants", help="invariants (the default terms), fingerprint (every layer)")
    p = sub.add_parser("accuracy", help="bfloat16 vs float32 verdicts; results/accuracy.json")
    p.add_argument("--zoo", type=Path, default=None,
                   help="the tiny zoo's folder (default: $HUREF_EXPERIMENTS_CACHE/full; none: the attack suite only)")
    p.add_argument("--every", type=int, default=1, help="every Nth tiny architecture of the attack suite")
    p.add_argument("--zoo-models", type=int, default=None, help="only the first N zoo models (sorted by name)")
    sub.add_parser("gpu", help="--device cuda on the 7B, 70B and DeepSeek-V3 shapes; results/gpu.json")
    p = sub.add_parser("generator-step", help="images/s of the dog generator's training step")
    p.add_argument("--photos", type=Path, required=True, help="the dog photos (a folder, or packed by pack-photos)")
    p.add_argument("--batches", default="64,256,1024")
    p.add_argument("--steps", type=int, default=32, help="timed steps per setting")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p = sub.add_parser("report", help="write docs/PERFORMANCE.md from the results")
    p.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[2] / "docs" / "PERFORMANCE.md")
    p = sub.add_parser("baseline", help="(internal) load with transformers, then compute the terms")
    p.add_argument("directory", type=Path)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("-o", "--output", type=Path, required=True)
    p = sub.add_parser("breakdown", help="(internal) time the phases of one run in-process")
    p.add_argument("directory", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--precision", default="float32")
    args = parser.parse_args()
    cache = args.cache

    from huref_lab.bench import build, measure

    if args.command == "build":
        torch.set_num_threads(1)
        for size in filter(None, args.sizes.split(",")):
            print(build.build_llama(size, cache), flush=True)
        for form in filter(None, args.formats.split(",")):
            print(measure.checkpoint(cache, form), flush=True)
        for experts in filter(None, args.deepseek.split(",")):
            print(build.build_deepseek(cache, int(experts)), flush=True)
    elif args.command == "llama":
        measure.llama(cache, args.runs, args.sizes.split(","), args.precision, not args.no_baseline)
    elif args.command == "read-bound":
        measure.read_bound(cache, args.formats.split(","), args.precision, args.runs, tuple(args.kinds.split(",")))
    elif args.command == "read-paths":
        measure.read_paths(cache, args.formats.split(","), args.layers)
    elif args.command == "pair":
        measure.pair(cache, args.runs, args.precision)
    elif args.command == "deepseek":
        measure.deepseek(cache, [int(e) for e in args.experts.split(",")], args.tokens, args.precision,
                         args.commands.split(","))
    elif args.command == "accuracy":
        from huref_lab.bench import accuracy
        from huref_lab.experiments.paths import EXPERIMENTS_CACHE, experiments_cache
        from huref_lab.tiny_models import ARCHITECTURES

        attack_failed, zoo_failed, attack_rows, zoo_rows = [], [], [], []
        architectures = ARCHITECTURES[::args.every]
        zoo = args.zoo or (experiments_cache("full") if os.environ.get(EXPERIMENTS_CACHE) else None)
        path = measure.results_path(cache, "accuracy")
        path.parent.mkdir(parents=True, exist_ok=True)
        machine, commit = measure.machine(), measure.commit()

        def write() -> None:  # after each pair, so a stopped run keeps what it measured
            measured = {row["pair"].split(": ")[0] for row in attack_rows + attack_failed}
            path.write_text(json.dumps({"machine": machine, "commit": commit, "utc": measure.now(),
                                        "attacks": {"summary": accuracy.summary(attack_rows, attack_failed),
                                                    "rows": attack_rows, "architectures": len(measured),
                                                    "of": len(ARCHITECTURES)},
                                        "zoo": {"summary": accuracy.summary(zoo_rows, zoo_failed), "rows": zoo_rows,
                                                "path": str(zoo)}}, indent=1))

        if zoo is not None and zoo.exists():
            accuracy.measure(accuracy.zoo_pairs(zoo, args.zoo_models), zoo_failed, zoo_rows, write)
        accuracy.measure(accuracy.attack_pairs(architectures, attack_failed), attack_failed, attack_rows, write)
        write()
    elif args.command == "gpu":
        measure.gpu(cache)
    elif args.command == "generator-step":
        from huref.files import write_atomically
        from huref_lab.bench.generator_step import generator_step

        figures = generator_step(args.photos, [int(b) for b in args.batches.split(",")], args.steps, args.device,
                                 args.precision, args.compile)
        if args.json:
            write_atomically(args.json, (json.dumps(figures, indent=1) + "\n").encode())
    elif args.command == "report":
        from huref_lab.bench import report

        args.output.write_text(report.report(cache))
        print(args.output)
    elif args.command == "baseline":
        measure.baseline(args.directory, args.dtype, args.output)
    elif args.command == "breakdown":
        print(json.dumps(measure.breakdown(args.directory, args.output, args.precision)))


if __name__ == "__main__":
    main()

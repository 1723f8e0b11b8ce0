"""The lineage evidence: whole-depth layer maps of every zoo pair, the null panel, and the "Lineage" section.

    python scripts/lineage_evidence.py --cache DIR           # after scripts/experiments.py has built the zoo
    python scripts/lineage_evidence.py --cache DIR --build   # first build (or reuse) llama-A's lineage models

DIR (or $HUREF_EXPERIMENTS_CACHE) is the zoo cache's root; the work is huref_lab.experiments.lineage_evidence.
"""

import argparse
import json
from pathlib import Path

import torch

from huref.statistics import NULL_PANEL_FILE
from huref_lab.experiments import lineage_evidence
from huref_lab.experiments.catalogue import SCALES
from huref_lab.experiments.cli import run_main
from huref_lab.experiments.paths import REPO, experiments_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="full")
    parser.add_argument("--cache", type=Path, help="the zoo cache's root (default: $HUREF_EXPERIMENTS_CACHE)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--panel", type=Path, default=NULL_PANEL_FILE, help="where the null panel JSON goes")
    parser.add_argument("--build", action="store_true",
                        help="first build the lineage models (llama-A's families: its offspring, twin, sibling and "
                             "student) that are missing, and their whole-depth terms; the rest of the zoo comes "
                             "from scripts/experiments.py")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = experiments_cache(args.scale, args.cache)
    scale = SCALES[args.scale]
    if args.build:
        lineage_evidence.build_lineage_models(root, scale, args.workers)
    print(json.dumps(lineage_evidence.run(root, scale, args.out, args.panel), indent=1))


if __name__ == "__main__":
    run_main(main)

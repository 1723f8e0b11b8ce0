"""The evidence: train a zoo of related and unrelated models, measure ICS and PCS, calibrate the verdict.

    python scripts/experiments.py --cache DIR              # the full run (< 60 min on 2 cores), writes docs/RESULTS.md
    python scripts/experiments.py --cache DIR --scale smoke   # a few steps of everything, to check the pipeline

DIR (or $HUREF_EXPERIMENTS_CACHE) holds the trained models and terms, one folder per scale. The "Lineage"
section (and huref/data/null_panel.json) comes from huref_lab.experiments.lineage_evidence, run at the end.
What it needs besides huref: huref_lab.experiments.evidence.
"""

import argparse
from pathlib import Path

from huref_lab.experiments import evidence
from huref_lab.experiments.catalogue import SCALES
from huref_lab.experiments.cli import run_main
from huref_lab.experiments.paths import REPO, experiments_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="full")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="the zoo cache's root (default: $HUREF_EXPERIMENTS_CACHE)")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where RESULTS.md and results/ go")
    parser.add_argument("--skip-lineage", action="store_true",
                        help="leave the lineage section and huref/data/null_panel.json as they are")
    args = parser.parse_args()
    evidence.run(experiments_cache(args.scale, args.cache), args.scale, args.out, args.workers,
                 lineage=not args.skip_lineage)


if __name__ == "__main__":
    run_main(main)

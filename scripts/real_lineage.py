"""Lineage on real pretrained weights (huref_lab.experiments.real_lineage; `--help` lists the commands
that build the models): -> docs/results/real_lineage.json, docs/results/real_lineage_panel.png and the
"Lineage on real weights" section of docs/RESULTS.md."""

import argparse

import torch

from huref_lab.experiments import real_lineage
from huref_lab.experiments.cli import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=real_lineage.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached-losses", action="store_true",
                        help="only losses already measured (finetune.json, CACHE/losses.json); others show -")
    args = parser.parse_args()
    torch.set_num_threads(1)
    real_lineage.run(args.cached_losses)


if __name__ == "__main__":
    run_main(main)

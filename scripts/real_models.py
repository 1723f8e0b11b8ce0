"""Real pretrained models, their trained offspring, and what huref says about them: the stages of
huref_lab.experiments.real_models (`--help` lists them with the commands that reproduce docs/REAL_MODELS.md)."""

import argparse

from huref_lab.experiments import real_models
from huref_lab.experiments.cli import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=real_models.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["fetch", "export", "finetune", "quantize", "measure"])
    parser.add_argument("name", nargs="?", choices=real_models.GGUF_BASES)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--minutes", type=float, default=45.0, help="stop training after this long")
    parser.add_argument("--train-layers", type=int, default=6, help="train only the last N layers")
    parser.add_argument("--train-embeddings", action="store_true", help="also train the token embeddings")
    parser.add_argument("--corpus", choices=sorted(real_models.CORPUS_NAMES), default="vim",
                        help="finetune: the training text")
    parser.add_argument("--new-tokens", type=int, default=0, help="finetune: add this many corpus identifiers first")
    args = parser.parse_args()
    if args.stage == "fetch":
        real_models.fetch()
    elif args.stage == "export":
        real_models.export(args.name)
    elif args.stage == "finetune":
        real_models.finetune(args.name, args.corpus, args.steps, args.batch, args.lr, args.minutes,
                             args.train_layers, args.train_embeddings, args.new_tokens)
    elif args.stage == "quantize":
        real_models.quantize()
    else:
        real_models.measure()


if __name__ == "__main__":
    run_main(main)

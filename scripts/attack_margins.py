"""Margins of the attack suite for some tiny models: over every valid attack alone and their composite (as
tests/test_attacks.py runs them), the largest logit difference and the smallest ICS; over independent inits (seeds
7, 8, 9), the largest |ICS|. The suite asserts <= 1e-4, >= 0.999 and <= 0.1; this prints how far inside.

    python scripts/attack_margins.py llama4_text dbrx aria_text jetmoe
"""

import argparse
import importlib.util
import tempfile
from pathlib import Path

import torch

from huref.invariants import invariant_terms
from huref.similarity import compare_terms
from huref.sources import load_model
from huref_lab import attacks, tiny_models

ROOT = Path(__file__).resolve().parents[1]


def suite():
    """tests/test_attacks.py as a module (its Reference, logit_difference, composite)."""
    spec = importlib.util.spec_from_file_location("test_attacks", ROOT / "tests" / "test_attacks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def margins(arch: str, root: Path, ta) -> str:
    ref = ta.Reference(tiny_models.build_checkpoint(arch, root / "reference"), arch)
    names = attacks.valid_attacks(ta.layout(arch)) + [ta.composite(arch)]
    logit, ics = 0.0, 1.0
    for k, name in enumerate(names):
        attacked = attacks.attack_directory(ref.path, root / f"attacked{k}", name, seed=ta.ATTACK_SEED)
        logit = max(logit, ta.logit_difference(ref, attacked, arch))
        ics = min(ics, compare_terms(ref.terms, invariant_terms(load_model(str(attacked))))["ics"])
    independent = max(abs(compare_terms(ref.terms, invariant_terms(load_model(str(
        tiny_models.build_checkpoint(arch, root / f"seed{seed}", seed=seed)))))["ics"]) for seed in (7, 8, 9))
    return (f"{arch}: {len(names)} attacks; max logit diff {logit:.2e}; min ICS {ics:.7f}; "
            f"max |ICS| independent {independent:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="+", choices=tiny_models.ARCHITECTURES, metavar="ARCH")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ta = suite()
    for arch in args.archs:
        with tempfile.TemporaryDirectory() as root:
            print(margins(arch, Path(root), ta), flush=True)


if __name__ == "__main__":
    main()

"""Every hostile case, by class (docs/SECURITY.md lists the classes): `CASES` and `cases_json`.

The modules register their cases on import: checkpoints (config, tokenizer, safetensors,
sharded, special files, torchbin, declared sizes, non-finite weights, nested JSON), files
(invariants files, FP.json, generators and network pickles), quantized (quantization_config
fields, quant states, packed tensors), claims (claimed depths and expert counts, newer config
fields), gguf (metadata, claimed counts, split files), runs (flags, outputs, valid inputs,
interrupts, concurrent runs).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from huref_lab.hostile.cases import checkpoints, claims, files, gguf, quantized, runs  # noqa: F401  (they register their cases)
from huref_lab.hostile.cases.base import CASES, Case, Kit

__all__ = ["CASES", "Case", "Kit", "cases_json"]


def cases_json(kit: Kit, root: Path, names=None) -> dict:
    """Build every case (or those named) under root/NAME/; {name: Case as a dict}."""
    built = {}
    for name in names or CASES:
        directory = root / name
        directory.mkdir(parents=True)
        built[name] = asdict(CASES[name][1](kit, directory))
    return built

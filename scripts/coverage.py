"""Write docs/ARCHITECTURES.md: every causal-LM model type of the pinned transformers as supported, not
applicable or not yet (the reasons are data in huref_lab/coverage.py); report upstream drift.

    python scripts/coverage.py              # rewrite docs/ARCHITECTURES.md
    python scripts/coverage.py --check      # exit 1 if it is stale
    python scripts/coverage.py --latest     # what the installed releases add that the table does not classify
    python scripts/coverage.py --snapshot   # re-pin: snapshot the installed transformers and gguf (after
                                            # moving constraints.txt forward and classifying what --latest lists)

--latest installs nothing: run it in an environment with the newest releases
(`pip install -U transformers gguf` over the pins). It exits 0 whatever it finds (drift is reported, never
fatal); --json prints one object.
"""

import argparse
import json
import sys
from pathlib import Path

from huref_lab.coverage import PINNED, drift, installed_snapshot, render

TARGET = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURES.md"


def drift_text(found: dict) -> str:
    """The drift report as lines a person reads."""
    tf, gg = found["transformers"], found["gguf"]
    lines = [f"transformers: pinned {tf['pinned']}, installed {tf['installed']}"]
    lines.append("  unclassified causal-LM model types: " + (", ".join(tf["unclassified"]) or "none"))
    if tf["removed"]:
        lines.append("  pinned model types the installed release no longer lists: " + ", ".join(tf["removed"]))
    lines.append(f"gguf: pinned {gg['pinned']}, installed {gg['installed']}")
    for key, what in (("new_architectures", "new llama.cpp architectures"),
                      ("new_quantization_types", "new quantization types"),
                      ("removed_architectures", "architectures no longer listed"),
                      ("removed_quantization_types", "quantization types no longer listed")):
        if gg[key] or key.startswith("new"):
            lines.append(f"  {what}: " + (", ".join(gg[key]) or "none"))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="only say whether the file is up to date")
    group.add_argument("--latest", action="store_true", help="report what the installed releases add (drift)")
    group.add_argument("--snapshot", action="store_true", help="pin the installed transformers and gguf")
    parser.add_argument("--json", action="store_true", help="with --latest: one JSON object")
    args = parser.parse_args()
    if args.latest:
        found = drift()
        print(json.dumps(found, indent=1) if args.json else drift_text(found))
        return 0
    if args.snapshot:
        PINNED.write_text(json.dumps(installed_snapshot(), indent=1) + "\n")
        print(f"wrote {PINNED}")
        return 0
    text = render()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        print("up to date" if current == text else f"{TARGET} is stale: run python scripts/coverage.py")
        return 0 if current == text else 1
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

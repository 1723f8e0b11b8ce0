"""Write docs/ARCHITECTURES.md: every causal-LM model type of transformers as supported, not applicable or
not yet (the reasons are data in huref_lab/coverage.py).

    python scripts/coverage.py            # rewrite docs/ARCHITECTURES.md
    python scripts/coverage.py --check    # exit 1 if it is stale
"""

import argparse
import sys
from pathlib import Path

from huref_lab.coverage import render

TARGET = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURES.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the file is up to date")
    args = parser.parse_args()
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

"""Benchmarks: `python scripts/bench.py COMMAND ...` is `python -m huref_lab.bench COMMAND ...`
(huref_lab/bench: build the synthetic checkpoints, measure, write docs/PERFORMANCE.md)."""

from huref_lab.bench.__main__ import main

if __name__ == "__main__":
    main()

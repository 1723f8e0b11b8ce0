"""Malformed and hostile inputs for huref, and a runner that executes many CLI runs in one process.

- `forgers`: writers of malformed files (model directories, safetensors, GGUF, quantized
  checkpoints, pickles, invariants files, generator files), every field able to lie.
- `cases`: `CASES` maps a case name to (class, builder); `builder(kit, directory)` writes the
  case's files into its own empty `directory` and returns a `Case` (the CLI arguments, the exit
  code expected, the paths that must not exist afterwards). The classes are those of
  docs/SECURITY.md; one module of `cases` per group of classes.
- `runner`: `python -m huref_lab.hostile CASES.json RESULTS.json` runs every built case in this
  one process, each under a time limit, the batch under an address-space cap.
"""

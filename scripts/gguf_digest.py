"""What huref reads from GGUF files, as a digest: for checking that a change to the GGUF reader (its
name tables, its block decoding) reads every file bit-identically.

    python scripts/gguf_digest.py build DIR           # every GGUF family's tiny model at F32 and Q8_0 into DIR
    python scripts/gguf_digest.py digest DIR > a.json  # the digest of every DIR/*.gguf

`build` writes, with huref_lab/gguf_convert.py, the tiny checkpoint (huref_lab/tiny_models.py) of every
model_type a `GGUFArch` of huref/architectures.py names, at F32 and Q8_0, and deepseek_v3 with MLA's kv_b
whole as older converters wrote it. `digest` needs only `open_gguf`, so the same files can be digested by
two versions of huref and the outputs compared with diff: per file its SHA-256, the config built, a hash
of the vocabulary, and per tensor its Hugging Face name, shape, stored type and the SHA-256 of its
float32 values, whole and of rows (last, 0, 1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from huref.readers.gguf import open_gguf

QTYPES = ("F32", "Q8_0")


def build(directory: Path) -> None:
    """Write the GGUF files of every family into `directory` (the tiny checkpoints under directory/src)."""
    from huref_lab import tiny_models
    from huref_lab.gguf_convert import GGUF_SOURCE_OVERRIDES, WRITTEN_AS, convert

    for model_type in sorted(WRITTEN_AS):
        overrides = GGUF_SOURCE_OVERRIDES.get(model_type, {})
        source = tiny_models.save_checkpoint(tiny_models.build_model(model_type, **overrides),
                                             directory / "src" / model_type, tiny_models.token_strings())
        for qtype in QTYPES:
            convert(source, directory / f"{model_type}-{qtype}.gguf", qtype)
        if model_type == "deepseek_v3":
            convert(source, directory / f"{model_type}-kv_b-whole-F32.gguf", "F32", split_kv_b=False)


def _sha(values) -> str:
    return hashlib.sha256(np.ascontiguousarray(values.numpy()).tobytes()).hexdigest()[:16]


def digest(directory: Path) -> dict:
    """{file name: {"file", "config", "vocab", "tensors": {name: {"shape", "type", "sha", "rows"}}}}."""
    out = {}
    for path in sorted(directory.glob("*.gguf")):
        config, reader, vocab = open_gguf(str(path))
        tensors = {}
        for name in sorted(reader.names()):
            values = reader.read(name)
            entry = {"shape": list(reader.shape(name)), "type": reader.quant_type(name), "sha": _sha(values)}
            if values.dim() == 2:
                rows = [values.shape[0] - 1, 0] + ([1] if values.shape[0] > 1 else [])
                entry["rows"] = _sha(reader.read(name, rows=rows))
            tensors[name] = entry
        out[path.name] = {"file": hashlib.sha256(path.read_bytes()).hexdigest()[:16], "config": config,
                          "vocab": hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16], "tensors": tensors}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "digest"))
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    if args.command == "build":
        build(args.directory)
    else:
        json.dump(digest(args.directory), sys.stdout, indent=1, sort_keys=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The one JSON reader for every JSON document huref reads from a file: config.json, shard indexes,
tokenizer files, FP.json, safetensors headers and invariants metadata, bitsandbytes quant states.

A document is refused (one HurefError line) before it is parsed when it is larger than its cap or
nested deeper than MAX_DEPTH (found by one pass over its brackets, outside strings, without
recursion), and when it is not UTF-8 or not JSON, which includes an integer of more digits than
Python converts (4300). So neither the parser nor any later walk of the parsed values (quoting a
value in a message, a tokenizer's decoder sequence) can run out of recursion, and memory follows
the cap.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from huref.errors import HurefError
from huref.readers import open_regular

# the real documents nest 3 to 7 levels (config.json, tokenizer.json); 64 leaves room for any format
# while every walk of a parsed document stays far below Python's recursion limit (1000)
MAX_DEPTH = 64
MAX_JSON_BYTES = 512 * 1024 * 1024  # config, index and tokenizer files are far smaller
ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash and the character it escapes
NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')  # every byte but quotes and brackets
STEP = np.zeros(256, dtype=np.int8)  # byte -> +1 opening a level ([ {), -1 closing one (] })
STEP[[0x5B, 0x7B]], STEP[[0x5D, 0x7D]] = 1, -1


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (UTF-8 bytes), brackets inside
    strings not counted; linear in the text, no recursion. Exact for valid JSON: with every escape
    sequence removed, the quotes left open and close strings, so a bracket lies outside strings
    after an even number of them."""
    marks = np.frombuffer(ESCAPE.sub(b"", raw).translate(None, NOT_STRUCTURE), dtype=np.uint8)
    outside = np.cumsum(marks == ord('"')) % 2 == 0
    steps = STEP[marks[outside]].astype(np.int64)
    return int(np.cumsum(steps).max()) if len(steps) else 0


def parse_json(raw: bytes, source: str, max_bytes: int = MAX_JSON_BYTES):
    """The JSON value of `raw` (bytes read from `source`, named in messages); HurefError when
    it is over `max_bytes`, nested deeper than MAX_DEPTH, not UTF-8 or not JSON."""
    if len(raw) > max_bytes:
        raise HurefError(f"{source}: {len(raw)} bytes is too large for this JSON document (at most {max_bytes})")
    depth = nesting_depth(raw)
    if depth > MAX_DEPTH:
        raise HurefError(f"{source}: JSON nested {depth} levels deep (at most {MAX_DEPTH})")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise HurefError(f"{source}: not UTF-8 text") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an integer past Python's digit limit
        raise HurefError(f"{source}: not valid JSON ({str(e).splitlines()[0][:120]})") from None


def read_json(path: Path | str, max_bytes: int = MAX_JSON_BYTES):
    """The JSON value of the regular file at `path` (`parse_json`); a FIFO or device is refused,
    not waited on, and no more than max_bytes + 1 bytes are read."""
    try:
        with open_regular(str(path)) as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise HurefError(f"{path}: cannot read ({e.strerror})") from None
    return parse_json(raw, str(path), max_bytes)

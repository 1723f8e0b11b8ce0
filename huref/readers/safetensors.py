"""Reader for `.safetensors` files, parsed here: only the bytes asked for are read.

Rows are read with positioned reads into a fresh buffer, one per run of consecutive rows (one for
a block of rows, one per head for interleaved heads, one per embedding row). Nothing is memory-
mapped: mapped file pages, and the neighbours the kernel maps with them, would count in the
process's resident memory.

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw little-endian data.
Every offset is checked against the file size before anything is read, so a truncated or
malformed file is reported, never half-read.
"""

from __future__ import annotations

import math
import os
import weakref
from typing import Sequence

import numpy as np
import torch

from huref.errors import HurefError, excerpt
from huref.readers import TensorReader, as_row_index, check_backed, file_size, open_regular, read_pieces
from huref.readers.jsonfile import parse_json

# safetensors dtype -> (bytes per element, torch dtype)
DTYPES = {
    "F64": (8, torch.float64),
    "F32": (4, torch.float32),
    "F16": (2, torch.float16),
    "BF16": (2, torch.bfloat16),
    "F8_E4M3": (1, torch.float8_e4m3fn),
    "F8_E5M2": (1, torch.float8_e5m2),
    "F8_E8M0": (1, torch.float8_e8m0fnu),  # power-of-two scales (ue8m0) of FP8 checkpoints
    "I64": (8, torch.int64),
    "I32": (4, torch.int32),
    "I16": (2, torch.int16),
    "I8": (1, torch.int8),
    "U8": (1, torch.uint8),
    "BOOL": (1, torch.bool),
}
MAX_HEADER = 100 * 1024 * 1024


def read_header(path) -> tuple[dict, int, dict]:
    """Parse and validate a safetensors header; return ({name: entry}, offset of the data, its
    "__metadata__" dict (empty when absent)).

    Every entry is checked before anything else reads it: a known dtype, a shape of non-negative
    integers, integer offsets inside the data whose span is exactly the tensor's bytes, and no
    dimension larger than the file (`check_backed`). A FIFO or device is refused, not waited on.
    """
    try:
        with open_regular(path) as f:
            size = file_size(f)
            head = f.read(8)
            if len(head) < 8:
                raise HurefError(f"{path}: not a safetensors file (shorter than its header)")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > MAX_HEADER or 8 + n > size:
                raise HurefError(f"{path}: malformed or truncated safetensors header")
            raw = f.read(n)
    except OSError as e:
        raise HurefError(f"{path}: cannot read ({e.strerror})") from None
    header = parse_json(raw, f"{path}: malformed safetensors header", MAX_HEADER)
    if not isinstance(header, dict):
        raise HurefError(f"{path}: malformed safetensors header")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, (dict, type(None))):
        raise HurefError(f"{path}: malformed safetensors metadata")
    data_size = size - 8 - n
    for name, entry in header.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and entry["dtype"] in DTYPES
                and _ints(entry.get("shape"))
                and _ints(entry.get("data_offsets")) and len(entry["data_offsets"]) == 2):
            raise HurefError(f"{path}: malformed entry for tensor '{excerpt(name)[1:-1]}'")
        begin, end = entry["data_offsets"]
        nbytes = math.prod(entry["shape"]) * DTYPES[entry["dtype"]][0]
        if end - begin != nbytes:
            raise HurefError(f"{path}: tensor '{name}' has inconsistent offsets")
        if end > data_size:
            raise HurefError(f"{path}: truncated (tensor '{name}' ends past the end of the file)")
        check_backed(path, name, entry["shape"], nbytes, end - begin, size)
    return header, 8 + n, metadata or {}


def _ints(value) -> bool:
    """True for a list of non-negative integers (booleans and floats are not)."""
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def consecutive_runs(index: np.ndarray):
    """Yield (first row, count, position in index) for each run of consecutive rows in index."""
    if len(index) == 0:
        return
    breaks = (np.flatnonzero(np.diff(index) != 1) + 1).tolist()
    for start, stop in zip([0] + breaks, breaks + [len(index)]):
        yield int(index[start]), stop - start, start


class SafetensorsReader(TensorReader):
    """Reader for one .safetensors file."""

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path  # a local path, or a file on the Hub (`huref.readers.remote.HubFile`)
        self.header, self.data_start, self.metadata = read_header(path)
        self._file = None

    def names(self) -> list[str]:
        return list(self.header)

    def has(self, name: str) -> bool:
        return name in self.header

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.header[name]["shape"])

    def _read(self, name: str, rows: Sequence[int] | slice | None, dtype: torch.dtype = torch.float32):
        entry = self.header[name]
        itemsize, dtype = DTYPES[entry["dtype"]]
        shape = self.shape(name)
        begin = self.data_start + int(entry["data_offsets"][0])
        row_len = shape[-1] if shape else 1
        n_rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
        row_bytes = row_len * itemsize
        index = as_row_index(rows, n_rows)
        if isinstance(index, slice):  # one run of rows (a stepped slice is spelled out)
            runs = ([(index.start, len(range(n_rows)[index]), 0)] if index.step == 1
                    else list(consecutive_runs(np.arange(index.start, index.stop, index.step))))
            n_picked = len(range(n_rows)[index])
        else:
            runs, n_picked = consecutive_runs(index), len(index)
        picked = np.empty(n_picked * row_bytes, dtype=np.uint8)
        read_pieces(self._opened(), [(begin + first * row_bytes, picked[at * row_bytes : (at + count) * row_bytes])
                                     for first, count, at in runs], self.path)
        # bfloat16 is widened (or kept) by `read`; an empty buffer has no stride a dtype view accepts
        tensor = torch.from_numpy(picked).view(dtype) if picked.size else torch.empty(0, dtype=dtype)
        tensor = tensor.reshape(shape) if rows is None else tensor.reshape(n_picked, row_len)
        return tensor, memoryview(picked).cast("B")

    def _opened(self):
        """The checkpoint file, opened unbuffered on first use."""
        if self._file is None:
            self._file = open_regular(self.path, buffering=0)
            weakref.finalize(self, self._file.close)
        return self._file

    def prefetch(self, name: str) -> None:
        """Ask the kernel to start reading tensor `name`'s bytes into the page cache (no wait, no copy)."""
        begin, end = self.header[name]["data_offsets"]
        if hasattr(os, "posix_fadvise") and not hasattr(self.path, "open_remote"):
            os.posix_fadvise(self._opened().fileno(), self.data_start + int(begin), int(end) - int(begin),
                             os.POSIX_FADV_WILLNEED)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

"""Quantized checkpoints: a reader that shows dequantized float32 weights under their plain names.

`dequantizing(reader, config)` wraps a checkpoint's reader when config.json has a
`quantization_config`. The scheme named by its `quant_method` (one module per scheme, listed in
`SCHEMES`) finds the stored pieces of each quantized matrix by name (`q_proj.qweight`,
`q_proj.scales`, ... or `q_proj.weight` + `q_proj.weight_scale_inv`) and presents the matrix as
`q_proj.weight` with the shape the unquantized checkpoint has; the pieces themselves are hidden.
A read of some rows dequantizes only those rows, reading only the stored rows, columns, blocks
and groups that hold them. Tensors the checkpoint keeps unquantized (embeddings, norms) pass
through unchanged.

Every field a scheme takes from `quantization_config` is read once, typed (`huref.config`: the
JSON type, an integer where one is meant, finite, in range), when the checkpoint is opened; the
shapes of a tensor's stored pieces are checked against each other and those settings (rank
included) when its shape is first asked, before any arithmetic on them.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from huref.config import MAX_SIZE, config_value
from huref.errors import HurefError
from huref.readers import TensorReader, as_row_index

COLUMN_CHUNK_BYTES = 16 << 20  # stored rows read per chunk when only some columns are wanted
WHERE = "config.json: quantization_config"  # where a setting's message says it was read


class QuantTensor:
    """One logical float tensor stored quantized in `reader` as the tensors `parts`.

    Subclasses give `logical_shape()` (the unquantized tensor's shape, once every stored piece's
    shape is checked against the others and the scheme's `settings`) and
    `rows(index, dtype) -> [len(index), shape[-1]]` for rows of its 2-D view
    [prod(shape[:-1]), shape[-1]], decoded into `dtype` where the scheme can (`scaled`), else
    float32; every stored read goes through `part()` or `columns()`, which keep the bytes read for
    the digest.
    """

    def __init__(self, reader: TensorReader, name: str, parts: dict[str, str], settings) -> None:
        self.reader, self.name, self.parts, self.settings = reader, name, parts, settings
        self._shape: tuple[int, ...] | None = None
        self.raw: list[bytes] = []

    @property
    def shape(self) -> tuple[int, ...]:
        """The unquantized shape; asking it first checks the stored pieces (HurefError if they do not fit)."""
        if self._shape is None:
            self._shape = tuple(int(d) for d in self.logical_shape())
        return self._shape

    def logical_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def stored_shape(self, part: str) -> tuple[int, ...]:
        return tuple(self.reader.shape(self.parts[part]))

    def stored_matrix(self, part: str) -> tuple[int, int]:
        """The shape of stored piece `part`, which must be 2-D: (rows, columns)."""
        shape = self.stored_shape(part)
        if len(shape) != 2:
            raise self.fail(f"'{self.parts[part]}' has shape {shape}, expected a matrix")
        return shape

    def stored_vector(self, part: str) -> int:
        """The length of stored piece `part`, which must be 1-D."""
        shape = self.stored_shape(part)
        if len(shape) != 1:
            raise self.fail(f"'{self.parts[part]}' has shape {shape}, expected a vector")
        return shape[0]

    def part(self, part: str, rows=None) -> torch.Tensor:
        """Stored tensor `part` (or rows of its 2-D view; entries of a 1-D tensor, read whole), in
        its stored dtype."""
        if rows is not None and len(self.stored_shape(part)) < 2:
            whole = self.part(part).reshape(-1)
            return whole[rows] if isinstance(rows, slice) else whole[torch.as_tensor(np.asarray(rows), dtype=torch.int64)]
        tensor, raw = self.reader._read(self.parts[part], rows)
        self.raw.append(bytes(raw))
        return tensor

    def columns(self, part: str, start: int, stop: int) -> torch.Tensor:
        """Columns [start, stop) of stored 2-D tensor `part`, read a chunk of whole rows at a time:
        [n_rows, stop - start] in its stored dtype."""
        n_rows, n_cols = self.stored_shape(part)
        step = max(1, COLUMN_CHUNK_BYTES // max(1, n_cols * 4))
        pieces = [self.part(part, slice(r, min(n_rows, r + step)))[:, start:stop].clone()
                  for r in range(0, n_rows, step)]
        return torch.cat(pieces)

    def fail(self, why: str) -> HurefError:
        return HurefError(f"quantized tensor '{self.name}': {why}")

    def check_shape(self, part: str, expected: tuple[int, ...]) -> None:
        if self.stored_shape(part) != tuple(expected):
            raise self.fail(f"'{self.parts[part]}' has shape {self.stored_shape(part)}, expected {tuple(expected)}")


Finder = Callable[[TensorReader, list[str], dict], dict[str, QuantTensor]]


def _schemes() -> dict[str, Finder]:
    from huref.readers.quant import awq, bitsandbytes, compressed_tensors, fp8, gptq, mxfp4

    return {"fp8": fp8.find, "compressed-tensors": compressed_tensors.find, "gptq": gptq.find,
            "awq": awq.find, "bitsandbytes": bitsandbytes.find, "mxfp4": mxfp4.find}


class QuantizedReader(TensorReader):
    """A reader over `inner` in which each quantized tensor appears dequantized (into the dtype a
    read asks for) under its plain name and the stored pieces it is made of are hidden."""

    def __init__(self, inner: TensorReader, tensors: dict[str, QuantTensor]) -> None:
        super().__init__()
        self.inner, self.tensors = inner, tensors
        self.hidden = {p for t in tensors.values() for p in t.parts.values()} - set(tensors)

    def names(self) -> list[str]:
        plain = [n for n in self.inner.names() if n not in self.hidden and n not in self.tensors]
        return plain + list(self.tensors)

    def has(self, name: str) -> bool:
        return name in self.tensors or (name not in self.hidden and self.inner.has(name))

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape if name in self.tensors else self.inner.shape(name)

    def _read(self, name: str, rows: Sequence[int] | slice | None, dtype: torch.dtype = torch.float32):
        if name not in self.tensors:
            return self.inner._read(name, rows, dtype)
        tensor = self.tensors[name]
        shape = tensor.shape
        n_rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
        index = as_row_index(rows, n_rows)
        index = np.arange(n_rows)[index] if isinstance(index, slice) else index
        tensor.raw = []
        try:
            values = tensor.rows(index, dtype)
        except (RuntimeError, IndexError, ValueError) as e:  # pieces whose shapes or dtypes do not fit together
            raise tensor.fail(f"its stored pieces do not fit together ({str(e).splitlines()[0]})") from None
        raw = b"".join(tensor.raw)
        tensor.raw = []
        return (values.reshape(shape) if rows is None else values), raw

    def prefetch(self, name: str) -> None:
        for part in self.tensors[name].parts.values() if name in self.tensors else (name,):
            self.inner.prefetch(part)

    def close(self) -> None:
        self.inner.close()


def dequantizing(reader: TensorReader, config: dict) -> TensorReader:
    """`reader` itself when `config` has no `quantization_config`; else a `QuantizedReader` over it
    for the scheme its `quant_method` names (HurefError for a method not supported)."""
    qconfig = config.get("quantization_config")
    if qconfig is None:
        return reader
    if not isinstance(qconfig, dict):
        raise HurefError("config.json: quantization_config is not an object")
    method = (config_value(qconfig, "quant_method", default="", kind=str, where=WHERE) or "").lower()
    schemes = _schemes()
    if method not in schemes:
        raise HurefError(f"config.json: quantization method '{qconfig.get('quant_method')}' is not supported "
                         f"(supported: {', '.join(schemes)})")
    return QuantizedReader(reader, schemes[method](reader, reader.names(), qconfig))


# ---- helpers shared by the schemes -------------------------------------------------------------

def row_runs(index: np.ndarray):
    """(first, stop, position in index) for each run of consecutive rows in `index`."""
    from huref.readers.safetensors import consecutive_runs

    for first, count, at in consecutive_runs(index):
        yield first, first + count, at


def unpack_dense(words: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Fields of `bits` bits packed densely, low bits first, into the int32 words of each row:
    words [n, n_words] -> int64 [n, count], element i being bits [i*bits, (i+1)*bits) of the
    row's little-endian bit stream (GPTQ's and compressed-tensors' packing; 32 / bits fields per
    word when bits divides 32)."""
    if not 1 <= bits <= 8:
        raise HurefError(f"{bits}-bit packed weights are not supported (1 to 8 bits)")
    if count * bits > words.shape[1] * 32:
        raise HurefError(f"{words.shape[1]} packed words cannot hold {count} fields of {bits} bits")
    unsigned = torch.cat([words.to(torch.int64) & 0xFFFFFFFF, words.new_zeros(words.shape[0], 1, dtype=torch.int64)], 1)
    start = torch.arange(count, dtype=torch.int64) * bits
    word, offset = start // 32, start % 32
    pairs = unsigned[:, word] | (unsigned[:, word + 1] << 32)  # [n, count]: the two words a field can span
    return (pairs >> offset) & ((1 << bits) - 1)


def scale_rows(qt: QuantTensor, part: str, index: np.ndarray, rows_per_matrix: int, block_rows: int) -> torch.Tensor:
    """The rows of scale tensor `part` (2-D view [matrices * ceil(rows_per_matrix / block_rows),
    n_groups]) that apply to rows `index` of the weight's 2-D view: float32 [len(index), n_groups]."""
    per_matrix = -(-rows_per_matrix // block_rows)
    wanted = (index // rows_per_matrix) * per_matrix + (index % rows_per_matrix) // block_rows
    unique, inverse = np.unique(wanted, return_inverse=True)
    scales = qt.part(part, unique).reshape(len(unique), -1).to(torch.float32)
    return scales[torch.from_numpy(inverse.reshape(-1))]


def scaled(values: torch.Tensor, scales: torch.Tensor, group, zeros: torch.Tensor | None = None,
           dtype: torch.dtype = torch.float32):
    """(values - zeros) * scales with per-group scales (and zero points) over columns:
    values [n, cols]; scales, zeros [n, n_groups]; `group` the group size (consecutive columns) or
    each column's group index (int64 [cols]). Computed in float32 and rounded once into `dtype`
    [n, cols]; whole groups of consecutive columns without zero points take one broadcast pass."""
    n, cols = values.shape
    if isinstance(group, int) and zeros is None and cols % group == 0 and scales.shape[1] == cols // group:
        out = torch.empty(n, cols, dtype=dtype)
        wide = values if values.dtype in (torch.bfloat16, torch.float32) else values.to(torch.float32)  # exact either way
        torch.mul(wide.reshape(n, -1, group), scales[:, :, None].to(torch.float32),  # [n, groups, group]
                  out=out.reshape(n, -1, group))
        return out
    if isinstance(group, int):
        group = torch.arange(cols) // group
    values = values.to(torch.float32)
    if zeros is not None:
        values = values - zeros.to(torch.float32)[:, group]
    return (values * scales[:, group]).to(dtype)


def block_size(qt: QuantTensor, n: int, n_blocks: int, configured: int | None, what: str) -> int:
    """Block length along a dimension of length n cut into n_blocks blocks: `configured` (a
    positive integer, typed where it was read) when the config gives it, checked to fit, else
    n / n_blocks (which must divide)."""
    if configured is not None:
        if -(-n // configured) != n_blocks:
            raise qt.fail(f"{n_blocks} scale {what} do not fit blocks of {configured} over {n}")
        return configured
    if n_blocks <= 0 or n % n_blocks:
        raise qt.fail(f"{n_blocks} scale {what} do not divide {n}")
    return n // n_blocks


def group_size(config: dict, *keys: str, default: int) -> int:
    """The group size the config gives under the first of `keys` set: a positive integer, or -1
    (one group over the whole input); 0, fractions, strings and the like are refused."""
    size = config_value(config, *keys, default=default, kind=int, low=-1, high=MAX_SIZE, where=WHERE)
    if size == 0:
        raise HurefError(f"{WHERE}: {keys[0]} is 0, not a positive integer or -1")
    return size


def groups_over(n: int, size: int) -> int:
    """How many groups of `size` (-1: one group) cover n inputs."""
    return 1 if size == -1 else -(-n // size)

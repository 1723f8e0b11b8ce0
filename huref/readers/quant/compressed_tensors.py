"""compressed-tensors checkpoints (`quant_method: "compressed-tensors"`; llm-compressor / vLLM).

Formats read:
- pack-quantized: `X.weight_packed` int32 [out, ceil(in * bits / 32)] (signed ints offset by
  2^(bits-1), packed densely low bits first along the input), `X.weight_shape`, `X.weight_scale`,
  optional `X.weight_zero_point` (asymmetric; packed the same way along the output dimension) and
  `X.weight_g_idx` (activation order: each input column's group).
- int-quantized / naive-quantized (int8 `X.weight`) and float-quantized (fp8 e4m3 `X.weight`), each
  with `X.weight_scale` (and an unpacked `X.weight_zero_point` when asymmetric).
Scales are per tensor [1], per channel [out, 1], per group [out, in / group_size] or per block
[out / bm, in / bn]; dequantized: (q - zero_point) * scale. The bit width of packed weights comes
from the packed width; group and block sizes from the scale's shape, checked against the
config's `group_size` / `block_structure` where those are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from huref.config import MAX_SIZE, config_ints, config_object, config_value
from huref.errors import HurefError
from huref.readers.quant import WHERE, QuantTensor, block_size, scale_rows, scaled, unpack_dense

READABLE_FORMATS = {"pack-quantized", "int-quantized", "float-quantized", "naive-quantized", "mixed-precision", "dense"}
INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


@dataclass(frozen=True)
class Layout:
    """How a weight's stored pieces fit together, found when its shape is first asked: bits per
    packed value (0: not packed), rows per scale row, and the group (columns per scale column)."""

    bits: int
    block_rows: int
    group: int


class CompressedTensor(QuantTensor):
    """`settings`: the (block rows, group size) pairs the config's groups give, each None when not given."""

    def logical_shape(self):
        shape = self._weight_shape()
        n_out, n_in = shape[-2], shape[-1]
        bits = 0
        if "packed" in self.parts:
            packed = self.stored_shape("packed")
            if packed[:-1] != shape[:-1]:
                raise self.fail(f"'{self.parts['packed']}' has shape {packed}, not [{', '.join(map(str, shape[:-1]))}, words]")
            bits = self._bits(n_in, packed[-1])
        scale_shape = self.stored_shape("scale")
        if math.prod(scale_shape) == 1:  # per tensor
            block_rows, group, n_groups = n_out, n_in, 1
        else:
            if len(scale_shape) != len(shape) or scale_shape[:-2] != shape[:-2]:
                raise self.fail(f"scale shape {scale_shape} does not fit weight shape {shape}")
            n_groups = scale_shape[-1]
            block_rows = 1 if scale_shape[-2] == n_out else block_size(
                self, n_out, scale_shape[-2], self._configured(0, n_out, scale_shape[-2]), "rows")
            group = block_size(self, n_in, n_groups, self._configured(1, n_in, n_groups), "columns")
        if "zero" in self.parts:
            if bits:  # packed along the output: [..., ceil(out * bits / 32), n_groups]
                self.check_shape("zero", (*shape[:-2], math.ceil(n_out * bits / 32), n_groups))
            else:
                self.check_shape("zero", scale_shape)
        if "g_idx" in self.parts:
            self.check_shape("g_idx", (n_in,))
        self.layout = Layout(bits, block_rows, group)
        return shape

    def _weight_shape(self) -> tuple[int, ...]:
        """The unquantized shape: the stored weight's, or for packed weights the one weight_shape
        holds (a vector of 2 to 4 integers, each from 1 to MAX_SIZE)."""
        if "packed" not in self.parts:
            shape = self.stored_shape("weight")
        else:
            if not 2 <= self.stored_vector("shape") <= 4:
                raise self.fail(f"'{self.parts['shape']}' has {self.stored_vector('shape')} entries, expected 2 to 4")
            stored = self.part("shape")
            if stored.dtype not in INTEGER_DTYPES:
                raise self.fail(f"'{self.parts['shape']}' holds {stored.dtype}, not integers")
            shape = tuple(int(d) for d in stored.tolist())
            if not all(1 <= d <= MAX_SIZE for d in shape):
                raise self.fail(f"'{self.parts['shape']}' holds {shape}, not sizes from 1 to {MAX_SIZE}")
        if len(shape) < 2:
            raise self.fail(f"expected a matrix, the weight shape is {shape}")
        return shape

    def _bits(self, n_in: int, words: int) -> int:
        """Bits per packed value, from the packed width (dense packing: ceil(in * bits / 32) words)."""
        for bits in range(1, 9):
            if math.ceil(n_in * bits / 32) == words:
                return bits
        raise self.fail(f"{words} packed words per row fit no bit width for {n_in} inputs")

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = self.shape
        n_out, n_in = shape[-2], shape[-1]
        bits, block_rows, group = self.layout.bits, self.layout.block_rows, self.layout.group
        if bits:
            words = self.part("packed", index).reshape(len(index), -1)
            values = unpack_dense(words, bits, n_in) - (1 << (bits - 1))
        else:
            values = self.part("weight", index).to(torch.float32)
        if math.prod(self.stored_shape("scale")) == 1:  # per tensor
            scales = self.part("scale").to(torch.float32).reshape(1, 1).expand(len(index), 1)
        else:
            scales = scale_rows(self, "scale", index, n_out, block_rows)
        if "g_idx" in self.parts:
            group = self.part("g_idx").reshape(-1).to(torch.int64)
            if group.min() < 0 or group.max() >= scales.shape[1]:
                raise self.fail("weight_g_idx does not map every input column to a group")
        return scaled(values, scales, group, self._zeros(index, n_out, block_rows, scales.shape[1]), dtype)

    def _zeros(self, index: np.ndarray, n_out: int, block_rows: int, n_groups: int) -> torch.Tensor | None:
        """Zero points of rows `index`: [len(index), n_groups], or None when symmetric."""
        if "zero" not in self.parts:
            return None
        bits = self.layout.bits
        if not bits:
            return scale_rows(self, "zero", index, n_out, block_rows)
        packed = self.part("zero")  # [..., ceil(n_out * bits / 32), n_groups], packed along the output
        per_matrix = packed.reshape(-1, *packed.shape[-2:]).transpose(1, 2).reshape(-1, packed.shape[-2])
        zeros = unpack_dense(per_matrix, bits, n_out) - (1 << (bits - 1))  # [matrices * n_groups, n_out]
        zeros = zeros.reshape(-1, n_groups, n_out).transpose(1, 2).reshape(-1, n_groups)  # [matrices * n_out, n_groups]
        return zeros[torch.from_numpy(index)].to(torch.float32)

    def _configured(self, axis: int, n: int, n_blocks: int) -> int | None:
        """The config's block height (axis 0) or group size (axis 1) that cuts n into n_blocks, if one does."""
        return next((size[axis] for size in self.settings
                     if size[axis] is not None and -(-n // size[axis]) == n_blocks), None)


def settings(config: dict) -> tuple[tuple[str, ...], tuple[tuple[int | None, int | None], ...]]:
    """compressed-tensors' quantization_config, typed: (the formats it names, the (block rows,
    group size) of each config group's weights, None where not given)."""
    formats = [config_value(config, "format", kind=str, where=WHERE)]
    sizes = []
    for name, group in config_object(config, "config_groups", WHERE).items():
        where = f"{WHERE}.config_groups.{name[:40]}"
        if not isinstance(group, dict):
            raise HurefError(f"{where} is not an object")
        formats.append(config_value(group, "format", kind=str, where=where))
        weights = config_object(group, "weights", where)
        blocks = config_ints(weights, "block_structure", length=2, low=1, high=MAX_SIZE, where=f"{where}.weights")
        group_size = config_value(weights, "group_size", kind=int, low=1, high=MAX_SIZE, where=f"{where}.weights")
        if group_size is None and blocks is not None:
            group_size = blocks[1]
        sizes.append((blocks[0] if blocks else None, group_size))
    return tuple(f for f in formats if f), tuple(sizes)


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X.weight_packed` (pack-quantized) or `X.weight` with `X.weight_scale` (int, float
    and naive formats), presented as `X.weight`."""
    formats, sizes = settings(config)
    unreadable = set(formats) - READABLE_FORMATS
    if unreadable:
        raise HurefError(f"config.json: compressed-tensors format '{sorted(unreadable)[0][:40]}' is not supported "
                         f"(supported: {', '.join(sorted(READABLE_FORMATS - {'dense'}))})")
    present = set(names)
    found = {}
    for name in names:
        if not name.endswith(".weight_scale"):
            continue
        weight = name[: -len("_scale")]
        parts = {"scale": name}
        if weight + "_packed" in present:
            parts.update(packed=weight + "_packed", shape=weight + "_shape")
            if weight + "_shape" not in present:
                raise HurefError(f"quantized tensor '{weight}': '{weight}_shape' is missing from the checkpoint")
        elif weight in present:
            parts["weight"] = weight
        else:
            continue
        for piece, suffix in (("zero", "_zero_point"), ("g_idx", "_g_idx")):
            if weight + suffix in present:
                parts[piece] = weight + suffix
        found[weight] = CompressedTensor(reader, weight, parts, sizes)
    return found

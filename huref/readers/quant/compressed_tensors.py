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

import numpy as np
import torch

from huref.errors import HurefError
from huref.readers.quant import QuantTensor, block_size, scale_rows, scaled, unpack_dense

READABLE_FORMATS = {"pack-quantized", "int-quantized", "float-quantized", "naive-quantized", "mixed-precision", "dense"}


class CompressedTensor(QuantTensor):
    def logical_shape(self):
        if "packed" in self.parts:
            return tuple(int(d) for d in self.part("shape").reshape(-1).tolist())
        return self.stored_shape("weight")

    def bits(self) -> int:
        """Bits per packed value, from the packed width (dense packing: ceil(in * bits / 32) words)."""
        n_in, words = self.shape[-1], self.stored_shape("packed")[-1]
        for bits in range(1, 9):
            if math.ceil(n_in * bits / 32) == words:
                return bits
        raise self.fail(f"{words} packed words per row fit no bit width for {n_in} inputs")

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = self.shape
        if len(shape) < 2:
            raise self.fail(f"expected a matrix, the weight shape is {shape}")
        n_out, n_in = shape[-2], shape[-1]
        if "packed" in self.parts:
            bits = self.bits()
            self.check_shape("packed", (*shape[:-1], math.ceil(n_in * bits / 32)))
            words = self.part("packed", index).reshape(len(index), -1)
            values = unpack_dense(words, bits, n_in) - (1 << (bits - 1))
        else:
            values = self.part("weight", index).to(torch.float32)
        scale_shape = self.stored_shape("scale")
        if math.prod(scale_shape) == 1:  # per tensor
            scales = self.part("scale").to(torch.float32).reshape(1, 1).expand(len(index), 1)
            group, block_rows = n_in, n_out
        else:
            if len(scale_shape) != len(shape) or scale_shape[:-2] != shape[:-2]:
                raise self.fail(f"scale shape {scale_shape} does not fit weight shape {shape}")
            block_rows = 1 if scale_shape[-2] == n_out else block_size(
                self, n_out, scale_shape[-2], self._configured("block_rows", n_out, scale_shape[-2]), "rows")
            group = block_size(self, n_in, scale_shape[-1], self._configured("group", n_in, scale_shape[-1]), "columns")
            scales = scale_rows(self, "scale", index, n_out, block_rows)
        if "g_idx" in self.parts:
            group = self.part("g_idx").reshape(-1).to(torch.int64)
            if group.numel() != n_in or group.min() < 0 or group.max() >= scales.shape[1]:
                raise self.fail("weight_g_idx does not map every input column to a group")
        return scaled(values, scales, group, self._zeros(index, n_out, block_rows, scales.shape[1]), dtype)

    def _zeros(self, index: np.ndarray, n_out: int, block_rows: int, n_groups: int) -> torch.Tensor | None:
        """Zero points of rows `index`: [len(index), n_groups], or None when symmetric."""
        if "zero" not in self.parts:
            return None
        if "packed" not in self.parts:
            return scale_rows(self, "zero", index, n_out, block_rows)
        packed = self.part("zero")  # [..., ceil(n_out * bits / 32), n_groups], packed along the output
        bits = self.bits()
        per_matrix = packed.reshape(-1, *packed.shape[-2:]).transpose(1, 2).reshape(-1, packed.shape[-2])
        zeros = unpack_dense(per_matrix, bits, n_out) - (1 << (bits - 1))  # [matrices * n_groups, n_out]
        zeros = zeros.reshape(-1, n_groups, n_out).transpose(1, 2).reshape(-1, n_groups)  # [matrices * n_out, n_groups]
        return zeros[torch.from_numpy(index)].to(torch.float32)

    def _configured(self, what: str, n: int, n_blocks: int) -> int | None:
        """The config's group size (or block height) that cuts n into n_blocks, if one does."""
        sizes = []
        for group in (self.config.get("config_groups") or {}).values():
            weights = (group or {}).get("weights") or {}
            structure = weights.get("block_structure") or [None, None]
            sizes.append(structure[0] if what == "block_rows" else (weights.get("group_size") or structure[1]))
        return next((int(s) for s in sizes if s and int(s) > 0 and -(-n // int(s)) == n_blocks), None)


def _formats(config: dict) -> set[str]:
    formats = {config.get("format")} | {(g or {}).get("format") for g in (config.get("config_groups") or {}).values()}
    return {f for f in formats if f}


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X.weight_packed` (pack-quantized) or `X.weight` with `X.weight_scale` (int, float
    and naive formats), presented as `X.weight`."""
    unreadable = _formats(config) - READABLE_FORMATS
    if unreadable:
        raise HurefError(f"config.json: compressed-tensors format '{sorted(unreadable)[0]}' is not supported "
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
        found[weight] = CompressedTensor(reader, weight, parts, config)
    return found

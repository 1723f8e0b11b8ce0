"""FP8 with block scales (`quant_method: "fp8"`; DeepSeek-V3/R1 and Qwen3 FP8 releases).

Stored: `X.weight` as float8 e4m3 [out, in] (or [experts, out, in]) and `X.weight_scale_inv`
float32 [ceil(out / bm), ceil(in / bn)] with [bm, bn] = `weight_block_size` (a single entry
when the scale is per tensor). Fused expert tensors `X` pair with `X_scale_inv`.
Dequantized: weight * weight_scale_inv of its block; rows map one to one, each with its row
block's scales.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from huref.config import MAX_SIZE, config_ints
from huref.readers.quant import WHERE, QuantTensor, block_size, scale_rows, scaled


class FP8BlockTensor(QuantTensor):
    """`settings`: weight_block_size as (rows, columns), or None (the blocks follow from the shapes)."""

    def logical_shape(self):
        shape, scale_shape = self.stored_shape("weight"), self.stored_shape("scale")
        if len(shape) < 2:
            raise self.fail(f"expected a matrix, the stored weight has shape {shape}")
        self.blocks = None  # one scale for the whole tensor
        if math.prod(scale_shape) != 1:
            if len(scale_shape) != len(shape) or scale_shape[:-2] != shape[:-2]:
                raise self.fail(f"scale shape {scale_shape} does not fit weight shape {shape}")
            configured = self.settings or (None, None)
            self.blocks = (block_size(self, shape[-2], scale_shape[-2], configured[0], "rows"),
                           block_size(self, shape[-1], scale_shape[-1], configured[1], "columns"))
        return shape

    def rows(self, index: np.ndarray) -> torch.Tensor:
        shape = self.shape
        values = self.part("weight", index).to(torch.float32)
        if self.blocks is None:
            return values * self.part("scale").to(torch.float32).reshape(())
        block_rows, block_cols = self.blocks
        return scaled(values, scale_rows(self, "scale", index, shape[-2], block_rows), block_cols)


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X.weight` (or fused `X`) stored beside `X.weight_scale_inv` (or `X_scale_inv`)."""
    blocks = config_ints(config, "weight_block_size", length=2, low=1, high=MAX_SIZE, where=WHERE)
    present = set(names)
    found = {}
    for name in names:
        if name.endswith("_scale_inv") and name[: -len("_scale_inv")] in present:
            weight = name[: -len("_scale_inv")]
            found[weight] = FP8BlockTensor(reader, weight, {"weight": weight, "scale": name}, blocks)
    return found

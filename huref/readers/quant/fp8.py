"""FP8 with block scales (`quant_method: "fp8"`; DeepSeek-V3/R1 and Qwen3 FP8 releases).

Stored: `X.weight` as float8 e4m3 [out, in] (or [experts, out, in]) and `X.weight_scale_inv`
float32 [ceil(out / bm), ceil(in / bn)] with [bm, bn] = `weight_block_size` (a single entry
when the scale is per tensor). Fused expert tensors `X` pair with `X_scale_inv`.
Dequantized: weight * weight_scale_inv of its block; rows map one to one, each with its row
block's scales.
"""

from __future__ import annotations

import numpy as np
import torch

from huref.readers.quant import QuantTensor, block_size, scale_rows, scaled


class FP8BlockTensor(QuantTensor):
    def logical_shape(self):
        return self.stored_shape("weight")

    def rows(self, index: np.ndarray) -> torch.Tensor:
        shape = self.shape
        if len(shape) < 2:
            raise self.fail(f"expected a matrix, the stored weight has shape {shape}")
        values = self.part("weight", index).to(torch.float32)
        scale_shape = self.stored_shape("scale")
        if int(np.prod(scale_shape)) == 1:  # one scale for the whole tensor
            return values * self.part("scale").to(torch.float32).reshape(())
        if len(scale_shape) != len(shape) or scale_shape[:-2] != shape[:-2]:
            raise self.fail(f"scale shape {scale_shape} does not fit weight shape {shape}")
        block = self.config.get("weight_block_size") or (None, None)
        if len(block) != 2:
            raise self.fail(f"weight_block_size {block} is not [rows, columns]")
        block_rows = block_size(self, shape[-2], scale_shape[-2], block[0], "rows")
        block_cols = block_size(self, shape[-1], scale_shape[-1], block[1], "columns")
        return scaled(values, scale_rows(self, "scale", index, shape[-2], block_rows), block_cols)


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X.weight` (or fused `X`) stored beside `X.weight_scale_inv` (or `X_scale_inv`)."""
    present = set(names)
    found = {}
    for name in names:
        if name.endswith("_scale_inv") and name[: -len("_scale_inv")] in present:
            weight = name[: -len("_scale_inv")]
            found[weight] = FP8BlockTensor(reader, weight, {"weight": weight, "scale": name}, config)
    return found

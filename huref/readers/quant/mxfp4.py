"""MXFP4 checkpoints (`quant_method: "mxfp4"`; gpt-oss expert tensors).

Stored per fused expert tensor `X`: `X_blocks` uint8 [experts, R, G, 16] (two e2m1 values per
byte, low nibble first: 32 values per group) and `X_scales` uint8 [experts, R, G] (a shared
power-of-two exponent per group of 32: value * 2^(scale - 127)). The dequantized tensor is the
[experts, R, G * 32] matrix transposed on its last two axes, [experts, G * 32, R], as transformers
loads it and as the unquantized (bf16) checkpoint stores `X` (gpt-oss: gate_up_proj
[experts, hidden, 2 * intermediate], down_proj [experts, intermediate, hidden]).
Rows of its 2-D view [experts * G * 32, R] are columns of the stored blocks: a read takes, for
each stored row of the expert, only the groups of 32 that hold the rows asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from huref.readers.quant import QuantTensor, row_runs

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


class MXFP4Tensor(QuantTensor):
    def logical_shape(self):
        blocks = self.stored_shape("blocks")
        if len(blocks) < 4 or blocks[-1] != 16 or self.stored_shape("scales") != blocks[:-1]:
            raise self.fail(f"blocks {blocks} and scales {self.stored_shape('scales')} are not "
                            "[experts, rows, groups, 16] and [experts, rows, groups]")
        return (*blocks[:-3], blocks[-2] * 32, blocks[-3])

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n_cols, n_stored = self.shape[-2], self.shape[-1]  # logical rows per expert = stored columns
        n_groups = n_cols // 32
        out = torch.empty(len(index), n_stored)
        for first, stop, at in row_runs(index):
            for expert in range(first // n_cols, (stop - 1) // n_cols + 1):
                lo, hi = max(first, expert * n_cols) - expert * n_cols, min(stop, (expert + 1) * n_cols) - expert * n_cols
                g0, g1 = lo // 32, (hi - 1) // 32 + 1
                stored_rows = expert * n_stored + np.arange(n_stored)
                block_rows = (stored_rows[:, None] * n_groups + np.arange(g0, g1)).reshape(-1)
                data = self.part("blocks", block_rows).reshape(n_stored, g1 - g0, 16)
                nibbles = torch.stack([data & 0xF, data >> 4], -1).to(torch.int64)  # low nibble first
                exponents = self.part("scales", stored_rows)[:, g0:g1].to(torch.int32) - 127
                values = torch.ldexp(E2M1[nibbles].reshape(n_stored, g1 - g0, 32), exponents[..., None].to(torch.float32))
                values = values.reshape(n_stored, -1).T  # [(g1 - g0) * 32, stored rows]
                begin = at + max(first, expert * n_cols) - first
                out[begin : begin + hi - lo] = values[lo - g0 * 32 : hi - g0 * 32]
        return out


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X_blocks` with `X_scales`, presented as `X`."""
    present = set(names)
    return {name[: -len("_blocks")]: MXFP4Tensor(reader, name[: -len("_blocks")],
                                                  {"blocks": name, "scales": name[: -len("_blocks")] + "_scales"}, None)
            for name in names if name.endswith("_blocks") and name[: -len("_blocks")] + "_scales" in present}

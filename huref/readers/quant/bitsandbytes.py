"""bitsandbytes checkpoints saved quantized (`quant_method: "bitsandbytes"`).

4-bit (nf4 / fp4): `X.weight` uint8 [out * in / 2, 1] holds the row-major [out, in] matrix two
values per byte, the first in the high nibble; each value indexes the 16-entry code
`X.weight.quant_map` and is multiplied by its block's `X.weight.absmax` (blocks of `blocksize`
consecutive values). With double quantization the absmax values are themselves 8-bit codes:
absmax = nested_quant_map[code] * nested_absmax[block // nested_blocksize] + nested_offset.
Shape, block sizes and offset come from the JSON in `X.weight.quant_state.bitsandbytes__nf4`
(or `__fp4`). Rows of W are a contiguous byte range and a range of absmax blocks.
8-bit (LLM.int8): `X.weight` int8 [out, in] and `X.SCB` [out]: W = weight * SCB / 127 by row.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from huref.errors import HurefError
from huref.readers.quant import QuantTensor, row_runs

STATE_PREFIX = ".quant_state.bitsandbytes__"


class FourBitTensor(QuantTensor):
    def state(self) -> dict:
        if not hasattr(self, "_state"):
            raw = self.part("state").reshape(-1).to(torch.uint8).numpy().tobytes()
            try:
                state = json.loads(raw.decode("utf-8"))
                state["shape"] = tuple(int(d) for d in state["shape"])
                state["blocksize"] = int(state["blocksize"])
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise self.fail(f"'{self.parts['state']}' is not a bitsandbytes quant state") from None
            self._state = state
        return self._state

    def logical_shape(self):
        return self.state()["shape"]

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n_in = self.shape[-1]
        blocksize = self.state()["blocksize"]
        code = self.part("quant_map").reshape(-1).to(torch.float32)
        if code.numel() != 16:
            raise self.fail(f"quant_map has {code.numel()} entries, expected 16")
        out = torch.empty(len(index), n_in)
        for first, stop, at in row_runs(index):
            start, end = first * n_in, stop * n_in  # value range of these rows in the flat matrix
            data = self.part("weight", slice(start // 2, -(-end // 2))).reshape(-1)
            nibbles = torch.stack([data >> 4, data & 0xF], 1).reshape(-1).to(torch.int64)  # high nibble first
            values = code[nibbles[start - start // 2 * 2:][: end - start]]
            block = torch.arange(start, end) // blocksize
            absmax = self.absmax(int(block[0]), int(block[-1]) + 1)
            out[at : at + stop - first] = (values * absmax[block - block[0]]).reshape(-1, n_in)
        return out

    def absmax(self, first: int, stop: int) -> torch.Tensor:
        """Absmax of blocks [first, stop), float32."""
        stored = self.part("absmax", slice(first, stop))
        if "nested_absmax" not in self.parts:
            return stored.to(torch.float32)
        state = self.state()
        nested = int(state.get("nested_blocksize", 256))
        code = self.part("nested_quant_map").reshape(-1).to(torch.float32)
        scales = self.part("nested_absmax").reshape(-1).to(torch.float32)
        block = torch.arange(first, stop) // nested
        return code[stored.to(torch.int64)] * scales[block] + float(state.get("nested_offset", 0.0))


class EightBitTensor(QuantTensor):
    def logical_shape(self):
        return self.stored_shape("weight")

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        scb = self.part("scb", index).reshape(-1, 1).to(torch.float32)
        return self.part("weight", index).to(torch.float32) * scb / 127.0


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each 4-bit `X.weight` with its quant state, or 8-bit `X.weight` with `X.SCB`."""
    present = set(names)
    found = {}
    for name in names:
        if STATE_PREFIX in name:
            weight = name[: name.index(STATE_PREFIX)]
            parts = {"weight": weight, "state": name}
            for piece in ("absmax", "quant_map", "nested_absmax", "nested_quant_map"):
                if f"{weight}.{piece}" in present:
                    parts[piece] = f"{weight}.{piece}"
            missing = [p for p in ("weight", "absmax", "quant_map") if parts.get(p, "") not in present]
            if missing:
                raise HurefError(f"quantized tensor '{weight}': its {missing[0]} is missing from the checkpoint")
            found[weight] = FourBitTensor(reader, weight, parts, config)
        elif name.endswith(".SCB") and name[: -len("SCB")] + "weight" in present:
            weight = name[: -len("SCB")] + "weight"
            parts = {"weight": weight, "scb": name}
            if weight + "_format" in present:
                parts["format"] = weight + "_format"
            found[weight] = EightBitTensor(reader, weight, parts, config)
    return found

"""bitsandbytes checkpoints saved quantized (`quant_method: "bitsandbytes"`).

4-bit (nf4 / fp4): `X.weight` uint8 [out * in / 2, 1] holds the row-major [out, in] matrix two
values per byte, the first in the high nibble; each value indexes the 16-entry code
`X.weight.quant_map` and is multiplied by its block's `X.weight.absmax` (blocks of `blocksize`
consecutive values). With double quantization the absmax values are themselves 8-bit codes:
absmax = nested_quant_map[code] * nested_absmax[block // nested_blocksize] + nested_offset.
Shape, block sizes and offset come from the JSON in `X.weight.quant_state.bitsandbytes__nf4`
(or `__fp4`), read typed (`QuantState`). Rows of W are a contiguous byte range and a range of
absmax blocks.
8-bit (LLM.int8): `X.weight` int8 [out, in] and `X.SCB` [out]: W = weight * SCB / 127 by row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from huref.config import MAX_SIZE, config_ints, config_value
from huref.errors import HurefError
from huref.readers.jsonfile import parse_json
from huref.readers.quant import QuantTensor, row_runs

STATE_PREFIX = ".quant_state.bitsandbytes__"
QUANT_TYPES = ("nf4", "fp4")
MAX_STATE_BYTES = 1 << 16  # a quant state is about 200 bytes of JSON


@dataclass(frozen=True)
class QuantState:
    """What a 4-bit weight's quant state JSON says, typed: the weight's [out, in] shape, values per
    absmax block, and with double quantization absmax values per nested block and their offset."""

    shape: tuple[int, int]
    blocksize: int
    nested_blocksize: int | None = None
    nested_offset: float = 0.0


class FourBitTensor(QuantTensor):
    """`settings`: the quant type its state's name gives (nf4 or fp4)."""

    def state(self) -> QuantState:
        """The quant state, read (at most MAX_STATE_BYTES) and typed once."""
        if not hasattr(self, "_state"):
            name = self.parts["state"]
            if self.stored_vector("state") > MAX_STATE_BYTES:
                raise self.fail(f"'{name}' holds more than {MAX_STATE_BYTES} bytes, too many for a quant state")
            raw = self.part("state").to(torch.uint8).numpy().tobytes()
            where = f"quantized tensor '{self.name}': quant state"
            data = parse_json(raw, where, MAX_STATE_BYTES)
            if not isinstance(data, dict):
                raise self.fail(f"'{name}' is not a bitsandbytes quant state (a JSON object)")
            size = dict(low=1, high=MAX_SIZE, where=where)
            shape = config_ints(data, "shape", length=2, **size)
            blocksize = config_value(data, "blocksize", kind=int, **size)
            if shape is None or blocksize is None:
                raise self.fail(f"'{name}' lacks the shape or blocksize of a bitsandbytes quant state")
            quant_type = config_value(data, "quant_type", default=self.settings, kind=str, where=where)
            if quant_type != self.settings:
                raise self.fail(f"'{name}' holds a {quant_type[:40]} quant state, its name says {self.settings}")
            nested = ("nested_blocksize", "nested_offset")
            if "nested_absmax" in self.parts:
                nested_blocksize = config_value(data, "nested_blocksize", kind=int, **size)
                offset = config_value(data, "nested_offset", kind=float, where=where)
                if nested_blocksize is None or offset is None:
                    raise self.fail(f"'{name}' lacks the nested_blocksize or nested_offset of double quantization")
                self._state = QuantState(shape, blocksize, nested_blocksize, offset)
            elif any(data.get(key) is not None for key in nested):
                raise self.fail(f"'{name}' describes double quantization, but the nested absmax is missing")
            else:
                self._state = QuantState(shape, blocksize)
        return self._state

    def logical_shape(self):
        state = self.state()
        n = math.prod(state.shape)
        self.check_shape("weight", (-(-n // 2), 1))  # two values per byte
        n_blocks = -(-n // state.blocksize)
        if self.stored_vector("absmax") != n_blocks:
            raise self.fail(f"absmax has {self.stored_vector('absmax')} entries, expected {n_blocks}")
        if self.stored_vector("quant_map") != 16:
            raise self.fail(f"quant_map has {self.stored_vector('quant_map')} entries, expected 16")
        if state.nested_blocksize is not None:
            n_nested = -(-n_blocks // state.nested_blocksize)
            if self.stored_vector("nested_absmax") != n_nested or self.stored_vector("nested_quant_map") != 256:
                raise self.fail(f"nested_absmax and nested_quant_map do not hold {n_nested} and 256 entries")
        return state.shape

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n_in = self.shape[-1]
        blocksize = self.state().blocksize
        code = self.part("quant_map").reshape(-1).to(torch.float32)
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
        state = self.state()
        if state.nested_blocksize is None:
            return stored.to(torch.float32)
        code = self.part("nested_quant_map").reshape(-1).to(torch.float32)
        scales = self.part("nested_absmax").reshape(-1).to(torch.float32)
        block = torch.arange(first, stop) // state.nested_blocksize
        return code[stored.to(torch.int64)] * scales[block] + state.nested_offset


class EightBitTensor(QuantTensor):
    def logical_shape(self):
        n_out, n_in = self.stored_matrix("weight")
        if self.stored_vector("scb") != n_out:
            raise self.fail(f"SCB has {self.stored_vector('scb')} entries, expected one per row ({n_out})")
        return (n_out, n_in)

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        scb = self.part("scb", index).reshape(-1, 1).to(torch.float32)
        return self.part("weight", index).to(torch.float32) * scb / 127.0


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each 4-bit `X.weight` with its quant state, or 8-bit `X.weight` with `X.SCB`."""
    present = set(names)
    found = {}
    for name in names:
        if STATE_PREFIX in name:
            weight, _, quant_type = name.partition(STATE_PREFIX)
            if quant_type not in QUANT_TYPES:
                raise HurefError(f"quantized tensor '{weight}': bitsandbytes quant type '{quant_type[:40]}' is not "
                                 f"supported (supported: {', '.join(QUANT_TYPES)})")
            parts = {"weight": weight, "state": name}
            for piece in ("absmax", "quant_map", "nested_absmax", "nested_quant_map"):
                if f"{weight}.{piece}" in present:
                    parts[piece] = f"{weight}.{piece}"
            missing = [p for p in ("weight", "absmax", "quant_map") if parts.get(p, "") not in present]
            if "nested_absmax" in parts and "nested_quant_map" not in parts:
                missing.append("nested_quant_map")
            if missing:
                raise HurefError(f"quantized tensor '{weight}': its {missing[0]} is missing from the checkpoint")
            found[weight] = FourBitTensor(reader, weight, parts, quant_type)
        elif name.endswith(".SCB") and name[: -len("SCB")] + "weight" in present:
            weight = name[: -len("SCB")] + "weight"
            parts = {"weight": weight, "scb": name}
            if weight + "_format" in present:
                parts["format"] = weight + "_format"
            found[weight] = EightBitTensor(reader, weight, parts, None)
    return found

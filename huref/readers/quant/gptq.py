"""GPTQ checkpoints (`quant_method: "gptq"`; AutoGPTQ / GPTQModel / optimum).

Stored per linear layer `X`: `X.qweight` int32 [in * bits / 32, out] (unsigned `bits`-bit values
packed densely along the input, low bits first), `X.qzeros` int32 [n_groups, out * bits / 32]
(packed the same way along the output), `X.scales` [n_groups, out] and `X.g_idx` int32 [in]
(each input's group; with act-order / desc_act not sorted; absent: input // group_size), with
n_groups = ceil(in / group_size) (one group when group_size is -1).
Dequantized [out, in]: W[o, i] = scales[g, o] * (q[i, o] - z[g, o]) with g = g_idx[i], where
z is the stored zero plus one (modulo 2^bits) in the original format (`checkpoint_format` "gptq") and the stored
zero in "gptq_v2". Rows of W are columns of the stored tensors: reading some rows reads only the
columns of qweight and scales that hold them (and the small qzeros whole).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from huref.config import config_value
from huref.errors import HurefError
from huref.readers.quant import WHERE, QuantTensor, group_size, groups_over, scaled, unpack_dense

FORMATS = ("gptq", "gptq_v2")  # checkpoint_format values whose packing this reader knows


@dataclass(frozen=True)
class GPTQSettings:
    """quantization_config of a GPTQ checkpoint, typed: bits per value, group size (-1: one group),
    and whether zeros are stored as they are (gptq_v2) or minus one."""

    bits: int
    group_size: int
    v2: bool


def settings(config: dict) -> GPTQSettings:
    """Read GPTQ's quantization_config fields (bits is required, as in transformers' GPTQConfig)."""
    bits = config_value(config, "bits", kind=int, low=2, high=8, where=WHERE)
    if bits is None:
        raise HurefError(f"{WHERE}: a GPTQ config needs bits (an integer from 2 to 8)")
    checkpoint_format = config_value(config, "checkpoint_format", default="gptq", kind=str, where=WHERE).lower()
    if checkpoint_format not in FORMATS:
        raise HurefError(f"{WHERE}: GPTQ checkpoint_format '{checkpoint_format[:40]}' is not supported "
                         f"(supported: {', '.join(FORMATS)})")
    return GPTQSettings(bits, group_size(config, "group_size", default=-1), checkpoint_format == "gptq_v2")


class GPTQTensor(QuantTensor):
    def logical_shape(self):
        bits = self.settings.bits
        packed_in, n_out = self.stored_matrix("qweight")
        if packed_in * 32 % bits:
            raise self.fail(f"{packed_in} packed rows of qweight do not hold a whole number of {bits}-bit inputs")
        n_in = packed_in * 32 // bits
        n_groups = groups_over(n_in, self.settings.group_size)
        self.check_shape("scales", (n_groups, n_out))
        self.check_shape("qzeros", (n_groups, math.ceil(n_out * bits / 32)))
        if "g_idx" in self.parts:
            self.check_shape("g_idx", (n_in,))
        return (n_out, n_in)

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        bits, (n_out, n_in) = self.settings.bits, self.shape
        if not len(index):
            return torch.zeros(0, n_in)
        first, stop = int(index.min()), int(index.max()) + 1
        local = torch.from_numpy(index - first)
        qweight = self.columns("qweight", first, stop)  # [in * bits / 32, stop - first]
        values = unpack_dense(qweight.T.contiguous(), bits, n_in)[local]  # [len(index), in]
        scales = self.columns("scales", first, stop).to(torch.float32).T[local]  # [len(index), n_groups]
        n_groups = scales.shape[1]
        zeros = unpack_dense(self.part("qzeros"), bits, n_out).T[torch.from_numpy(index)]  # [len(index), n_groups]
        if not self.settings.v2:
            zeros = (zeros + 1) & ((1 << bits) - 1)  # stored as zero - 1, wrapping as AutoGPTQ unpacks it
        return scaled(values, scales, self._groups(n_in, n_groups), zeros, dtype)

    def _groups(self, n_in: int, n_groups: int) -> torch.Tensor:
        """Group index of each input column: g_idx when stored, else consecutive groups."""
        if "g_idx" in self.parts:
            group = self.part("g_idx").reshape(-1).to(torch.int64)
        else:
            size = self.settings.group_size
            group = torch.arange(n_in) // (n_in if size == -1 else size)
        if group.numel() != n_in or group.min() < 0 or group.max() >= n_groups:
            raise self.fail("g_idx or group_size does not map every input column to a stored group")
        return group


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X.qweight` with `X.qzeros` and `X.scales`, presented as `X.weight`."""
    typed = settings(config)
    return packed_linears(names, ("g_idx",), lambda name, parts: GPTQTensor(reader, name, parts, typed))


def packed_linears(names: list[str], optional: tuple[str, ...], make) -> dict[str, QuantTensor]:
    """`make(X.weight, parts)` for each `X.qweight` stored with `X.qzeros` and `X.scales` (GPTQ
    and AWQ share these names), its `optional` pieces added where present."""
    present = set(names)
    found = {}
    for name in names:
        if not name.endswith(".qweight"):
            continue
        stem = name[: -len("qweight")]
        missing = [stem + p for p in ("qzeros", "scales") if stem + p not in present]
        if missing:
            raise HurefError(f"quantized tensor '{stem}weight': '{missing[0]}' is missing from the checkpoint")
        parts = {"qweight": name, "qzeros": stem + "qzeros", "scales": stem + "scales"}
        parts.update({p: stem + p for p in optional if stem + p in present})
        found[stem + "weight"] = make(stem + "weight", parts)
    return found

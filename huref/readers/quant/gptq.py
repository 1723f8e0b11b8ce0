"""GPTQ checkpoints (`quant_method: "gptq"`; AutoGPTQ / GPTQModel / optimum).

Stored per linear layer `X`: `X.qweight` int32 [in * bits / 32, out] (unsigned `bits`-bit values
packed densely along the input, low bits first), `X.qzeros` int32 [n_groups, out * bits / 32]
(packed the same way along the output), `X.scales` [n_groups, out] and `X.g_idx` int32 [in]
(each input's group; with act-order / desc_act not sorted; absent: input // group_size).
Dequantized [out, in]: W[o, i] = scales[g, o] * (q[i, o] - z[g, o]) with g = g_idx[i], where
z is the stored zero plus one (modulo 2^bits) in the original format (`checkpoint_format` "gptq") and the stored
zero in "gptq_v2". Rows of W are columns of the stored tensors: reading some rows reads only the
columns of qweight and scales that hold them (and the small qzeros whole).
"""

from __future__ import annotations

import numpy as np
import torch

from huref.errors import HurefError
from huref.readers.quant import QuantTensor, scaled, unpack_dense


class GPTQTensor(QuantTensor):
    def logical_shape(self):
        bits, (packed_in, n_out) = self.bits(), self.stored_shape("qweight")
        return (n_out, packed_in * 32 // bits)

    def bits(self) -> int:
        bits = int(self.config.get("bits", 4))
        if not 2 <= bits <= 8:
            raise self.fail(f"{bits}-bit GPTQ weights are not supported")
        return bits

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        bits, (n_out, n_in) = self.bits(), self.shape
        if not len(index):
            return torch.zeros(0, n_in)
        first, stop = int(index.min()), int(index.max()) + 1
        local = torch.from_numpy(index - first)
        qweight = self.columns("qweight", first, stop)  # [in * bits / 32, stop - first]
        values = unpack_dense(qweight.T.contiguous(), bits, n_in)[local]  # [len(index), in]
        scales = self.columns("scales", first, stop).to(torch.float32).T[local]  # [len(index), n_groups]
        n_groups = scales.shape[1]
        zeros = unpack_dense(self.part("qzeros"), bits, n_out).T[torch.from_numpy(index)]  # [len(index), n_groups]
        if str(self.config.get("checkpoint_format", "gptq")).lower() != "gptq_v2":
            zeros = (zeros + 1) & ((1 << bits) - 1)  # stored as zero - 1, wrapping as AutoGPTQ unpacks it
        return scaled(values, scales, self._groups(n_in, n_groups), zeros, dtype)

    def _groups(self, n_in: int, n_groups: int) -> torch.Tensor:
        """Group index of each input column: g_idx when stored, else consecutive groups."""
        if "g_idx" in self.parts:
            group = self.part("g_idx").reshape(-1).to(torch.int64)
        else:
            size = int(self.config.get("group_size", -1))
            group = torch.arange(n_in) // (n_in if size <= 0 else size)
        if group.numel() != n_in or group.min() < 0 or group.max() >= n_groups:
            raise self.fail("g_idx or group_size does not map every input column to a stored group")
        return group


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X.qweight` with `X.qzeros` and `X.scales`, presented as `X.weight`."""
    return _packed_linears(reader, names, config, GPTQTensor, ("g_idx",))


def _packed_linears(reader, names, config, make, optional: tuple[str, ...]):
    """`make(reader, X.weight, parts, config)` for each `X.qweight` stored with `X.qzeros` and
    `X.scales` (GPTQ and AWQ share these names)."""
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
        found[stem + "weight"] = make(reader, stem + "weight", parts, config)
    return found

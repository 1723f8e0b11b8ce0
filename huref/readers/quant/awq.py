"""AWQ checkpoints (`quant_method: "awq"`, GEMM packing; AutoAWQ / llm-awq).

Stored per linear layer `X`: `X.qweight` int32 [in, out / 8] (eight 4-bit values per word along
the output, in the interleaved order 0, 2, 4, 6, 1, 3, 5, 7: field k of word w holds output
8w + ORDER[k]), `X.qzeros` int32 [n_groups, out / 8] packed the same way, and `X.scales`
[n_groups, out], with n_groups = ceil(in / group_size) (one group when group_size is -1).
Dequantized [out, in]: W[o, i] = scales[g, o] * (q[i, o] - z[g, o]) with g = i // group_size.
Rows of W are columns of the stored tensors: reading some rows reads only the packed columns
that hold them.
"""

from __future__ import annotations

import numpy as np
import torch

from huref.config import config_value
from huref.errors import HurefError
from huref.readers.quant import WHERE, QuantTensor, group_size, groups_over, scaled, unpack_dense
from huref.readers.quant.gptq import packed_linears

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # field k of a word holds output 8w + ORDER[k]
FIELD_OF = torch.tensor([ORDER.index(m) for m in range(8)])  # output 8w + m sits in field FIELD_OF[m]


class AWQTensor(QuantTensor):
    """`settings`: the group size (-1: one group)."""

    def logical_shape(self):
        n_in, words = self.stored_matrix("qweight")
        n_groups = groups_over(n_in, self.settings)
        self.check_shape("qzeros", (n_groups, words))
        self.check_shape("scales", (n_groups, words * 8))
        return (words * 8, n_in)

    def rows(self, index: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n_out, n_in = self.shape
        if not len(index):
            return torch.zeros(0, n_in)
        word_first, word_stop = int(index.min()) // 8, int(index.max()) // 8 + 1
        wanted = torch.from_numpy(index)
        fields = (wanted // 8 - word_first) * 8 + FIELD_OF[wanted % 8]  # position of each output among the unpacked fields

        def unpacked(part: str) -> torch.Tensor:
            words = self.columns(part, word_first, word_stop)  # [n, word_stop - word_first]
            return unpack_dense(words, 4, words.shape[1] * 8)[:, fields].T  # [len(index), n]

        values, zeros = unpacked("qweight"), unpacked("qzeros")
        scales = self.columns("scales", int(index.min()), int(index.max()) + 1).to(torch.float32)
        scales = scales.T[wanted - int(index.min())]  # [len(index), n_groups]
        return scaled(values, scales, n_in if self.settings == -1 else self.settings, zeros, dtype)


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X.qweight` with `X.qzeros` and `X.scales`, presented as `X.weight` (4-bit GEMM only)."""
    bits = config_value(config, "bits", "w_bit", default=4, kind=int, low=1, high=32, where=WHERE)
    version = config_value(config, "version", default="gemm", kind=str, where=WHERE).lower()
    if bits != 4 or version != "gemm":
        raise HurefError(f"{WHERE}: AWQ {bits}-bit '{version[:40]}' packing is not supported (4-bit GEMM only)")
    size = group_size(config, "group_size", "q_group_size", default=128)
    return packed_linears(names, (), lambda name, parts: AWQTensor(reader, name, parts, size))

"""AWQ checkpoints (`quant_method: "awq"`, GEMM packing; AutoAWQ / llm-awq).

Stored per linear layer `X`: `X.qweight` int32 [in, out / 8] (eight 4-bit values per word along
the output, in the interleaved order 0, 2, 4, 6, 1, 3, 5, 7: field k of word w holds output
8w + ORDER[k]), `X.qzeros` int32 [in / group_size, out / 8] packed the same way, and `X.scales`
[in / group_size, out]. Dequantized [out, in]: W[o, i] = scales[g, o] * (q[i, o] - z[g, o]) with
g = i // group_size. Rows of W are columns of the stored tensors: reading some rows reads only
the packed columns that hold them.
"""

from __future__ import annotations

import numpy as np
import torch

from huref.errors import HurefError
from huref.readers.quant import QuantTensor, scaled, unpack_dense
from huref.readers.quant.gptq import _packed_linears

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # field k of a word holds output 8w + ORDER[k]
FIELD_OF = torch.tensor([ORDER.index(m) for m in range(8)])  # output 8w + m sits in field FIELD_OF[m]


class AWQTensor(QuantTensor):
    def logical_shape(self):
        n_in, words = self.stored_shape("qweight")
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
        group = self.config.get("group_size", self.config.get("q_group_size", 128))
        group = n_in if int(group) <= 0 else int(group)
        if -(-n_in // group) != scales.shape[1] or zeros.shape[1] != scales.shape[1]:
            raise self.fail(f"scales and qzeros do not hold one row per group of {group} of {n_in} inputs")
        return scaled(values, scales, group, zeros, dtype)


def find(reader, names: list[str], config: dict) -> dict[str, QuantTensor]:
    """Each `X.qweight` with `X.qzeros` and `X.scales`, presented as `X.weight` (4-bit GEMM only)."""
    bits = int(config.get("bits", config.get("w_bit", 4)))
    version = str(config.get("version", "gemm")).lower()
    if bits != 4 or version != "gemm":
        raise HurefError(f"config.json: AWQ {bits}-bit '{version}' packing is not supported (4-bit GEMM only)")
    return _packed_linears(reader, names, config, AWQTensor, ())

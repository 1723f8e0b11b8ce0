"""GGML quant blocks decoded straight into the dtype the arithmetic wants.

llama.cpp stores a GGUF matrix row as whole blocks of a fixed size; `dequantize(raw, qtype, dtype)`
turns rows of such blocks into [rows, columns] values. The block layouts (llama.cpp's ggml-quants,
as gguf-py's `gguf.quants` restates them):

- Q8_0: 32 values per 34 bytes: a float16 scale d, then 32 int8 q; value = d·q.
- Q4_K: 256 values per 144 bytes: float16 d and dmin, 12 bytes packing eight 6-bit scales sc and
  eight 6-bit mins m (one per 32 values), 128 bytes of 4-bit q (chunk c of 32 bytes: low nibbles
  are sub-block 2c, high nibbles sub-block 2c+1); value = (d·sc)·q − (dmin·m).
- Q6_K: 256 values per 210 bytes: 128 bytes of low 4 bits, 64 bytes of high 2 bits, sixteen int8
  scales (one per 16 values), float16 d; value = (d·scale)·(q − 32), q the 6-bit code.
- F32, F16, BF16: plain values.

Why not `gguf.quants.dequantize`: it runs in numpy on one core at 30-90 M values/s here (a 7B Q4_K_M
file's layers would take minutes) and gives float32 only. These decoders do the same arithmetic in
the same order (float32 results are bit-identical to gguf-py's, tests/test_gguf.py checks every
type on random blocks), in torch (both cores; each field is copied out contiguous first, as torch's
mixed-dtype arithmetic on strided views is ~100x slower), on cache-sized chunks of blocks, and
round once into bfloat16 when that is what the products take. Other types fall back to gguf-py.
They run on one intra-op thread: a chunk is a chain of small elementwise ops, and torch forks and
joins its threads for each one, so when the cores are shared (the SHA-256 thread, other jobs) every
join waits for a descheduled thread. Measured at load 14 on 2 cores, one Q4_K [11008, 4096] matrix:
2.2 s on one thread, 21.5 s on two (8.9 s on two with 16x larger chunks).
"""

from __future__ import annotations

import numpy as np
import torch

from huref.threads import one_thread

CHUNK_BLOCKS = 2048  # blocks decoded at a time: a float32 chunk of Q4_K values is 2 MB, about the L2 cache


def _half(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The float16 stored at byte `at` of each block, as float32 [n, 1]."""
    return blocks[:, at : at + 2].contiguous().view(torch.float16).to(torch.float32)


def _q8_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    d = _half(blocks, 0)                                        # [n, 1]
    torch.mul(blocks[:, 2:].contiguous().view(torch.int8), d, out=out)  # [n, 32]


def _q4_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    n = blocks.shape[0]
    d, dmin = _half(blocks, 0), _half(blocks, 2)
    packed = blocks[:, 4:16].contiguous().reshape(n, 3, 4)      # [n, 3, 4]: scales low, mins low, high bits
    low_sc, low_m, high = packed[:, 0], packed[:, 1], packed[:, 2]
    sc = torch.cat([low_sc & 63, (high & 15) | ((low_sc >> 2) & 48)], 1).to(torch.float32)  # [n, 8]
    m = torch.cat([low_m & 63, (high >> 4) | ((low_m >> 2) & 48)], 1).to(torch.float32)     # [n, 8]
    scale, shift = (d * sc)[:, :, None], (dmin * m)[:, :, None]  # [n, 8, 1]
    qs = blocks[:, 16:].contiguous().reshape(n, 4, 32)          # [n, chunk, 32]
    q = torch.empty(n, 4, 2, 32, dtype=torch.uint8)             # [n, chunk, low/high nibble, 32]
    torch.bitwise_and(qs, 15, out=q[:, :, 0])
    torch.bitwise_right_shift(qs, 4, out=q[:, :, 1])
    torch.sub(torch.mul(q.view(n, 8, 32), scale), shift, out=out.view(n, 8, 32))


def _q6_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    n = blocks.shape[0]
    ql = blocks[:, :128].contiguous().reshape(n, 2, 2, 32)      # [n, half, j, 32]
    qh = blocks[:, 128:192].contiguous().reshape(n, 2, 32)      # [n, half, 32]
    scale = (_half(blocks, 208) * blocks[:, 192:208].contiguous().view(torch.int8).to(torch.float32))[:, :, None]  # [n, 16, 1]
    q = torch.empty(n, 2, 2, 2, 32, dtype=torch.uint8)          # [n, half, low/high nibble, j, 32]
    torch.bitwise_and(ql, 15, out=q[:, :, 0])
    torch.bitwise_right_shift(ql, 4, out=q[:, :, 1])
    high = torch.empty(n, 2, 4, 32, dtype=torch.uint8)          # [n, half, k = 2 * nibble + j, 32]
    for k in range(4):
        torch.bitwise_right_shift(qh, 2 * k, out=high[:, :, k])
    high.bitwise_and_(3).bitwise_left_shift_(4)
    q.view(n, 2, 4, 32).bitwise_or_(high)
    codes = q.view(torch.int8).sub_(32)                         # the 6-bit codes, centred
    torch.mul(codes.view(n, 16, 16), scale, out=out.view(n, 16, 16))


# GGML type name -> (values per block, bytes per block, decoder writing [n, values] into out)
DECODERS = {
    "Q8_0": (32, 34, _q8_0),
    "Q4_K": (256, 144, _q4_k),
    "Q6_K": (256, 210, _q6_k),
}
PLAIN = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def dequantize(raw: np.ndarray, qtype, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows of GGML blocks, raw uint8 [rows, row_bytes], decoded into `dtype` [rows, columns]
    (float32 or bfloat16; a plain float type comes back as stored, for the reader to convert).
    Raises NotImplementedError for a type gguf-py cannot decode either."""
    rows = raw.shape[0]
    if qtype.name in PLAIN:
        return torch.from_numpy(raw).view(PLAIN[qtype.name]).reshape(rows, -1)
    if qtype.name not in DECODERS:
        from gguf.quants import dequantize as reference

        return torch.from_numpy(np.asarray(reference(raw, qtype), dtype=np.float32)).reshape(rows, -1).to(dtype)
    size, nbytes, decode = DECODERS[qtype.name]
    blocks = torch.from_numpy(raw).reshape(-1, nbytes)          # [rows * blocks per row, nbytes]
    out = torch.empty(blocks.shape[0], size, dtype=dtype)       # [rows * blocks per row, size]
    with one_thread():
        for start in range(0, blocks.shape[0], CHUNK_BLOCKS):
            decode(blocks[start : start + CHUNK_BLOCKS], out[start : start + CHUNK_BLOCKS])
    return out.reshape(rows, -1)

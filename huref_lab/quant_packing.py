"""Writers of quantized checkpoints for the tests, from each format's public definition (see
huref/readers/quant/*): float32 weights in, the tensors the format stores out. Used only to
write test files; the FP8 writer is transformers' own quantizer.

Each `pack_*` takes a float32 weight in HF orientation [out, in] (or fused experts) and returns
{suffix: tensor} for the stored pieces that replace it, keyed relative to the layer's prefix
(`X.` of `X.weight`); `quantization_config` of each scheme is in CONFIGS.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch

NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])  # QLoRA's NF4 code
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # a llama layer's linears
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def pack_dense(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned `bits`-bit values [n, count] packed densely, low bits first, into int32 words
    [n, ceil(count * bits / 32)] (element i at bits [i*bits, (i+1)*bits) of the row's stream)."""
    n, count = values.shape
    n_words = math.ceil(count * bits / 32)
    words = torch.zeros(n, n_words + 1, dtype=torch.int64)
    start = torch.arange(count) * bits
    word, offset = start // 32, start % 32
    shifted = values.to(torch.int64) << offset  # up to 40 bits: the part past 32 goes to the next word
    words.index_add_(1, word, shifted & 0xFFFFFFFF)
    words.index_add_(1, word + 1, shifted >> 32)
    words = words[:, :n_words]
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _groupwise_int(weight: torch.Tensor, bits: int, group: int, symmetric: bool, groups: torch.Tensor | None = None):
    """Integer quantization of [out, in] per (row, group of inputs): (q unsigned [out, in],
    scales [out, n_groups], zeros unsigned [out, n_groups]); W ~ (q - zero) * scale."""
    out_dim, in_dim = weight.shape
    groups = torch.arange(in_dim) // group if groups is None else groups
    n_groups = int(groups.max()) + 1
    top = 2**bits - 1
    low = torch.stack([weight[:, groups == g].amin(1) for g in range(n_groups)], 1).clamp(max=0)
    high = torch.stack([weight[:, groups == g].amax(1) for g in range(n_groups)], 1).clamp(min=0)
    if symmetric:
        scales = torch.maximum(high, -low) * 2 / top
        zeros = torch.full_like(scales, 2 ** (bits - 1))
    else:
        scales = (high - low) / top
        zeros = torch.round(-low / scales).clamp(1, top)  # >= 1: GPTQ's v1 format stores zero - 1
    scales = scales.clamp(min=1e-8)
    q = torch.round(weight / scales[:, groups] + zeros[:, groups]).clamp(0, top)
    return q.to(torch.int64), scales, zeros.to(torch.int64)


def pack_fp8_block(weight: torch.Tensor, block=(128, 128)) -> dict:
    """transformers' FP8 quantizer: {'weight': e4m3 [out, in], 'weight_scale_inv': f32 [out/bm, in/bn]}."""
    from transformers.integrations.finegrained_fp8 import Fp8Quantize

    quantizer = Fp8Quantize(SimpleNamespace(quantization_config=SimpleNamespace(weight_block_size=list(block), scale_fmt=None)))
    packed = quantizer.convert({"weight": weight})
    return {"weight": packed["weight"], "weight_scale_inv": packed["weight_scale_inv"]}


def pack_ct_int(weight: torch.Tensor, bits: int, group: int, symmetric: bool = True) -> dict:
    """compressed-tensors pack-quantized: signed q (offset by 2^(bits-1) when packed) along the
    input; asymmetric zero points (signed, offset the same way) packed along the output."""
    q, scales, zeros = _groupwise_int(weight, bits, group, symmetric)  # q, zeros unsigned = signed + offset
    out = {"weight_packed": pack_dense(q, bits), "weight_scale": scales,
           "weight_shape": torch.tensor(list(weight.shape), dtype=torch.int64)}
    if not symmetric:
        out["weight_zero_point"] = pack_dense(zeros.T.contiguous(), bits).T.contiguous()
    return out


def pack_ct_fp8(weight: torch.Tensor) -> dict:
    """compressed-tensors float-quantized, one scale per output channel."""
    scale = weight.abs().amax(1, keepdim=True).clamp(min=1e-8) / 448.0
    return {"weight": (weight / scale).to(torch.float8_e4m3fn), "weight_scale": scale}


def pack_ct_int8(weight: torch.Tensor) -> dict:
    """compressed-tensors int-quantized, symmetric, one scale per output channel."""
    scale = weight.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127.0
    return {"weight": torch.round(weight / scale).clamp(-128, 127).to(torch.int8), "weight_scale": scale}


def pack_gptq(weight: torch.Tensor, bits: int, group: int, act_order: bool, symmetric: bool = True, seed: int = 0) -> dict:
    """GPTQ (v1 format): qweight [in*bits/32, out], qzeros (zero - 1) [G, out*bits/32], scales
    [G, out], g_idx [in]; with act_order the inputs are grouped in a shuffled order."""
    in_dim = weight.shape[1]
    if act_order:
        order = torch.randperm(in_dim, generator=torch.Generator().manual_seed(seed))
        groups = torch.empty(in_dim, dtype=torch.int64)
        groups[order] = torch.arange(in_dim) // group
    else:
        groups = torch.arange(in_dim) // group
    q, scales, zeros = _groupwise_int(weight, bits, group, symmetric, groups)
    return {"qweight": pack_dense(q, bits).T.contiguous(),  # q [out, in] packed along in, stored [in*bits/32, out]
            "qzeros": pack_dense((zeros - 1).T.contiguous(), bits),
            "scales": scales.T.contiguous().half(), "g_idx": groups.to(torch.int32)}


AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _awq_words(values: torch.Tensor) -> torch.Tensor:
    """[n, out] 4-bit values -> int32 [n, out/8], field k of word w holding column 8w + AWQ_ORDER[k]."""
    interleaved = values.reshape(values.shape[0], -1, 8)[:, :, list(AWQ_ORDER)].reshape(values.shape[0], -1)
    return pack_dense(interleaved, 4)


def pack_awq(weight: torch.Tensor, group: int) -> dict:
    """AWQ GEMM: qweight [in, out/8], qzeros [in/group, out/8], scales [in/group, out] (fp16)."""
    q, scales, zeros = _groupwise_int(weight, 4, group, symmetric=False)
    scales16 = scales.half()
    groups = torch.arange(weight.shape[1]) // group
    q = torch.round(weight / scales16.float()[:, groups] + zeros[:, groups]).clamp(0, 15).to(torch.int64)
    return {"qweight": _awq_words(q.T.contiguous()), "qzeros": _awq_words(zeros.T.contiguous()),
            "scales": scales16.T.contiguous()}


def pack_bnb4(weight: torch.Tensor, blocksize: int = 64, nested: bool = True) -> dict:
    """bitsandbytes nf4 (as `Params4bit` saves it): packed bytes [n/2, 1], absmax, quant_map, and
    with `nested` the absmax as 8-bit codes of a 256-entry map with per-256-block scales."""
    flat = weight.reshape(-1)
    absmax = flat.reshape(-1, blocksize).abs().amax(1).clamp(min=1e-8)
    normed = flat.reshape(-1, blocksize) / absmax[:, None]
    codes = (normed.reshape(-1, 1) - NF4).abs().argmin(1)
    packed = (codes[0::2] << 4 | codes[1::2]).to(torch.uint8).reshape(-1, 1)
    state = {"quant_type": "nf4", "blocksize": blocksize, "dtype": "float32", "shape": list(weight.shape)}
    out = {"weight": packed, "weight.quant_map": NF4.clone()}
    if nested:
        offset = float(absmax.mean())
        centred = absmax - offset
        nested_map = torch.linspace(-1, 1, 256)
        n_blocks = math.ceil(centred.numel() / 256)
        padded = torch.nn.functional.pad(centred, (0, n_blocks * 256 - centred.numel()))
        nested_absmax = padded.reshape(n_blocks, 256).abs().amax(1).clamp(min=1e-8)
        scaled = centred / nested_absmax.repeat_interleave(256)[: centred.numel()]
        out["weight.absmax"] = (scaled.reshape(-1, 1) - nested_map).abs().argmin(1).to(torch.uint8)
        out.update({"weight.nested_absmax": nested_absmax, "weight.nested_quant_map": nested_map})
        state.update(nested_blocksize=256, nested_dtype="float32", nested_offset=offset)
    else:
        out["weight.absmax"] = absmax
    out["weight.quant_state.bitsandbytes__nf4"] = torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)
    return out


def pack_bnb8(weight: torch.Tensor) -> dict:
    """bitsandbytes LLM.int8: weight int8 [out, in] and SCB [out] (row absmax)."""
    scb = weight.abs().amax(1).clamp(min=1e-8)
    return {"weight": torch.round(weight * 127 / scb[:, None]).clamp(-127, 127).to(torch.int8), "SCB": scb}


def pack_mxfp4(logical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MXFP4 of a fused expert tensor stored transposed: logical [experts, C, R] -> (blocks uint8
    [experts, R, C/32, 16], scales uint8 [experts, R, C/32])."""
    stored = logical.transpose(1, 2).contiguous()  # [experts, R, C]
    groups = stored.reshape(*stored.shape[:-1], -1, 32)
    amax = groups.abs().amax(-1).clamp(min=2.0**-120)
    exponent = torch.floor(torch.log2(amax)) - 2  # the largest e2m1 value is 6 = 1.5 * 2^2
    normed = groups / torch.exp2(exponent)[..., None]
    codes = (normed.unsqueeze(-1) - E2M1).abs().argmin(-1)  # [experts, R, G, 32]
    blocks = (codes[..., 0::2] | codes[..., 1::2] << 4).to(torch.uint8)
    return blocks, (exponent + 127).to(torch.uint8)


def fp8_config(block=(128, 128)) -> dict:
    return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": list(block)}


def ct_config(fmt: str, bits: int, group: int | None, symmetric: bool = True, type_: str = "int") -> dict:
    strategy = "group" if group else "channel"
    return {"quant_method": "compressed-tensors", "format": fmt, "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                "num_bits": bits, "type": type_, "symmetric": symmetric, "strategy": strategy, "group_size": group}}}}


def gptq_config(bits: int, group: int, act_order: bool) -> dict:
    return {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": act_order, "sym": True,
            "checkpoint_format": "gptq"}


def awq_config(group: int) -> dict:
    return {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}


def bnb_config(bits: int) -> dict:
    if bits == 8:
        return {"quant_method": "bitsandbytes", "load_in_8bit": True}
    return {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True}


def quantized_copy(source: Path, target: Path, pack, config: dict) -> Path:
    """A copy of the checkpoint directory `source` at `target` with every layer's linear weight (a
    `LINEAR` name) replaced by the pieces `pack(weight)` returns, and `config` as its quantization_config."""
    from safetensors.torch import load_file, save_file

    target.mkdir()
    tensors = {}
    for name, tensor in load_file(str(source / "model.safetensors")).items():
        stem, _, last = name.rpartition(".")
        if last == "weight" and stem.rsplit(".", 1)[-1] in LINEAR:
            tensors.update({f"{stem}.{k}": v.contiguous() for k, v in pack(tensor).items()})
        else:
            tensors[name] = tensor
    save_file(tensors, str(target / "model.safetensors"))
    model_config = json.loads((source / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**model_config, "quantization_config": config}))
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / file, target / file)
    return target

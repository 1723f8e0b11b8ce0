"""Quantized checkpoints (huref/readers/quant): dequantization checked against transformers' own code
(FP8, MXFP4), the formats' packages where installed (compressed-tensors, AutoGPTQ, AutoAWQ,
bitsandbytes), and otherwise round trip against the values before packing (tests/quant_packing.py);
and a quantized tiny llama compared with its original by ICS."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from huref_lab import quant_packing as qp
from huref.errors import HurefError
from huref.readers.quant import dequantizing
from huref.readers.safetensors import SafetensorsReader
from huref_lab.tiny_models import make_config, save_checkpoint, token_strings

OUT, IN, GROUP = 256, 384, 128


@pytest.fixture(scope="module")
def weight():
    return torch.randn(OUT, IN, generator=torch.Generator().manual_seed(0)) * 0.05


def open_quantized(tmp_path, parts: dict, config: dict, stem: str = "l."):
    path = tmp_path / "m.safetensors"
    save_file({stem + k: v.contiguous() for k, v in parts.items()}, str(path))
    return dequantizing(SafetensorsReader(str(path)), {"quantization_config": config})


def groupwise(weight, bits, symmetric, groups=None):
    """The float weight the integer schemes store, from the values before packing: [out, in]."""
    q, scales, zeros = qp._groupwise_int(weight, bits, GROUP, symmetric, groups)
    groups = torch.arange(IN) // GROUP if groups is None else groups
    return (q - zeros[:, groups]) * scales[:, groups]


def fp8_reference(parts):
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize

    return Fp8Dequantize(None)._dequantize_one(parts["weight"], parts["weight_scale_inv"], torch.float32)


def gptq_case(weight, act_order):
    parts = qp.pack_gptq(weight, 4, GROUP, act_order)
    q, _, zeros = qp._groupwise_int(weight, 4, GROUP, True, parts["g_idx"].long())
    groups = parts["g_idx"].long()
    return parts, (q - zeros[:, groups]) * parts["scales"].float().T[:, groups]


def awq_case(weight):
    parts = qp.pack_awq(weight, GROUP)
    q, _, zeros = qp._groupwise_int(weight, 4, GROUP, False)
    groups = torch.arange(IN) // GROUP
    q = torch.round(weight / parts["scales"].float().T[:, groups] + zeros[:, groups]).clamp(0, 15)
    return parts, (q - zeros[:, groups]) * parts["scales"].float().T[:, groups]


def bnb4_case(weight, nested):
    parts = qp.pack_bnb4(weight, nested=nested)
    blocks = parts["weight"].reshape(-1)
    codes = torch.stack([blocks >> 4, blocks & 0xF], 1).reshape(-1).long()
    if nested:
        state = json.loads(bytes(parts["weight.quant_state.bitsandbytes__nf4"].tolist()))
        absmax = (parts["weight.nested_quant_map"][parts["weight.absmax"].long()]
                  * parts["weight.nested_absmax"].repeat_interleave(256)[: parts["weight.absmax"].numel()]
                  + state["nested_offset"])
    else:
        absmax = parts["weight.absmax"]
    return parts, (qp.NF4[codes] * absmax.repeat_interleave(64)).reshape(OUT, IN)


# scheme -> (parts, expected float weight [out, in], quantization_config); FP8 against transformers
CASES = {
    "fp8-block": lambda w: (qp.pack_fp8_block(w), None, qp.fp8_config()),
    "ct-int4-sym": lambda w: (qp.pack_ct_int(w, 4, GROUP), groupwise(w, 4, True), qp.ct_config("pack-quantized", 4, GROUP)),
    "ct-int4-asym": lambda w: (qp.pack_ct_int(w, 4, GROUP, False), groupwise(w, 4, False),
                               qp.ct_config("pack-quantized", 4, GROUP, False)),
    "ct-int8-packed": lambda w: (qp.pack_ct_int(w, 8, GROUP), groupwise(w, 8, True), qp.ct_config("pack-quantized", 8, GROUP)),
    "ct-int8": lambda w: (p := qp.pack_ct_int8(w), p["weight"].float() * p["weight_scale"], qp.ct_config("int-quantized", 8, None)),
    "ct-fp8": lambda w: (p := qp.pack_ct_fp8(w), p["weight"].float() * p["weight_scale"],
                         qp.ct_config("float-quantized", 8, None, type_="float")),
    "gptq-4": lambda w: (*gptq_case(w, False), qp.gptq_config(4, GROUP, False)),
    "gptq-4-act-order": lambda w: (*gptq_case(w, True), qp.gptq_config(4, GROUP, True)),
    "awq-4": lambda w: (*awq_case(w), qp.awq_config(GROUP)),
    "bnb-nf4": lambda w: (*bnb4_case(w, False), qp.bnb_config(4)),
    "bnb-nf4-double": lambda w: (*bnb4_case(w, True), qp.bnb_config(4)),
    "bnb-int8": lambda w: (p := qp.pack_bnb8(w), p["weight"].float() * p["SCB"][:, None] / 127, qp.bnb_config(8)),
}


@pytest.mark.parametrize("scheme", list(CASES))
def test_dequantized_weight_and_rows(tmp_path, weight, scheme):
    """The plain name reads the dequantized [out, in] weight (exactly the reference); any rows read
    alone equal those rows of the whole; the stored pieces are hidden."""
    parts, expected, config = CASES[scheme](weight)
    expected = fp8_reference(parts) if expected is None else expected
    reader = open_quantized(tmp_path, parts, config)
    assert reader.names() == ["l.weight"] and reader.shape("l.weight") == (OUT, IN)
    whole = reader.read("l.weight")
    assert torch.allclose(whole, expected.float(), rtol=1e-6, atol=1e-9)
    assert (whole - weight).norm() / weight.norm() < 0.15  # it is the quantized weight, not noise
    for rows in (slice(0, 1), slice(37, 200), [255, 3, 4, 5, 128, 0]):
        assert torch.equal(reader.read("l.weight", rows=rows), whole[rows])
    assert reader.digests["l.weight"]


def test_mxfp4_experts_match_transformers(tmp_path):
    """gpt-oss expert tensors: huref's dequantization equals transformers' (convert_moe_packed_tensors),
    in the unquantized checkpoint's orientation, for whole reads and rows across experts."""
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    logical = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(1)) * 0.05  # [experts, hidden, 2*inner]
    blocks, scales = qp.pack_mxfp4(logical)
    reader = open_quantized(tmp_path, {"gate_up_proj_blocks": blocks, "gate_up_proj_scales": scales},
                            {"quant_method": "mxfp4"}, stem="mlp.experts.")
    assert reader.names() == ["mlp.experts.gate_up_proj"] and reader.shape("mlp.experts.gate_up_proj") == (3, 64, 96)
    whole = reader.read("mlp.experts.gate_up_proj")
    assert torch.equal(whole, convert_moe_packed_tensors(blocks, scales, dtype=torch.float32))
    assert (whole - logical).norm() / logical.norm() < 0.15
    flat = whole.reshape(-1, 96)
    for rows in (slice(60, 70), slice(0, 192), [191, 0, 65, 64, 33]):
        assert torch.equal(reader.read("mlp.experts.gate_up_proj", rows=rows), flat[rows])


def _module_file(package: str, relative: str):
    """A module of an installed package loaded from its file (without the package's own imports),
    or a skip when the package is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (reference check not run)")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    module_spec = importlib.util.spec_from_file_location(f"_ref_{package}_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_compressed_tensors_package(tmp_path, weight, bits, symmetric):
    """compressed-tensors' own packing gives the bytes tests/quant_packing writes, and its own
    unpacking + dequantization the weight huref reads."""
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    q, scales, zeros = qp._groupwise_int(weight, bits, GROUP, symmetric)
    signed, signed_zeros = (q - 2 ** (bits - 1)).to(torch.int8), (zeros - 2 ** (bits - 1)).to(torch.int8)
    parts = qp.pack_ct_int(weight, bits, GROUP, symmetric)
    assert torch.equal(helpers.pack_to_int32(signed, bits), parts["weight_packed"])
    if not symmetric:
        assert torch.equal(helpers.pack_to_int32(signed_zeros, bits, packed_dim=0), parts["weight_zero_point"])
    unpacked = helpers.unpack_from_int32(parts["weight_packed"], bits, torch.Size([OUT, IN])).float()
    groups = torch.arange(IN) // GROUP
    reference = (unpacked - signed_zeros.float()[:, groups]) * scales[:, groups]
    reader = open_quantized(tmp_path, parts, qp.ct_config("pack-quantized", bits, GROUP, symmetric))
    assert torch.allclose(reader.read("l.weight"), reference, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_against_autogptq(tmp_path, weight, act_order):
    """AutoGPTQ's QuantLinear (its CPU path, which honours g_idx) computes x @ W.T with the weight
    huref reads; without act-order its pack() writes the same qweight and qzeros."""
    qlinear = _module_file("auto_gptq", "nn_modules/qlinear/qlinear_cuda.py")
    parts = qp.pack_gptq(weight, 4, GROUP, act_order)
    layer = qlinear.QuantLinear(4, GROUP, IN, OUT, bias=False)
    layer.qweight, layer.qzeros, layer.g_idx = parts["qweight"], parts["qzeros"], parts["g_idx"]
    layer.scales = parts["scales"].float()
    reference = layer(torch.eye(IN)).T  # [out, in]
    reader = open_quantized(tmp_path, parts, qp.gptq_config(4, GROUP, act_order))
    assert torch.allclose(reader.read("l.weight"), reference, rtol=1e-6, atol=1e-9)
    if not act_order:
        q, scales, zeros = qp._groupwise_int(weight, 4, GROUP, True)
        groups = torch.arange(IN) // GROUP
        linear = torch.nn.Linear(IN, OUT, bias=False)
        linear.weight.data = (q - zeros[:, groups]) * scales[:, groups]
        packer = qlinear.QuantLinear(4, GROUP, IN, OUT, bias=False)
        packer.pack(linear, scales, zeros.float(), groups)
        assert torch.equal(packer.qweight, parts["qweight"]) and torch.equal(packer.qzeros, parts["qzeros"])


def test_awq_against_autoawq(tmp_path, weight):
    """AutoAWQ's dequantize_gemm (its own unpacking and reordering) gives the weight huref reads."""
    packing = _module_file("awq", "utils/packing_utils.py")
    parts = qp.pack_awq(weight, GROUP)
    reference = packing.dequantize_gemm(parts["qweight"], parts["qzeros"], parts["scales"].float(), 4, GROUP).T
    reader = open_quantized(tmp_path, parts, qp.awq_config(GROUP))
    assert torch.allclose(reader.read("l.weight"), reference, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("nested", [False, True])
def test_bitsandbytes_4bit_package(tmp_path, weight, nested):
    """A state written by bitsandbytes itself (quantize_4bit, QuantState.as_dict as Linear4bit saves
    it) reads as bitsandbytes' own dequantize_4bit; likewise LLM.int8 rows."""
    functional = pytest.importorskip("bitsandbytes.functional")
    packed, state = functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=nested)
    parts = {"weight": packed, **{"weight." + k: v for k, v in state.as_dict(packed=True).items()}}
    reader = open_quantized(tmp_path, parts, qp.bnb_config(4))
    assert torch.allclose(reader.read("l.weight"), functional.dequantize_4bit(packed, state), rtol=1e-6, atol=1e-9)
    codes, row_stats, _ = functional.int8_vectorwise_quant(weight)
    reader = open_quantized(tmp_path, {"weight": codes, "SCB": row_stats}, qp.bnb_config(8))
    assert torch.allclose(reader.read("l.weight"), functional.int8_vectorwise_dequant(codes, row_stats), rtol=1e-6, atol=1e-9)


def test_unknown_quant_method_is_one_line_error(tmp_path, weight):
    with pytest.raises(HurefError, match="quantization method 'hqq' is not supported"):
        open_quantized(tmp_path, {"weight": weight}, {"quant_method": "hqq"})
    with pytest.raises(HurefError, match="format 'nvfp4-pack-quantized' is not supported"):
        open_quantized(tmp_path, {"weight": weight}, {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"})


# ---- a quantized tiny llama against its original -------------------------------------------------

MODEL_SCHEMES = {  # scheme -> (pack one [out, in] weight into {suffix: tensor}, quantization_config, ICS floor)
    "fp8-block": (qp.pack_fp8_block, qp.fp8_config(), 0.99),
    "ct-int8": (qp.pack_ct_int8, qp.ct_config("int-quantized", 8, None), 0.99),
    "ct-fp8": (qp.pack_ct_fp8, qp.ct_config("float-quantized", 8, None, type_="float"), 0.99),
    "bnb-int8": (qp.pack_bnb8, qp.bnb_config(8), 0.99),
    "ct-int4": (lambda w: qp.pack_ct_int(w, 4, GROUP), qp.ct_config("pack-quantized", 4, GROUP), 0.9),
    "gptq-4-act-order": (lambda w: qp.pack_gptq(w, 4, GROUP, True), qp.gptq_config(4, GROUP, True), 0.9),
    "awq-4": (lambda w: qp.pack_awq(w, GROUP), qp.awq_config(GROUP), 0.9),
    "bnb-nf4-double": (qp.pack_bnb4, qp.bnb_config(4), 0.9),
}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A float32 tiny llama wide enough for groups of 128: hidden 256, FFN 512, 2 layers."""
    config = make_config("llama", hidden_size=256, intermediate_size=512, num_hidden_layers=2, head_dim=64)
    torch.manual_seed(0)
    import transformers

    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("llama"), token_strings())


@pytest.mark.parametrize("scheme", list(MODEL_SCHEMES))
def test_quantized_copy_against_original(tmp_path, tiny_llama, huref_cli, scheme):
    """`huref compare` of the quantized copy and the original: ICS >= 0.99 at 8 bits; at 4 bits
    the figure is printed (tiny random weights quantize worse than trained ones) and held >= 0.9."""
    pack, config, floor = MODEL_SCHEMES[scheme]
    copy = qp.quantized_copy(tiny_llama, tmp_path / "q", pack, config)
    code, out, err = huref_cli("compare", str(copy), str(tiny_llama), "--json", "-q", "--layers", "0,1")
    assert code == 0, err
    result = json.loads(out)
    print(f"{scheme}: ICS {result['ics']:.4f} terms {result['term_ics']}")
    assert result["ics"] >= floor
    assert result["ics"] < 1.0  # the copy really is quantized


def test_fp8_fused_experts(tmp_path):
    """A fused 3-D expert tensor `X` with `X_scale_inv` [experts, out/128, in/128]: rows across
    experts read with each expert's own block scales (as transformers' Fp8Dequantize)."""
    experts = torch.randn(2, 256, 384, generator=torch.Generator().manual_seed(2)) * 0.05
    parts = qp.pack_fp8_block(experts)
    reader = open_quantized(tmp_path, {"gate_up_proj": parts["weight"], "gate_up_proj_scale_inv": parts["weight_scale_inv"]},
                            qp.fp8_config(), stem="mlp.experts.")
    whole = reader.read("mlp.experts.gate_up_proj")
    assert reader.names() == ["mlp.experts.gate_up_proj"] and torch.equal(whole, fp8_reference(parts))
    assert torch.equal(reader.read("mlp.experts.gate_up_proj", rows=slice(250, 262)), whole.reshape(-1, 384)[250:262])

"""Cases on quantized checkpoints (huref/readers/quant), each on a quantized copy of the tiny llama:
quantization_config fields of the wrong JSON type, not integers, not finite, out of range or not
fitting the stored pieces; bitsandbytes quant states likewise; stored pieces of the wrong rank."""

from __future__ import annotations

import json

from huref_lab import quant_packing as qp
from huref_lab.hostile.cases.base import case, invariants_run
from huref_lab.hostile.forgers import bytes_tensor, with_tensors

GROUP = 32  # group and block size: the tiny llama's matrices are 32, 64 and 128 wide
LINEAR = "model.layers.1.self_attn.q_proj"  # the linear whose stored pieces the cases change
STATE = f"{LINEAR}.weight.quant_state.bitsandbytes__nf4"
SCHEMES = {  # scheme -> (pack one [out, in] weight into its stored pieces, quantization_config)
    "fp8": (lambda w: qp.pack_fp8_block(w, (GROUP, GROUP)), qp.fp8_config((GROUP, GROUP))),
    "gptq": (lambda w: qp.pack_gptq(w, 4, GROUP, act_order=True), qp.gptq_config(4, GROUP, True)),
    "awq": (lambda w: qp.pack_awq(w, GROUP), qp.awq_config(GROUP)),
    "ct": (lambda w: qp.pack_ct_int(w, 4, GROUP), qp.ct_config("pack-quantized", 4, GROUP)),
    "ct_int8": (qp.pack_ct_int8, qp.ct_config("int-quantized", 8, None)),
    "bnb4": (qp.pack_bnb4, qp.bnb_config(4)),
    "bnb8": (qp.pack_bnb8, qp.bnb_config(8)),
}


def quant_case(name: str, scheme: str, klass: str = "quantization config", config=None, tensors=None,
               expect: int = 2):
    """`huref invariants` of a quantized copy of the tiny llama: `config` (a dict) updates its
    quantization_config, `tensors` (a callable: {name: tensor} of the copy -> {name: tensor or
    None}) replaces stored pieces."""
    @case(name, klass)
    def build(kit, directory):
        from safetensors.torch import load_file

        pack, qconfig = SCHEMES[scheme]
        model = qp.quantized_copy(kit.llama, directory / "model", pack, {**qconfig, **(config or {})})
        if tensors is not None:
            with_tensors(model, tensors(load_file(str(model / "model.safetensors"))))
        return invariants_run(model, directory, expect)


def reshaped(part: str, rank: int):
    """`tensors` for quant_case: the LINEAR's stored `part` with `rank` dimensions (flattened, or
    given leading dimensions of 1)."""
    def change(stored):
        tensor = stored[f"{LINEAR}.{part}"]
        shape = [-1] if rank == 1 else [1] * (rank - tensor.dim()) + list(tensor.shape)
        return {f"{LINEAR}.{part}": tensor.reshape(shape)}
    return change


def state_case(name: str, text, klass: str = "quantization config"):
    """quant_case on a bitsandbytes nf4 copy whose LINEAR quant state is `text(state dict)` (JSON
    text, or raw bytes)."""
    def change(stored):
        state = json.loads(bytes(stored[STATE].tolist()))
        raw = text(state)
        return {STATE: bytes_tensor(raw if isinstance(raw, bytes) else raw.encode())}
    quant_case(name, "bnb4", klass, tensors=change)


def state_with(**changes):
    """`text` for state_case: the state with entries replaced (a value of None drops the entry)."""
    def text(state):
        state = {**state, **changes}
        return json.dumps({k: v for k, v in state.items() if v is not None})
    return text


def state_raw(key: str, literal: str):
    """`text` for state_case: the state with `key` written as the raw JSON `literal` (1e400)."""
    def text(state):
        state = {**state, key: "@@"}
        return json.dumps(state).replace('"@@"', literal)
    return text


# --- quantization_config fields, one typed reading before any arithmetic ---

for _name, _block in {"object": {"a": 1}, "int": GROUP, "infinity": [float("inf"), GROUP], "nested": [[GROUP], [GROUP]],
                      "fraction": [GROUP + 0.5, GROUP], "zero": [0, GROUP], "negative": [-GROUP, GROUP],
                      "strings": [str(GROUP), str(GROUP)], "three": [GROUP, GROUP, GROUP], "bool": [True, GROUP],
                      "misfit": [GROUP // 2, GROUP]}.items():
    quant_case(f"fp8_block_size_{_name}", "fp8", config={"weight_block_size": _block})
quant_case("fp8_block_size_null_is_read", "fp8", "valid inputs", config={"weight_block_size": None}, expect=0)

for _name, _bits in {"string": "4", "null": None, "infinity": float("inf"), "nan": float("nan"), "1e30": 1e30,
                     "list": [4], "fraction": 4.7, "bool": True, "integral_float": 4.0, "one": 1}.items():
    quant_case(f"gptq_bits_{_name}", "gptq", config={"bits": _bits})
for _name, _group in {"string": str(GROUP), "nan": float("nan"), "1e30": 1e30, "list": [GROUP], "fraction": GROUP + 0.5,
                      "zero": 0, "misfit": 2 * GROUP}.items():
    quant_case(f"gptq_group_size_{_name}", "gptq", config={"group_size": _group})
quant_case("gptq_checkpoint_format_list", "gptq", config={"checkpoint_format": ["gptq"]})
quant_case("gptq_checkpoint_format_unknown", "gptq", config={"checkpoint_format": "marlin"})
quant_case("gptq_is_read", "gptq", "valid inputs", expect=0)

for _name, _changes in {"bits_string": {"bits": "4"}, "bits_nan": {"bits": float("nan")}, "bits_list": {"bits": [4]},
                        "group_size_string": {"group_size": str(GROUP)}, "group_size_infinity": {"group_size": float("inf")},
                        "group_size_fraction": {"group_size": GROUP + 0.5}, "group_size_misfit": {"group_size": 2 * GROUP},
                        "version_list": {"version": ["gemm"]}, "version_number": {"version": 5}}.items():
    quant_case(f"awq_{_name}", "awq", config=_changes)


def _ct_groups(**weights):
    """compressed-tensors config_groups with the one group's weights entries replaced."""
    group = qp.ct_config("pack-quantized", 4, GROUP)["config_groups"]["group_0"]
    return {"group_0": {**group, "weights": {**group["weights"], **weights}}}


for _name, _changes in {"config_groups_list": {"config_groups": [1]}, "config_groups_string": {"config_groups": "x"},
                        "group_a_list": {"config_groups": {"group_0": [1]}},
                        "weights_list": {"config_groups": {"group_0": {"weights": [1]}}},
                        "weights_number": {"config_groups": {"group_0": {"weights": 5}}},
                        "format_list": {"format": ["pack-quantized"]}, "format_number": {"format": 4},
                        "group_format_list": {"config_groups": {"group_0": {"format": ["x"]}}},
                        "group_size_string": {"config_groups": _ct_groups(group_size=str(GROUP))},
                        "group_size_nan": {"config_groups": _ct_groups(group_size=float("nan"))},
                        "group_size_fraction": {"config_groups": _ct_groups(group_size=GROUP + 0.5)},
                        "block_structure_strings": {"config_groups": _ct_groups(block_structure=["a", "b"])},
                        "block_structure_short": {"config_groups": _ct_groups(block_structure=[GROUP])}}.items():
    quant_case(f"ct_{_name}", "ct", config=_changes)


def _weight_shape(*values, dtype="int64"):
    import torch

    return lambda stored: {f"{LINEAR}.weight_shape": torch.tensor(values, dtype=getattr(torch, dtype))}


for _name, _shape in {"nan": _weight_shape(float("nan"), 64, dtype="float32"),
                      "infinity": _weight_shape(float("inf"), 64, dtype="float32"),
                      "floats": _weight_shape(64.0, 64.0, dtype="float32"), "negative": _weight_shape(-64, 64),
                      "2_40": _weight_shape(1 << 40, 64), "three_dims": _weight_shape(1, 64, 64),
                      "misfit": _weight_shape(64, 96)}.items():
    quant_case(f"ct_weight_shape_{_name}", "ct", tensors=_shape)


def _nan_zero_point(stored):
    import torch

    scale = stored[f"{LINEAR}.weight_scale"]
    return {f"{LINEAR}.weight_zero_point": torch.full_like(scale, float("nan"))}


quant_case("ct_zero_point_nan", "ct_int8", tensors=_nan_zero_point)

for _name, _text in {"shape_null": state_with(shape=None), "shape_infinity": state_raw("shape", "[Infinity, 64]"),
                     "shape_1e400": state_raw("shape", "[1e400, 64]"), "shape_nested": state_with(shape=[[64], [64]]),
                     "shape_negative": state_with(shape=[-64, 64]), "shape_2_40": state_with(shape=[1 << 40, 1 << 40]),
                     "shape_fraction": state_with(shape=[64.5, 64]), "shape_string": state_with(shape="64x64"),
                     "shape_one_dim": state_with(shape=[4096]), "shape_misfit": state_with(shape=[32, 64]),
                     "blocksize_null": state_with(blocksize=None), "blocksize_infinity": state_raw("blocksize", "Infinity"),
                     "blocksize_1e400": state_raw("blocksize", "1e400"), "blocksize_list": state_with(blocksize=[64]),
                     "blocksize_zero": state_with(blocksize=0), "blocksize_fraction": state_with(blocksize=63.5),
                     "blocksize_string": state_with(blocksize="64"), "blocksize_2_40": state_with(blocksize=1 << 40),
                     "nested_blocksize_null": state_with(nested_blocksize=None),
                     "nested_blocksize_zero": state_with(nested_blocksize=0),
                     "nested_blocksize_list": state_with(nested_blocksize=[256]),
                     "nested_blocksize_infinity": state_raw("nested_blocksize", "Infinity"),
                     "nested_offset_nan": state_raw("nested_offset", "NaN"),
                     "nested_offset_infinity": state_raw("nested_offset", "Infinity"),
                     "nested_offset_string": state_with(nested_offset="0.1"),
                     "nested_offset_list": state_with(nested_offset=[0.1]),
                     "quant_type_other": state_with(quant_type="fp4"),
                     "a_list": lambda state: "[1, 2]", "not_utf8": lambda state: b'{"shape": "\xff"}'}.items():
    state_case(f"bnb_state_{_name}", _text)


# --- stored pieces of the wrong rank, refused where they are read ---

RANKS = {  # scheme -> {stored piece: its rank}
    "gptq": {"qweight": 2, "qzeros": 2, "scales": 2, "g_idx": 1}, "awq": {"qweight": 2, "qzeros": 2, "scales": 2},
    "ct": {"weight_packed": 2, "weight_scale": 2, "weight_shape": 1}, "fp8": {"weight": 2, "weight_scale_inv": 2},
    "bnb4": {"weight": 2, "weight.absmax": 1, "weight.quant_map": 1, "weight.nested_absmax": 1},
    "bnb8": {"weight": 2, "SCB": 1},
}
for _scheme, _parts in RANKS.items():
    for _part, _rank in _parts.items():
        for _wrong in ((1, 3) if _rank == 2 else (2,)):
            quant_case(f"{_scheme}_{_part.replace('.', '_')}_rank_{_wrong}", _scheme, "packed tensors",
                       tensors=reshaped(_part, _wrong))

# --- a quant state nested deeply, or holding a number Python will not parse ---

state_case("bnb_state_nested_deeply", lambda state: "[" * 30_000 + "]" * 30_000, "nested json")  # within 64 KiB
state_case("bnb_state_integer_5000_digits", state_raw("blocksize", "1" * 5000), "nested json")

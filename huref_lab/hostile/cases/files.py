"""Cases on the files huref writes and reads back: invariants files, fingerprints (FP.json),
generators (huref's JSON + safetensors) and NVIDIA network pickles."""

from __future__ import annotations

import json
import struct

from huref_lab.hostile.cases.base import Case, case
from huref_lab.hostile.forgers import (binbytes8, forged_storage_tensor, generator_copy, invariants_file, laughs,
                                       long_binput, network_pickle, pickle_opcodes, storage_blob, storage_tensor, stride0,
                                       write_safetensors_raw)


def invariants_case(name, klass="invariants", **kwargs):
    @case(name, klass)
    def build(kit, directory):
        path = invariants_file(directory / "terms.safetensors", **kwargs)
        return Case(["compare", str(path), str(path), "--json", "-q"])


invariants_case("invariants_layers_strings", layers=("a", "b"))
invariants_case("invariants_layers_floats", layers=(1.0, 2.0))
invariants_case("invariants_tokens_numbers", tokens=[1, 2, 3, 4])
invariants_case("invariants_tokens_repeated", tokens=["a", "a", "b", "c"])
invariants_case("invariants_meta_a_list", meta=[1])
invariants_case("invariants_meta_n_layers_string", meta={"n_layers": "x", "layer_choice": "given"})
invariants_case("invariants_meta_model_type_object", meta={"model_type": {"a": [1]}, "token_strategy": [2]})
invariants_case("invariants_values_three_dims", values_shape=(2, 3, 4))
invariants_case("invariants_header_not_invariants", header_override={"huref": "other"})
invariants_case("invariants_values_1e38", fill=3e38)
invariants_case("invariants_values_nan", fill=float("nan"))
invariants_case("invariants_sparse_5_gb", "declared sizes", values_shape=(2, 3, 20000, 20000),
                tokens=[f"s:{i}" for i in range(20000)], sparse_bytes=2 * 3 * 20000 * 20000 * 4)


@case("invariants_metadata_nested_deeply", "invariants")
def _(kit, directory):
    path = directory / "terms.safetensors"
    text = json.dumps({"__metadata__": {"huref": "[" * 100000 + "]" * 100000},
                       "values": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})
    write_safetensors_raw(path, None, b"", text.encode())
    return Case(["compare", str(path), str(path), "-q"])



# --- FP.json ---

def fingerprint_case(name, klass="fingerprint", command="compare", **changes):
    @case(name, klass)
    def build(kit, directory):
        data = json.loads(kit.fingerprint.read_text())
        data.update(changes)
        path = directory / "fp.json"
        path.write_text(json.dumps(data))
        if command == "compare":
            return Case(["compare", str(path), str(kit.fingerprint), "--json", "-q"])
        out = directory / "dog.png"
        return Case(["show", str(path), "-o", str(out), "-q", "--generator", "bundled"], absent=[str(out)])


fingerprint_case("fingerprint_latent_1e300", "non-finite", latent=[1e300] * 512)
fingerprint_case("fingerprint_latent_1e300_show", "non-finite", command="show", latent=[1e300] * 512)
fingerprint_case("fingerprint_latent_strings", latent=["1"] * 512)
fingerprint_case("fingerprint_latent_short", latent=[0.5] * 3)
fingerprint_case("fingerprint_layers_strings", layers=["a", "b"], layer_choice="given", n_layers=5)
fingerprint_case("fingerprint_layers_floats", layers=[1.5], layer_choice="given", n_layers=5)
fingerprint_case("fingerprint_n_layers_object", layers=[1, 2], layer_choice="given", n_layers={"a": 1})
fingerprint_case("fingerprint_n_tokens_negative", n_tokens=-5)
fingerprint_case("fingerprint_n_tokens_string", n_tokens="64")
fingerprint_case("fingerprint_model_type_list", model_type=["llama"])
fingerprint_case("fingerprint_generator_name_list", command="show", generator={"name": ["bundled"], "sha256": "x"})
fingerprint_case("fingerprint_commitment_list", commitment=[1])
fingerprint_case("fingerprint_format_version_string", format_version="1")


@case("fingerprint_nested_deeply", "fingerprint")
def _(kit, directory):
    path = directory / "fp.json"
    path.write_text('{"format": "huref-fingerprint", "x": ' + "[" * 200000 + "]" * 200000 + "}")
    return Case(["compare", str(path), str(kit.fingerprint), "-q"])


@case("fingerprint_not_utf8", "fingerprint")
def _(kit, directory):
    path = directory / "fp.json"
    path.write_bytes(b'{"format": "\xff"}')
    return Case(["compare", str(path), str(kit.fingerprint), "-q"])



# --- generators: huref's JSON + safetensors, and NVIDIA pickles ---

def generator_case(name, klass="generator", **kwargs_changes):
    @case(name, klass)
    def build(kit, directory):
        weights = generator_copy(kit.generator, directory, **kwargs_changes)
        out = directory / "dog.png"
        return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(weights), "-q"],
                    absent=[str(out)])


BAD_GENERATOR_KWARGS = {
    "resolution_2_40": dict(img_resolution=2 ** 40),
    "resolution_string": dict(img_resolution="64"),
    "resolution_3": dict(img_resolution=3),
    "channel_base_zero": dict(synthesis_kwargs__channel_base=0),
    "channel_max_negative": dict(synthesis_kwargs__channel_max=-1),
    "w_dim_negative": dict(w_dim=-256),
    "z_dim_zero": dict(z_dim=0),
    "z_dim_float": dict(z_dim=512.0),
    "c_dim_huge": dict(c_dim=2 ** 40),
    "img_channels_zero": dict(img_channels=0),
    "mapping_layers_1e7": dict(mapping_kwargs__num_layers=10 ** 7),
    "mapping_layers_zero": dict(mapping_kwargs__num_layers=0),
    "mapping_lr_nan": dict(mapping_kwargs__lr_multiplier=float("nan")),
    "conv_clamp_string": dict(synthesis_kwargs__conv_clamp="256"),
    "unknown_kwarg": dict(synthesis_kwargs__evil=1),
    "mapping_kwargs_list": dict(mapping_kwargs=[1]),
    "resample_filter_huge": dict(synthesis_kwargs__resample_filter=[1] * 100000),
}
for _name, _changes in BAD_GENERATOR_KWARGS.items():
    generator_case(f"generator_json_{_name}", **_changes)


@case("generator_json_nested_deeply", "generator")
def _(kit, directory):
    weights = generator_copy(kit.generator, directory)
    weights.with_suffix(".json").write_text('{"format": "huref-stylegan2", "a": ' + "[" * 200000 + "]" * 200000 + "}")
    out = directory / "dog.png"
    return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(weights), "-q"], absent=[str(out)])


@case("generator_json_not_utf8", "generator")
def _(kit, directory):
    weights = generator_copy(kit.generator, directory)
    weights.with_suffix(".json").write_bytes(b'{"format": "\xff"}')
    out = directory / "dog.png"
    return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(weights), "-q"], absent=[str(out)])


@case("generator_weights_nan", "non-finite")
def _(kit, directory):
    from safetensors.torch import load_file, save_file

    weights = generator_copy(kit.generator, directory)
    tensors = load_file(str(weights))
    name = next(n for n in tensors if n.endswith("affine.weight"))
    tensors[name][0, 0] = float("inf")
    save_file(tensors, str(weights))
    out = directory / "dog.png"
    return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(weights), "-q"], absent=[str(out)])


def pickle_case(name, klass="generator pickle", **kwargs):
    """A show run drawing with a network pickle; kwargs for network_pickle (a callable value is
    called when the case is built)."""
    @case(name, klass)
    def build(kit, directory):
        made = {key: value() if callable(value) else value for key, value in kwargs.items()}
        path = network_pickle(directory / "gen.pkl", kit.small_generator, **made)
        out = directory / "dog.png"
        return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(path), "-q"],
                    absent=[str(out)])


def _bad_kwargs(**changes):
    kwargs = {"z_dim": 512, "c_dim": 0, "w_dim": 8, "img_resolution": 8, "img_channels": 3,
              "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 64, "channel_max": 8}}
    return dict(kwargs, **changes)


pickle_case("pickle_resolution_2_40", init_kwargs=_bad_kwargs(img_resolution=2 ** 40))
pickle_case("pickle_channel_base_zero", init_kwargs=_bad_kwargs(synthesis_kwargs={"channel_base": 0}))
pickle_case("pickle_w_dim_negative", init_kwargs=_bad_kwargs(w_dim=-1))
pickle_case("pickle_z_dim_zero", init_kwargs=_bad_kwargs(z_dim=0))
pickle_case("pickle_mapping_layers_1e7", init_kwargs=_bad_kwargs(mapping_kwargs={"num_layers": 10 ** 7}))
pickle_case("pickle_kwargs_billion_laughs", "declared sizes", init_kwargs=_bad_kwargs(mapping_kwargs=laughs()))
pickle_case("pickle_source_billion_laughs", "declared sizes", module_src=laughs())
pickle_case("pickle_parameter_not_a_tensor", replace_tensors={"mapping.fc0.weight": "not a tensor"})
pickle_case("pickle_parameter_a_list", replace_tensors={"mapping.fc0.weight": [[1.0] * 4] * 4})
pickle_case("pickle_stride0_tensor_1_gib", "declared sizes",
            replace_tensors=lambda: {"mapping.fc0.weight": stride0((1 << 18, 1 << 10))})  # 1 GiB as float32


pickle_case("pickle_storage_declares_2_40_bytes", "declared sizes",
            replace_tensors=lambda: {"mapping.fc0.weight": forged_storage_tensor(1 << 40)})
pickle_case("pickle_storage_declares_1_gib", "declared sizes",
            replace_tensors=lambda: {"mapping.fc0.weight": forged_storage_tensor(1 << 30)})


def raw_pickle_case(name: str, raw: bytes):
    """A show run drawing with a network pickle of the raw pickle bytes `raw`."""
    @case(name, "declared sizes")
    def build(kit, directory):
        path = directory / "gen.pkl"
        path.write_bytes(raw)
        out = directory / "dog.png"
        return Case(["show", str(kit.fingerprint), "-o", str(out), "--generator", str(path), "-q"], absent=[str(out)])


EMPTY_DICT, BINUNICODE8 = b"}", b"\x8d"
raw_pickle_case("pickle_memo_index_2_26", pickle_opcodes(EMPTY_DICT, long_binput((1 << 26) + 1)))
raw_pickle_case("pickle_memo_index_2_32", pickle_opcodes(EMPTY_DICT, long_binput((1 << 32) - 1)))
raw_pickle_case("pickle_binbytes8_near_2_63", pickle_opcodes(binbytes8((1 << 63) - 16, b"xx")))
raw_pickle_case("pickle_binbytes8_2_31", pickle_opcodes(binbytes8(1 << 31, b"xx")))
raw_pickle_case("pickle_binunicode8_2_40", pickle_opcodes(BINUNICODE8 + struct.pack("<Q", 1 << 40) + b"xx"))
pickle_case("pickle_storage_memo_index_2_26", "declared sizes",  # inside a tensor's storage: EMPTY_DICT, LONG_BINPUT, POP
            replace_tensors=lambda: {"mapping.fc0.weight": storage_tensor(
                storage_blob()[:2] + EMPTY_DICT + long_binput((1 << 26) + 1) + b"0" + storage_blob()[2:])})


@case("fingerprint_integer_5000_digits", "nested json")
def _(kit, directory):
    path = directory / "fp.json"
    path.write_text(json.dumps({**json.loads(kit.fingerprint.read_text()), "n_tokens": "@@"}).replace('"@@"', "1" * 5000))
    return Case(["compare", str(path), str(kit.fingerprint), "-q"])


@case("invariants_metadata_integer_5000_digits", "nested json")
def _(kit, directory):
    path = directory / "terms.safetensors"
    text = json.dumps({"__metadata__": {"huref": '{"huref": "invariants", "layers": [' + "1" * 5000 + "]}"},
                       "values": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})
    write_safetensors_raw(path, None, b"", text.encode())
    return Case(["compare", str(path), str(path), "-q"])

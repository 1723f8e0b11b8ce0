"""Hostile and broken inputs: every case of huref_lab.hostile.cases.CASES runs as a real CLI invocation in
one subprocess (torch imported once) under a 3 GiB address-space cap, each with a time limit, and
must exit 2 with exactly one stderr line and no traceback, within the limit, growing the peak
resident memory by less than 1 GiB, leaving none of its outputs and no temporary file (valid
inputs among them must succeed). Interrupted runs leave a complete output or none; concurrent
runs writing one output leave one complete file. Then property-based fuzzing (Hypothesis) of the
format parsers in this process: each returns a well-formed result or raises the one error type.
"""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from huref.errors import HurefError
from huref_lab.hostile import cases as hostile_cases
from huref_lab.hostile import forgers, runner

ROOT = Path(__file__).resolve().parents[1]
MEMORY_GROWTH_MB = 1024  # beyond the working set before the case
BATCH_SECONDS = 400  # the whole batch; one case is stopped by its own limit (runner.CASE_SECONDS)


@pytest.fixture(scope="module")
def batch(tiny_zoo, tmp_path_factory):
    """Build every case, run them all in one subprocess; ({name: case dict}, {name: result})."""
    from huref.files import package_data, sha256_of
    from huref.fingerprint import build_fingerprint, fingerprint_bytes
    from huref.invariants import invariant_terms
    from huref.sources import load_model

    root = tmp_path_factory.mktemp("hostile")
    llama = tiny_zoo("llama")
    generator = package_data("generator.safetensors")
    fp, _ = build_fingerprint(invariant_terms(load_model(str(llama)), n_tokens=64),
                              {"name": "bundled", "sha256": sha256_of(generator)})
    (root / "fp.json").write_bytes(fingerprint_bytes(fp))
    kit = hostile_cases.Kit(llama, tiny_zoo("mixtral"), root / "fp.json", generator, forgers.small_generator(root),
                            tiny_zoo("nemotron_h"), tiny_zoo("recurrent_gemma"))
    cases = hostile_cases.cases_json(kit, root / "cases")
    (root / "cases.json").write_text(json.dumps(cases))
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "huref_lab.hostile", str(root / "cases.json"), str(root / "results.json")],
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                         timeout=BATCH_SECONDS)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    print(f"{len(cases)} hostile cases run in {time.monotonic() - start:.1f} s")
    return cases, results


def leftovers(directory: Path) -> list[str]:
    """Temporary files of huref's writer (.NAME.<hex>.tmp) anywhere under directory."""
    return [str(p) for p in directory.rglob(".*.tmp")]


def case_params():
    for name, (klass, _) in hostile_cases.CASES.items():
        if klass in ("interrupts", "concurrent runs"):
            continue
        yield pytest.param(name, id=name)


@pytest.mark.parametrize("name", list(case_params()))
def test_hostile_case(batch, name):
    cases, results = batch
    case, result = cases[name], results[name]
    stderr = result["stderr"]
    assert result["code"] == case["expect"], f"exit {result['code']}: {stderr[:500]}"
    assert "Traceback" not in stderr
    assert result["code"] != "timeout" and result["seconds"] < runner.CASE_SECONDS
    assert result["rss_growth_mb"] < MEMORY_GROWTH_MB
    directory = Path(case["absent"][0]).parent if case["absent"] else None
    for path in case["absent"]:
        assert not os.path.lexists(path), f"{path} was left behind"
    if directory is not None:
        assert leftovers(directory) == []
    if case["expect"] == 2:
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("huref: error: "), stderr[:500]
        assert result["stderr_chars"] <= 420  # one_line caps what a file's contents can print
        assert "internal error" not in stderr


def test_inputs_are_never_written_over(batch, tiny_zoo):
    """The cases aiming an output at an input leave that input as it was."""
    cases, _ = batch
    model = Path(cases["output_is_the_model_file"]["argv"][1])
    assert (model / "model.safetensors").read_bytes() == (tiny_zoo("llama") / "model.safetensors").read_bytes()
    config = Path(cases["output_png_over_config"]["argv"][1]) / "config.json"
    assert json.loads(config.read_text())["model_type"] == "llama"
    fp = Path(cases["output_image_over_input_fingerprint"]["argv"][1])
    assert json.loads(fp.read_text())["format"] == "huref-fingerprint"


def test_interrupted_runs_leave_a_complete_output_or_none(batch):
    from huref.invariants import load_terms

    cases, results = batch
    names = [n for n, (klass, _) in hostile_cases.CASES.items() if klass == "interrupts"]
    codes = []
    for name in names:
        result, out = results[name], Path(cases[name]["argv"][3])
        codes.append(result["code"])
        assert result["code"] in (0, 130), result
        assert leftovers(out.parent) == []
        if result["code"] == 130:
            assert result["stderr"].strip() == "huref: interrupted" and not out.exists()
        else:
            assert load_terms(out).values.shape == (3, 3, 384, 384)
    assert 130 in codes and 0 in codes, codes  # the delays reach both before and after the end of a run


def test_concurrent_runs_leave_one_complete_file(batch):
    from huref.invariants import load_terms

    cases, results = batch
    case, result = cases["concurrent_runs_same_output"], results["concurrent_runs_same_output"]
    out = Path(case["argv"][3])
    assert result["code"] == [0] * case["concurrent"]
    assert load_terms(out).values.shape == (2, 3, 64, 64)
    assert leftovers(out.parent) == []


def test_every_class_of_docs_security_has_cases():
    table = (ROOT / "docs" / "SECURITY.md").read_text()
    for klass in {klass for klass, _ in hostile_cases.CASES.values()}:
        assert f"| {klass} |" in table, klass


# --- typed reading, direct ---

def test_config_values_are_typed_where_they_are_read():
    from huref.architectures import arch_for_config
    from huref.config import config_value, model_dims

    base = dict(model_type="llama", hidden_size=64, num_hidden_layers=3, num_attention_heads=4, rms_norm_eps=1e-5)
    assert model_dims(base).n_layers == 3 and model_dims(base).eps == 1e-5
    assert config_value({"a": None, "b": 7}, "a", "b", kind=int, low=1) == 7
    assert config_value({}, "a", default=5, kind=int) == 5
    for key, bad in [("num_hidden_layers", 3.0), ("num_hidden_layers", True), ("hidden_size", "64"),
                     ("rms_norm_eps", float("nan")), ("num_attention_heads", 1 << 30)]:
        with pytest.raises(HurefError, match=key):
            model_dims(dict(base, **{key: bad}))
    with pytest.raises(HurefError, match="alibi"):
        arch_for_config(dict(model_type="falcon", alibi="yes"))


def test_legacy_torch_bin_reads_the_same_tensors(tiny_zoo, tmp_path):
    from safetensors.torch import load_file

    from huref.readers.torchbin import TorchBinReader

    state = load_file(str(tiny_zoo("llama") / "model.safetensors"))
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    reader = TorchBinReader(str(tmp_path / "legacy.bin"))
    name = "model.embed_tokens.weight"
    assert torch.equal(reader.read(name, rows=[5, 1]), state[name][[5, 1]])


def test_a_storage_declaring_more_than_it_holds_is_refused_before_allocating(tmp_path):
    import pickle

    from stylegan2.nvidia_pickle import _load_storage_bytes

    forged = forgers.forged_storage_tensor(1 << 40).args[0].args[0]
    with pytest.raises(pickle.UnpicklingError, match="declares 1099511627776 bytes"):
        _load_storage_bytes(forged)


def test_a_claimed_depth_needs_the_tensors_of_every_layer():
    from huref.config import check_depth

    names = [f"model.layers.{i}.mlp.weight" for i in (0, 1, 2, 4)] + ["model.layers.03x.w", "model.layers.007.w"]
    check_depth(3, names, "model.layers.{i}.", "m")
    for n_layers, present in ((4, 3), (5, 4), (1 << 24, 4)):  # "03x" and "007" name no layer
        with pytest.raises(HurefError, match=f"declares {n_layers} layers, but the checkpoint holds tensors of "
                                             f"{present} \\(none of layer 3: 'model.layers.3"):
            check_depth(n_layers, names, "model.layers.{i}.", "m")


@settings(max_examples=200, deadline=None)
@given(kinds=st.lists(st.sampled_from(["full_attention", "linear_attention", "mlp", "moe"]), min_size=1, max_size=40))
def test_single_block_pairing_is_each_attention_block_and_the_next_ffn_block(kinds):
    """nemotron_h's pairing, computed in one backward pass, against a scan forward from each block."""
    from huref.architectures import arch_for_config
    from huref.config import layer_plan

    arch = arch_for_config({"model_type": "nemotron_h"})
    plan = layer_plan({"layers_block_type": kinds}, arch, len(kinds))
    attention = tuple(i for i, kind in enumerate(kinds) if kind == "full_attention")
    expected = {i: next((j for j in range(i + 1, len(kinds)) if kinds[j] in ("mlp", "moe")), None) for i in attention}
    assert plan.attention == attention and plan.ffn_block == expected
    assert plan.term_layers == tuple(i for i in attention if expected[i] is not None)


# --- property-based fuzzing of the parsers ---

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)
SIZES = st.integers(0, 2 ** 64) | st.sampled_from([0, 1, 2, 4, 64, 2 ** 40]) | JSON


@st.composite
def safetensors_headers(draw):
    """A header of one to three entries, each a plausible entry with any field replaced by anything."""
    header = {}
    for i in range(draw(st.integers(1, 3))):
        entry = {"dtype": draw(st.sampled_from(["F32", "BF16", "I8", "F8_E4M3", "X"]) | JSON),
                 "shape": draw(st.lists(SIZES, max_size=3) | JSON),
                 "data_offsets": draw(st.lists(SIZES, min_size=2, max_size=2) | JSON)}
        header[draw(st.text(max_size=5))] = entry if draw(st.booleans()) else draw(JSON)
    if draw(st.booleans()):
        header["__metadata__"] = draw(JSON)
    return header


@FUZZ
@given(header=safetensors_headers(), data=st.binary(max_size=96))
def test_fuzzed_safetensors_headers_read_or_refuse(tmp_path_factory, header, data):
    from huref.readers.safetensors import SafetensorsReader

    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    forgers.write_safetensors_raw(path, header, data)
    try:
        reader = SafetensorsReader(str(path))
        for name in reader.names():
            tensor = reader.read(name)
            assert tensor.numel() * 1 <= len(data) and tuple(tensor.shape) == reader.shape(name)
            if len(reader.shape(name)) > 1:
                reader.read(name, rows=slice(0, 1))
    except HurefError as error:
        assert "\n" not in str(error)


@FUZZ
@given(vocab=st.dictionaries(st.text(max_size=4), SIZES | st.integers(-3, 400), max_size=6) | JSON,
       added=st.lists(st.dictionaries(st.sampled_from(["id", "content", "special"]), SIZES | st.text(max_size=3)),
                      max_size=3) | JSON,
       decoder=JSON, file=st.sampled_from(["tokenizer.json", "vocab.json"]))
def test_fuzzed_tokenizer_files_load_or_refuse(tmp_path_factory, vocab, added, decoder, file):
    from huref.sources import MAX_VOCAB_ID, load_vocab

    directory = tmp_path_factory.mktemp("tok")
    content = {"model": {"vocab": vocab}, "added_tokens": added, "decoder": decoder} if file == "tokenizer.json" else vocab
    (directory / file).write_text(json.dumps(content))
    try:
        pieces = load_vocab(directory)
    except HurefError as error:
        assert "\n" not in str(error)
        return
    assert pieces is None or (len(pieces) <= MAX_VOCAB_ID and all(p is None or isinstance(p, str) for p in pieces))


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(["latent", "layers", "n_layers", "n_tokens", "layer_choice",
                                                "model_type", "generator", "commitment", "format_version",
                                                "encoder_sha256", "token_strategy"]), JSON, min_size=1, max_size=3),
       scale=st.sampled_from([1.0, 1e30, 1e39, float("inf")]))
def test_fuzzed_fingerprints_load_or_refuse(tmp_path_factory, changes, scale):
    from huref.fingerprint import latent, load_fingerprint
    from huref.inputs import MadeWith

    data = {"format": "huref-fingerprint", "format_version": 1, "latent": [0.5 * scale] * 512, "model": "m",
            "model_type": "llama", "n_layers": 3, "layers": [1, 2], "layer_choice": "given", "token_strategy": "string",
            "n_tokens": 64, "tool_version": "0", "encoder_sha256": "e", "generator": {"name": "bundled", "sha256": "g"},
            "commitment": {"scheme": "s", "sha256": "c"}}
    data.update(changes)
    path = tmp_path_factory.mktemp("fp") / "fp.json"
    path.write_text(json.dumps(data))
    try:
        fp = load_fingerprint(path)
    except HurefError as error:
        assert "\n" not in str(error)
        return
    assert bool(torch.isfinite(latent(fp)).all())
    MadeWith.of(fp["n_tokens"], fp["layers"], fp.get("layer_choice"), fp.get("n_layers")).describe()


GENERATOR_KEYS = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                  "synthesis_kwargs", "mapping_kwargs.num_layers", "mapping_kwargs.lr_multiplier",
                  "synthesis_kwargs.channel_base", "synthesis_kwargs.channel_max", "synthesis_kwargs.conv_clamp",
                  "synthesis_kwargs.resample_filter"]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(GENERATOR_KEYS), SIZES | st.integers(-8, 9000), min_size=1, max_size=3))
def test_fuzzed_generator_kwargs_build_or_refuse(changes):
    from stylegan2 import GeneratorError
    from stylegan2.weights import build_generator

    kwargs = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 8, "img_channels": 3,
              "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 64, "channel_max": 8}}
    for key, value in changes.items():
        *parent, last = key.split(".")
        target = kwargs
        if parent:
            target = kwargs[parent[0]] if isinstance(kwargs[parent[0]], dict) else {}
        target[last] = value
    with pytest.raises(GeneratorError) as error:  # no tensors: at best "missing", never another error
        build_generator(kwargs, {}, "g")
    assert "\n" not in str(error.value)


JSON_TEXT = st.text(alphabet=st.sampled_from('ab[]{}"\\/\n\u00e9\u2028'), max_size=6)
NESTED = st.recursive(st.none() | st.integers(-5, 5) | JSON_TEXT,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_TEXT, inner, max_size=3),
                      max_leaves=30)


def depth_of(value) -> int:
    """Nesting depth of a parsed JSON value, by recursion (the reference)."""
    if isinstance(value, (list, dict)):
        return 1 + max((depth_of(v) for v in (value.values() if isinstance(value, dict) else value)), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(value=NESTED, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_json_nesting_is_found_without_recursion_exactly(value, ascii_only, indent):
    """The bracket scan's depth equals the recursive depth of the parsed value, for strings full of
    brackets, quotes and backslashes, escaped or written as UTF-8; a document over MAX_DEPTH is refused."""
    from huref.readers.jsonfile import MAX_DEPTH, nesting_depth, parse_json

    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert nesting_depth(text.encode()) == depth_of(value)
    assert parse_json(text.encode(), "x") == value
    deep = json.dumps({"a": ["b]\\\"{"] * 2, "c": value}, ensure_ascii=ascii_only)
    wrapped = ("[" * MAX_DEPTH + deep + "]" * MAX_DEPTH).encode()
    with pytest.raises(HurefError, match=f"nested {MAX_DEPTH + 1 + max(1, depth_of(value))} levels deep"):
        parse_json(wrapped, "x")


@settings(max_examples=100, deadline=None)
@given(value=NESTED, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), shared=st.booleans())
def test_every_pickle_pythons_pickler_writes_passes_the_pickle_walk(value, protocol, shared):
    """check_pickle accepts what Python's pickler writes (memo slots numbered as it numbers them,
    shared references included) and leaves the file where it was; a forged memo slot or length is refused."""
    import io

    from stylegan2.checks import check_pickle

    data = pickle.dumps([value, value] if shared else value, protocol=protocol)
    stream = io.BytesIO(b"head" + data)
    stream.seek(4)
    check_pickle(stream)
    assert stream.tell() == 4 and pickle.load(stream) == ([value, value] if shared else value)
    for forged in (forgers.pickle_opcodes(b"}", forgers.long_binput(2)), forgers.pickle_opcodes(forgers.binbytes8(9, b"x"))):
        with pytest.raises(pickle.UnpicklingError):
            check_pickle(io.BytesIO(forged))


@pytest.fixture(scope="module")
def tiny_pickle(tmp_path_factory):
    """A small NVIDIA-layout pickle of a 8x8 generator (its bytes)."""
    directory = tmp_path_factory.mktemp("pkl")
    return forgers.network_pickle(directory / "g.pkl", forgers.small_generator(directory)).read_bytes()


@FUZZ
@given(edits=st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4),
       cut=st.none() | st.floats(0, 1))
def test_fuzzed_network_pickles_load_or_refuse(tiny_pickle, tmp_path_factory, edits, cut):
    from stylegan2 import GeneratorError, load_network

    raw = bytearray(tiny_pickle)
    for where, blob in edits:
        at = int(where * (len(raw) - 1))
        raw[at:at + len(blob)] = blob
    if cut is not None:
        raw = raw[: int(cut * len(raw))]
    path = tmp_path_factory.mktemp("fz") / "g.pkl"
    path.write_bytes(bytes(raw))
    try:
        load_network(path)
    except GeneratorError as error:
        assert "\n" not in str(error)

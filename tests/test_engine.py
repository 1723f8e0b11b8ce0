"""The reader, sources, token selection, invariants files and the CLI's contracts."""

import json
import shutil
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from huref.errors import HurefError
from huref.invariants import default_layer_order, invariant_terms, load_terms, resolve_layers
from huref.readers import bfloat16_to_float32, lineage_reads
from huref.readers.safetensors import SafetensorsReader
from huref.similarity import compare_terms
from huref.sources import load_model
from huref.tokens import select_tokens

from huref_lab import tiny_models


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny_models.build_checkpoint("llama", tmp_path_factory.mktemp("llama"), seed=0)


def test_safetensors_reader_matches_the_reference_loader(tmp_path):
    tensors = {"a": torch.randn(7, 5), "b": torch.randn(3, 4, 6).to(torch.bfloat16), "c": torch.randn(9).half()}
    save_file(tensors, tmp_path / "x.safetensors")
    reference = load_file(tmp_path / "x.safetensors")
    reader = SafetensorsReader(str(tmp_path / "x.safetensors"))
    for name in tensors:
        assert torch.equal(reader.read(name), reference[name].float())
    rows = [5, 0, 3]
    assert torch.equal(reader.read("a", rows=rows), reference["a"][rows])
    assert torch.equal(reader.read("b", rows=slice(2, 9)), reference["b"].reshape(12, 6)[2:9].float())
    assert set(reader.digests) == {"a", "b", "c"}


def test_bfloat16_conversion_is_torchs_for_every_bit_pattern():
    patterns = np.arange(1 << 16, dtype=np.uint16)  # every bfloat16: zeros, subnormals, inf, NaN payloads
    stored = torch.from_numpy(patterns.view(np.int16)).view(torch.bfloat16)
    ours = bfloat16_to_float32(stored)
    reference = stored.float()
    assert torch.equal(ours.view(torch.int32), reference.view(torch.int32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_empty_tensors_read_as_empty(tmp_path, dtype):
    save_file({"rows": torch.zeros(0, 4, dtype=dtype), "cols": torch.zeros(3, 0, dtype=dtype)}, tmp_path / "e.safetensors")
    reader = SafetensorsReader(str(tmp_path / "e.safetensors"))
    assert reader.read("rows").shape == (0, 4) and reader.read("cols").shape == (3, 0)
    assert reader.read("cols", rows=[0, 2]).shape == (2, 0) and reader.read("rows").dtype == torch.float32
    assert reader.read("rows", keep_bfloat16=True).dtype == (torch.bfloat16 if dtype == torch.bfloat16 else torch.float32)


def test_lineage_reads_fold_nothing_keep_bfloat16_blocks_and_resume_after(tmp_path):
    save_file({"a": torch.randn(4, 3), "b": torch.randn(2, 2), "h": torch.randn(5, 3).bfloat16()},
              tmp_path / "x.safetensors")
    stored = load_file(tmp_path / "x.safetensors")
    reader = SafetensorsReader(str(tmp_path / "x.safetensors"))
    reader.prefetch("a")  # a hint only: the read below sees the same bytes
    with lineage_reads(reader):
        read = reader.read("a")
        kept = reader.read("h", rows=slice(1, 4), keep_bfloat16=reader.bfloat16_blocks)
        widened = reader.read("h", rows=slice(1, 4))  # only a caller that asks gets bfloat16
    assert reader.digests == {} and torch.equal(read, stored["a"])
    assert kept.dtype == torch.bfloat16 and torch.equal(kept, stored["h"][1:4])
    assert widened.dtype == torch.float32 and torch.equal(widened, stored["h"][1:4].float())
    reader.read("b")
    assert set(reader.digests) == {"b"} and not reader.bfloat16_blocks


def test_sharded_and_bin_checkpoints_give_the_same_terms(llama, tmp_path):
    state = load_file(llama / "model.safetensors")
    names = sorted(state)
    sharded = tmp_path / "sharded"
    shutil.copytree(llama, sharded)
    (sharded / "model.safetensors").unlink()
    weight_map = {}
    for k, part in enumerate((names[::2], names[1::2])):
        file = f"model-0000{k + 1}-of-00002.safetensors"
        save_file({n: state[n] for n in part}, sharded / file)
        weight_map.update({n: file for n in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    as_bin = tmp_path / "bin"
    shutil.copytree(llama, as_bin)
    (as_bin / "model.safetensors").unlink()
    torch.save(state, as_bin / "pytorch_model.bin")

    reference = invariant_terms(load_model(str(llama)))
    for directory in (sharded, as_bin):
        terms = invariant_terms(load_model(str(directory)))
        assert torch.allclose(terms.values, reference.values, rtol=1e-5, atol=1e-5)
        assert terms.tokens == reference.tokens


def test_token_selection_ignores_ids_and_special_tokens():
    vocab = [f"tok{i}" for i in range(200)]
    ids, keys = select_tokens(vocab, 200, 50)
    perm = np.random.default_rng(0).permutation(200)
    shuffled = [vocab[j] for j in perm]
    ids2, keys2 = select_tokens(shuffled, 200, 50)
    assert keys2 == keys and [shuffled[i] for i in ids2] == [vocab[i] for i in ids]
    extended, keys3 = select_tokens(vocab + [f"new{i}" for i in range(20)], 220, 50)
    assert len(set(keys3) & set(keys)) >= 40
    with_special = [None] + vocab[1:]
    assert "s:tok0" not in select_tokens(with_special, 200, 200)[1]
    assert select_tokens(None, 10, 4)[1][0].startswith("id:")


def test_invariants_file_round_trip_and_compare_with_model(llama, tmp_path, huref_cli):
    out = tmp_path / "inv.safetensors"
    code, _, err = huref_cli("invariants", str(llama), "-o", str(out), "--tokens", "200", "-q")
    assert code == 0 and out.is_file()
    terms = load_terms(out)
    assert terms.values.shape == (2, 3, 200, 200) and terms.layers == [1, 2]
    assert terms.meta["model_type"] == "llama" and len(terms.meta["sha256"]) > 5
    code, out_text, _ = huref_cli("compare", str(out), str(llama), "--json", "-q")
    report = json.loads(out_text)
    assert code == 0 and report["ics"] > 0.9999 and report["pcs"] is None
    assert set(report) >= {"kind", "ics", "term_ics", "layer_ics", "pcs", "verdict", "decided_by", "a", "b"}
    assert report["b"]["n_tokens"] == 200  # the model side followed the file's settings


def test_compare_models_json_contract(llama, tmp_path, huref_cli):
    other = tiny_models.build_checkpoint("llama", tmp_path / "other", seed=3)
    code, out_text, err = huref_cli("compare", str(llama), str(other), "--json", "-q")
    report = json.loads(out_text)
    assert code == 0 and err == ""
    assert abs(report["ics"]) < 0.1 and report["verdict"] == "unrelated"
    assert set(report["term_ics"]) == {"qk", "vo", "ffn"}
    assert [(row["layer_a"], row["layer_b"]) for row in report["layer_ics"]] == list(zip(report["a"]["layers"],
                                                                                          report["b"]["layers"]))
    assert isinstance(report["pcs"], float)


def _truncate(directory):
    path = directory / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_tensor(directory):
    state = load_file(directory / "model.safetensors")
    del state["model.layers.2.mlp.down_proj.weight"]
    save_file(state, directory / "model.safetensors")


def _edit_config(**changes):
    def edit(directory):
        config = json.loads((directory / "config.json").read_text())
        config.update(changes)
        (directory / "config.json").write_text(json.dumps(config))
    return edit


def _nan_weight(directory):
    state = load_file(directory / "model.safetensors")
    state["model.layers.2.self_attn.q_proj.weight"][0, 0] = float("nan")
    save_file(state, directory / "model.safetensors")


def _bad_index(directory):
    (directory / "model.safetensors").rename(directory / "model-00001-of-00001.safetensors")
    (directory / "model.safetensors.index.json").write_text("{not json")


def _garbage_header(directory):
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", 12) + b"not a header" + b"\0" * 64)


@pytest.mark.parametrize("breakage, message", [
    (_truncate, "truncated"),
    (_drop_tensor, "missing"),
    (_edit_config(model_type="nonesuch"), "unsupported model_type 'nonesuch'"),
    (_edit_config(hidden_size=48), "does not match hidden size"),
    (_edit_config(num_key_value_heads=1), "has shape"),
    (_nan_weight, "NaN"),
    (_bad_index, "not valid JSON"),
    (_garbage_header, "malformed"),
])
def test_bad_inputs_give_one_line_and_exit_2(llama, tmp_path, huref_cli, breakage, message):
    broken = tmp_path / "broken"
    shutil.copytree(llama, broken)
    breakage(broken)
    out = tmp_path / "out.safetensors"
    code, stdout, err = huref_cli("invariants", str(broken), "-o", str(out), "-q")
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("out*"))


def test_missing_path_and_bad_arguments(llama, tmp_path, huref_cli):
    code, _, err = huref_cli("compare", str(tmp_path / "nope"), str(llama))
    assert code == 2 and "no such file or directory" in err and err.count("\n") == 1
    code, _, err = huref_cli("invariants", str(llama), "-o", str(tmp_path / "o"), "--layers", "7")
    assert code == 2 and "out of range" in err
    code, _, err = huref_cli("compare", str(llama))
    assert code == 2 and "Missing argument" in err
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    code, _, err = huref_cli("compare", str(garbage), str(llama))
    assert code == 2 and "not a huref invariants file" in err


def test_hub_model_from_the_offline_cache(llama, tmp_path, monkeypatch):
    """A hub id resolves through the Hugging Face cache; offline and not cached is one clear error."""
    hub = tmp_path / "hub"
    snapshot = hub / "models--acme--tiny" / "snapshots" / "0123456789abcdef"
    shutil.copytree(llama, snapshot)
    (hub / "models--acme--tiny" / "refs").mkdir(parents=True)
    (hub / "models--acme--tiny" / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as hub_constants
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    terms = invariant_terms(load_model("acme/tiny"), n_tokens=64)
    reference = invariant_terms(load_model(str(llama)), n_tokens=64)
    assert compare_terms(terms, reference)["ics"] > 0.99999
    with pytest.raises(HurefError, match="not in the local Hugging Face cache"):
        load_model("acme/absent")


def test_default_layers_are_the_two_middle_attention_layers():
    """The rule of docs/RESULTS.md "Which layers": the middle pair (the deeper one on an odd count),
    then outwards, counted over the attention layers a hybrid has."""
    first_two = lambda attention: sorted(default_layer_order(attention)[:2])
    assert [first_two(list(range(n))) for n in (2, 3, 4, 6, 30)] == [[0, 1], [1, 2], [1, 2], [2, 3], [14, 15]]
    assert first_two([3, 7, 11, 15, 19]) == [11, 15] and default_layer_order([0, 1, 2, 3]) == [2, 1, 3, 0]
    assert resolve_layers(30, None) == [14, 15] and resolve_layers(30, [-2, -1]) == [28, 29]


def test_appended_identity_layers_are_skipped(llama, tmp_path):
    """Two layers whose attention and FFN write nothing leave the model's function unchanged; the
    default layer choice must skip them rather than fingerprint them."""
    from transformers import AutoModelForCausalLM

    state = load_file(llama / "model.safetensors")
    config = json.loads((llama / "config.json").read_text())
    n = config["num_hidden_layers"]
    generator = torch.Generator().manual_seed(5)
    for extra in (n, n + 1):
        for name, tensor in list(state.items()):
            if name.startswith(f"model.layers.{n - 1}."):
                new = name.replace(f"layers.{n - 1}.", f"layers.{extra}.")
                noise = torch.randn(tensor.shape, generator=generator)
                zero = name.endswith(("o_proj.weight", "down_proj.weight"))
                state[new] = torch.zeros_like(tensor) if zero else noise
    config["num_hidden_layers"] = n + 2
    padded = tmp_path / "padded"
    shutil.copytree(llama, padded)
    save_file(state, padded / "model.safetensors")
    (padded / "config.json").write_text(json.dumps(config))

    ids = tiny_models.sample_ids()
    before = AutoModelForCausalLM.from_pretrained(llama).eval()(ids).logits
    after = AutoModelForCausalLM.from_pretrained(padded).eval()(ids).logits
    assert torch.allclose(before, after, atol=1e-4)

    original = invariant_terms(load_model(str(llama)))
    terms = invariant_terms(load_model(str(padded)))
    # the middle of n + 2 = 5 layers is 2, 3; layer 3 = n writes nothing and is passed over for layer 1
    assert terms.layers == original.layers == [n - 2, n - 1] and terms.meta["skipped_inert_layers"] == [n]
    assert compare_terms(original, terms)["ics"] > 0.999

"""The read path: one pass per weight block.

Hashing runs on a background thread, so its digests are checked against the SHA-256 chain computed
serially here; decoders that write float32 or bfloat16 directly (float8 through a byte-pair table,
GGML blocks in torch) are checked against the reference decoders (torch's float8 conversion,
gguf-py's `dequantize`) bit for bit; blocks are checked finite through their products, so a NaN or
an infinity planted in every kind of matrix, under every precision, must still be refused by name.
"""

import hashlib
import multiprocessing
import shutil

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import huref.readers as readers
from huref.errors import HurefError
from huref.invariants import invariant_terms, resolve_layers
from huref.readers.ggml_blocks import dequantize
from huref.readers.quant.fp8 import float8_to_bfloat16
from huref.readers.safetensors import SafetensorsReader
from huref.lineage import term_maps
from huref.sources import load_model

N_TOKENS = 48


def serial_chain(raws: list[bytes]) -> str:
    digest = ""
    for raw in raws:
        digest = hashlib.sha256(digest.encode() + raw).hexdigest()
    return digest


@pytest.mark.parametrize("backlog", [1, readers.HASH_BACKLOG_BYTES])
def test_background_digests_are_the_serial_sha256_chain(tmp_path, monkeypatch, backlog):
    monkeypatch.setattr(readers, "HASH_BACKLOG_BYTES", backlog)  # 1: every read waits for its hash
    stored = {"a": torch.randn(64, 32), "b": torch.randn(16, 8).bfloat16()}
    save_file(stored, tmp_path / "x.safetensors")
    reader = SafetensorsReader(str(tmp_path / "x.safetensors"))
    pieces = [slice(0, 10), slice(10, 40), [63, 1, 2], slice(40, 64)]
    for rows in pieces:
        reader.read("a", rows=rows)
    reader.read("b", dtype=torch.bfloat16)
    a = stored["a"].numpy()
    expected_a = serial_chain([a[rows].tobytes() for rows in pieces])
    expected_b = serial_chain([stored["b"].view(torch.int16).numpy().tobytes()])
    assert reader.digests == {"a": expected_a, "b": expected_b}


def _digest_in_child(path, queue):
    queue.put(SafetensorsReader(path).read("a") is not None and SafetensorsReader(path).digests)


def test_a_forked_child_hashes_on_its_own_thread(tmp_path):
    save_file({"a": torch.randn(8, 4)}, tmp_path / "x.safetensors")
    SafetensorsReader(str(tmp_path / "x.safetensors")).read("a")  # the parent's hashing thread exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_digest_in_child, args=(str(tmp_path / "x.safetensors"), queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and queue.get(timeout=5) == {}  # a fresh reader has read nothing


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_widening_is_torchs_for_every_byte_pair(dtype):
    pairs = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.uint8).view(dtype)  # every pair
    ours, reference = float8_to_bfloat16(pairs), pairs.to(torch.bfloat16)
    assert torch.equal(torch.isnan(ours), torch.isnan(reference))
    finite = ~torch.isnan(reference)
    assert torch.equal(ours[finite].view(torch.int16), reference[finite].view(torch.int16))


def test_fp8_reads_in_bfloat16_are_the_float32_reads_rounded_once(tmp_path):
    from huref.readers.quant import dequantizing

    scale = torch.rand(2, 3) * 1e-3 + 1e-4                                    # [row blocks, column blocks]
    codes = (torch.randn(256, 384) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)  # [out, in]
    save_file({"l.weight": codes, "l.weight_scale_inv": scale}, tmp_path / "q.safetensors")
    config = {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
    reader = dequantizing(SafetensorsReader(str(tmp_path / "q.safetensors")), config)
    wide = reader.read("l.weight")
    narrow = reader.read("l.weight", rows=slice(100, 250), dtype=torch.bfloat16)
    reference = codes.float().reshape(2, 128, 3, 128) * scale[:, None, :, None]  # [2, 128, 3, 128]
    assert torch.equal(wide, reference.reshape(256, 384))
    assert narrow.dtype == torch.bfloat16 and torch.equal(narrow, wide[100:250].bfloat16())


def random_blocks(qtype: str, n_rows: int = 24, seed: int = 0) -> np.ndarray:
    """Rows of random GGML blocks whose float16 fields are finite (every byte masked with 0x3B)."""
    quant = gguf.GGMLQuantizationType[qtype]
    shape = gguf.quants.quant_shape_to_byte_shape((n_rows, 1024), quant)
    return (np.random.default_rng(seed).integers(0, 256, shape) & 0x3B).astype(np.uint8)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q6_K", "Q4_0", "Q5_K", "BF16"])
def test_ggml_blocks_decode_as_gguf_py_does_bit_for_bit(qtype):
    raw = random_blocks(qtype)
    quant = gguf.GGMLQuantizationType[qtype]
    reference = torch.from_numpy(gguf.quants.dequantize(raw, quant).astype(np.float32))
    assert torch.isfinite(reference).all() and reference.std() > 0
    threads = torch.get_num_threads()
    ours = dequantize(raw, quant)
    assert torch.get_num_threads() == threads  # decoded on one thread, the count restored
    assert torch.equal(ours.float().view(torch.int32), reference.view(torch.int32))
    narrow = dequantize(raw, quant, torch.bfloat16)
    assert torch.equal(narrow.view(torch.int16), reference.bfloat16().view(torch.int16))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q6_K"])
def test_a_non_finite_block_scale_decodes_non_finite(qtype):
    raw = random_blocks(qtype, n_rows=2)
    at = 208 if qtype == "Q6_K" else 0  # the float16 d of the first block
    raw[0, at : at + 2] = np.frombuffer(np.float16(np.inf).tobytes(), dtype=np.uint8)
    values = dequantize(raw, gguf.GGMLQuantizationType[qtype], torch.bfloat16)
    assert not torch.isfinite(values[0]).all() and torch.isfinite(values[1]).all()


def planted_copy(source, directory, name: str, value: float, dtype: torch.dtype):
    """A copy of a checkpoint stored in `dtype` with one entry of tensor `name` set to `value`."""
    shutil.copytree(source, directory)
    weights = {k: v.to(dtype) for k, v in load_file(source / "model.safetensors").items()}
    weights[name].view(-1)[weights[name].numel() // 3] = value
    save_file(weights, directory / "model.safetensors")
    return load_model(str(directory))


MATRICES = {
    "llama": [f"model.layers.{{i}}.{m}.weight" for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                       "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                       "mlp.down_proj")],
    "mixtral": [f"model.layers.{{i}}.block_sparse_moe.experts.2.{m}.weight" for m in ("w1", "w2", "w3")],
    "gpt_oss": ["model.layers.{i}.mlp.experts.gate_up_proj", "model.layers.{i}.mlp.experts.down_proj"],
    "deepseek_v3": [f"model.layers.{{i}}.self_attn.{m}.weight" for m in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa",
                                                                         "kv_b_proj", "o_proj")],
    "gpt2": ["transformer.h.{i}.attn.c_attn.weight", "transformer.h.{i}.mlp.c_proj.weight"],
}


@pytest.mark.parametrize("precision", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("arch", list(MATRICES))
def test_a_non_finite_weight_in_any_matrix_is_refused_by_name(tiny_zoo, tmp_path, arch, precision):
    """Dense, per-expert, fused 3-D (transposed) experts, MLA and Conv1D matrices, stored in float32
    and bfloat16 in turn, a NaN and an infinity in turn."""
    source = tiny_zoo(arch)
    n_layers = len({k.split(".")[2] for k in load_file(source / "model.safetensors") if ".layers." in k or ".h." in k})
    layer = resolve_layers(n_layers, None)[0]
    for k, template in enumerate(MATRICES[arch]):
        name = template.format(i=layer)
        value, stored = (float("nan"), float("inf"))[k % 2], (torch.float32, torch.bfloat16)[k // 2 % 2]
        model = planted_copy(source, tmp_path / str(k), name, value, stored)
        with pytest.raises(HurefError, match=f"tensor '{name}' holds NaN or infinite values"):
            invariant_terms(model, n_tokens=N_TOKENS, dtype=precision)


def test_a_nan_in_a_layer_that_writes_nothing_is_still_refused(tiny_zoo, tmp_path):
    """The default rule passes over layers whose writes vanish; their terms are checked finite first."""
    source = tiny_zoo("llama")
    shutil.copytree(source, tmp_path / "m")
    weights = load_file(source / "model.safetensors")
    first = resolve_layers(4, None)[1]  # the rule's first candidate (the deeper middle layer)
    for part in ("self_attn.o_proj", "mlp.down_proj"):
        weights[f"model.layers.{first}.{part}.weight"].zero_()
    save_file(weights, tmp_path / "m" / "model.safetensors")
    terms = invariant_terms(load_model(str(tmp_path / "m")), n_tokens=N_TOKENS)
    assert first not in terms.layers and terms.meta["skipped_inert_layers"] == [first]
    weights[f"model.layers.{first}.self_attn.q_proj.weight"][0, 0] = float("nan")
    save_file(weights, tmp_path / "m" / "model.safetensors")
    with pytest.raises(HurefError, match="q_proj.weight' holds NaN"):
        invariant_terms(load_model(str(tmp_path / "m")), n_tokens=N_TOKENS)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "mixtral", "deepseek_v3", "gpt2"])
def test_bfloat16_precision_multiplies_in_bfloat16_and_keeps_the_terms(tiny_zoo, monkeypatch, arch):
    """--precision bfloat16: every weight block reaches its product in bfloat16 (stored float32 here),
    and the terms keep a centred cosine above 0.9999 to the float32 ones, term by term."""
    import huref.invariants as invariants

    model = load_model(str(tiny_zoo(arch)))
    wide = invariant_terms(model, n_tokens=N_TOKENS)
    seen = []
    real = invariants.times_t
    monkeypatch.setattr(invariants, "times_t", lambda rows, block: seen.append(block.dtype) or real(rows, block))
    narrow = invariant_terms(model, n_tokens=N_TOKENS, dtype=torch.bfloat16)
    if arch != "gpt2":  # Conv1D's transposed blocks are gathered from the stored [in, out] rows, then multiplied
        assert seen and set(seen) == {torch.bfloat16}
    assert narrow.meta["dtype"] == "bfloat16" and narrow.values.dtype == torch.float32
    assert not torch.equal(narrow.values, wide.values)
    cells = term_maps(wide, narrow)  # [3, L, L]: cosine of the centred terms
    assert float(cells.diagonal(dim1=1, dim2=2).min()) > 0.9999

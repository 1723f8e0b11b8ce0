"""The benchmark's synthetic checkpoints are what they claim (huref reads each format with the
layout named), and docs/PERFORMANCE.md is computed from the results files: ratios and verdicts on
the targets come from the recorded figures."""

import json

import pytest
import torch

import huref_lab.bench.build as build
from huref.invariants import invariant_terms
from huref.sources import load_model
from huref_lab.bench import measure, report

MACHINE = {"cpu": "CPU", "cores": 2, "ram_gb": 23.5, "bf16_instructions": True, "torch": "2", "torch_threads": 2,
           "python": "3", "gpu": None}
TINY = dict(layers=8, hidden=256, ffn=512, heads=4, kv_heads=2, partial=False)


@pytest.fixture()
def tiny_shapes(monkeypatch):
    monkeypatch.setitem(build.SHAPES, "7b", TINY)
    monkeypatch.setattr(build, "VOCAB", 600)


@pytest.mark.parametrize("form", ["bf16", "fp8", "q8_0", "q4_k_m"])
def test_every_storage_format_reads_as_its_layout_says(tiny_shapes, tmp_path, form):
    path = measure.checkpoint(tmp_path, form)
    model = load_model(str(path))
    terms = invariant_terms(model, n_tokens=32, dtype=torch.bfloat16)
    assert terms.values.shape == (2, 3, 32, 32) and torch.isfinite(terms.values).all()
    assert measure.stored_bytes(path, None, 32) < measure.stored_bytes(path, None, 64)
    if form == "fp8":
        assert model.config["quantization_config"]["weight_block_size"] == [128, 128]
    if form.startswith("q"):
        types = {name: model.reader.quant_type(name) for name in model.reader.names()}
        if form == "q8_0":
            assert types["model.layers.3.mlp.down_proj.weight"] == "Q8_0"
        else:  # llama.cpp's Q4_K_M: Q6_K for attn_v and ffn_down of the first and last eighth and every third
            more = [i for i in range(TINY["layers"]) if build.more_bits(i, TINY["layers"])]
            assert more == [0, 3, 6, 7]
            for i in range(TINY["layers"]):
                expected = "Q6_K" if i in more else "Q4_K"
                assert types[f"model.layers.{i}.self_attn.v_proj.weight"] == expected
                assert types[f"model.layers.{i}.mlp.down_proj.weight"] == expected
                assert types[f"model.layers.{i}.self_attn.q_proj.weight"] == "Q4_K"


def test_deepseek_v3_checkpoint_holds_only_the_fingerprints_shards(tmp_path, monkeypatch):
    """61 layers as released; the widths shrunk so the two written layers take a few MB."""
    for key, value in dict(hidden=256, heads=4, q_rank=64, kv_rank=32, nope=16, rope=8, v=16, expert=64,
                           dense_ffn=128, vocab=600).items():
        monkeypatch.setitem(build.DEEPSEEK_V3, key, value)
    path = build.build_deepseek(tmp_path, experts=2)
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    written = {p.name for p in path.glob("*.safetensors")}
    read = {f for name, f in index.items() if name.startswith(("model.layers.30.", "model.layers.31.", "model.embed"))}
    assert written == read and len(set(index.values())) > len(written)
    assert all(".layers.30." in n or ".layers.31." in n or "embed" in n for n, f in index.items() if f in written)
    model = load_model(str(path))
    assert model.dims.n_layers == 61 and model.dims.n_experts == 2
    assert model.reader.has("model.layers.30.mlp.experts.1.down_proj.weight")
    terms = invariant_terms(model, n_tokens=32, dtype=torch.bfloat16)
    assert terms.layers == [30, 31] and torch.isfinite(terms.values).all()


def test_the_report_computes_ratios_and_targets_from_the_results(tmp_path):
    base = {"rc": 0, "peak_rss_mb": 1024, "load_before": 1.0, "load_after": 1.5, "utc": "now", "commit": "abc"}
    runs = [{**base, "format": "bf16", "run": "lineage", "precision": "float32", "arithmetic": "bfloat16",
             "bytes_read": 11e9, "page_cache_gbps": 5.5, "matmul_floor_s": 3.0, "wall_s": 12.5},   # 12.5 / 5 = 2.5x
            {**base, "format": "q8_0", "run": "lineage", "precision": "float32", "arithmetic": "float32",
             "bytes_read": 5.5e9, "page_cache_gbps": 5.5, "matmul_floor_s": 4.0, "wall_s": 9.0}]   # 9 / 5 = 1.8x
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "read_bound.json").write_text(json.dumps({"machine": MACHINE, "runs": runs}))
    text = report.report(tmp_path)
    assert "| bf16 | lineage | float32 | bfloat16 | 11.00 GB | 5.50 GB/s | 2.0 s | 3.0 s | 12.5 s | 0.88 GB/s | 2.50x |" in text
    assert "| read-bound: bf16, lineage (--precision float32: bfloat16 products) | 2.50x of read + floor (12.5 s) | no | 1.0-1.5 |" in text
    assert "| read-bound: q8_0, lineage (--precision float32: float32 products) | 1.80x of read + floor (9.0 s) | yes | 1.0-1.5 |" in text
    assert "1 of 2 targets hold" in text and "## DeepSeek" not in text  # no results, no section


def test_the_deepseek_row_at_256_experts_is_extrapolated_from_two_counts_and_says_so(tmp_path):
    base = {"rc": 0, "tool": "fingerprint", "tokens": 4096, "precision": "bfloat16", "bytes_read": 3e9,
            "load_before": 1.0, "load_after": 1.2, "utc": "now", "commit": "abc"}
    runs = [{**base, "experts": 8, "flops": 10e12, "wall_s": 40.0, "matmul_floor_s": 30.0, "peak_rss_mb": 2048},
            {**base, "experts": 16, "flops": 18e12, "wall_s": 60.0, "matmul_floor_s": 45.0, "peak_rss_mb": 2048 + 8 * 64}]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "deepseek.json").write_text(json.dumps({"machine": MACHINE, "runs": runs}))
    text = report.report(tmp_path)
    # flops 10 + 1 * 248 = 258 TFLOP at the 16-expert run's 0.4 TFLOP/s: floor 645 s, times its 60 / 45: 860 s;
    # peak 2048 + 64 MB * 248 = 17920 MB
    assert "| 256 (extrapolated from 8 and 16) | huref fingerprint | 4096 | bfloat16 | | 860 s | 17.50 GiB | 645 s | 1.33x |" in text
    assert "860 s extrapolated from 8 and 16 experts (not measured at 256), 17.50 GiB | no |" in text


def test_an_architecture_that_cannot_be_built_is_recorded_not_fatal():
    from huref_lab.bench import accuracy

    failed = []
    pairs = list(accuracy.attack_pairs(["no_such_architecture"], failed))
    assert pairs == [] and failed[0]["pair"] == "no_such_architecture: build" and failed[0]["error"]
    assert accuracy.summary([], failed)["failed"] == failed

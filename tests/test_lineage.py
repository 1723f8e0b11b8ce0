"""Lineage engine: whole-depth layer maps, their alignment, the calibrated statistic and the map image.

Depth changes are built from a tiny llama checkpoint by restacking its layers (a dropped middle
layer, a duplicated one) and hiding them behind a function-preserving rewrite; the alignment must
name the layers they came from. Independent initialisations must come out unrelated, p-values
must lie in [0, 1] and fall as the statistic grows.
"""

import json
import math
import re
import shutil

import pytest
import torch

from huref.errors import HurefError
from huref.readers import lineage_reads
from huref.lineage import (align_layers, cross_depth_terms, depth_layers, layer_map, lineage, lineage_image,
                           lineage_statistic, term_maps, verdict_stride, whole_depth_terms)
from huref.similarity import compare_terms
from huref.sources import load_model
from huref.statistics import (ALPHA_SAME_BASE, ICS_PANEL_FILE, LATENT_PANEL_FILE, NULL_PANEL_FILE, null_panel,
                              panel_summary, statistic_at, student_t_sf, verdict_from_statistic)
from huref_lab import attacks

N_TOKENS = 96


def terms_of(directory):
    return whole_depth_terms(load_model(str(directory)), n_tokens=N_TOKENS)


def restacked(source, target, plan: list[int], attack: str | None = None):
    """The checkpoint in `source` with its layers replaced by source layers `plan` (in order), optionally
    followed by a function-preserving `attack`; written to `target`."""
    checkpoint = attacks.read_checkpoint(source)
    pattern = re.compile(r"^model\.layers\.(\d+)\.(.*)$")
    kept = {k: v for k, v in checkpoint.tensors.items() if not pattern.match(k)}
    for new, old in enumerate(plan):
        for name, tensor in checkpoint.tensors.items():
            match = pattern.match(name)
            if match and int(match.group(1)) == old:
                kept[f"model.layers.{new}.{match.group(2)}"] = tensor.clone()
    checkpoint.tensors = kept
    checkpoint.config = dict(checkpoint.config, num_hidden_layers=len(plan))
    attacks.write_checkpoint(checkpoint, target)
    if attack:
        attacks.attack_directory(target, target, attack, seed=3)
    return target


@pytest.fixture(scope="module")
def llama(tiny_zoo):
    return tiny_zoo("llama")


@pytest.fixture(scope="module")
def llama_terms(llama):
    return terms_of(llama)


def test_whole_depth_terms_cover_every_layer_and_match_the_two_layer_engine(llama, llama_terms, tmp_path):
    assert llama_terms.layers == [0, 1, 2]
    assert llama_terms.values.shape == (3, 3, N_TOKENS, N_TOKENS)
    strided = whole_depth_terms(load_model(str(llama)), n_tokens=N_TOKENS, stride=2)
    assert strided.layers == [0, 2]
    assert torch.allclose(strided.values, llama_terms.values[[0, 2]])
    # the map's cells are the per-layer ICS of the two-layer engine
    other = terms_of(restacked(llama, tmp_path / "rotated", [0, 1, 2], "rotation"))
    cells = layer_map(llama_terms, other)
    engine = compare_terms(llama_terms, other)["layers"]
    assert torch.allclose(cells.diagonal(), torch.tensor(engine, dtype=torch.float64), atol=1e-5)


def test_the_verdict_reads_a_bounded_even_sample_of_layers(llama):
    model = load_model(str(llama))  # 3 layers
    assert verdict_stride(model) == 1  # shallow models: every layer, as the null panel was built
    assert verdict_stride(model, max_layers=2) == 2 and depth_layers(model, verdict_stride(model, 2)) == (0, 2)
    assert verdict_stride(model, max_layers=1) == 3 and depth_layers(model, 3) == (0,)


@pytest.mark.parametrize("name", ["llama", "qwen3", "gemma2", "mixtral", "deepseek_v3", "gpt2"])
def test_lineage_reads_multiply_bfloat16_weights_as_stored(tiny_zoo, tmp_path, name):
    """Whole-depth terms of a bfloat16 checkpoint under lineage_reads (its matrix blocks multiplied in
    bfloat16, as `huref lineage` and compare's verdict read them) are the float32 ones up to the
    rounding of the probe rows: grouped query heads, QK norms, experts, MLA and Conv1D included."""
    from safetensors.torch import load_file, save_file

    source = tiny_zoo(name)
    shutil.copytree(source, tmp_path / name)
    weights = load_file(source / "model.safetensors")
    save_file({k: v.bfloat16() for k, v in weights.items()}, tmp_path / name / "model.safetensors")
    model = load_model(str(tmp_path / name))
    widened = whole_depth_terms(model, n_tokens=N_TOKENS)
    with lineage_reads(model.reader):
        narrow = whole_depth_terms(model, n_tokens=N_TOKENS)
    assert not model.reader.bfloat16_blocks
    # the bfloat16 matmuls ran; Conv1D's transposed blocks are widened when read: the same float32 terms
    assert torch.equal(narrow.values, widened.values) == (name == "gpt2")
    cells = term_maps(widened, narrow)  # [3, L, L]: cosine of the centred terms
    assert float(cells.diagonal(dim1=1, dim2=2).min()) > 0.9999


def test_function_preserving_rewrites_give_the_identity_alignment(llama, llama_terms, tmp_path):
    every = "+".join(a for a in attacks.valid_attacks(attacks.layout_of(json.loads((llama / "config.json").read_text())))
                     if a != "append_vocabulary")
    attacked = terms_of(restacked(llama, tmp_path / "attacked", [0, 1, 2], every))
    result = lineage(llama_terms, attacked)
    assert result["alignment"] == [[0, 0], [1, 1], [2, 2]]
    assert min(result["map"][i][i] for i in range(3)) > 0.999
    assert result["verdict"] == "same-base" and result["p_value"] < 1e-4


@pytest.mark.parametrize("plan, expected", [
    ([0, 2], [(0, 0), (2, 1)]),  # middle layer dropped
    ([0, 1, 1, 2], [(0, 0), (1, 1), (1, 2), (2, 3)]),  # middle layer duplicated
    ([0, 1, 2, 1, 2], [(0, 0), (1, 1), (2, 2), (1, 3), (2, 4)]),  # a block repeated (SOLAR-style)
])
def test_depth_changes_are_traced_to_their_layers(llama, llama_terms, tmp_path, plan, expected):
    changed = terms_of(restacked(llama, tmp_path / "changed", plan, "rotation+head_permutation"))
    assert len(changed.layers) == len(plan)
    similarity = layer_map(llama_terms, changed)
    assert similarity.shape == (3, len(plan))
    assert align_layers(similarity) == expected
    assert lineage(llama_terms, changed)["verdict"] == "same-base"


def frankenmerge(host, donor, target):
    """`host`'s checkpoint with layer 1 replaced by `donor`'s (pasted as is), written to `target`."""
    checkpoint = attacks.read_checkpoint(host)
    pasted = attacks.read_checkpoint(donor)
    for name in list(checkpoint.tensors):
        if name.startswith("model.layers.1."):
            checkpoint.tensors[name] = pasted.tensors[name]
    attacks.write_checkpoint(checkpoint, target)
    return target


def test_foreign_layers_are_traced_to_nothing(tiny_zoo, llama, llama_terms, tmp_path):
    # layers 0 and 2 from the model, layer 1 from an independently initialised one (same vocabulary)
    franken = frankenmerge(llama, tiny_zoo("llama", seed=5), tmp_path / "franken")
    assert align_layers(layer_map(llama_terms, terms_of(franken))) == [(0, 0), (None, 1), (2, 2)]


def test_cross_terms_trace_a_pasted_layer_to_its_donor_until_the_merge_is_rotated(tiny_zoo, llama, tmp_path):
    donor_dir = tiny_zoo("llama", seed=5)
    franken = frankenmerge(llama, donor_dir, tmp_path / "franken")
    donor = load_model(str(donor_dir))
    cross = cross_depth_terms(donor, load_model(str(franken)), n_tokens=N_TOKENS)
    assert cross.meta["rows_from"] == load_model(str(franken)).label
    similarity = layer_map(cross, terms_of(franken))  # [donor's layers, the merge's layers]
    assert similarity[1, 1] > 0.999  # the pasted layer computes, in the merge, the donor's layer on the merge's rows
    assert align_layers(similarity) == [(None, 0), (1, 1), (None, 2)]
    # a rotation of the whole merge moves its embedding rows but not the donor's layers: the clue is gone
    attacks.attack_directory(franken, tmp_path / "rotated", "rotation", seed=3)
    rotated = load_model(str(tmp_path / "rotated"))
    assert layer_map(cross_depth_terms(donor, rotated, n_tokens=N_TOKENS), terms_of(tmp_path / "rotated"))[1, 1] < 0.5


def test_independent_initialisations_are_unrelated(tiny_zoo, llama_terms):
    for seed in (1, 2):
        result = lineage(llama_terms, terms_of(tiny_zoo("llama", seed=seed)))
        assert result["verdict"] == "unrelated", result
        assert abs(result["statistic"]) < 0.1


def test_models_of_other_depth_and_width_compare(tiny_zoo, llama_terms):
    other = terms_of(tiny_zoo("gpt2"))  # another family: terms are n×n, so any width and depth compare
    maps = term_maps(llama_terms, other)
    assert maps.shape == (3, 3, len(other.layers))
    assert maps.abs().max() <= 1.0


def test_statistic_is_the_aligned_mean_minus_the_off_path_mean():
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.0, 0.3, 0.05]], dtype=torch.float64)
    path = [(0, 0), (1, 1), (None, 2)]
    off = [0.1, 0.0, 0.2, 0.1, 0.0, 0.3, 0.05]
    assert lineage_statistic(similarity, path) == pytest.approx((0.9 + 0.7) / 3 - sum(off) / len(off))


def test_p_values_lie_in_the_unit_interval_and_fall_as_the_statistic_grows():
    panel = panel_summary([0.01, 0.03, -0.02, 0.05, 0.0, 0.02])
    results = [verdict_from_statistic(s, panel) for s in torch.linspace(-0.5, 1.0, 61).tolist()]
    p_values = [r["p_value"] for r in results]
    assert all(0.0 <= p <= 1.0 for p in p_values)
    assert all(later <= earlier for earlier, later in zip(p_values, p_values[1:]))
    assert results[0]["verdict"] == "unrelated" and results[-1]["verdict"] == "same-base"
    assert {r["verdict"] for r in results} == {"unrelated", "inconclusive", "same-base"}
    assert all(r["fpr"] == results[0]["fpr"] for r in results)
    assert verdict_from_statistic(panel["mean"], panel)["p_value"] == pytest.approx(0.5)


@pytest.mark.parametrize("t, df", [(0.7, 3), (2.5, 8), (-1.2, 5), (4.0, 20)])
def test_student_t_tail_matches_numerical_integration(t, df):
    x = torch.linspace(t, t + 400.0, 2_000_001, dtype=torch.float64)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = torch.exp(log_c - (df + 1) / 2 * torch.log1p(x * x / df))
    assert student_t_sf(t, df) == pytest.approx(float(torch.trapezoid(density, x)), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("path", [NULL_PANEL_FILE, LATENT_PANEL_FILE, ICS_PANEL_FILE])
def test_the_shipped_null_panels_are_usable_and_bad_panels_are_refused(tmp_path, path):
    panel = null_panel(path)
    assert panel["n"] >= 10 and panel["std"] > 0
    assert verdict_from_statistic(panel["mean"], panel)["verdict"] == "unrelated"
    # the cutoff is where the same-base rule starts: p crosses ALPHA_SAME_BASE there
    cutoff = statistic_at(panel)
    assert verdict_from_statistic(cutoff, panel)["verdict"] == "same-base"
    assert verdict_from_statistic(cutoff - 1e-9 * panel["std"] - 1e-12, panel)["p_value"] > ALPHA_SAME_BASE
    assert panel["mean"] + 3 * panel["std"] < cutoff < panel["mean"] + 6 * panel["std"]
    bad = tmp_path / "panel.json"
    bad.write_text(json.dumps({"mean": 0.0, "std": 0.0, "n": 5}))
    with pytest.raises(HurefError, match="not a null panel"):
        null_panel(bad)
    bad.write_text("{")
    with pytest.raises(HurefError, match="cannot read"):
        null_panel(bad)


def test_lineage_image_renders_the_map_and_marks_the_path():
    similarity = torch.eye(4, 5, dtype=torch.float64)
    path = [(0, 0), (1, 1), (2, 2), (3, 3), (None, 4)]
    image = lineage_image(similarity, path, ("base", "derived"))
    assert image.mode == "RGB" and image.width > 5 * 6 and image.height > 4 * 6
    pixels = image.load()
    reds = sum(1 for x in range(image.width) for y in range(image.height) if pixels[x, y] == (230, 30, 30))
    greys = sum(1 for x in range(image.width) for y in range(image.height) if pixels[x, y] == (150, 150, 150))
    assert reds > 0 and greys > 0


def test_lineage_command_and_calibrated_compare(tiny_zoo, tmp_path, huref_cli):
    """`huref lineage` maps a model with a dropped middle layer onto its base (JSON, text, heatmap),
    and `compare` of two models takes its verdict from the same calibrated statistic."""
    llama = tiny_zoo("llama")
    pruned = restacked(llama, tmp_path / "pruned", [0, 2])
    image = tmp_path / "map.png"
    code, out, err = huref_cli("lineage", str(llama), str(pruned), "--json", "-o", str(image), "-q")
    assert code == 0, err
    found = json.loads(out)
    assert [pair for pair in found["alignment"]] == [[0, 0], [2, 1]]
    assert found["verdict"] == "same-base" and found["p_value"] < 1e-4 and found["fpr"] == 1e-4
    from PIL import Image

    assert Image.open(image).format == "PNG"
    code, text, _ = huref_cli("lineage", str(llama), str(tiny_zoo("llama", seed=1)), "-q")
    assert code == 0 and "verdict: unrelated" in text
    code, out, _ = huref_cli("compare", str(llama), str(pruned), "--json", "-q")
    report = json.loads(out)
    assert code == 0 and report["lineage"]["verdict"] == report["verdict"] == "same-base"
    code, out, _ = huref_cli("compare", str(llama), str(pruned), "--json", "-q", "--verdict", "ics")
    report = json.loads(out)
    assert code == 0 and "lineage" not in report and report["verdict"] == report["ics_judgement"]["verdict"]
    code, _, err = huref_cli("lineage", str(llama), str(image), "-q")
    assert code == 2 and err.count("\n") == 1


def test_the_ics_verdict_is_calibrated_on_the_default_layers_only(tiny_zoo, tmp_path, huref_cli):
    """compare --verdict ics judges default-layer terms against the ICS null panel (z, p-value) and
    terms of given layers by the fixed thresholds; an offspring is same-base, a stranger unrelated."""
    from huref.similarity import verdict

    llama, panel = tiny_zoo("llama"), null_panel(ICS_PANEL_FILE)
    offspring = attacks.attack_directory(llama, tmp_path / "rotated", "rotation", seed=5)
    for other, expected in ((offspring, "same-base"), (tiny_zoo("llama", seed=1), "unrelated")):
        code, out, _ = huref_cli("compare", str(llama), str(other), "--json", "-q", "--verdict", "ics")
        report = json.loads(out)
        judged = report["ics_judgement"]
        assert code == 0 and judged["decided_by"] == "ics panel" and report["verdict"] == expected
        assert judged["z"] == pytest.approx((report["ics"] - panel["mean"]) / panel["std"])
        assert judged["verdict"] == verdict_from_statistic(report["ics"], panel)["verdict"]
        code, out, _ = huref_cli("compare", str(llama), str(other), "--json", "-q", "--verdict", "ics", "--layers", "-2,-1")
        report = json.loads(out)
        assert report["ics_judgement"]["decided_by"] == "thresholds" and "z" not in report["ics_judgement"]
        assert report["verdict"] == verdict(report["ics"]) == expected


def test_verify_decides_model_bases_by_the_calibrated_verdict(tiny_zoo, tmp_path, huref_cli):
    """verify against model bases follows the lineage verdict (a depth-pruned offspring derives from its
    base, an independent model does not); an explicit --min-ics returns to the ICS threshold."""
    llama = tiny_zoo("llama")
    pruned = restacked(llama, tmp_path / "pruned", [0, 2])
    code, out, _ = huref_cli("verify", str(pruned), "--base", str(tiny_zoo("llama", seed=1)), "--base", str(llama),
                             "--json", "-q")
    result = json.loads(out)
    assert code == 0 and result["best"]["base"] == str(llama) and result["best"]["decided_by"] == "lineage"
    assert [m["derives"] for m in result["matches"]] == [True, False]
    code, out, _ = huref_cli("verify", str(tiny_zoo("llama", seed=1)), "--base", str(llama), "--json", "-q")
    assert code == 1 and json.loads(out)["best"]["detail"]["lineage"]["verdict"] == "unrelated"
    code, out, _ = huref_cli("verify", str(pruned), "--base", str(llama), "--min-ics", "1.01", "--json", "-q")
    assert code == 1 and json.loads(out)["best"]["decided_by"] == "threshold"

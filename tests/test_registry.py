"""The registry: its Parquet format (round trip, DuckDB, concurrent and interrupted adds, refusals),
`identify` on derived tiny models, `audit` of declared bases, `registry calibrate`, and exit codes.

The registry holds a tiny llama (the base, seed 0), two independently initialised llamas (seeds 1, 2)
and a fine-tune-like copy of the base (every weight moved by 5% relative noise) that the registrar
declares derived from the base. Queries are built from the base: another fine-tune-like copy, a
depth-pruned copy (layer 1 of 3 dropped, then rotated), a rewritten copy (a residual rotation:
same function, every weight moved) and an unrelated llama (seed 3).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from huref.registry.entries import build_entry, declarations, sketch_terms, standardized
from huref.registry.format import ENTRY_SCHEMA, MANIFEST, PARTS, Registry, current_settings, manifest_bytes
from huref.registry.identify import identify, query_of
from huref.sources import load_model
from huref_lab import attacks
from test_lineage import restacked


def perturbed(source, target, scale: float, seed: int) -> Path:
    """A fine-tune-like copy: every tensor plus `scale` x its std of Gaussian noise."""
    checkpoint = attacks.read_checkpoint(source)
    generator = torch.Generator().manual_seed(seed)
    checkpoint.tensors = {k: v + scale * v.std().clamp_min(1e-3) * torch.randn(v.shape, generator=generator)
                          for k, v in checkpoint.tensors.items()}
    return attacks.write_checkpoint(checkpoint, target)


def with_card(source, target, card: str) -> Path:
    """A copy of a checkpoint folder with README.md = card."""
    attacks.write_checkpoint(attacks.read_checkpoint(source), target)
    (Path(target) / "README.md").write_text(card)
    return Path(target)


@pytest.fixture(scope="module")
def models(tiny_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("registry-models")
    base = tiny_zoo("llama")
    return {
        "base": base, "other1": tiny_zoo("llama", seed=1), "other2": tiny_zoo("llama", seed=2),
        "registered-ft": perturbed(base, root / "registered-ft", 0.05, seed=7),
        "finetune": perturbed(base, root / "finetune", 0.05, seed=8),
        "pruned": restacked(base, root / "pruned", [0, 2], "rotation"),
        "rewritten": restacked(base, root / "rewritten", [0, 1, 2], "rotation"),
        "unrelated": tiny_zoo("llama", seed=3),
    }


@pytest.fixture(scope="module")
def registry(models, tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("reg") / "R", create=True)
    for name in ("base", "other1", "other2"):
        registry.add(build_entry(load_model(str(models[name])), name=name))
    registry.add(build_entry(load_model(str(models["registered-ft"])), name="registered-ft", bases=("base",)))
    return registry


def test_an_entry_round_trips_and_holds_what_was_computed(models, registry):
    rows = {row["name"]: row for _, row in registry.rows(None)}
    assert set(rows) == {"base", "other1", "other2", "registered-ft"}
    base = rows["base"]
    model = load_model(str(models["base"]))
    from safetensors import safe_open

    with safe_open(str(models["base"] / "model.safetensors"), "pt") as f:  # parameters counted another way
        assert base["n_parameters"] == sum(f.get_tensor(k).numel() for k in f.keys())
    assert base["n_layers"] == 3 and base["model_type"] == "llama" and base["declared_bases"] == []
    assert base["entry_id"] == f"sha256:{base['weights_sha256']}" and base["hub_id"] is None
    assert rows["registered-ft"]["declared_bases"] == [{"name": "base", "relation": None, "source": "registrar"}]
    # the sketch: the standardized whole-depth terms, to float16 precision
    sketch = standardized(sketch_terms(model))
    part = next(p for p, row in registry.rows(["name"]) if row["name"] == "base")
    from huref.registry.identify import entry_sketch

    again = entry_sketch(part.path)
    assert again.layers == sketch.layers and again.tokens == sketch.tokens
    assert torch.allclose(again.values, sketch.values, atol=0.02, rtol=2e-3)
    # the latent is the published fingerprint's
    from huref.fingerprint import latent_record
    from huref.invariants import invariant_terms

    assert np.allclose(base["latent"], latent_record(invariant_terms(model))["latent"], atol=1e-6)


def test_duckdb_reads_the_parts_unchanged(registry):
    import duckdb
    parts = str(registry.root / PARTS / "*.parquet")
    rows = duckdb.sql(f"select name, len(latent) as n, octet_length(sketch) as size, declared_bases "
                      f"from read_parquet('{parts}') order by name").fetchall()
    ours = sorted((row["name"], len(row["latent"]), len(row["sketch"])) for _, row in registry.rows(["name", "latent", "sketch"]))
    assert [(r[0], r[1], r[2]) for r in rows] == ours
    assert [r[3] for r in rows if r[0] == "registered-ft"] == [[{"name": "base", "relation": None, "source": "registrar"}]]


def test_removal_is_a_tombstone_that_duckdb_and_huref_both_honour(registry, tmp_path):
    import shutil

    import duckdb

    copy = Registry(shutil.copytree(registry.root, tmp_path / "R"))
    before = sorted(p.name for p in (copy.root / PARTS).iterdir())
    (part,) = [p for p, row in copy.rows(["name"]) if row["name"] == "other2"]
    copy.remove(part)
    assert sorted(p.name for p in (copy.root / PARTS).iterdir()) == before  # no part rewritten or deleted
    assert {row["name"] for _, row in copy.rows(["name"])} == {"base", "other1", "registered-ft"}
    live = duckdb.sql(f"select name from read_parquet('{copy.root}/parts/*.parquet', filename=true) p "
                      f"where parse_filename(p.filename) not in "
                      f"(select part from read_parquet('{copy.root}/tombstones/*.parquet')) order by name").fetchall()
    assert [r[0] for r in live] == ["base", "other1", "registered-ft"]


@pytest.mark.parametrize("query, layers", [("finetune", [[0, 0], [1, 1], [2, 2]]), ("pruned", [[0, 0], [2, 1]]),
                                            ("rewritten", [[0, 0], [1, 1], [2, 2]])])
def test_identify_names_the_base_of_each_derivative(models, registry, query, layers):
    found = identify(registry, query_of(load_model(str(models[query]))), top=3)
    by_name = {m.name: m for m in found.bases}
    assert "base" in by_name and "registered-ft" in by_name and found.exit_code == 0
    assert by_name["base"].traced == layers and by_name["base"].found["p_value"] <= 1e-4
    assert not {"other1", "other2"} & set(by_name)


def test_identify_finds_no_base_for_an_unrelated_model_and_leaves_the_query_itself_out(models, registry):
    found = identify(registry, query_of(load_model(str(models["unrelated"]))), top=4)
    assert found.bases == [] and found.exit_code == 1 and len(found.matches) == 4
    itself = identify(registry, query_of(load_model(str(models["base"]))), top=4)
    assert itself.registered_as == ["base"] and "base" not in {m.name for m in itself.matches}
    assert [m.name for m in itself.bases] == ["registered-ft"]


def test_the_prefilter_ranks_the_base_first_by_summary_and_by_latent(models, registry):
    model = load_model(str(models["finetune"]))
    for prefilter in ("summary", "latent"):
        found = identify(registry, query_of(model, prefilter), top=2, prefilter=prefilter)
        assert {m.name for m in found.matches} == {"base", "registered-ft"}, prefilter


def test_identify_and_audit_from_the_command_line(models, registry, huref_cli, tmp_path):
    code, out, err = huref_cli("identify", str(models["pruned"]), "-r", str(registry.root), "--json", "-q")
    report = json.loads(out)
    assert code == 0 and {b["name"] for b in report["bases"]} == {"base", "registered-ft"} and err == ""
    # text shows p-values the tiny-scale panel can back (huref.results.p_text), never 1e-80
    code, out, _ = huref_cli("identify", str(models["pruned"]), "-r", str(registry.root), "-q")
    bases = [line for line in out.splitlines() if line.strip().startswith("base:")]
    assert code == 0 and len(bases) == 2 and all("p < 0.0001" in line for line in bases)
    assert not re.search(r"p \d(\.\d+)?e-\d+", out)
    code, out, _ = huref_cli("identify", str(models["unrelated"]), "-r", str(registry.root), "-q")
    assert code == 1 and "no registered base" in out
    # a true claim, confirmed against the registry entry
    honest = with_card(models["finetune"], tmp_path / "honest", "---\nbase_model: base\n---\n# fine-tune\n")
    assert declarations(load_model(str(honest))) == [{"name": "base", "relation": None, "source": "model card"}]
    code, out, _ = huref_cli("audit", str(honest), "-r", str(registry.root), "--json", "-q")
    result = json.loads(out)
    assert code == 0 and [c["status"] for c in result["claims"]] == ["confirmed"] and result["undisclosed"] == []
    # a planted false claim: contradicted, and the true base reported as undisclosed
    liar = with_card(models["finetune"], tmp_path / "liar",
                     "---\nbase_model:\n- other1\nbase_model_relation: finetune\n---\n")
    code, out, _ = huref_cli("audit", str(liar), "-r", str(registry.root), "--format", "md", "-q")
    assert code == 1 and "| `other1` | model card | finetune | **contradicted** |" in out
    assert "`base`" in out.split("Undisclosed bases:")[1]
    # an undisclosed base, nothing declared
    code, out, _ = huref_cli("audit", str(models["rewritten"]), "-r", str(registry.root), "-q")
    assert code == 1 and "declares no base" in out and "undisclosed bases: base" in out
    # a claim checked against the claimed base itself (a path), no registry; one that cannot be checked
    direct = with_card(models["finetune"], tmp_path / "direct",
                       f"---\nbase_model:\n- {models['base']}\n- nobody/nothing-here\n---\n")
    code, out, _ = huref_cli("audit", str(direct), "--json", "-q")
    claims = json.loads(out)["claims"]
    assert [c["status"] for c in claims] == ["confirmed", "unverifiable"] and code == 0
    assert claims[0]["checked_against"] == "the claimed base itself"
    code, _, _ = huref_cli("audit", str(direct), "--strict", "-q")
    assert code == 1


def test_calibrate_refits_the_panel_from_the_unrelated_pairs(models, registry, huref_cli, tmp_path):
    from huref.lineage import lineage
    from huref.registry.identify import entry_sketch
    from huref.statistics import panel_summary

    code, _, err = huref_cli("registry", "calibrate", str(registry.root), "-o", str(registry.root / MANIFEST), "-q")
    assert code == 2 and "inside the registry" in err
    # -o as every command takes it: suffix and folder checked before any work, a "wrote" line
    for wrong, why in ((tmp_path / "panel.png", ".json"), (tmp_path / "nodir" / "panel.json", "no such folder")):
        code, out, err = huref_cli("registry", "calibrate", str(registry.root), "-o", str(wrong))
        assert code == 2 and out == "" and why in err and err.count("\n") == 1, err
    assert not (tmp_path / "panel.png").exists()
    code, _, err = huref_cli("registry", "calibrate", str(registry.root), "-o", str(tmp_path / "said.json"))
    assert code == 0 and f"wrote {tmp_path / 'said.json'} (the refitted null panel)" in err
    out_panel = tmp_path / "panel.json"
    code, out, _ = huref_cli("registry", "calibrate", str(registry.root), "-o", str(out_panel), "--json", "-q")
    report = json.loads(out)
    parts = list(registry.rows(["name"]))
    sketches = {row["name"]: entry_sketch(part.path) for part, row in parts}
    names = [row["name"] for _, row in parts]
    related = {frozenset({"base", "registered-ft"})}
    null = [lineage(sketches[a], sketches[b])["statistic"] for i, a in enumerate(names) for b in names[i + 1:]
            if frozenset({a, b}) not in related]
    assert code == 0 and report["registry"]["n"] == 5 == len(null)
    assert report["registry"]["mean"] == pytest.approx(panel_summary(null)["mean"], abs=1e-9)
    assert report["registry"]["std"] == pytest.approx(panel_summary(null)["std"], abs=1e-9)
    assert json.loads(out_panel.read_text())["n"] == 5 and report["conflicts"] == []
    # identify judges against the refitted panel when given it
    code, out, _ = huref_cli("identify", str(models["finetune"]), "-r", str(registry.root), "--panel", str(out_panel),
                             "--json", "-q")
    base = next(b for b in json.loads(out)["bases"] if b["name"] == "base")
    fitted = report["registry"]
    assert code == 0 and base["z"] == pytest.approx((base["statistic"] - fitted["mean"]) / fitted["std"])


def test_bad_registries_are_refused_with_one_line(registry, huref_cli, tmp_path, models):
    import shutil

    def one_line_exit_2(*args):
        code, out, err = huref_cli(*args)
        assert code == 2 and out == "" and err.startswith("huref: error: ") and err.count("\n") == 1, (code, err)
        return err

    other_version = Path(shutil.copytree(registry.root, tmp_path / "v2"))
    manifest = json.loads((other_version / MANIFEST).read_text())
    (other_version / MANIFEST).write_text(json.dumps(dict(manifest, format_version=2)))
    assert "format version 2" in one_line_exit_2("registry", "list", str(other_version))
    other_settings = Path(shutil.copytree(registry.root, tmp_path / "settings"))
    (other_settings / MANIFEST).write_bytes(manifest_bytes(dict(current_settings(), sketch_tokens=512)))
    assert "sketch_tokens" in one_line_exit_2("identify", str(models["finetune"]), "-r", str(other_settings))
    corrupt = Path(shutil.copytree(registry.root, tmp_path / "corrupt"))
    (corrupt / PARTS / "0000-garbage.parquet").write_bytes(b"PAR1 not really")
    assert "not a readable registry part" in one_line_exit_2("registry", "list", str(corrupt))
    schema = Path(shutil.copytree(registry.root, tmp_path / "schema"))
    import pyarrow as pa

    pq.write_table(pa.table({"entry_id": ["x"], "name": [1]}), schema / PARTS / "0001-other.parquet")
    assert "another schema" in one_line_exit_2("registry", "list", str(schema))
    oversized = Registry(shutil.copytree(registry.root, tmp_path / "oversized"))
    _, row = next(iter(oversized.rows([f.name for f in ENTRY_SCHEMA])))
    tokens = [f"s:{k}" for k in range(300)]  # more probe tokens than the settings allow: refused before any product
    oversized.add(dict(row, entry_id="x:big", sketch_layers=[0], sketch_tokens=tokens,
                       sketch=np.zeros((1, 3, 300, 300), "<f2").tobytes()))
    assert "does not fit the registry's settings" in one_line_exit_2("identify", str(models["finetune"]), "-r",
                                                                     str(oversized.root))
    one_line_exit_2("registry", "list", str(tmp_path / "missing"))
    one_line_exit_2("identify", str(models["finetune"]), "-r", "hf://models/org/name")
    one_line_exit_2("identify", str(models["finetune"]), "-r", str(registry.root), "--top", "0")
    one_line_exit_2("identify", str(tmp_path / "no-model"), "-r", str(registry.root))
    bad_card = with_card(models["finetune"], tmp_path / "badcard", "---\nbase_model: [unclosed\n---\n")
    assert "model card" in one_line_exit_2("audit", str(bad_card))


def test_a_batch_add_records_a_failure_and_adds_the_rest(models, huref_cli, tmp_path):
    code, out, err = huref_cli("registry", "add", str(models["other1"]), str(tmp_path / "nothing"),
                               str(models["other2"]), "-r", str(tmp_path / "R"), "-q")
    assert code == 2 and out.count("registered as") == 2 and err.count("huref: error:") == 1
    code, out, _ = huref_cli("registry", "add", str(models["other1"]), "-r", str(tmp_path / "R"), "-q")
    assert code == 0 and "already registered" in out and len(list((tmp_path / "R" / PARTS).iterdir())) == 2


ADDER = """
import sys, numpy as np
from huref.registry.format import Registry
root, first, count, row_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import json, base64
row = json.loads(open(row_file).read())
for key in ("summary", "sketch"):
    row[key] = base64.b64decode(row[key])
for k in range(first, first + count):
    Registry(root, create=True).add(dict(row, entry_id=f"test:{k}", name=f"model-{k}"))
"""


def _row_file(registry, tmp_path) -> Path:
    import base64

    _, row = next(iter(registry.rows([f.name for f in ENTRY_SCHEMA])))
    row = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in row.items()}
    path = tmp_path / "row.json"
    path.write_text(json.dumps(row))
    return path


def test_concurrent_adders_never_corrupt_the_registry(registry, tmp_path):
    row_file, root = _row_file(registry, tmp_path), tmp_path / "shared"
    adders = [subprocess.Popen([sys.executable, "-c", ADDER, str(root), str(10 * k), "8", str(row_file)])
              for k in range(2)]
    assert [p.wait(timeout=300) for p in adders] == [0, 0]
    names = sorted(row["name"] for _, row in Registry(root).rows(["name", "sketch"]))
    assert names == sorted(f"model-{10 * k + i}" for k in range(2) for i in range(8))
    assert not [p for p in (root / PARTS).iterdir() if p.name.startswith(".")]


SLOW_ADDER = ADDER.replace("for k in range", """
import time, huref.files, huref.registry.format as fmt
def slow(path, data):
    def chunks():
        for i in range(0, len(data), 4096):
            time.sleep(0.01)
            yield data[i:i + 4096]
    huref.files.write_atomically(path, chunks())
fmt.write_atomically = slow
for k in range""")


def test_an_add_killed_mid_write_leaves_the_registry_readable_and_the_add_rerunnable(registry, tmp_path):
    import shutil

    root = Path(shutil.copytree(registry.root, tmp_path / "R"))
    row_file = _row_file(registry, tmp_path)
    adder = subprocess.Popen([sys.executable, "-c", SLOW_ADDER, str(root), "0", "1", str(row_file)])
    deadline = time.monotonic() + 120
    while not [p for p in (root / PARTS).iterdir() if p.name.startswith(".")] and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(adder.pid, signal.SIGKILL)
    adder.wait()
    hidden = [p for p in (root / PARTS).iterdir() if p.name.startswith(".")]
    assert hidden and hidden[0].stat().st_size < len(row_file.read_bytes())  # killed with the part half written
    assert {row["name"] for _, row in Registry(root).rows(["name"])} == {"base", "other1", "other2", "registered-ft"}
    subprocess.run([sys.executable, "-c", ADDER, str(root), "0", "1", str(row_file)], check=True, timeout=300)
    assert "model-0" in {row["name"] for _, row in Registry(root).rows(["name", "sketch"])}


def test_the_batched_summary_scores_equal_the_one_by_one_score(models, registry):
    from huref.registry.entries import stored_terms
    from huref.registry.identify import summary_score, summary_scores

    query = query_of(load_model(str(models["pruned"]))).summary
    entries = [stored_terms(row, "summary", "") for _, row in registry.rows(["name", "token_strategy", "sketch_layers",
                                                                            "sketch_tokens", "summary"])]
    batched = summary_scores(query, entries)
    assert batched == pytest.approx([summary_score(query, e) for e in entries], abs=2e-3)  # float16 storage
    assert max(batched) > 0.3 > max(s for s, e in zip(batched, entries) if e.meta["model"] in ("other1", "other2"))


def test_a_folder_that_is_not_a_registry_is_never_written_into(models, huref_cli, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, out, err = huref_cli("registry", "add", str(models["other1"]), "-r", str(tmp_path), "-q")
    assert code == 2 and "neither empty nor a huref registry" in err and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_gguf_base_model_metadata_is_read_as_declarations(tmp_path):
    import gguf

    from huref.readers.gguf import read_gguf
    from huref.registry.entries import gguf_declarations

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("general.base_model.count", 2)
    writer.add_string("general.base_model.0.name", "SmolLM2 135M")
    writer.add_string("general.base_model.0.organization", "HuggingFaceTB")
    writer.add_string("general.base_model.0.repo_url", "https://huggingface.co/HuggingFaceTB/SmolLM2-135M")
    writer.add_string("general.base_model.1.name", "Merged Thing")
    writer.add_string("general.base_model.1.organization", "someone")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert gguf_declarations(read_gguf(path).metadata) == [{"name": "HuggingFaceTB/SmolLM2-135M", "relation": None, "source": "gguf"},
                                       {"name": "someone/Merged Thing", "relation": None, "source": "gguf"}]

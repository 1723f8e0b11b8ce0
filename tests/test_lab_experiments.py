"""The experiments package and the scripts that call it: scripts import the package, never each other;
the package's modules import one another without a cycle; no script or experiment names a folder of one
machine; a missing cache is one line and exit 2; generated document sections replace only themselves;
the FFN-form comparison takes the zoo's llama bases, the ones with rotated and attacked copies."""

import ast
import os
import re
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from huref.errors import HurefError
from huref_lab.experiments import catalogue, minilm
from huref_lab.experiments.doc_sections import RESULTS_SECTIONS, markers, replace_section
from test_lab_boundary import imported_modules

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").glob("*.py"))
PACKAGE = REPO / "huref_lab" / "experiments"
# The one script another script imports (the encoder's figures and dogs share its pooled models): a known
# exception, listed exactly so that a new one fails.
SIBLING_IMPORTS = {"dog_distinctness.py": ["train_encoder"]}


def test_scripts_never_import_one_another():
    names = {p.stem for p in SCRIPTS}
    assert len(SCRIPTS) > 10
    found = {p.name: sorted(imported_modules(p) & names) for p in SCRIPTS}
    assert {name: imported for name, imported in found.items() if imported} == SIBLING_IMPORTS
    assert [p.name for p in SCRIPTS if "sys.path.insert" in p.read_text()] == []


def package_imports(path: Path) -> set[str]:
    """The modules of huref_lab.experiments that `path` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "huref_lab.experiments":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("huref_lab.experiments."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("huref_lab.experiments."))
    return found


def test_the_package_has_no_import_cycle():
    graph = {p.stem: package_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert graph["evidence"] >= {"catalogue", "lineage_evidence"} and "catalogue" in graph["lineage_evidence"]
    order = list(TopologicalSorter(graph).static_order())
    assert set(order) >= set(graph)


def test_the_cycle_check_sees_a_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from huref_lab.experiments import b\n")
    (tmp_path / "b.py").write_text("def f():\n    import huref_lab.experiments.a\n")
    graph = {p.stem: package_imports(p) for p in tmp_path.glob("*.py")}
    assert graph == {"a": {"b"}, "b": {"a"}}
    with pytest.raises(CycleError):
        list(TopologicalSorter(graph).static_order())


def test_no_machine_paths():
    files = SCRIPTS + sorted(PACKAGE.glob("*.py")) + sorted((REPO / "huref_lab" / "bench").glob("*.py"))
    assert [str(p.relative_to(REPO)) for p in files if re.search(r"/work/|/home/|/tmp/", p.read_text())] == []


@pytest.mark.parametrize("script, variable", [("experiments.py", "HUREF_EXPERIMENTS_CACHE"),
                                              ("real_lineage.py", "HUREF_REAL_CACHE")])
def test_a_missing_cache_is_one_line_and_exit_2(script, variable, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUREF_")}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and variable in done.stderr and "Traceback" not in done.stderr


def test_a_section_replaces_only_itself(tmp_path):
    doc = tmp_path / "RESULTS.md"
    replace_section(doc, "lineage", "## Lineage\n\nfirst")
    replace_section(doc, "evidence", "## Headline\n\nkept")
    replace_section(doc, "lineage", "## Lineage\n\nsecond\n")
    text = doc.read_text()
    assert "first" not in text and "second" in text and "kept" in text
    positions = [text.index(markers(name)[0]) for name in RESULTS_SECTIONS]
    assert positions == sorted(positions)
    doc.write_text("# hand-written\n" + text.replace(markers("lineage")[1], ""))
    with pytest.raises(HurefError, match="lineage:start"):
        replace_section(doc, "lineage", "x")
    assert doc.read_text().startswith("# hand-written\n")


def test_results_md_holds_each_generated_section_once():
    text = (REPO / "docs" / "RESULTS.md").read_text()
    for name in RESULTS_SECTIONS:
        start, end = markers(name)
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)


def test_ffn_form_pairs_are_the_zoo_llama_bases_with_their_copies(monkeypatch, tmp_path):
    monkeypatch.setattr(minilm, "pretrained_dir", lambda: tmp_path / "minilm")
    scale = catalogue.SCALES["full"]
    entries = (catalogue.zoo_entries(tmp_path) + catalogue.rotated_entries(tmp_path)
               + catalogue.lineage_entries(tmp_path, scale))
    assert {"llama-A-twin", "llama-A-sib"} <= {e["name"] for e in entries if e["kind"] == "base"}
    pairs = catalogue.ffn_form_pairs(entries)
    assert [(a["name"], b["name"]) for a, b, _ in pairs if _ == "independent base"] == [
        ("llama-A", "llama-B"), ("llama-B", "llama-C"), ("llama-C", "llama-A")]
    for base, relative, relation in pairs:
        assert relative["family"] == base["name"] or relation == "independent base"
        assert relative["kind"] == {"rotation attack": "rotated", "all attacks": "attacked", "SFT offspring": "sft",
                                    "independent base": "base"}[relation]
    assert len(pairs) == 12

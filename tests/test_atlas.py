"""`huref atlas`: the derivation graph of a registry of tiny models whose history is known.

The registry: a tiny llama (the base), a fine-tune-like copy declaring it, a depth-pruned copy (layer 1
of 3 dropped, then rotated) declaring nothing, an independent llama (seed 1), and a second independent
llama (seed 2) that falsely declares the base. The atlas must link exactly the two derivatives to the
base, with the pruned copy's relation and layer map, and flag the false claim and the undeclared base.
"""

import json
import re

import pytest

from huref.registry.atlas import atlas_html, build_atlas, relation_of
from huref.registry.entries import build_entry
from huref.registry.format import Registry
from huref.sources import load_model
from test_lineage import restacked
from test_registry import perturbed


@pytest.fixture(scope="module")
def atlas_registry(tiny_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas")
    base = tiny_zoo("llama")
    registry = Registry(root / "R", create=True)
    for name, path, bases in (("base", base, ()), ("ft", perturbed(base, root / "ft", 0.05, seed=7), ("base",)),
                              ("pruned", restacked(base, root / "pruned", [0, 2], "rotation"), ()),
                              ("other", tiny_zoo("llama", seed=1), ()), ("liar", tiny_zoo("llama", seed=2), ("base",))):
        registry.add(build_entry(load_model(str(path)), name=name, bases=bases))
    return registry


def test_the_atlas_links_only_derivatives_and_flags_what_declarations_get_wrong(atlas_registry):
    atlas = build_atlas(atlas_registry, top=4)
    names = [e["name"] for e in atlas["entries"]]
    edges = {(names[e["parent"]], names[e["child"]]): e for e in atlas["edges"]}
    assert set(edges) == {("base", "ft"), ("base", "pruned")}
    assert edges["base", "ft"]["declared"] and not edges["base", "pruned"]["declared"]
    assert edges["base", "pruned"]["relation"].startswith("pruned (3 -> 2 layers)")
    assert edges["base", "pruned"]["layer_map"] == [[0, 0], [2, 1]]  # its layers 0, 1 are the base's 0, 2
    assert edges["base", "ft"]["relation"].startswith("fine-tune") and edges["base", "ft"]["z"] > 3
    roots = {e["name"] for e in atlas["entries"] if e["root"]}
    assert roots == {"base", "other", "liar"} and atlas["families"] == 3
    flagged = {(m["entry"], m["declared"]): m["weights"] for m in atlas["mismatches"]}
    assert set(flagged) == {("liar", "base"), ("pruned", None)}
    assert flagged["liar", "base"].startswith("unrelated")


def test_the_page_is_self_contained_and_carries_the_atlas(atlas_registry):
    atlas = build_atlas(atlas_registry, top=2)
    page = atlas_html(atlas)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched: images are data URLs
    data = json.loads(re.search(r"const A = (\{.*?\});\n", page).group(1))
    assert data == json.loads(json.dumps(atlas))
    assert page.count('class="node') == len(atlas["entries"])


def test_relations_follow_depth_and_alignment():
    assert relation_of(4, 4, [[0, 0], [1, 1]]).startswith("fine-tune")
    assert relation_of(4, 3, [[0, 0], [1, 1], [3, 2]]).startswith("pruned")
    assert relation_of(4, 6, [[0, 0], [1, 1], [1, 2]]).startswith("up-scaled")
    assert relation_of(4, 4, [[0, 0], [None, 1]]).startswith("merged")


def test_atlas_command_writes_the_page_and_refuses_to_write_into_the_registry(atlas_registry, huref_cli, tmp_path):
    page = tmp_path / "atlas.html"
    code, out, _ = huref_cli("atlas", str(atlas_registry.root), "-o", str(page), "--no-dogs", "--json", "-q")
    assert code == 0 and len(json.loads(out)["edges"]) == 2 and page.read_text().startswith("<!doctype html>")
    code, out, err = huref_cli("atlas", str(atlas_registry.root), "-o", str(atlas_registry.root / "a.html"), "-q")
    assert code == 2 and out == "" and err.count("\n") == 1 and "inside the registry" in err
    code, _, err = huref_cli("atlas", str(atlas_registry.root), "-q")
    assert code == 2 and "-o" in err

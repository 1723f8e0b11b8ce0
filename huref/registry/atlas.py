"""`huref atlas`: the derivation graph of a registry, from the weights, beside what models declare.

1. Prefilter (small columns only): every entry's summary is scored against every other's
   (`huref.registry.identify.summary_scores`, one batch per entry); each entry's `top` best, and every
   pair one side declares, are the pairs judged. The prefilter is O(N²) summary products, cheap next to
   one verdict; a registry of many thousands would group by token set first (not done here).
2. Verdict: each pair judged with the calibrated lineage verdict (`huref.lineage.lineage`) on the full
   sketches (a bounded cache of SKETCH_CACHE sketches). Same-base pairs link entries into families
   (connected components, networkx).
3. Derivation: weights show that two models share a base, not which came first, so each family's root
   is its member that declares no base inside the family (when several do not, the one of highest mean
   z to the others); every other member's parent is its declared base when the weights confirm it, else
   the root, or when the root and it were not judged together, the member next to it on a shortest
   chain of same-base verdicts from the root. Each edge carries z and the relation the layer alignment
   shows (`relation_of`).
4. Mismatches: a declared base the weights call unrelated or inconclusive, and a family member that
   declares no base.
p-values and verdicts are against the shipped null panel (tiny-scale) unless `panel` names another.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections import OrderedDict

import networkx as nx

from huref.errors import HurefError
from huref.registry.entries import stored_terms
from huref.registry.format import Registry
from huref.registry.identify import entry_sketch, one_thread, summary_scores

DEFAULT_TOP = 4
SKETCH_CACHE = 32  # full sketches held at once (at most 3 MB each)
ROW_NODES = 7  # models side by side in one row of the page
COLUMNS = ["name", "hub_id", "model_type", "n_layers", "declared_bases", "latent", "latent_code", "token_strategy",
           "sketch_layers", "sketch_tokens", "summary"]


def relation_of(n_parent: int, n_child: int, alignment: list) -> str:
    """What the layer alignment (child's layers traced to the parent's, [[parent layer or None, child
    layer]]) and the depths show: the weights cannot tell a fine-tune from a re-quantization or a
    continued pretraining, so same-depth derivatives are named together."""
    traced = [i for i, _ in alignment if i is not None]
    untraced = len(alignment) - len(traced)
    if untraced:
        return f"merged or partly replaced ({untraced} of {len(alignment)} sampled layers traced to no parent layer)"
    if n_child < n_parent:
        return f"pruned ({n_parent} -> {n_child} layers)"
    if n_child > n_parent:
        return f"up-scaled or layer-stacked ({n_parent} -> {n_child} layers)"
    if len(set(traced)) < len(traced):
        return "layers repeated (same depth)"
    return "fine-tune, re-quantization, weight pruning or continued training (same depth, every layer in order)"


class Sketches:
    """The full sketches of parts, SKETCH_CACHE at most held (least recently used dropped)."""

    def __init__(self) -> None:
        self.held: OrderedDict = OrderedDict()

    def __getitem__(self, path):
        if path in self.held:
            self.held.move_to_end(path)
        else:
            self.held[path] = entry_sketch(path)
            if len(self.held) > SKETCH_CACHE:
                self.held.popitem(last=False)
        return self.held[path]


def build_atlas(registry: Registry, top: int = DEFAULT_TOP, panel: dict | None = None, dogs=None,
                progress=None) -> dict:
    """The atlas of `registry` as one JSON-ready dict: entries (with family, root flag, declared bases
    and, for roots, the dog as a PNG data URL when `dogs` (a generator) is given), derivation edges,
    the pairs judged, and the mismatches. See the module docstring."""
    from huref.lineage import lineage

    if top < 1:
        raise HurefError("--top must be at least 1")
    parts, rows = [], []
    for part, row in registry.rows(COLUMNS):
        parts.append(part)
        rows.append(row)
    if not rows:
        raise HurefError(f"{registry.root}: the registry has no entries")
    n = len(rows)
    by_name = {}
    for k, row in enumerate(rows):
        for key in (row["name"], row["hub_id"]):
            if key:
                by_name.setdefault(str(key).casefold(), k)
    declared = [[by_name.get(str(d["name"]).casefold()) for d in row["declared_bases"]] for row in rows]
    with one_thread():
        summaries = [stored_terms(row, "summary", str(part.path)) for part, row in zip(parts, rows)]
        pairs = set()
        for i in range(n):
            if progress:
                progress(f"prefilter {i + 1}/{n}")
            others = [j for j in range(n) if j != i]
            scores = summary_scores(summaries[i], [summaries[j] for j in others])
            ranked = sorted((s, j) for s, j in zip(scores, others) if s != float("-inf"))[::-1][:top]
            pairs.update((min(i, j), max(i, j)) for _, j in ranked)
        for i in range(n):
            pairs.update((min(i, j), max(i, j)) for j in declared[i] if j is not None and j != i)
        sketches, judged = Sketches(), {}
        for count, (i, j) in enumerate(sorted(pairs)):
            if progress:
                progress(f"judging {count + 1}/{len(pairs)}: {rows[i]['name']} ~ {rows[j]['name']}")
            try:
                judged[i, j] = lineage(sketches[parts[i].path], sketches[parts[j].path], panel)
            except HurefError as error:
                if "probe tokens" not in str(error):
                    raise
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from((i, j, {"z": found["z"]}) for (i, j), found in judged.items()
                             if found["verdict"] == "same-base")
        families = sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: (-len(c), c[0]))
        family_of, root_of = {}, {}
        for number, members in enumerate(families):
            inside = set(members)
            free = [k for k in members if not any(j in inside for j in declared[k] if j is not None)]
            candidates = free or members
            root = max(candidates, key=lambda k: (mean_z(graph, k), -k))
            for k in members:
                family_of[k], root_of[k] = number, root
        tree = nx.DiGraph()
        tree.add_nodes_from(range(n))
        for k in range(n):
            if root_of[k] == k:
                continue
            confirmed = [j for j in declared[k] if j is not None and graph.has_edge(j, k)]
            # undeclared: the root, or the member next to k on a shortest same-base path from the root
            parent = confirmed[0] if confirmed else nx.shortest_path(graph, root_of[k], k)[-2]
            if k in declared[parent] and not confirmed:  # never a cycle: one that declares k is not its parent
                parent = root_of[k]
            found = judged.get((parent, k)) if parent < k else None
            if found is None:  # the verdict with the parent as A (its alignment maps the child's layers)
                found = lineage(sketches[parts[parent].path], sketches[parts[k].path], panel)
            tree.add_edge(parent, k, z=found["z"], p_value=found["p_value"], alignment=found["alignment"],
                          relation=relation_of(rows[parent]["n_layers"], rows[k]["n_layers"], found["alignment"]),
                          declared=bool(confirmed))
    mismatches = []
    for k, row in enumerate(rows):
        for claim, j in zip(row["declared_bases"], declared[k]):
            if j is None:
                continue
            found = judged.get((min(j, k), max(j, k)))
            if found is None:
                mismatches.append({"entry": row["name"], "declared": claim["name"],
                                   "weights": "too few probe tokens in common to compare"})
            elif found["verdict"] != "same-base":
                mismatches.append({"entry": row["name"], "declared": claim["name"],
                                   "weights": f"{found['verdict']} (z {found['z']:+.1f})"})
        if root_of[k] != k and not any(j is not None for j in declared[k]):
            mismatches.append({"entry": row["name"], "declared": None,
                               "weights": f"derives from {rows[root_of[k]]['name']} (same family), declares no base"})
    entries = []
    for k, row in enumerate(rows):
        entries.append({
            "id": k, "name": row["name"], "entry_id": parts[k].entry_id, "hub_id": row["hub_id"],
            "model_type": row["model_type"], "n_layers": row["n_layers"], "latent_code": row["latent_code"],
            "declared_bases": [d["name"] for d in row["declared_bases"]], "family": family_of[k],
            "root": root_of[k] == k, "dog": dog_url(row["latent"], dogs) if dogs is not None and root_of[k] == k
            else None})
    edges = [{"parent": a, "child": b, "z": data["z"], "p_value": data["p_value"], "relation": data["relation"],
              "declared": data["declared"], "layer_map": [[i, j] for i, j in data["alignment"]]}
             for a, b, data in sorted(tree.edges(data=True))]
    return {"entries": entries, "edges": edges, "mismatches": mismatches, "pairs_judged": len(judged),
            "same_base_pairs": graph.number_of_edges(), "families": len(families), "top": top,
            "note": "verdicts against the shipped tiny-scale null panel unless --panel names another; weights "
                    "show shared bases, not which model came first: roots are the members declaring no base"}


def mean_z(graph: nx.Graph, k: int) -> float:
    degrees = [data["z"] for _, _, data in graph.edges(k, data=True)]
    return sum(degrees) / len(degrees) if degrees else 0.0


def dog_url(latent, generator) -> str:
    """The dog of a latent [512] as a PNG data URL (`huref.render.render`)."""
    import torch

    from huref.render import render

    buffer = io.BytesIO()
    render(torch.tensor(latent, dtype=torch.float32), generator).resize((128, 140)).save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def layout(atlas: dict) -> dict[int, tuple[float, float]]:
    """Node positions: families side by side in rows (largest first), each a tree (root on top,
    children below, grandchildren below them; networkx's BFS layers)."""
    tree = nx.DiGraph()
    tree.add_nodes_from(e["id"] for e in atlas["entries"])
    tree.add_edges_from((e["parent"], e["child"]) for e in atlas["edges"])
    positions, x0, y0, row_height = {}, 0.0, 0.0, 0.0
    for entry in atlas["entries"]:
        if not entry["root"]:
            continue
        rows = [sorted(level)[k : k + ROW_NODES] for level in nx.bfs_layers(tree, [entry["id"]])
                for k in range(0, len(level), ROW_NODES)]  # a wide generation wraps onto several rows
        width = max(len(row) for row in rows) * 150.0
        if x0 + width > 1500 and x0 > 0:
            x0, y0, row_height = 0.0, y0 + row_height + 80, 0.0
        for depth, row in enumerate(rows):
            for k, node in enumerate(row):
                positions[node] = (x0 + (k + 0.5) * width / len(row), y0 + 90 + depth * 190)
        x0 += width + 40
        row_height = max(row_height, len(rows) * 190)
    return positions


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>huref atlas</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>
body{font:14px sans-serif;margin:0;display:flex;height:100vh}
#side{width:360px;overflow:auto;border-right:1px solid #ccc;padding:10px;box-sizing:border-box}
#map{flex:1;overflow:auto}
.node circle{fill:#cde;stroke:#357;stroke-width:1.5}.node.root circle{fill:#fd8}
.node.bad circle{stroke:#d00;stroke-width:4}.node.dim{opacity:.15}.node.sel circle{fill:#8d8}
.node text{font-size:11px;text-anchor:middle}.edge{stroke:#888;stroke-width:1.5;fill:none}
.edge.undeclared{stroke:#d00;stroke-dasharray:5 3}
.mismatch{color:#b00}table{border-collapse:collapse}td{border:1px solid #ddd;padding:1px 4px}
</style></head><body>
<div id="side"><h3>huref atlas</h3>
<input id="q" placeholder="search by name" style="width:100%">
<p>{{SUMMARY}}</p><div id="info">Click a model.</div><h4>Declared vs weights</h4><div id="mm"></div></div>
<div id="map"><svg id="svg" width="{{WIDTH}}" height="{{HEIGHT}}">{{SVG}}</svg></div>
<script>
const A = {{DATA}};
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const name = k => esc(A.entries[k].name);
function show(k) {
  document.querySelectorAll(".node").forEach(n => n.classList.toggle("sel", +n.dataset.id === k));
  const e = A.entries[k], ups = A.edges.filter(d => d.child === k), downs = A.edges.filter(d => d.parent === k);
  let h = `<h4>${name(k)}</h4><p>${esc(e.model_type)}, ${e.n_layers} layers, code ${esc(e.latent_code)}<br>` +
    `declares: ${e.declared_bases.map(esc).join(", ") || "no base"}</p>`;
  if (e.dog) h += `<img src="${e.dog}" alt="dog">`;
  h += "<p><b>Parent</b>: " + (ups.map(d => `<a href="#" onclick="show(${d.parent});return false">${name(d.parent)}</a> ` +
    `z ${d.z.toFixed(1)}, ${esc(d.relation)}`).join("<br>") || "none (a root)") + "</p>";
  h += "<p><b>Children</b>: " + (downs.map(d => `<a href="#" onclick="show(${d.child});return false">${name(d.child)}</a>` +
    ` (z ${d.z.toFixed(1)})`).join(", ") || "none") + "</p>";
  for (const d of ups) h += "<p><b>Layer map</b> (this model's sampled layer &larr; parent's)</p><table>" +
    d.layer_map.map(([i, j]) => `<tr><td>${j}</td><td>&larr; ${i === null ? "none" : i}</td></tr>`).join("") + "</table>";
  document.getElementById("info").innerHTML = h;
}
document.querySelectorAll(".node").forEach(n => n.addEventListener("click", () => show(+n.dataset.id)));
document.getElementById("q").addEventListener("input", ev => {
  const q = ev.target.value.toLowerCase();
  document.querySelectorAll(".node").forEach(n =>
    n.classList.toggle("dim", q !== "" && !A.entries[+n.dataset.id].name.toLowerCase().includes(q)));
});
const wanted = A.entries.find(e => "#" + encodeURIComponent(e.name) === location.hash);
if (wanted) show(wanted.id);  // atlas.html#NAME opens that model
document.getElementById("mm").innerHTML = A.mismatches.map(m => `<p class="mismatch">${esc(m.entry)}: ` +
  `declares ${esc(m.declared || "no base")}; weights: ${esc(m.weights)}</p>`).join("") || "<p>none</p>";
</script></body></html>
"""


def atlas_html(atlas: dict) -> str:
    """The atlas as one self-contained page (inline SVG, script and images; a content security policy
    that lets it load nothing)."""
    positions = layout(atlas)
    bad = {m["entry"] for m in atlas["mismatches"]}
    svg = []
    for edge in atlas["edges"]:
        (x1, y1), (x2, y2) = positions[edge["parent"]], positions[edge["child"]]
        style = "edge" if edge["declared"] else "edge undeclared"
        svg.append(f'<path class="{style}" d="M{x1:.0f},{y1 + 40:.0f} L{x2:.0f},{y2 - 40:.0f}"/>'
                   f'<text x="{(x1 + x2) / 2:.0f}" y="{(y1 + y2) / 2:.0f}" font-size="10">z {edge["z"]:.1f}</text>')
    for entry in atlas["entries"]:
        x, y = positions[entry["id"]]
        classes = "node" + (" root" if entry["root"] else "") + (" bad" if entry["name"] in bad else "")
        picture = (f'<image href="{entry["dog"]}" x="{x - 32:.0f}" y="{y - 70:.0f}" width="64" height="70"/>'
                   if entry["dog"] else "")
        svg.append(f'<g class="{classes}" data-id="{entry["id"]}" style="cursor:pointer">{picture}'
                   f'<circle cx="{x:.0f}" cy="{y:.0f}" r="9"/><text x="{x:.0f}" y="{y + 24:.0f}">'
                   f'{html.escape(entry["name"][:28])}</text></g>')
    width = max(x for x, _ in positions.values()) + 120
    height = max(y for _, y in positions.values()) + 80
    summary = (f"{len(atlas['entries'])} models, {atlas['families']} families, {len(atlas['edges'])} derivation edges, "
               f"{atlas['pairs_judged']} pairs judged. Roots in yellow with their dog; a red ring: what the model "
               f"declares and what its weights say differ; dashed red edge: not declared. Verdicts against a "
               f"tiny-scale null panel.")
    data = json.dumps(atlas, allow_nan=False).replace("</", "<\\/")
    fields = {"SUMMARY": html.escape(summary), "WIDTH": f"{width:.0f}", "HEIGHT": f"{height:.0f}", "SVG": "".join(svg),
              "DATA": data}
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda match: fields[match.group(1)], PAGE)  # one pass: no field rescanned

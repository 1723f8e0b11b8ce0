"""`huref identify`: which registered models a model derives from.

1. The query's sketch (`huref.registry.entries.sketch_terms`) is computed once.
2. Prefilter: every live entry is scored from its small columns only (BATCH parts at a time, Parquet
   column projection, the sketches never read): "summary" (default) scores the layer map of the
   sketches' first SUMMARY_TOKENS probe tokens (`summary_scores`), a low-resolution copy of the
   verdict's map; "latent" takes the cosine of the published fingerprint latents (the query's latent
   is then computed too). The best `top` entries are kept (a heap: memory follows `top` and BATCH,
   not the registry's size).
3. Verdict: each candidate's full sketch is read (one at a time) and judged against the query with
   the calibrated lineage verdict (`huref.lineage.lineage`, the shipped null panel or `panel`).
   Candidates called same-base are the bases found; each lists the query's layers traced to it, and
   the query's layers traced to none are reported as from no registered base (a frankenmerge's
   second parent shows there: the own-terms map cannot trace layers moved onto another model's
   embeddings, docs/LINEAGE.md).
An entry with the query's own identity (the same weights) is left out and named as the query's own
registration.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from huref.errors import HurefError
from huref.invariants import Terms
from huref.registry.entries import stored_terms, summary_of
from huref.registry.format import Registry, read_table
from huref.results import p_text
from huref.threads import one_thread

PREFILTERS = ("summary", "latent")
DEFAULT_TOP = 8


@dataclass
class Query:
    """The query model's sketch (and latent, for the latent prefilter), and its identity."""

    label: str
    entry_id: str
    sketch: Terms
    latent: torch.Tensor | None = None

    @cached_property
    def summary(self) -> Terms:
        return summary_of(self.sketch)


def query_of(model, prefilter: str = "summary", progress=None) -> Query:
    """Compute what identify needs of a model (`huref.sources.Model`)."""
    from huref.registry.entries import identity, sketch_terms

    latent = None
    if prefilter == "latent":
        from huref.fingerprint import latent_record
        from huref.invariants import invariant_terms

        latent = torch.tensor(latent_record(invariant_terms(model, progress=progress))["latent"])
    return Query(model.label, identity(model)["entry_id"], sketch_terms(model, progress), latent)


def summary_score(query: Terms, entry: Terms) -> float:
    """The prefilter's score of two summaries: on their layer map (entry's layers as A, the query's as
    B), the mean over the query's layers of its best cell minus the mean of all cells (the lineage
    statistic without the alignment's order constraint); -inf when they share too few probe tokens."""
    from huref.lineage import layer_map

    try:
        similarity = layer_map(entry, query)
    except HurefError:
        return -math.inf
    return float(similarity.max(0).values.mean() - similarity.mean())


def latent_score(query: Query, row: dict) -> float:
    """The latent prefilter's score: the cosine of the query's and the entry's fingerprint latents."""
    stored = torch.tensor(row["latent"], dtype=torch.float32)
    return float(torch.nn.functional.cosine_similarity(query.latent, stored, dim=0))


@dataclass
class Match:
    """One candidate judged against the query: its lineage verdict and the query's layers traced to it."""

    name: str
    entry_id: str
    prefilter_score: float
    found: dict  # huref.lineage.lineage's result, entry as A, query as B
    path: Path  # its part file

    @property
    def verdict(self) -> str:
        return self.found["verdict"]

    @property
    def traced(self) -> list[list[int]]:
        """[[entry's layer, query's layer]] of the query's traced layers."""
        return [[i, j] for i, j in self.found["alignment"] if i is not None]

    def to_json(self) -> dict:
        keys = ("statistic", "z", "p_value", "fpr", "verdict", "alignment", "layers_a", "layers_b")
        return {"name": self.name, "entry_id": self.entry_id, "prefilter_score": self.prefilter_score,
                **{key: self.found[key] for key in keys}, "traced": self.traced}

    def line(self) -> str:
        pairs = " ".join(f"{j}<-{i}" for i, j in self.traced) or "none"
        return (f"{self.name}  z {self.found['z']:+.1f}  {p_text(self.found['p_value'])}  {self.verdict}  "
                f"(query layer<-its layer: {pairs})")


@dataclass
class Identification:
    """What identify found: the bases (same-base matches), every candidate judged, the query's layers
    traced to no base, and the registry's size."""

    query: str
    prefilter: str
    top: int
    n_entries: int
    matches: list[Match]
    query_layers: list[int]
    registered_as: list[str] = field(default_factory=list)

    @property
    def bases(self) -> list[Match]:
        return [m for m in self.matches if m.verdict == "same-base"]

    @property
    def foreign_layers(self) -> list[int]:
        """The query's layers traced to no base found (all of them when none was found)."""
        traced = {j for m in self.bases for _, j in m.traced}
        return [j for j in self.query_layers if j not in traced]

    @property
    def exit_code(self) -> int:
        """0: a registered base found; 1: none."""
        return 0 if self.bases else 1

    def to_json(self) -> dict:
        return {"query": self.query, "found": bool(self.bases), "bases": [m.to_json() for m in self.bases],
                "foreign_layers": self.foreign_layers if self.bases else None,
                "candidates": [m.to_json() for m in self.matches], "prefilter": self.prefilter, "top": self.top,
                "n_entries": self.n_entries, "registered_as": self.registered_as,
                "note": "p-values against the shipped tiny-scale null panel unless --panel names another"}

    def text(self) -> str:
        lines = [f"{self.query}: " + (f"derives from {len(self.bases)} registered model(s)" if self.bases
                                      else "no registered base")
                 + f"  ({self.prefilter} prefilter, {len(self.matches)} of {self.n_entries} entries judged)"]
        lines += [f"  base: {m.line()}" for m in self.bases]
        if self.bases and self.foreign_layers:
            lines.append(f"  layers from no registered base: {' '.join(map(str, self.foreign_layers))}")
        others = [m for m in self.matches if m.verdict != "same-base"]
        if others:
            lines.append("  also judged: " + ", ".join(f"{m.name} ({m.verdict}, z {m.found['z']:+.1f})" for m in others))
        if self.registered_as:
            lines.append(f"  registered itself as: {', '.join(self.registered_as)} (left out)")
        return "\n".join(lines)


BATCH = 64  # entries scored together by the summary prefilter


def summary_scores(query: Terms, entries: list[Terms]) -> list[float]:
    """`summary_score` of each entry's summary against the query's (both as `summary_of` gives them:
    standardized over their tokens). Entries with the query's probe tokens (the same tokenizer) and one
    layer count are scored together: their cosines are one product, Σ za·zb / (m² - 1); the others
    go one by one through `summary_score`."""
    scores = [0.0] * len(entries)
    groups: dict[int, list[int]] = {}
    for k, entry in enumerate(entries):
        if entry.tokens == query.tokens and entry.meta.get("token_strategy") == query.meta.get("token_strategy"):
            groups.setdefault(len(entry.layers), []).append(k)
        else:
            scores[k] = summary_score(query, entry)
    lb, t, m = query.values.shape[0], query.values.shape[1], len(query.tokens)
    query_rows = query.values.reshape(lb, t, m * m)  # [Lb, 3, m, m] -> [Lb, 3, m²]
    for members in groups.values():
        stacked = torch.stack([entries[k].values for k in members])  # [B, La, 3, m, m]
        rows = stacked.reshape(len(members), stacked.shape[1], t, m * m)  # -> [B, La, 3, m²]
        maps = (torch.einsum("bitk,jtk->bij", rows, query_rows) / (t * (m * m - 1))).clamp(-1.0, 1.0)  # [B, La, Lb]
        for k, score in zip(members, (maps.max(1).values.mean(1) - maps.mean((1, 2))).tolist()):
            scores[k] = score
    return scores


def candidates(registry: Registry, query: Query, prefilter: str, top: int) -> tuple[list, int, list[str]]:
    """(the `top` best (score, -part rank, part, name) by the prefilter, best first; the number of entries;
    names of entries with the query's own identity). Reads only the small columns, BATCH parts at a time."""
    if prefilter not in PREFILTERS:
        raise HurefError(f"--prefilter must be one of {', '.join(PREFILTERS)}, not '{prefilter}'")
    column = "latent" if prefilter == "latent" else "summary"
    best: list = []
    count, itself, batch = 0, [], []

    def score(batch: list) -> None:
        if prefilter == "latent":
            values = [latent_score(query, row) for _, row in batch]
        else:
            values = summary_scores(query.summary, [stored_terms(row, "summary", str(part.path)) for part, row in batch])
        for value, (part, row) in zip(values, batch):
            if math.isinf(value):
                continue
            item = (value, -part.rank, part, row["name"])  # ties: the part first by name, index or not
            if len(best) < top:
                heapq.heappush(best, item)
            else:
                heapq.heappushpop(best, item)

    for part, row in registry.rows(["name", "token_strategy", "sketch_layers", "sketch_tokens", column]):
        count += 1
        if row["entry_id"] == query.entry_id:
            itself.append(row["name"])
            continue
        batch.append((part, row))
        if len(batch) == BATCH:
            score(batch)
            batch = []
    score(batch)
    return sorted(best, key=lambda item: item[:2], reverse=True), count, itself


def entry_sketch(path: Path) -> Terms:
    """The full sketch of the entry in part file `path`, as float32 `Terms` [L, 3, n, n]."""
    row = read_table(path, ["name", "token_strategy", "sketch_layers", "sketch_tokens", "sketch"]).to_pylist()[0]
    return stored_terms(row, "sketch", str(path))


def identify(registry: Registry, query: Query, top: int = DEFAULT_TOP, prefilter: str = "summary",
             panel: dict | None = None, progress=None) -> Identification:
    """Prefilter the registry, then judge each of the `top` candidates by the calibrated lineage verdict."""
    if top < 1:
        raise HurefError("--top must be at least 1")
    with one_thread():
        return _identify(registry, query, top, prefilter, panel, progress)


def _identify(registry: Registry, query: Query, top: int, prefilter: str, panel: dict | None,
              progress) -> Identification:
    from huref.lineage import lineage

    ranked, count, itself = candidates(registry, query, prefilter, top)
    matches = []
    for score, _, part, name in ranked:
        if progress:
            progress(f"judging {name}")
        try:
            found = lineage(entry_sketch(part.path), query.sketch, panel)
        except HurefError as error:
            if "probe tokens" not in str(error):
                raise
            continue  # too few probe tokens in common at full resolution
        matches.append(Match(name, part.entry_id, score, found, part.path))
    matches.sort(key=lambda m: (m.verdict == "same-base", m.found["z"]), reverse=True)
    return Identification(query.label, prefilter, top, count, matches, list(query.sketch.layers), itself)

"""`huref registry calibrate`: a null panel refitted from a registry's own unrelated pairs.

Which pairs are unrelated: entries are grouped by what they declare (an entry and the bases it names
are one group, joined transitively by name or Hub id; an entry declaring nothing is a root of its own
group). A pair from different groups is declared unrelated; a pair whose lineage verdict against the
shipped panel is unrelated is measured unrelated (a false declaration of relatedness included). The
refitted panel takes every pair that is declared or measured unrelated, except pairs the shipped panel
calls same-base (a declared-unrelated pair that measures same-base is more likely an undisclosed
derivation than a null draw; they are listed apart as conflicts). Pairs sharing too few probe tokens
are skipped. Every pair is judged with the earlier part (by name) as A.

Memory: the sketches of every entry are held at once (a registry of a few hundred entries; a few MB each).
"""

from __future__ import annotations

from huref.errors import HurefError
from huref.registry.format import Registry
from huref.registry.identify import entry_sketch


def declared_groups(rows: list[dict]) -> list[int]:
    """A group number per row: rows joined when one names the other (name or Hub id) or both name a base."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def join(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    keys = []
    for i, row in enumerate(rows):
        own = f"entry:{i}"
        names = {str(row["name"]).casefold()} | ({row["hub_id"].casefold()} if row["hub_id"] else set())
        for name in names | {d["name"].casefold() for d in row["declared_bases"]}:
            join(own, f"name:{name}")
        keys.append(own)
    roots = {}
    return [roots.setdefault(find(key), len(roots)) for key in keys]


def calibrate(registry: Registry, progress=None) -> dict:
    """{"panel": a null panel (huref.statistics format), "shipped": the shipped panel's summary,
    "registry": the refitted one's, "thresholds": the smallest same-base statistic under each,
    "pairs": every pair judged, "conflicts": declared unrelated yet same-base, "changed": pairs whose
    verdict differs between the two panels, "skipped": pairs that share too few tokens}."""
    from huref.lineage import lineage
    from huref.statistics import null_panel, panel_summary, statistic_at, verdict_from_statistic

    entries = list(registry.rows(["name", "hub_id", "declared_bases"]))
    groups = declared_groups([row for _, row in entries])
    sketches = []
    for part, row in entries:
        if progress:
            progress(f"reading {row['name']}")
        sketches.append(entry_sketch(part.path))
    shipped = null_panel()
    pairs, skipped = [], 0
    for i in range(len(entries)):
        for j in range(i + 1, len(entries)):
            try:
                found = lineage(sketches[i], sketches[j], shipped)
            except HurefError:
                skipped += 1
                continue
            pairs.append({"a": entries[i][1]["name"], "b": entries[j][1]["name"], "statistic": found["statistic"],
                          "verdict": found["verdict"], "declared": "unrelated" if groups[i] != groups[j] else "related"})
    null = [p for p in pairs if p["verdict"] != "same-base" and (p["declared"] == "unrelated" or p["verdict"] == "unrelated")]
    fitted = panel_summary([p["statistic"] for p in null])
    panel = {"statistic": "huref.lineage.lineage_statistic of a registry's unrelated pairs (huref registry calibrate)",
             **fitted, "pairs": [{k: p[k] for k in ("a", "b", "statistic")} for p in null]}
    changed = [dict(p, refitted=verdict_from_statistic(p["statistic"], panel)["verdict"]) for p in pairs]
    return {
        "panel": panel,
        "shipped": {k: shipped[k] for k in ("mean", "std", "n")},
        "registry": fitted,
        "thresholds": {"shipped": statistic_at(shipped), "registry": statistic_at(panel)},
        "pairs": pairs,
        "conflicts": [p for p in pairs if p["declared"] == "unrelated" and p["verdict"] == "same-base"],
        "changed": [p for p in changed if p["refitted"] != p["verdict"]],
        "skipped": skipped,
    }

"""`huref audit`: is what a model declares about its base true, by its weights?

Each declared base (`huref.registry.entries.declarations`: the model card's base_model, a GGUF's
general.base_model.*) is checked with the calibrated lineage verdict against that base's sketch: the
registry's entry of that name or Hub id when there is one, else the claimed base itself when it can
be opened (a local path or a Hub id, through huggingface_hub). The claim is

- confirmed: the verdict is same-base;
- contradicted: the verdict is unrelated (the weights do not come from that base);
- unverifiable: the base is neither registered nor openable, the two share too few probe tokens, or
  the verdict is inconclusive; the reason is given.

With a registry, `identify` then runs, and every base it finds that is not related (same-base) to a
confirmed claim is reported as undisclosed. Exit codes (`Audit.exit_code`): 0 every claim confirmed and
no undisclosed base; 1 a claim contradicted or an undisclosed base found (with `strict`, also a claim
left unverifiable); 2 bad input (raised as HurefError before any verdict).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from huref.errors import HurefError
from huref.invariants import Terms
from huref.registry.entries import sketch_terms
from huref.registry.format import Registry
from huref.registry.identify import Identification, Query, entry_sketch, identify
from huref.results import p_text

STATUS_OF_VERDICT = {"same-base": "confirmed", "unrelated": "contradicted", "inconclusive": "unverifiable"}


@dataclass
class Claim:
    """One declared base and what the weights say about it."""

    name: str
    relation: str | None
    source: str
    status: str = "unverifiable"
    why: str = ""
    checked_against: str | None = None
    entry_id: str | None = None  # the registry entry it was checked against
    found: dict | None = None
    terms: Terms | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        verdict = {k: self.found[k] for k in ("statistic", "z", "p_value", "verdict", "alignment")} if self.found else None
        return {"name": self.name, "relation": self.relation, "source": self.source, "status": self.status,
                "why": self.why, "checked_against": self.checked_against, "lineage": verdict}


@dataclass
class Audit:
    """The claims checked, the undisclosed bases found, and the resulting exit code."""

    model: str
    claims: list[Claim]
    identification: Identification | None
    undisclosed: list[str]
    strict: bool = False

    @property
    def exit_code(self) -> int:
        bad = {"contradicted", "unverifiable"} if self.strict else {"contradicted"}
        return 1 if self.undisclosed or any(c.status in bad for c in self.claims) else 0

    def to_json(self) -> dict:
        return {"model": self.model, "claims": [c.to_json() for c in self.claims], "undisclosed": self.undisclosed,
                "identify": self.identification.to_json() if self.identification else None,
                "exit_code": self.exit_code,
                "note": "p-values against the shipped tiny-scale null panel unless --panel names another"}

    def text(self) -> str:
        lines = [f"{self.model}: " + (f"declares {len(self.claims)} base(s)" if self.claims else "declares no base")]
        for c in self.claims:
            relation = f", {c.relation}" if c.relation else ""
            lines.append(f"  {c.status:<12} {c.name} ({c.source}{relation}): {c.why}")
        if self.identification is None:
            lines.append("  undisclosed bases: not searched (no registry given)")
        elif self.undisclosed:
            lines.append(f"  undisclosed bases: {', '.join(self.undisclosed)}")
        else:
            lines.append("  undisclosed bases: none found in the registry")
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"### huref audit: `{self.model}`", "", "| declared base | source | relation | status | why |",
                 "|---|---|---|---|---|"]
        lines += [f"| `{c.name}` | {c.source} | {c.relation or ''} | **{c.status}** | {c.why} |" for c in self.claims]
        if not self.claims:
            lines.append("| (none declared) | | | | |")
        lines.append("")
        if self.identification is None:
            lines.append("Undisclosed bases: not searched (no registry given).")
        else:
            lines.append("Undisclosed bases: " + (", ".join(f"`{u}`" for u in self.undisclosed) or "none found") + ".")
        lines += ["", f"Exit code {self.exit_code}. p-values are against a tiny-scale null panel (docs/LINEAGE.md)."]
        return "\n".join(lines)


def registered_sketch(registry: Registry | None, name: str) -> tuple[str, str, Terms] | None:
    """(entry id, entry's name, its sketch) of the registry entry named `name` (display name or Hub id,
    any case); None when there is none."""
    if registry is None:
        return None
    wanted = name.casefold()
    for part, row in registry.rows(["name", "hub_id"]):
        if wanted in {str(row["name"]).casefold(), str(row["hub_id"] or "").casefold()}:
            return part.entry_id, row["name"], entry_sketch(part.path)
    return None


def opened_sketch(name: str, revision: str | None = None) -> Terms:
    """The sketch of a claimed base opened as a model (a local path or a Hub id); HurefError when it cannot be."""
    from huref.sources import load_model

    return sketch_terms(load_model(name, revision))


def check_claim(claim: Claim, query: Query, registry: Registry | None, panel: dict | None) -> Claim:
    """Fill in a claim's status, reason and verdict."""
    from huref.lineage import lineage

    found = registered_sketch(registry, claim.name)
    if found:
        claim.entry_id, claim.checked_against, claim.terms = found[0], f"registry entry {found[1]}", found[2]
    else:
        try:
            claim.terms = opened_sketch(claim.name)
            claim.checked_against = "the claimed base itself"
        except HurefError as error:
            claim.why = f"not in the registry and cannot be opened ({error})"
            return claim
    try:
        claim.found = lineage(claim.terms, query.sketch, panel)
    except HurefError as error:
        claim.why = f"cannot compare with {claim.checked_against} ({error})"
        return claim
    claim.status = STATUS_OF_VERDICT[claim.found["verdict"]]
    claim.why = (f"{claim.found['verdict']} by {claim.checked_against}: z {claim.found['z']:+.1f}, "
                 + p_text(claim.found['p_value']))
    return claim


def audit(query: Query, declared: list[dict], registry: Registry | None, top: int, panel: dict | None = None,
          strict: bool = False, progress=None) -> Audit:
    """Check every declared base, then (with a registry) look for undisclosed ones."""
    from huref.lineage import lineage

    claims = []
    for item in declared:
        if progress:
            progress(f"checking {item['name']}")
        claims.append(check_claim(Claim(item["name"], item.get("relation"), item["source"]), query, registry, panel))
    identification, undisclosed = None, []
    if registry is not None:
        identification = identify(registry, query, top, panel=panel, progress=progress)
        confirmed = [c for c in claims if c.status == "confirmed"]
        for match in identification.bases:
            if any(match.entry_id == c.entry_id for c in confirmed):
                continue
            sketch = entry_sketch(match.path)
            related = False
            for claim in confirmed:
                try:
                    related = related or lineage(claim.terms, sketch, panel)["verdict"] == "same-base"
                except HurefError:
                    pass
            if not related:
                undisclosed.append(match.name)
    return Audit(query.label, claims, identification, undisclosed, strict)

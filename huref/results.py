"""Typed results of scoring: each carries its verdict and renders its own JSON and text.

`Judgement` is how one score was judged (against a null panel, or a fixed threshold);
`LineageResult` is what `huref lineage` finds; a comparison is a `TermsComparison` (ICS, with a
`LineageResult` for two models judged by lineage) or a `LatentComparison` (a published fingerprint
on either side); `Match` is one base of `huref verify` and `Verification` all of them. The JSON
forms are documented in README.md; the text forms are what the commands print.

Numbers for people: p-values below ALPHA_SAME_BASE (1e-4) are shown as "p < 0.0001". Each null panel
is a few hundred pairs of tiny models trained here (huref/data/*_panel.json), and its fitted t tail
gives p-values like 1e-160 to a pair 60 standard deviations out, which no panel of that size can back.
`panel_note` says so beside every p-value shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from huref.lineage import VERDICT_LAYERS
from huref.files import package_data
from huref.statistics import (ALPHA_SAME_BASE, ALPHA_UNRELATED, ICS_PANEL_FILE, LATENT_PANEL_FILE, NULL_PANEL_FILE,
                              null_panel)

PANEL_FILES = {"lineage": NULL_PANEL_FILE.name, "ics panel": ICS_PANEL_FILE.name, "latent panel": LATENT_PANEL_FILE.name}
PCS_NOTE = ("PCS: cosine of the raw weights, the paper's naive baseline; any rewrite or training moves it, "
            "so no verdict uses it")


def p_text(p_value: float) -> str:
    """'p 0.0032', or 'p < 1e-4' below ALPHA_SAME_BASE (what a tiny-scale panel can back)."""
    return f"p < {ALPHA_SAME_BASE:g}" if p_value < ALPHA_SAME_BASE else f"p {p_value:.2g}"


def panel_note(*judgements: "Judgement") -> str:
    """Where calibrated judgements' p-values come from (each null panel named once), and the rule."""
    panels = dict.fromkeys((j.decided_by, j.panel) for j in judgements if j.calibrated)
    named = ", ".join(f"{name.removesuffix(' panel')} {null_panel(package_data(panel))['n']} pairs (huref/data/{panel})"
                      for name, panel in panels)
    return (f"null panel{'s' if len(panels) > 1 else ''}: {named} of unrelated tiny models trained here "
            f"(tiny-scale, in-sample). Same-base needs p <= {ALPHA_SAME_BASE:g} (under the null model at most 1 in "
            f"{round(1 / ALPHA_SAME_BASE):,} unrelated pairs is called same-base), unrelated p >= {ALPHA_UNRELATED:g}; "
            f"p-values below {ALPHA_SAME_BASE:g} are not shown: a panel this size cannot back them.")


@dataclass(frozen=True)
class Judgement:
    """How one score was judged. decided_by: "lineage", "ics panel" or "latent panel" (a null panel:
    z, p_value) or "thresholds" (huref/data/thresholds.json, z and p_value None); threshold: the
    smallest score called same-base; panel: the null panel's file in huref/data (the latent panel
    is the one fitted for the latents' encoder version, `huref.encoder.ENCODERS`)."""

    verdict: str
    decided_by: str
    threshold: float | None
    z: float | None = None
    p_value: float | None = None
    panel: str | None = None

    @property
    def calibrated(self) -> bool:
        return self.z is not None

    def evidence(self) -> str:
        """'z +3.1, p 0.0021' (calibrated) or 'fixed ICS thresholds'."""
        return f"z {self.z:+.1f}, {p_text(self.p_value)}" if self.calibrated else "the fixed ICS thresholds"

    def to_json(self) -> dict:
        out = {"verdict": self.verdict, "decided_by": self.decided_by, "threshold": self.threshold}
        if self.calibrated:
            out.update(z=self.z, p_value=self.p_value, fpr=ALPHA_SAME_BASE)
        return out


def judgement_of(found: dict, decided_by: str, threshold: float | None = None, panel: str | None = None) -> Judgement:
    """A Judgement from a `huref.statistics.verdict_from_statistic`-shaped dict ("verdict", and "z",
    "p_value" when calibrated); panel: the null panel's file (default: decided_by's in PANEL_FILES)."""
    return Judgement(found["verdict"], decided_by, found.get("threshold", threshold), found.get("z"),
                     found.get("p_value"), panel or PANEL_FILES.get(decided_by))


@dataclass(frozen=True)
class LineageResult:
    """Whole-depth lineage of model B against model A (`huref.lineage.lineage`). layers_a /
    layers_b: the layers read; map [La][Lb]; alignment: [[layer of A or None, layer of B]] in the
    models' own layer indices; scope: which layers were read, in words."""

    a: str
    b: str
    layers_a: list[int]
    layers_b: list[int]
    map: list[list[float]]
    term_maps: dict
    alignment: list[list]
    statistic: float
    judgement: Judgement
    scope: str = "every layer"

    @staticmethod
    def of(found: dict, a: str, b: str, scope: str = "every layer") -> "LineageResult":
        """From `huref.lineage.lineage`'s dict; a, b: the models' names."""
        return LineageResult(a, b, found["layers_a"], found["layers_b"], found["map"], found["term_maps"],
                             found["alignment"], found["statistic"], judgement_of(found, "lineage"), scope)

    @property
    def verdict(self) -> str:
        return self.judgement.verdict

    def summary_json(self) -> dict:
        """What compare reports of it: {"statistic", "z", "p_value", "fpr", "verdict", "alignment",
        "map", "layers_a", "layers_b"}."""
        j = self.judgement
        return {"statistic": self.statistic, "z": j.z, "p_value": j.p_value, "fpr": ALPHA_SAME_BASE,
                "verdict": j.verdict, "alignment": self.alignment, "map": self.map, "layers_a": self.layers_a,
                "layers_b": self.layers_b}

    def to_json(self) -> dict:
        """`huref lineage --json`: {"a", "b" (names), "map", "term_maps", "layers_a", "layers_b",
        "alignment", "statistic", "z", "p_value", "verdict", "fpr"}."""
        return {"a": self.a, "b": self.b, **self.summary_json(), "term_maps": self.term_maps}

    def line(self) -> str:
        return (f"statistic {self.statistic:+.4f}, {self.judgement.evidence()}: {self.verdict}")

    def positions(self) -> list[tuple[int | None, int]]:
        """The alignment as positions in the map (rows: layers_a, columns: layers_b)."""
        where_a = {layer: k for k, layer in enumerate(self.layers_a)}
        where_b = {layer: k for k, layer in enumerate(self.layers_b)}
        return [(None if i is None else where_a[i], where_b[j]) for i, j in self.alignment]

    def to_text(self) -> str:
        """Where each layer of B comes from, then the verdict and where its p-value comes from."""
        lines = [f"A: {self.a} ({len(self.layers_a)} layers read)", f"B: {self.b} ({len(self.layers_b)} layers read)",
                 "", "B layer  from A layer  similarity"]
        for (i, j), (row, column) in zip(self.alignment, self.positions()):
            if i is None:
                lines.append(f"{j:>7}  {'-':>12}  (from neither)")
            else:
                lines.append(f"{j:>7}  {i:>12}  {self.map[row][column]:+.3f}")
        lines += ["", f"verdict: {self.verdict} (statistic {self.statistic:+.4f}, {self.judgement.evidence()}; "
                      f"read {self.scope})",
                  panel_note(self.judgement),
                  f"compare, verify and report read at most {VERDICT_LAYERS} evenly spaced layers of each model, so "
                  "their z for a pair differs from this one's when more layers are read here."]
        return "\n".join(lines)

    def image(self):
        """The layer map as a PIL picture (`huref.lineage.lineage_image`)."""
        from huref.lineage import lineage_image

        return lineage_image(self.map, self.positions(), (self.a, self.b), layers_a=self.layers_a,
                             layers_b=self.layers_b)


def side_text(tag: str, side: dict) -> str:
    name = side["name"] if side["name"] == side["source"] else f"{side['name']} [{side['source']}]"
    return (f"{tag}: {name} ({side['kind']}, {side['model_type']}, layers {side['layers']}, "
            f"{side['n_tokens']} tokens)")


@dataclass(frozen=True)
class Comparison:
    """Two subjects scored against each other; a, b: their `huref.inputs.Subject.describe` dicts.
    Subclasses give `score`, `score_name`, `kind`, `judgement` (what decided) and `threshold`."""

    a: dict
    b: dict

    @property
    def verdict(self) -> str:
        return self.judgement.verdict

    @property
    def threshold(self) -> float:
        """The smallest score called same-base."""
        return self.judgement.threshold

    def headline(self) -> str:
        return f"{self.score_name} {self.score:+.4f} ({self.verdict})"


@dataclass(frozen=True)
class TermsComparison(Comparison):
    """Two subjects with terms, scored by ICS on their common probe tokens. term_ics {qk, vo, ffn};
    layer_ics: per pair of layers, [(layer of A, layer of B, ICS)]; pcs: None unless both are
    models of one shape; lineage: the whole-depth result when it decides (two models)."""

    ics: float
    term_ics: dict
    layer_ics: list[tuple[int, int, float]]
    pcs: float | None
    n_common_tokens: int
    ics_judgement: Judgement
    lineage: LineageResult | None = None
    kind = "ics"
    score_name = "ICS"

    @property
    def score(self) -> float:
        return self.ics

    @property
    def threshold(self) -> float:
        """The smallest ICS called same-base (by the ICS verdict, also when the lineage statistic decides)."""
        return self.ics_judgement.threshold

    @property
    def judgement(self) -> Judgement:
        """What decided: the lineage statistic when present, else the ICS verdict."""
        return self.lineage.judgement if self.lineage else self.ics_judgement

    def to_json(self) -> dict:
        """{"kind": "ics", "ics", "term_ics", "layer_ics": [{"layer_a", "layer_b", "ics"}], "pcs",
        "n_common_tokens", "verdict", "decided_by", "ics_judgement", "a", "b"} and "lineage" when it
        decides."""
        out = {"kind": self.kind, "ics": self.ics, "term_ics": self.term_ics,
               "layer_ics": [{"layer_a": i, "layer_b": j, "ics": v} for i, j, v in self.layer_ics],
               "pcs": self.pcs, "n_common_tokens": self.n_common_tokens, "verdict": self.verdict,
               "decided_by": self.judgement.decided_by, "ics_judgement": self.ics_judgement.to_json(),
               "a": self.a, "b": self.b}
        if self.lineage:
            out["lineage"] = self.lineage.summary_json()
        return out

    def one_line(self) -> str:
        """ICS, per term, PCS, lineage z and verdict on one line (the demo)."""
        pcs = "n/a" if self.pcs is None else f"{self.pcs:+.4f}"
        z = f"  lineage z {self.lineage.judgement.z:+.1f}" if self.lineage else ""
        return (f"ICS {self.ics:+.4f}  (qk {self.term_ics['qk']:+.3f}, vo {self.term_ics['vo']:+.3f}, "
                f"ffn {self.term_ics['ffn']:+.3f})  PCS {pcs}{z}  -> {self.verdict}")

    def to_text(self) -> str:
        lines = [side_text("A", self.a), side_text("B", self.b), f"common probe tokens: {self.n_common_tokens}", "",
                 "ICS per term"]
        lines += [f"  {name:<16}{value:+.4f}" for name, value in self.term_ics.items()]
        lines.append("ICS per layer (A / B)")
        lines += [f"  {f'{i} / {j}':<16}{value:+.4f}" for i, j, value in self.layer_ics]
        lines.append("")
        judged = self.ics_judgement
        how = (f": {judged.evidence()} against the ICS null panel" if judged.calibrated else
               f" against the fixed ICS thresholds (same-base from {judged.threshold:.2f}, fitted on the paper's last "
               "two layers)")
        lines.append(f"ICS {self.ics:+.4f}{how}: {judged.verdict}")
        pcs = "n/a (the shapes differ, or a file has no weights)" if self.pcs is None else f"{self.pcs:+.4f}"
        lines.append(f"PCS {pcs}   ({PCS_NOTE})")
        if self.lineage:
            lines.append(f"lineage over {self.lineage.scope} of each model: {self.lineage.line()} "
                         "(`huref lineage` reads every layer, so its z differs)")
        by = {"lineage": "the lineage statistic", "ics panel": "the calibrated ICS", "thresholds": "the ICS thresholds"}
        lines += ["", f"verdict: {self.verdict} (by {by[self.judgement.decided_by]})"]
        if self.ics_judgement.calibrated or self.judgement.calibrated:
            lines.append(panel_note(self.ics_judgement, self.judgement))
        return "\n".join(lines)


@dataclass(frozen=True)
class LatentComparison(Comparison):
    """Two latents (a published fingerprint on either side) compared by cosine, judged against the
    latent null panel."""

    latent_cosine: float
    judgement: Judgement
    note: str
    kind = "latent"
    score_name = "latent cosine"

    @property
    def score(self) -> float:
        return self.latent_cosine

    def to_json(self) -> dict:
        """{"kind": "latent", "latent_cosine", "z", "p_value", "fpr", "threshold", "verdict",
        "decided_by", "note", "a", "b"}."""
        j = self.judgement
        return {"kind": self.kind, "latent_cosine": self.latent_cosine, "z": j.z, "p_value": j.p_value,
                "fpr": ALPHA_SAME_BASE, "threshold": j.threshold, "verdict": j.verdict, "decided_by": j.decided_by,
                "note": self.note, "a": self.a, "b": self.b}

    def to_text(self) -> str:
        j = self.judgement
        return "\n".join([side_text("A", self.a), side_text("B", self.b), f"note: {self.note}",
                          f"latent cosine {self.latent_cosine:+.4f}: {j.evidence()} against the latent null panel "
                          f"(same-base from {j.threshold:+.3f})", "", f"verdict: {self.verdict}",
                          panel_note(j)])


@dataclass(frozen=True)
class Match:
    """A model scored against one base (`huref verify`). min_score: a fixed threshold (--min-ics or
    --min-latent) that replaces the comparison's verdict, else None."""

    base: str
    comparison: Comparison
    min_score: float | None = None

    @property
    def kind(self) -> str:
        return self.comparison.kind

    @property
    def score(self) -> float:
        return self.comparison.score

    @property
    def decided_by(self) -> str:
        """"lineage", "ics panel", "latent panel" or "threshold" (a given threshold, or the fixed ICS thresholds)."""
        decided = self.comparison.judgement.decided_by
        return "threshold" if self.min_score is not None or decided == "thresholds" else decided

    @property
    def threshold(self) -> float:
        """The smallest score that derives: the given threshold, else the comparison's."""
        return self.min_score if self.min_score is not None else self.comparison.threshold

    @property
    def derives(self) -> bool:
        if self.min_score is not None:
            return self.score >= self.min_score
        return self.comparison.verdict == "same-base"

    @property
    def verdict(self) -> str:
        """The comparison's verdict, or against a given threshold "same-base" / "below threshold"."""
        if self.min_score is None:
            return self.comparison.verdict
        return "same-base" if self.derives else "below threshold"

    def reason(self) -> str:
        """Why: the evidence and the verdict, in a few words."""
        score = f"{self.comparison.score_name} {self.score:+.4f}"
        j = self.comparison.judgement
        if self.decided_by == "lineage":
            return f"lineage {j.evidence()}: {self.verdict}; {score}"
        if self.decided_by != "threshold":
            return f"{score}, {j.evidence()}: {self.verdict}"
        given = " (given)" if self.min_score is not None else ""
        return f"{score} {'>=' if self.score >= self.threshold else '<'} {self.threshold:.2f}{given}: {self.verdict}"

    def to_json(self) -> dict:
        """{"base", "kind", "score", "threshold", "derives", "verdict", "decided_by", "detail"}."""
        return {"base": self.base, "kind": self.kind, "score": self.score, "threshold": self.threshold,
                "derives": self.derives, "verdict": self.verdict, "decided_by": self.decided_by,
                "detail": self.comparison.to_json()}


@dataclass(frozen=True)
class Verification:
    """A model against every base; matches best first (a base it derives from, then the largest
    margin over the threshold)."""

    model: str
    matches: list[Match] = field(default_factory=list)

    @property
    def best(self) -> Match:
        return self.matches[0]

    @property
    def derives(self) -> bool:
        return self.best.derives

    def to_json(self) -> dict:
        """{"model", "derives", "best", "matches"}."""
        return {"model": self.model, "derives": self.derives, "best": self.best.to_json(),
                "matches": [m.to_json() for m in self.matches]}

    def to_text(self) -> str:
        says = "derives from" if self.derives else "does not derive from"
        lines = [f"{self.model} {says} {self.best.base} ({self.best.reason()})"]
        lines += [f"  also: {m.base}  {m.reason()}" for m in self.matches[1:]]
        panels = [m.comparison.judgement for m in self.matches if m.decided_by != "threshold"]
        return "\n".join(lines + ([panel_note(*panels)] if panels else []))


@dataclass(frozen=True)
class Opening:
    """Whether terms and a salt open a fingerprint's commitment (`huref open`); reason: why, in words."""

    fingerprint: str
    opens: bool
    reason: str

    def to_json(self) -> dict:
        """{"fingerprint", "opens", "reason"}."""
        return {"fingerprint": self.fingerprint, "opens": self.opens, "reason": self.reason}

    def to_text(self) -> str:
        return f"{self.fingerprint}: {'opens' if self.opens else 'does not open'}: {self.reason}"

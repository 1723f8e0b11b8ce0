"""Scoring subjects against each other: what `compare`, `verify` and `report` print.

Two subjects with terms (models, invariants files) are scored by ICS, the paper's measure, on
their common probe tokens; when either is a published fingerprint only latents exist, and they
are scored by latent cosine. Two models are judged by the calibrated lineage verdict, latents by
the calibrated latent verdict (`huref.fingerprint.compare_fingerprints`), other terms by the ICS
verdict (`huref.similarity.judge_ics`: calibrated on the default layers, fixed thresholds on
others); --min-ics / --min-latent replace them by a fixed threshold.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from huref.errors import HurefError
from huref.fingerprint import compare_fingerprints
from huref.inputs import Settings, Subject, check_comparable, latent_version, settings_for
from huref.readers import lineage_reads
from huref.similarity import compare_terms, judge_ics, pcs


def lineage_settings(subject: Subject, settings: Settings, stride: int | None = None) -> Settings:
    """The settings of a model's whole-depth terms: every `stride`-th layer that carries terms
    (None: the verdict's sample, `huref.lineage.verdict_stride`)."""
    from huref.lineage import depth_layers, verdict_stride

    return replace(settings, layers=depth_layers(subject.model, stride or verdict_stride(subject.model)))


def lineage_terms(subject: Subject, settings: Settings, stride: int | None = None, progress=None):
    """A model's whole-depth terms (`lineage_settings`), computed once per setting. They are never
    written, so their reads skip the SHA-256 that names a written file's bytes, and their matmuls run
    in bfloat16 on weights stored so (`huref.readers.lineage_reads`)."""
    with lineage_reads(subject.model.reader):
        return subject.terms(lineage_settings(subject, settings, stride), progress)


def check_models(a: Subject, b: Subject) -> None:
    """Refuse a lineage of anything but two models (it reads their layers, which files do not hold)."""
    if a.kind != "model" or b.kind != "model":
        raise HurefError("lineage compares two models (it reads every layer of each)")


def lineage_pair(a: Subject, b: Subject, settings: Settings, stride: int | None = None, progress=None) -> dict:
    """Whole-depth lineage of two models (`huref.lineage.lineage`): layer maps, which layers of B
    come from which of A, the statistic, its z, p-value, false-positive rate and calibrated verdict.
    stride: every stride-th layer of each; None: each model's verdict sample (at most
    huref.lineage.VERDICT_LAYERS evenly spaced layers), what compare, verify and report use."""
    from huref.lineage import lineage

    check_models(a, b)
    return lineage(lineage_terms(a, settings, stride, progress), lineage_terms(b, settings, stride, progress))


LINEAGE_SUMMARY = ("statistic", "z", "p_value", "fpr", "verdict", "alignment", "map", "layers_a", "layers_b")


def compare_pair(a: Subject, b: Subject, settings: Settings, lineage_tokens: int | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """The comparison report of a and b (both already matched by `huref.inputs.settings_for`).

    With terms on both sides: {"ics", "terms": {"qk", "vo", "ffn"}, "layers", "pcs", "verdict",
    "ics_verdict", "ics_judgement" (`huref.similarity.judge_ics`), "n_common_tokens", "a", "b"} and, for two models when `lineage_tokens` is given,
    "lineage": {"statistic", "z", "p_value", "fpr", "verdict", "alignment", "map", "layers_a",
    "layers_b"} (as `huref.lineage.lineage` gives them) whose calibrated verdict
    is then "verdict" (else the ICS thresholds' is); with a fingerprint on either side: {"kind":
    "latent", "latent_cosine", "z", "p_value", "fpr", "threshold", "verdict", "note", "a", "b"}. `progress` hears of the
    whole-depth terms computed for the lineage.
    """
    check_comparable(a, b)
    if a.has_terms and b.has_terms:
        ta, tb = a.terms(settings), b.terms(settings)
        result = compare_terms(ta, tb)
        both_models = a.kind == "model" and b.kind == "model"
        judged = judge_ics(result["ics"], ta.meta, tb.meta)
        report = {
            "ics": result["ics"],
            "terms": result["terms"],
            "layers": result["layers"],
            "pcs": side_pcs(a, b, ta.layers) if both_models else None,
            "verdict": judged["verdict"],
            "ics_verdict": judged["verdict"],
            "ics_judgement": judged,
            "n_common_tokens": result["n_common"],
            "a": a.describe(settings),
            "b": b.describe(settings),
        }
        if both_models and lineage_tokens:
            found = lineage_pair(a, b, replace(settings, n_tokens=lineage_tokens), progress=progress)
            report["lineage"] = {key: found[key] for key in LINEAGE_SUMMARY}
            report["verdict"] = found["verdict"]
        return report
    version = latent_version(a, b)
    detail = compare_fingerprints(a.record(settings, version, progress), b.record(settings, version, progress))
    keys = ("kind", "latent_cosine", "z", "p_value", "fpr", "threshold", "verdict", "note")
    return {**{key: detail[key] for key in keys}, "a": a.describe(settings, version),
            "b": b.describe(settings, version)}


def side_pcs(a: Subject, b: Subject, layers: list[int]) -> float | None:
    """PCS, the paper's naive side metric; None where it cannot be computed (a bad value in a tensor
    the terms never read must not block the main result)."""
    try:
        return pcs(a.model, b.model, layers)
    except HurefError:
        return None


def score(a: Subject, b: Subject, settings: Settings, min_ics: float | None = None,
          min_latent: float | None = None, lineage_tokens: int | None = None,
          progress: Callable[[str], None] | None = None) -> dict:
    """Score a against base b: {"base", "kind": "ics"|"latent", "score", "threshold", "derives",
    "decided_by": "lineage"|"latent panel"|"ics panel"|"threshold", "detail"}. Two models with
    `lineage_tokens` and no --min-ics: the calibrated lineage verdict decides (the score stays the
    ICS, for the table); latents without --min-latent, and terms of the default layers without
    --min-ics: their calibrated verdicts (threshold: the smallest score called same-base); else the
    score against its threshold does."""
    detail = compare_pair(a, b, settings, lineage_tokens if min_ics is None else None, progress)
    if "ics" in detail:
        kind, value = "ics", detail["ics"]
        threshold = detail["ics_judgement"]["threshold"] if min_ics is None else min_ics
    else:
        kind, value = "latent", detail["latent_cosine"]
        threshold = detail["threshold"] if min_latent is None else min_latent
    if "lineage" in detail:
        decided_by = "lineage"
    elif kind == "latent" and min_latent is None:
        decided_by = "latent panel"
    elif kind == "ics" and min_ics is None and detail["ics_judgement"]["decided_by"] == "ics panel":
        decided_by = "ics panel"
    else:
        decided_by = "threshold"
    match = {"base": b.spec, "kind": kind, "score": value, "threshold": threshold, "decided_by": decided_by,
             "detail": detail}
    found = judgement(match)
    return {**match, "derives": found["verdict"] == "same-base" if found else value >= threshold}


def judgement(match: dict) -> dict | None:
    """The calibrated verdict that decided a `score` match ({"z", "p_value", "verdict", ...}: the
    lineage summary, the latent comparison or the ICS judgement), None when a threshold did."""
    detail = match["detail"]
    return {"lineage": detail.get("lineage"), "latent panel": detail,
            "ics panel": detail.get("ics_judgement")}.get(match["decided_by"])


def verify(model: Subject, bases: list[Subject], settings: Settings, min_ics: float | None = None,
           min_latent: float | None = None, progress: Callable[[str], None] | None = None,
           lineage_tokens: int | None = None) -> dict:
    """Score `model` against each base; a base it derives from wins, then the largest margin over
    the threshold.

    Returns {"model", "derives", "best": match, "matches": [match, ...] best first}; a match is
    what score() returns (with `lineage_tokens`, model bases are judged by the calibrated lineage
    verdict). The model's terms are computed once per distinct setting the bases need.
    """
    matches = []
    for base, matched in zip(bases, verify_plans(model, bases, settings)):
        if model.has_terms and base.has_terms:
            model.terms(matched, progress)
        matches.append(score(model, base, matched, min_ics, min_latent, lineage_tokens, progress))
        base.forget()  # one base's terms in memory at a time
    matches.sort(key=lambda m: (m["derives"], m["score"] - m["threshold"]), reverse=True)
    return {"model": model.spec, "derives": matches[0]["derives"], "best": matches[0], "matches": matches}


def verify_plans(model: Subject, bases: list[Subject], settings: Settings) -> list[Settings]:
    """The settings `model` is scored with against each base (checked before any work)."""
    return [settings_for([base, model], settings) for base in bases]


def check_thresholds(*values: float | None) -> None:
    """Refuse a threshold that is not a finite number."""
    import math

    for value in values:
        if value is not None and not math.isfinite(value):
            raise HurefError(f"a threshold must be a finite number, not {value}")

"""Scoring subjects against each other: what `compare`, `lineage`, `verify` and `report` compute.

Two subjects with terms (models, invariants files) are scored by ICS, the paper's measure, on
their common probe tokens; when either is a published fingerprint only latents exist, and they
are scored by latent cosine. Two models are judged by the calibrated lineage verdict, latents by
the calibrated latent verdict (`huref.fingerprint.compare_fingerprints`), other terms by the ICS
verdict (`huref.similarity.judge_ics`: calibrated on the default layers, fixed thresholds on
others); the settings' `Policy` says which (`--verdict`, `--min-ics`, `--min-latent`).

A `Plan` says, before any work, which terms a job reads (`Read`s) and so how many progress steps
it takes; the scoring functions read exactly the reads `pair_reads` names, so the two cannot
disagree. Results are the typed objects of `huref.results`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from huref.encoder import ENCODERS
from huref.errors import HurefError
from huref.fingerprint import compare_fingerprints
from huref.inputs import ModelSubject, Settings, Subject, check_comparable, latent_version, settings_for
from huref.invariants import Terms
from huref.readers import lineage_reads
from huref.results import (LatentComparison, LineageResult, Match, TermsComparison, Verification, judgement_of)
from huref.similarity import compare_terms, judge_ics, pcs

Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class Read:
    """One thing a job computes from a subject: its terms at `settings`; whole_depth: the
    whole-depth terms of a lineage, read through `huref.readers.lineage_reads` (no SHA-256: they
    are never written; bfloat16 weights multiplied as stored); latent: an encoder version whose
    latent of the subject is made (`Subject.record`: that version reads its own terms), not terms."""

    subject: Subject
    settings: Settings
    whole_depth: bool = False
    latent: int | None = None

    def key(self) -> tuple:
        return (id(self.subject), self.settings.terms_key(), self.latent)

    def steps(self) -> int:
        if self.latent is not None:
            return self.subject.latent_steps(self.settings, self.latent)
        return self.subject.steps(self.settings)

    def terms(self, progress: Progress = None) -> Terms:
        if self.whole_depth:
            with lineage_reads(self.subject.model.reader):
                return self.subject.terms(self.settings, progress)
        return self.subject.terms(self.settings, progress)

    def compute(self, progress: Progress = None) -> None:
        """Compute what the read names (the subject keeps it)."""
        if self.latent is not None:
            self.subject.record(self.settings, self.latent, progress)
        else:
            self.terms(progress)


@dataclass(frozen=True)
class Plan:
    """The distinct reads of a job, in order, and the progress steps they take (counted when the plan
    is made, before any work: a read already in memory or spilled counts 0)."""

    reads: tuple[Read, ...]
    steps: int

    @staticmethod
    def of(reads) -> "Plan":
        distinct: dict = {}
        for read in reads:
            distinct.setdefault(read.key(), read)
        return Plan(tuple(distinct.values()), sum(read.steps() for read in distinct.values()))


def whole_depth_read(subject: ModelSubject, settings: Settings) -> Read:
    """The read of a model's whole-depth terms (`Settings.whole_depth`)."""
    return Read(subject, settings.whole_depth(subject), whole_depth=True)


def latent_read(subject: Subject, settings: Settings, version: int) -> Read:
    """The read that makes subject's latent of encoder `version`: its terms at `settings` when that
    version reads the command's layers (encoding them takes no step), else the latent itself."""
    return Read(subject, settings, latent=version) if ENCODERS[version].every_layer else Read(subject, settings)


def dog_reads(subjects: list[Subject], settings: Settings, version: int | None = None) -> list[Read]:
    """The reads that make the subjects' latents (their dogs) of encoder `version` (None: each
    subject's `latent_version`); a fingerprint holds its latent."""
    return [latent_read(s, settings, version or s.latent_version()) for s in subjects if s.has_terms]


def pair_reads(a: Subject, b: Subject, settings: Settings) -> list[Read]:
    """What scoring a against b reads: each side's terms at `settings`, and both models' whole-depth
    terms when the lineage statistic judges them (`Settings.judged_by_lineage`); with a fingerprint
    on either side, the other side's latent of the fingerprint's encoder version."""
    if not (a.has_terms and b.has_terms):
        return dog_reads([a, b], settings, latent_version(a, b))
    reads = [Read(s, settings) for s in (a, b)]
    if settings.judged_by_lineage(a, b):
        reads += [whole_depth_read(a, settings), whole_depth_read(b, settings)]
    return reads


def plan_pairs(pairs: list[tuple[Subject, Subject, Settings]]) -> Plan:
    """The plan of scoring every (a, b, settings) pair."""
    return Plan.of(read for a, b, settings in pairs for read in pair_reads(a, b, settings))


def require_models(a: Subject, b: Subject) -> tuple[ModelSubject, ModelSubject]:
    """Refuse a lineage of anything but two models (it reads their layers, which files do not hold)."""
    if not (isinstance(a, ModelSubject) and isinstance(b, ModelSubject)):
        raise HurefError("lineage compares two models (it reads every layer of each)")
    return a, b


def lineage_pair(a: Subject, b: Subject, settings: Settings, progress: Progress = None) -> LineageResult:
    """Whole-depth lineage of two models (`huref.lineage.lineage`) on the layers and tokens the
    settings' policy names (`Settings.whole_depth`): which layers of B come from which of A, the
    statistic and its calibrated verdict."""
    from huref.lineage import lineage

    a, b = require_models(a, b)
    ta, tb = (whole_depth_read(s, settings).terms(progress) for s in (a, b))
    return LineageResult.of(lineage(ta, tb), a.label, b.label, settings.policy.whole_depth)


def plan_lineage(a: Subject, b: Subject, settings: Settings) -> Plan:
    """The plan of `lineage_pair`: both models' whole-depth terms."""
    a, b = require_models(a, b)
    return Plan.of([whole_depth_read(a, settings), whole_depth_read(b, settings)])


def compare_pair(a: Subject, b: Subject, settings: Settings, progress: Progress = None):
    """The comparison of a and b (matched by `huref.inputs.settings_for`): a TermsComparison when
    both have terms (with the lineage result when it judges them), else a LatentComparison."""
    check_comparable(a, b)
    for read in pair_reads(a, b, settings):
        read.compute(progress)
    if a.has_terms and b.has_terms:
        ta, tb = a.terms(settings), b.terms(settings)
        result = compare_terms(ta, tb)
        both_models = isinstance(a, ModelSubject) and isinstance(b, ModelSubject)
        judged = judge_ics(result["ics"], ta.meta, tb.meta)
        return TermsComparison(
            a=a.describe(settings), b=b.describe(settings), ics=result["ics"], term_ics=result["terms"],
            layer_ics=list(zip(ta.layers, tb.layers, result["layers"])),
            pcs=side_pcs(a, b, ta.layers) if both_models else None, n_common_tokens=result["n_common"],
            ics_judgement=judgement_of(judged, judged["decided_by"]),
            lineage=lineage_pair(a, b, settings) if settings.judged_by_lineage(a, b) else None)
    version = latent_version(a, b)
    detail = compare_fingerprints(a.record(settings, version), b.record(settings, version))
    return LatentComparison(a.describe(settings, version), b.describe(settings, version), detail["latent_cosine"],
                            judgement_of(detail, "latent panel", panel=ENCODERS[version].panel), detail["note"])


def side_pcs(a: ModelSubject, b: ModelSubject, layers: list[int]) -> float | None:
    """PCS, the paper's naive side metric; None where it cannot be computed (a bad value in a tensor
    the terms never read must not block the main result)."""
    try:
        return pcs(a.model, b.model, layers)
    except HurefError:
        return None


def score(a: Subject, b: Subject, settings: Settings, progress: Progress = None) -> Match:
    """a scored against base b: a Match, decided by the comparison's calibrated verdict or, with
    the policy's --min-ics / --min-latent, by the score against that threshold."""
    comparison = compare_pair(a, b, settings, progress)
    policy = settings.policy
    return Match(b.spec, comparison, policy.min_ics if comparison.kind == "ics" else policy.min_latent)


def verify_pairs(model: Subject, bases: list[Subject], settings: Settings) -> list[tuple[Subject, Subject, Settings]]:
    """(model, base, the settings model is scored with against base) per base, checked before any work."""
    return [(model, base, settings_for([base, model], settings)) for base in bases]


def verify(model: Subject, bases: list[Subject], settings: Settings, progress: Progress = None) -> Verification:
    """Score `model` against each base, one base's terms in memory at a time; a base it derives from
    wins, then the largest margin over the threshold."""
    matches = []
    for _, base, matched in verify_pairs(model, bases, settings):
        matches.append(score(model, base, matched, progress))
        base.forget()
    matches.sort(key=lambda m: (m.derives, m.score - m.threshold), reverse=True)
    return Verification(model.spec, matches)

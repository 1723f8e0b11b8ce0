"""Does MODEL derive from a base? Scores against models, invariants files and fingerprints.

A subject is anything huref can score: a model (its terms are computed), an invariants file, or a
published fingerprint (FP.json). Two subjects with terms are scored by ICS (the paper's measure,
on their common probe tokens); when either is a fingerprint only latents exist, and they are
scored by latent cosine. Each score has its own threshold: huref.similarity's same-base ICS
threshold, or LATENT_THRESHOLD for latents (both can be overridden).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from huref.comparison import check_same_settings, compare as compare_sides, is_invariants_file, open_side
from huref.errors import HurefError
from huref.fingerprint import LATENT_THRESHOLD, compare_fingerprints, is_fingerprint_file, latent_record, load_fingerprint
from huref.invariants import DEFAULT_TOKENS, Terms
from huref.similarity import thresholds


@dataclass
class Subject:
    """A model, invariants file or fingerprint; `record` is its latent record (FP.json fields)."""

    spec: str
    terms: Terms | None = None
    fingerprint: dict | None = None
    side: object = None  # the huref.comparison.Side of a model or invariants file
    _record: dict | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "fingerprint" if self.fingerprint is not None else self.side.describe()["kind"]

    def record(self) -> dict:
        """The latent record: the fingerprint itself, or the terms encoded (once)."""
        if self.fingerprint is not None:
            return self.fingerprint
        if self._record is None:
            self._record = latent_record(self.terms)
        return self._record

    def latent(self) -> torch.Tensor:
        return torch.tensor(self.record()["latent"], dtype=torch.float32)

    def describe(self) -> dict:
        if self.fingerprint is None:
            return self.side.describe()
        fp = self.fingerprint
        return {"source": self.spec, "kind": "fingerprint", "model_type": fp.get("model_type"),
                "layers": fp.get("layers"), "n_tokens": fp.get("n_tokens"), "token_strategy": fp.get("token_strategy")}


def fingerprint_settings(fp: dict) -> dict:
    """Token count and layers (from the end, when chosen explicitly) a model needs to match fp."""
    layers = None
    if fp.get("layer_choice") == "given" and isinstance(fp.get("n_layers"), int):
        layers = [i - fp["n_layers"] for i in fp["layers"]]
    return {"n_tokens": fp["n_tokens"], "layers": layers}


def open_subject(spec: str, like: Subject | None = None, layers=None, n_tokens: int = DEFAULT_TOKENS, **kwargs) -> Subject:
    """Open spec; a model's terms are computed with the settings that `like` was made with."""
    if is_fingerprint_file(spec):
        return Subject(spec, fingerprint=load_fingerprint(spec))
    if like is not None and like.fingerprint is not None:
        settings = fingerprint_settings(like.fingerprint)
        layers, n_tokens = settings["layers"] or layers, settings["n_tokens"]
    side = open_side(spec, like=like.terms if like is not None else None, layers=layers, n_tokens=n_tokens, **kwargs)
    return Subject(spec, terms=side.terms, side=side)


def score(a: Subject, b: Subject, min_ics: float | None = None, min_latent: float | None = None) -> dict:
    """Score a against b: {"kind": "ics"|"latent", "score", "threshold", "derives", "detail"}."""
    if a.terms is not None and b.terms is not None:
        check_same_settings(a.side, b.side)
        detail = compare_sides(a.side, b.side)
        threshold = thresholds()["same_base"] if min_ics is None else min_ics
        value = detail["ics"]
        kind = "ics"
    else:
        detail = compare_fingerprints(a.record(), b.record())
        threshold = LATENT_THRESHOLD if min_latent is None else min_latent
        value = detail["latent_cosine"]
        kind = "latent"
    return {"base": b.spec, "kind": kind, "score": value, "threshold": threshold, "derives": value >= threshold,
            "detail": detail}


def registry_files(directory) -> list[str]:
    """Fingerprint (.json) and invariants (.safetensors) files of a registry folder, sorted."""
    folder = Path(directory)
    if not folder.is_dir():
        raise HurefError(f"--registry {directory}: not a folder")
    files = sorted(str(p) for p in folder.iterdir() if is_fingerprint_file(p) or is_invariants_file(str(p)))
    if not files:
        raise HurefError(f"--registry {directory}: no fingerprint (.json) or invariants (.safetensors) files")
    return files


def verify(model: str, bases: list[str], min_ics=None, min_latent=None, **open_kwargs) -> dict:
    """Score MODEL against each base; the best match (largest margin over its threshold) decides.

    Returns {"model", "derives", "best": match, "matches": [match, ...] best first}; a match is
    what score() returns. The model's terms are computed once per distinct setting the bases need.
    """
    opened_bases = [open_subject(spec, **open_kwargs) for spec in bases]
    computed = {}
    matches = []
    for base in opened_bases:
        if base.fingerprint is not None:
            settings = fingerprint_settings(base.fingerprint)
            key = ("fingerprint", settings["n_tokens"], tuple(settings["layers"] or ()))
        else:
            key = ("terms", len(base.terms.tokens), tuple(base.terms.layers), base.terms.meta.get("n_layers"))
        if key not in computed:
            computed[key] = open_subject(model, like=base, **open_kwargs)
        matches.append(score(computed[key], base, min_ics, min_latent))
    matches.sort(key=lambda m: m["score"] - m["threshold"], reverse=True)
    return {"model": model, "derives": matches[0]["derives"], "best": matches[0], "matches": matches}


def compare_with_fingerprints(a: str, b: str, **open_kwargs) -> tuple[Subject, Subject, dict]:
    """`huref compare` when A or B is a fingerprint: (subject a, subject b, report).

    The report: {"kind": "latent", "latent_cosine", "threshold", "verdict": "same-base"|"unrelated",
    "note", "a": side description, "b": side description}. A model side is encoded with the
    fingerprint's token count and layers.
    """
    swap = is_fingerprint_file(b) and not is_fingerprint_file(a)  # open the fingerprint first
    first = open_subject(b if swap else a, **open_kwargs)
    second = open_subject(a if swap else b, like=first, **open_kwargs)
    sa, sb = (second, first) if swap else (first, second)
    result = score(sa, sb)
    detail = result["detail"]
    report = {"kind": "latent", "latent_cosine": detail["latent_cosine"], "threshold": detail["threshold"],
              "verdict": "same-base" if result["derives"] else "unrelated", "note": detail["note"],
              "a": sa.describe(), "b": sb.describe()}
    return sa, sb, report

"""One comparison, end to end: resolve each side (model or invariants file), compute what is
missing with matching settings, and build the report `huref compare --json` prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from huref.errors import HurefError
from huref.invariants import DEFAULT_TOKENS, Terms, invariant_terms, load_terms
from huref.similarity import compare_terms, pcs, verdict
from huref.sources import Model, load_model


@dataclass
class Side:
    """One side of a comparison: its terms, and the opened model when it is one."""

    spec: str
    terms: Terms
    model: Model | None = None

    def describe(self) -> dict:
        meta = self.terms.meta
        return {
            "source": self.spec,
            "kind": "model" if self.model is not None else "invariants",
            "model_type": meta.get("model_type"),
            "layers": self.terms.layers,
            "n_tokens": len(self.terms.tokens),
            "token_strategy": meta.get("token_strategy"),
        }


def is_invariants_file(spec: str) -> bool:
    """True for a .safetensors file that is not part of a model directory (no config.json beside)."""
    path = Path(spec)
    return path.is_file() and path.suffix == ".safetensors" and not (path.parent / "config.json").is_file()


def relative_layers(terms: Terms) -> list[int] | None:
    """The layers of `terms` counted from the end (so models of other depths match them)."""
    n_layers = terms.meta.get("n_layers")
    return [i - n_layers for i in terms.layers] if isinstance(n_layers, int) else None


def open_side(
    spec: str,
    like: Terms | None = None,
    layers: list[int] | None = None,
    n_tokens: int = DEFAULT_TOKENS,
    revision: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = None,
) -> Side:
    """Open a side; a model's terms are computed with `like`'s token count, and its layers when
    `like` had them chosen explicitly (else the same default rule picks them)."""
    if is_invariants_file(spec):
        return Side(spec, load_terms(spec))
    model = load_model(spec, revision)
    if like is not None:
        n_tokens = len(like.tokens)
        if like.meta.get("layer_choice") == "given":
            layers = relative_layers(like) or layers
    terms = invariant_terms(model, layers, n_tokens, device=device, dtype=dtype, progress=progress)
    return Side(spec, terms, model)


def compare(a: Side, b: Side) -> dict:
    """The comparison report: ICS overall / per term / per layer, PCS, verdict, both sides."""
    result = compare_terms(a.terms, b.terms)
    value = None
    if a.model is not None and b.model is not None:
        value = pcs(a.model, b.model, a.terms.layers)
    return {
        "ics": result["ics"],
        "terms": result["terms"],
        "layers": result["layers"],
        "pcs": value,
        "verdict": verdict(result["ics"]),
        "n_common_tokens": result["n_common"],
        "a": a.describe(),
        "b": b.describe(),
    }


def check_same_settings(a: Side, b: Side) -> None:
    """Refuse to compare two invariants files computed on different layer positions."""
    ra, rb = relative_layers(a.terms), relative_layers(b.terms)
    defaults = {a.terms.meta.get("layer_choice"), b.terms.meta.get("layer_choice")} == {"default"}
    if ra is not None and rb is not None and ra != rb and not defaults:
        raise HurefError(f"the two sides use different layers (from the end: {ra} vs {rb})")

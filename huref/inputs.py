"""Every argument huref scores, opened into one type, and the one rule for matching settings.

A `Subject` is anything a command scores: a model (its terms are computed on demand, with the
settings asked for), an invariants file (terms stored) or a published fingerprint FP.json (a
latent only). `open_subject(spec)` is the one place that decides which a MODEL / FILE argument
is; opening is cheap (config, tensor headers, file contents), so every argument of a command is
opened, and every setting checked, before any expensive work starts.

`Settings` is the frozen set of options every command shares (built once by the CLI's shared
option set). `settings_for(subjects, settings)` is the one rule for the other side: a model scored
against a file is computed with the file's token count, and with its layers (counted from the
end) unless the current default rule chose them (`MadeWith`); two files must have been made alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from huref.encoder import ENCODER_VERSION, ENCODERS, LATENT_MAX_LAYERS, LATENT_RULE, LATENT_TOKENS
from huref.errors import HurefError
from huref.invariants import (DEFAULT_LAYERS, DEFAULT_RULE, DEFAULT_TOKENS, Terms, invariant_terms, load_terms,
                              resolve_layers, terms_header)
from huref.similarity import MIN_COMMON_TOKENS


@dataclass(frozen=True)
class Settings:
    """Options shared by every command. layers: None for the default rule (the two middle layers
    that write, `huref.invariants.default_layer_order`), else indices, negative from the end."""

    n_tokens: int = DEFAULT_TOKENS
    layers: tuple[int, ...] | None = None
    revision: str | None = None
    device: str = "cpu"
    precision: str = "float32"
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.n_tokens < MIN_COMMON_TOKENS:
            raise HurefError(f"--tokens {self.n_tokens} is too few: two models must share at least "
                             f"{MIN_COMMON_TOKENS} probe tokens")
        if self.precision not in ("float32", "float64"):
            raise HurefError(f"--precision must be float32 or float64, not '{self.precision}'")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise HurefError("--device cuda: no CUDA device is available")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self.precision == "float64" else torch.float32

    def terms_key(self) -> tuple:
        """What a model's terms depend on."""
        return (self.n_tokens, self.layers, self.device, self.precision)


@dataclass(frozen=True)
class MadeWith:
    """How a file's terms or latent were made: token count, and the layers (counted from the end
    when the depth is known) unless they came from this version's default rule (None).

    A file whose layer_choice is not DEFAULT_RULE ("given", or "default": the last two, the rule of
    huref before the middle layers) is matched by its own layers, so it is never taken for one made
    by the current rule."""

    n_tokens: int
    layers: tuple[int, ...] | None

    @staticmethod
    def of(n_tokens, layers, layer_choice, n_layers) -> "MadeWith":
        if layer_choice in (DEFAULT_RULE, LATENT_RULE):
            return MadeWith(int(n_tokens), None)
        return MadeWith(int(n_tokens), tuple(i - n_layers if isinstance(n_layers, int) else i for i in layers))

    def describe(self) -> str:
        if self.layers is None:
            where = "the default layers"
        else:
            where = f"layers {list(self.layers)}" + (" from the end" if all(i < 0 for i in self.layers) else "")
        return f"{self.n_tokens} tokens and {where}"


@dataclass(eq=False)
class Subject:
    """One scored argument: kind "model" (model set), "invariants" (stored terms) or "fingerprint"
    (fingerprint dict). label: a short name for tables and pictures."""

    spec: str
    kind: str
    label: str
    model: object = None
    stored: Terms | None = None
    fingerprint: dict | None = None
    _terms: dict = field(default_factory=dict, repr=False)
    _records: dict = field(default_factory=dict, repr=False)
    _spilled: dict = field(default_factory=dict, repr=False)

    @property
    def has_terms(self) -> bool:
        return self.kind != "fingerprint"

    def made_with(self) -> MadeWith | None:
        """How a file subject was made; None for a model (it follows the settings)."""
        if self.kind == "invariants":
            meta = self.stored.meta
            return MadeWith.of(len(self.stored.tokens), self.stored.layers, meta.get("layer_choice"), meta.get("n_layers"))
        if self.kind == "fingerprint":
            fp = self.fingerprint
            return MadeWith.of(fp["n_tokens"], fp["layers"], fp.get("layer_choice"), fp.get("n_layers"))
        return None

    def check_settings(self, settings: Settings) -> None:
        """Refuse, before any work, settings this model cannot be computed with."""
        if self.kind == "model":
            try:
                resolve_layers(self.model.dims.n_layers, list(settings.layers) if settings.layers else None)
            except HurefError as e:
                raise HurefError(f"{self.spec}: {e}") from None

    def steps(self, settings: Settings) -> int:
        """Progress steps `terms(settings)` will report (0 when nothing is left to compute)."""
        if self.kind != "model" or settings.terms_key() in self._terms or settings.terms_key() in self._spilled:
            return 0
        return 1 + (len(settings.layers) if settings.layers else DEFAULT_LAYERS)

    def terms(self, settings: Settings, progress: Callable[[str], None] | None = None) -> Terms:
        """The subject's terms: stored, or computed (once per distinct setting) for a model."""
        if self.kind == "invariants":
            if self.stored.values.shape[2] != len(self.stored.tokens):  # only the header is read yet
                self.stored = load_terms(self.spec)
            return self.stored
        if self.kind != "model":
            raise HurefError(f"{self.spec}: a fingerprint carries no invariant terms")
        key = settings.terms_key()
        if key not in self._terms and key in self._spilled:
            self._terms[key] = load_terms(self._spilled[key])
        if key not in self._terms:
            self._terms[key] = invariant_terms(self.model, list(settings.layers) if settings.layers else None,
                                               settings.n_tokens, device=settings.device, dtype=settings.dtype,
                                               progress=progress)
        return self._terms[key]

    def spill(self, settings: Settings, path) -> None:
        """Move a model's computed terms to the file at path (private scratch space), read back on use."""
        from huref.files import write_atomically
        from huref.invariants import terms_chunks

        if self.kind == "model":
            key = settings.terms_key()
            write_atomically(path, terms_chunks(self.terms(settings)))
            self._spilled[key] = str(path)
            del self._terms[key]

    def forget(self) -> None:
        """Drop the terms read or computed (latents, which are small, and spilled terms on disk
        stay); a registry is scored one file at a time."""
        self._terms.clear()
        if self.kind == "invariants":
            self.stored = terms_header(self.spec)[0]

    def latent_version(self) -> int:
        """The encoder version of this subject's latent where the subject fixes it (a fingerprint: the
        version that made it; an invariants file: 2 when it holds every layer, else 1), else the current."""
        if self.kind == "fingerprint":
            from huref.fingerprint import encoder_version

            return encoder_version(self.fingerprint)
        if self.kind == "invariants":
            return ENCODER_VERSION if self.stored.meta.get("layer_choice") == LATENT_RULE else 1
        return ENCODER_VERSION

    def latent_settings(self, settings: Settings, version: int = ENCODER_VERSION) -> Settings:
        """The settings of the terms encoder `version` reads from this model: the command's for version 1;
        for version 2, every layer that carries terms (evenly spaced when more than LATENT_MAX_LAYERS)
        over at most LATENT_TOKENS probe tokens."""
        if not ENCODERS[version].every_layer:
            return settings
        from huref.lineage import depth_layers, verdict_stride

        return replace(settings, n_tokens=min(settings.n_tokens, LATENT_TOKENS),
                       layers=depth_layers(self.model, verdict_stride(self.model, LATENT_MAX_LAYERS)))

    def latent_terms(self, settings: Settings, version: int = ENCODER_VERSION,
                     progress: Callable[[str], None] | None = None) -> Terms:
        """The terms encoder `version` reads (`latent_settings`): a model's computed (version 2 passes over
        layers that write nothing, as an inserted identity layer does), an invariants file's stored
        (refused when they are not what that version reads)."""
        if self.kind == "invariants":
            if self.latent_version() != version:
                raise HurefError(f"{self.spec} holds the terms of {self.made_with().describe()}; a latent of encoder "
                                 f"version {version} reads {ENCODERS[version].reads}: compute it from the model")
            return self.terms(settings)
        if self.kind != "model" or not ENCODERS[version].every_layer:
            return self.terms(settings, progress)
        chosen = self.latent_settings(settings, version)
        terms = invariant_terms(self.model, list(chosen.layers), chosen.n_tokens, device=chosen.device,
                                dtype=chosen.dtype, progress=progress, skip_inert=True)
        return Terms(terms.values, terms.layers, terms.tokens, dict(terms.meta, layer_choice=LATENT_RULE))

    def latent_steps(self, settings: Settings, version: int = ENCODER_VERSION) -> int:
        """Progress steps `latent_terms` will report."""
        if self.kind != "model" or not ENCODERS[version].every_layer:
            return self.steps(settings)
        return 1 + len(self.latent_settings(settings, version).layers)

    def record(self, settings: Settings, version: int | None = None,
               progress: Callable[[str], None] | None = None) -> dict:
        """The latent record (FP.json's public fields): the fingerprint itself, or the terms encoder
        `version` reads (default: `latent_version`), encoded; computed once per setting."""
        if self.kind == "fingerprint":
            return self.fingerprint
        from huref.fingerprint import latent_record

        version = version or self.latent_version()
        key = (version, settings.terms_key())
        if key not in self._records:
            self._records[key] = latent_record(self.latent_terms(settings, version, progress), version)
        return self._records[key]

    def latent(self, settings: Settings) -> torch.Tensor:
        return torch.tensor(self.record(settings)["latent"], dtype=torch.float32)

    def describe(self, settings: Settings, version: int | None = None) -> dict:
        """{"source", "kind", "model_type", "layers", "n_tokens", "token_strategy"} for reports: of the
        terms the settings read, or with `version` (a latent comparison) of the latent's terms."""
        if self.kind == "fingerprint" or version is not None:
            fp = self.record(settings, version)
            return {"source": self.spec, "kind": self.kind, "model_type": fp.get("model_type"),
                    "layers": fp.get("layers"), "n_tokens": fp.get("n_tokens"),
                    "token_strategy": fp.get("token_strategy")}
        terms = self.stored if self.kind == "invariants" else self.terms(settings)  # a file's header suffices
        return {"source": self.spec, "kind": self.kind, "model_type": terms.meta.get("model_type"),
                "layers": terms.layers, "n_tokens": len(terms.tokens),
                "token_strategy": terms.meta.get("token_strategy")}


def is_fingerprint_file(spec) -> bool:
    """True for an existing .json file (how fingerprints are told from models)."""
    path = Path(spec)
    return path.suffix.lower() == ".json" and path.is_file()


def is_invariants_file(spec) -> bool:
    """True for a .safetensors file that is not part of a model directory (no config.json beside)."""
    path = Path(spec)
    return path.is_file() and path.suffix == ".safetensors" and not (path.parent / "config.json").is_file()


def label_of(spec: str) -> str:
    """A short name for a spec: a file's or directory's name, a hub id or demo name as given."""
    path = Path(spec)
    if path.exists():
        return path.resolve().name or spec
    return spec


def open_subject(spec: str, settings: Settings | None = None) -> Subject:
    """Open one argument (cheap: no terms are computed)."""
    from huref.fingerprint import load_fingerprint
    from huref.sources import load_model

    settings = settings or Settings()
    try:
        os.stat(spec)
    except (FileNotFoundError, NotADirectoryError):  # not a local path: a hub id or demo name, or missing
        pass
    except (OSError, ValueError) as e:  # a name too long, a loop of links, a NUL byte, no permission
        raise HurefError(f"{spec}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if is_fingerprint_file(spec):
        return Subject(spec, "fingerprint", label_of(spec), fingerprint=load_fingerprint(spec))
    if is_invariants_file(spec):
        return Subject(spec, "invariants", label_of(spec), stored=terms_header(spec)[0])
    model = load_model(spec, settings.revision)
    return Subject(spec, "model", model.label, model=model)


def settings_for(subjects: list[Subject], settings: Settings) -> Settings:
    """The settings models are computed with: the first file's token count and its layers (unless
    the current default rule chose them) when there is a file among the subjects, else `settings`. Refuses, before any work, models that
    lack the layers asked for."""
    files = [s for s in subjects if s.kind != "model"]
    if files:
        made = files[0].made_with()
        settings = replace(settings, n_tokens=made.n_tokens, layers=made.layers or settings.layers)
    for subject in subjects:
        subject.check_settings(settings)
    return settings


def check_comparable(a: Subject, b: Subject) -> None:
    """Refuse two files made so differently that their score would mean nothing: fingerprints made
    with other token counts or layers, invariants files of other layers."""
    if a.kind == "model" or b.kind == "model":
        return
    made_a, made_b = a.made_with(), b.made_with()
    if "fingerprint" in (a.kind, b.kind) and a.latent_version() != b.latent_version():
        raise HurefError(f"{a.spec} was made by encoder version {a.latent_version()} "
                         f"({ENCODERS[a.latent_version()].reads}), {b.spec} by version {b.latent_version()} "
                         f"({ENCODERS[b.latent_version()].reads}): latents of different encoders cannot be compared")
    if "fingerprint" in (a.kind, b.kind) and made_a != made_b:
        raise HurefError(f"{a.spec} was made with {made_a.describe()}, {b.spec} with {made_b.describe()}: "
                         "their latents cannot be compared")
    if made_a.layers != made_b.layers:
        raise HurefError(f"{a.spec} and {b.spec} use different layers ({made_a.describe()} vs {made_b.describe()})")


def latent_version(a: Subject, b: Subject) -> int:
    """The encoder version two subjects' latents are compared in: a fingerprint's or an invariants
    file's (the first such side's), else the current one."""
    fixed = [s.latent_version() for s in (a, b) if s.kind != "model"]
    return fixed[0] if fixed else ENCODER_VERSION


def check_outputs(outputs: list, subjects: list[Subject]) -> None:
    """Refuse, before any work, an output path that is an input, lies in an input model's directory,
    or names the same file as another output."""
    protected: set[str] = set()
    for subject in subjects:
        path = Path(subject.spec)
        if path.exists():
            protected.add(os.path.realpath(path))
        if subject.kind == "model" and getattr(subject.model, "directory", None):
            directory = os.path.realpath(subject.model.directory)
            protected.add(directory)
            protected.update(os.path.join(directory, name) for name in os.listdir(directory))
    seen: set[str] = set()
    for output in outputs:
        real = os.path.realpath(output)
        if real in protected or os.path.dirname(real) in protected:
            raise HurefError(f"{output}: refusing to write an output over or inside an input")
        if real in seen:
            raise HurefError(f"{output}: named as two outputs of one run")
        seen.add(real)

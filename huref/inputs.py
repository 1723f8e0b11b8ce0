"""Every argument huref scores, opened into one of three types, and the one rule for matching settings.

A `Subject` is anything a command scores: a `ModelSubject` (its terms are computed on demand, with
the settings asked for), an `InvariantsFile` (terms stored) or a `FingerprintFile` (a published
FP.json: a latent only). `open_subject(spec)` is the one place that decides which a MODEL / FILE
argument is; opening is cheap (config, tensor headers, file contents), so every argument of a
command is opened, and every setting checked, before any expensive work starts. Commands ask a
subject what it can do (`has_terms`, `made_with`, `terms`, `record`); none compares its kind.
A latent is made by one encoder version (`huref.encoder.ENCODERS`): a file fixes its version
(`latent_version`), a model is encoded by whichever the other side needs (`latent_terms`).

`Settings` is the frozen set of options every command shares (built once by the CLI's shared
option set), with the verdict `Policy` inside it. `settings_for(subjects, settings)` is the one rule
for the other side: a model scored against a file is computed with the file's token count, and
with its layers (counted from the end) unless the current default rule chose them (`MadeWith`);
two files must have been made alike.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar

import torch

from huref.encoder import ENCODER_VERSION, ENCODERS, LATENT_MAX_LAYERS, LATENT_RULE, LATENT_TOKENS
from huref.errors import HurefError
from huref.invariants import (DEFAULT_LAYERS, DEFAULT_RULE, DEFAULT_TOKENS, PRECISIONS, Terms, invariant_terms,
                              load_terms, resolve_layers, terms_header)
from huref.lineage import LINEAGE_TOKENS, VERDICT_LAYERS, depth_layers, verdict_stride
from huref.similarity import MIN_COMMON_TOKENS

VERDICT_SOURCES = ("lineage", "ics")


@dataclass(frozen=True)
class Policy:
    """How pairs are judged (compare, verify, report, lineage).

    source: "lineage" judges two models by the calibrated whole-depth lineage statistic, "ics" by the
    two-layer ICS verdict (files are always judged by their ICS or latent verdict); min_ics /
    min_latent: fixed thresholds that replace the calibrated ICS / latent verdicts (verify);
    lineage_tokens: probe tokens of the whole-depth terms (None: min(LINEAGE_TOKENS, the settings'
    n_tokens)); stride, layers: which layers the whole-depth terms read (both None: the verdict's
    sample of at most `huref.lineage.VERDICT_LAYERS` evenly spaced layers; `huref lineage` reads
    every layer, stride 1, unless given --layers or --stride)."""

    source: str = "lineage"
    min_ics: float | None = None
    min_latent: float | None = None
    lineage_tokens: int | None = None
    stride: int | None = None
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.source not in VERDICT_SOURCES:
            raise HurefError(f"--verdict must be lineage or ics, not '{self.source}'")
        for name, value in (("--min-ics", self.min_ics), ("--min-latent", self.min_latent)):
            if value is not None and not math.isfinite(value):
                raise HurefError(f"{name}: a threshold must be a finite number, not {value}")
        if self.stride is not None and self.stride < 1:
            raise HurefError("--stride must be at least 1")
        if self.stride is not None and self.layers is not None:
            raise HurefError("give --layers or --stride, not both")

    @property
    def whole_depth(self) -> str:
        """Which layers whole-depth terms read, in words."""
        if self.layers is not None:
            return f"layers {list(self.layers)}"
        if self.stride is None:
            return f"at most {VERDICT_LAYERS} evenly spaced layers"
        return "every layer" if self.stride == 1 else f"one layer in {self.stride}"


@dataclass(frozen=True)
class Settings:
    """Options shared by every command. layers: None for the default rule (the two middle layers
    that write, `huref.invariants.default_layer_order`), else indices, negative from the end;
    policy: how pairs are judged."""

    n_tokens: int = DEFAULT_TOKENS
    layers: tuple[int, ...] | None = None
    revision: str | None = None
    device: str = "cpu"
    precision: str = "float32"
    quiet: bool = False
    policy: Policy = Policy()

    def __post_init__(self) -> None:
        if self.n_tokens < MIN_COMMON_TOKENS:
            raise HurefError(f"--tokens {self.n_tokens} is too few: two models must share at least "
                             f"{MIN_COMMON_TOKENS} probe tokens")
        if self.precision not in PRECISIONS:
            raise HurefError(f"--precision must be one of {', '.join(PRECISIONS)}, not '{self.precision}'")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise HurefError("--device cuda: no CUDA device is available")

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def terms_key(self) -> tuple:
        """What a model's terms depend on."""
        return (self.n_tokens, self.layers, self.device, self.precision)

    def judged_by_lineage(self, a: "Subject", b: "Subject") -> bool:
        """Whether the pair's verdict is the whole-depth lineage statistic's (two models, the lineage
        policy, no --min-ics)."""
        return (isinstance(a, ModelSubject) and isinstance(b, ModelSubject) and self.policy.source == "lineage"
                and self.policy.min_ics is None)

    def whole_depth(self, subject: "ModelSubject") -> "Settings":
        """The settings of a model's whole-depth terms: the policy's token count and layers."""
        policy = self.policy
        n_tokens = policy.lineage_tokens or min(LINEAGE_TOKENS, self.n_tokens)
        if policy.layers is not None:
            layers = tuple(resolve_layers(subject.model.dims.n_layers, list(policy.layers)))
        else:
            layers = depth_layers(subject.model, policy.stride or verdict_stride(subject.model))
        return replace(self, n_tokens=n_tokens, layers=tuple(layers))


def from_end(layers, n_layers) -> tuple[int, ...]:
    """Layer indices counted from the end (negative) when the model's depth `n_layers` is known."""
    return tuple(i - n_layers if isinstance(n_layers, int) else i for i in layers)


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
        return MadeWith(int(n_tokens), from_end(layers, n_layers))

    def describe(self) -> str:
        if self.layers is None:
            where = "the default layers"
        else:
            where = f"layers {list(self.layers)}" + (" from the end" if all(i < 0 for i in self.layers) else "")
        return f"{self.n_tokens} tokens and {where}"


@dataclass(eq=False)
class Subject:
    """One scored argument. spec: as given; label: a short name for tables and pictures (a model's
    published name, never a local path). `kind` names the type in JSON and tables."""

    spec: str
    label: str
    kind: ClassVar[str]
    has_terms: ClassVar[bool] = True
    _records: dict = field(default_factory=dict, repr=False)

    def made_with(self) -> MadeWith | None:
        """How a file subject was made; None for a model (it follows the settings)."""
        return None

    def model_layers(self) -> tuple[int, ...] | None:
        """The layers a model is read at to be scored against this file (None: the settings' own)."""
        made = self.made_with()
        return made.layers if made else None

    def check_settings(self, settings: Settings) -> None:
        """Refuse, before any work, settings this subject cannot be computed with."""

    def steps(self, settings: Settings) -> int:
        """Progress steps `terms(settings)` will report (0 when nothing is left to compute)."""
        return 0

    def terms(self, settings: Settings, progress: Callable[[str], None] | None = None) -> Terms:
        """The subject's invariant terms (HurefError when it carries none)."""
        raise HurefError(f"{self.spec}: a fingerprint carries no invariant terms")

    def spill(self, settings: Settings, path) -> None:
        """Move computed terms to the file at path (private scratch space), read back on use."""

    def forget(self) -> None:
        """Drop the terms read or computed (latents, which are small, and spilled terms on disk
        stay); a registry is scored one file at a time."""

    def latent_version(self) -> int:
        """The encoder version of this subject's latent where the subject fixes it (a fingerprint: the
        version that made it; an invariants file: the version its terms are for), else the current."""
        return ENCODER_VERSION

    def latent_terms(self, settings: Settings, version: int = ENCODER_VERSION,
                     progress: Callable[[str], None] | None = None) -> Terms:
        """The terms encoder `version` reads (`huref.encoder.ENCODERS`): here the terms at `settings`."""
        return self.terms(settings, progress)

    def latent_steps(self, settings: Settings, version: int = ENCODER_VERSION) -> int:
        """Progress steps `record(settings, version)` will report (0 when the latent is known)."""
        return 0 if (version, settings.terms_key()) in self._records else self.steps(settings)

    def record(self, settings: Settings, version: int | None = None,
               progress: Callable[[str], None] | None = None) -> dict:
        """The latent record (FP.json's public fields): the terms encoder `version` reads (default:
        `latent_version`), encoded; once per version and setting."""
        version = version or self.latent_version()
        key = (version, settings.terms_key())
        if key not in self._records:
            from huref.fingerprint import latent_record

            self._records[key] = latent_record(self.latent_terms(settings, version, progress), version)
        return self._records[key]

    def latent(self, settings: Settings, version: int | None = None) -> torch.Tensor:
        """The latent [512] float32 (of encoder `version`, default `latent_version`)."""
        return torch.tensor(self.record(settings, version)["latent"], dtype=torch.float32)

    def describe(self, settings: Settings, version: int | None = None) -> dict:
        """{"source", "name", "kind", "model_type", "layers", "n_tokens", "token_strategy"} for reports:
        of the terms the settings read, or with `version` (a latent comparison) of the latent's terms."""
        if version is not None:
            return self.described(self.record(settings, version))
        terms = self.header(settings)
        return {"source": self.spec, "name": self.label, "kind": self.kind, "model_type": terms.meta.get("model_type"),
                "layers": terms.layers, "n_tokens": len(terms.tokens), "token_strategy": terms.meta.get("token_strategy")}

    def described(self, record: dict) -> dict:
        """`describe`'s dict of a latent record (`huref.fingerprint.latent_record`, or an FP.json)."""
        return {"source": self.spec, "name": self.label, "kind": self.kind, "model_type": record.get("model_type"),
                "layers": record.get("layers"), "n_tokens": record.get("n_tokens"),
                "token_strategy": record.get("token_strategy")}

    def header(self, settings: Settings) -> Terms:
        """Terms whose layers, tokens and meta describe the subject (the values may be a placeholder)."""
        return self.terms(settings)

    def protected_paths(self) -> set[str]:
        """Real paths no output may be written over or into."""
        path = Path(self.spec)
        return {os.path.realpath(path)} if path.exists() else set()


@dataclass(eq=False)
class ModelSubject(Subject):
    """A model (`huref.sources.Model`): terms computed on demand, once per distinct setting."""

    model: object = None
    kind: ClassVar[str] = "model"
    _terms: dict = field(default_factory=dict, repr=False)
    _spilled: dict = field(default_factory=dict, repr=False)

    def check_settings(self, settings: Settings) -> None:
        try:
            resolve_layers(self.model.dims.n_layers, list(settings.layers) if settings.layers else None)
            if settings.policy.layers is not None:
                resolve_layers(self.model.dims.n_layers, list(settings.policy.layers))
        except HurefError as e:
            raise HurefError(f"{self.spec}: {e}") from None

    def steps(self, settings: Settings) -> int:
        if settings.terms_key() in self._terms or settings.terms_key() in self._spilled:
            return 0
        return 1 + (len(settings.layers) if settings.layers else DEFAULT_LAYERS)

    def terms(self, settings: Settings, progress: Callable[[str], None] | None = None) -> Terms:
        key = settings.terms_key()
        if key not in self._terms and key in self._spilled:
            self._terms[key] = load_terms(self._spilled[key])
        if key not in self._terms:
            self._terms[key] = invariant_terms(self.model, list(settings.layers) if settings.layers else None,
                                               settings.n_tokens, device=settings.device, dtype=settings.dtype,
                                               progress=progress)
        return self._terms[key]

    def latent_settings(self, settings: Settings, version: int = ENCODER_VERSION) -> Settings:
        """The settings of the terms encoder `version` reads from this model: the command's for version 1;
        for version 2, every layer that carries terms (evenly spaced when more than LATENT_MAX_LAYERS)
        over at most LATENT_TOKENS probe tokens."""
        if not ENCODERS[version].every_layer:
            return settings
        return replace(settings, n_tokens=min(settings.n_tokens, LATENT_TOKENS),
                       layers=tuple(depth_layers(self.model, verdict_stride(self.model, LATENT_MAX_LAYERS))))

    def latent_terms(self, settings: Settings, version: int = ENCODER_VERSION,
                     progress: Callable[[str], None] | None = None) -> Terms:
        """The terms encoder `version` reads (`latent_settings`), computed; version 2 passes over layers
        that write nothing, as an inserted identity layer does."""
        if not ENCODERS[version].every_layer:
            return self.terms(settings, progress)
        chosen = self.latent_settings(settings, version)
        terms = invariant_terms(self.model, list(chosen.layers), chosen.n_tokens, device=chosen.device,
                                dtype=chosen.dtype, progress=progress, skip_inert=True)
        return Terms(terms.values, terms.layers, terms.tokens, dict(terms.meta, layer_choice=LATENT_RULE))

    def latent_steps(self, settings: Settings, version: int = ENCODER_VERSION) -> int:
        if not ENCODERS[version].every_layer or (version, settings.terms_key()) in self._records:
            return super().latent_steps(settings, version)
        return 1 + len(self.latent_settings(settings, version).layers)

    def spill(self, settings: Settings, path) -> None:
        from huref.files import write_atomically
        from huref.invariants import terms_chunks

        key = settings.terms_key()
        write_atomically(path, terms_chunks(self.terms(settings)))
        self._spilled[key] = str(path)
        del self._terms[key]

    def forget(self) -> None:
        self._terms.clear()

    def protected_paths(self) -> set[str]:
        protected = super().protected_paths()
        if getattr(self.model, "directory", None):
            directory = os.path.realpath(self.model.directory)
            protected.add(directory)
            protected.update(os.path.join(directory, name) for name in os.listdir(directory))
        return protected


@dataclass(eq=False)
class InvariantsFile(Subject):
    """An invariants file (`huref invariants`): terms stored; only the header is read on opening."""

    stored: Terms | None = None
    kind: ClassVar[str] = "invariants"

    def made_with(self) -> MadeWith:
        meta = self.stored.meta
        return MadeWith.of(len(self.stored.tokens), self.stored.layers, meta.get("layer_choice"), meta.get("n_layers"))

    def model_layers(self) -> tuple[int, ...] | None:
        """Terms of every layer that writes (a version-2 opening) are matched by the same layers of the
        model, counted from the end; others as `made_with` says."""
        meta = self.stored.meta
        if meta.get("layer_choice") != LATENT_RULE:
            return super().model_layers()
        return from_end(self.stored.layers, meta.get("n_layers"))

    def terms(self, settings: Settings, progress: Callable[[str], None] | None = None) -> Terms:
        if self.stored.values.shape[2] != len(self.stored.tokens):  # only the header is read yet
            self.stored = load_terms(self.spec)
        return self.stored

    def forget(self) -> None:
        self.stored = terms_header(self.spec)[0]

    def latent_version(self) -> int:
        return ENCODER_VERSION if self.stored.meta.get("layer_choice") == LATENT_RULE else 1

    def latent_terms(self, settings: Settings, version: int = ENCODER_VERSION,
                     progress: Callable[[str], None] | None = None) -> Terms:
        """The stored terms, refused when they are not what encoder `version` reads."""
        if self.latent_version() != version:
            raise HurefError(f"{self.spec} holds the terms of {self.made_with().describe()}; a latent of encoder "
                             f"version {version} reads {ENCODERS[version].reads}: compute it from the model")
        return self.terms(settings, progress)

    def header(self, settings: Settings) -> Terms:
        return self.stored


@dataclass(eq=False)
class FingerprintFile(Subject):
    """A published fingerprint FP.json (`huref.fingerprint.load_fingerprint`): a latent, no terms."""

    fingerprint: dict | None = None
    kind: ClassVar[str] = "fingerprint"
    has_terms: ClassVar[bool] = False

    def made_with(self) -> MadeWith:
        fp = self.fingerprint
        return MadeWith.of(fp["n_tokens"], fp["layers"], fp.get("layer_choice"), fp.get("n_layers"))

    def latent_version(self) -> int:
        from huref.fingerprint import encoder_version

        return encoder_version(self.fingerprint)

    def record(self, settings: Settings, version: int | None = None,
               progress: Callable[[str], None] | None = None) -> dict:
        return self.fingerprint

    def describe(self, settings: Settings, version: int | None = None) -> dict:
        return self.described(self.fingerprint)


def is_fingerprint_file(spec) -> bool:
    """True for an existing .json file (how fingerprints are told from models)."""
    path = Path(spec)
    return path.suffix.lower() == ".json" and path.is_file()


def is_invariants_file(spec) -> bool:
    """True for a .safetensors file that is not part of a model directory (no config.json beside)."""
    path = Path(spec)
    return path.is_file() and path.suffix == ".safetensors" and not (path.parent / "config.json").is_file()


def label_of(spec: str, name=None) -> str:
    """A short name: the model name a file holds (`name`, when it is a non-empty string), else a
    file's or directory's name, a hub id or demo name as given."""
    if isinstance(name, str) and name.strip():
        return name.strip()
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
        fingerprint = load_fingerprint(spec)
        return FingerprintFile(spec, label_of(spec, fingerprint.get("model")), fingerprint=fingerprint)
    if is_invariants_file(spec):
        stored = terms_header(spec)[0]
        return InvariantsFile(spec, label_of(spec, stored.meta.get("model")), stored=stored)
    model = load_model(spec, settings.revision)
    return ModelSubject(spec, model.label, model=model)


def require_model(subject: Subject, why: str) -> ModelSubject:
    """subject as a model, or HurefError '{spec}: not a model ({why})'."""
    if not isinstance(subject, ModelSubject):
        raise HurefError(f"{subject.spec}: not a model ({why})")
    return subject


def require_fingerprint(subject: Subject) -> FingerprintFile:
    """subject as a published fingerprint, or HurefError '{spec}: not a fingerprint (.json)'."""
    if not isinstance(subject, FingerprintFile):
        raise HurefError(f"{subject.spec}: not a fingerprint (.json)")
    return subject


def settings_for(subjects: list[Subject], settings: Settings) -> Settings:
    """The settings models are computed with: the first file's token count and its layers (unless
    the current default rule chose them) when there is a file among the subjects, else `settings`.
    Refuses, before any work, models that lack the layers asked for."""
    files = [s for s in subjects if s.made_with() is not None]
    if files:
        settings = replace(settings, n_tokens=files[0].made_with().n_tokens,
                           layers=files[0].model_layers() or settings.layers)
    for subject in subjects:
        subject.check_settings(settings)
    return settings


def check_comparable(a: Subject, b: Subject) -> None:
    """Refuse two files made so differently that their score would mean nothing: latents of two
    encoder versions, fingerprints made with other token counts or layers, invariants files of other
    layers."""
    made_a, made_b = a.made_with(), b.made_with()
    if made_a is None or made_b is None:
        return
    latents = not a.has_terms or not b.has_terms
    if latents and a.latent_version() != b.latent_version():
        raise HurefError(f"{a.spec} was made by encoder version {a.latent_version()} "
                         f"({ENCODERS[a.latent_version()].reads}), {b.spec} by version {b.latent_version()} "
                         f"({ENCODERS[b.latent_version()].reads}): latents of different encoders cannot be compared")
    if latents and made_a != made_b:
        raise HurefError(f"{a.spec} was made with {made_a.describe()}, {b.spec} with {made_b.describe()}: "
                         "their latents cannot be compared")
    if made_a.layers != made_b.layers:
        raise HurefError(f"{a.spec} and {b.spec} use different layers ({made_a.describe()} vs {made_b.describe()})")


def latent_version(a: Subject, b: Subject) -> int:
    """The encoder version two subjects' latents are compared in: a file's (the first file's), else
    the current one (a model is encoded by any version)."""
    fixed = [s.latent_version() for s in (a, b) if s.made_with() is not None]
    return fixed[0] if fixed else ENCODER_VERSION

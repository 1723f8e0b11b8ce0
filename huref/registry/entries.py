"""One registry entry from one model: identity, declared bases, published fingerprint, lineage sketch.

- Identity: a display name; for a Hub model its id and commit, else the SHA-256 of its weight files
  (each file's digest, with its name, folded into one); model_type, parameter and layer counts.
- Declarations: the model card's `base_model` (one or a list) and `base_model_relation`, read with
  huggingface_hub's ModelCard from README.md (beside the weights, or on the Hub); a GGUF file's
  `general.base_model.N.*` keys; bases named by whoever registers it (`--base-model`, "registrar").
  config.json's `_name_or_path` is kept as a hint only: a training script writes whatever path it
  loaded from, so it is never taken for a claim.
- Fingerprint: a latent and its 16-character code from the terms of the default layers and token count
  through the packaged encoder (what `huref fingerprint` made with encoder version 1; version 2 reads
  every layer), compared only with a query's latent made the same way (`identify.query_of`).
- Sketch: the whole-depth terms the lineage verdict reads (`huref.lineage.LINEAGE_TOKENS` probe
  tokens, at most `huref.lineage.VERDICT_LAYERS` evenly spaced layers: what `compare`'s verdict uses,
  so the shipped null panel applies), each [layer, term] matrix standardized and stored as float16, keyed by probe-token keys so that entries
  of other tokenizers compare on the keys they share. Summary: the sketch on its first
  SUMMARY_TOKENS keys (the hash ranking makes these what a smaller selection would pick), the small
  column the prefilter reads (standardized over those tokens).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

import huref
from huref.errors import HurefError
from huref.invariants import Terms
from huref.registry.format import float16_array, float16_bytes

SUMMARY_TOKENS = 48
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
RELATIONS = ("adapter", "merge", "quantized", "finetune")


def sketch_terms(model, progress=None) -> Terms:
    """A model's (`huref.sources.Model`) lineage sketch: whole-depth terms [L, 3, n, n] at the verdict's
    token count and layer sample, read as the lineage verdict reads them (`huref.readers.lineage_reads`)."""
    from huref.lineage import LINEAGE_TOKENS, verdict_stride, whole_depth_terms
    from huref.readers import lineage_reads

    with lineage_reads(model.reader):
        return whole_depth_terms(model, n_tokens=LINEAGE_TOKENS, stride=verdict_stride(model), progress=progress)


def entry_terms(model, progress=None) -> tuple[Terms, Terms]:
    """(fingerprint terms, lineage sketch) of a model, each layer's weights read once: the fingerprint's
    terms first (default layers and token count), then the sketch's other layers (as `sketch_terms`
    reads them); a sketch layer the fingerprint already holds is cut from its terms (the sketch's
    probe tokens are the first of the fingerprint's: the selection ranks every token by one hash, so
    the terms over them are the fingerprint's top-left block). On the Hub this is what keeps the bytes
    fetched to the tensors read (a shared layer, and the probe rows, are fetched once)."""
    from huref.invariants import invariant_terms
    from huref.lineage import LINEAGE_TOKENS, depth_layers, verdict_stride
    from huref.readers import lineage_reads

    fingerprint = invariant_terms(model, progress=progress)
    layers = list(depth_layers(model, verdict_stride(model)))
    rest = [i for i in layers if i not in fingerprint.layers]
    n = min(LINEAGE_TOKENS, len(fingerprint.tokens))
    if rest:
        with lineage_reads(model.reader):
            computed = invariant_terms(model, layers=rest, n_tokens=LINEAGE_TOKENS, progress=progress)
        if computed.tokens != fingerprint.tokens[:n]:  # cannot happen with one vocabulary; never mix
            return fingerprint, sketch_terms(model, progress)
        meta = computed.meta
    else:
        meta = dict(fingerprint.meta, n_tokens=n)
    values = torch.empty(len(layers), 3, n, n)
    for k, layer in enumerate(layers):
        values[k] = (computed.values[rest.index(layer)] if layer in rest
                     else fingerprint.values[fingerprint.layers.index(layer), :, :n, :n])
    return fingerprint, Terms(values, layers, fingerprint.tokens[:n], meta)


def standardized(terms: Terms) -> Terms:
    """Each [layer, term] matrix of `terms` standardized (zero mean, unit std): what the lineage map
    compares is unchanged (a cosine of standardized terms ignores any positive scale and shift, on any
    token subset), and float16 then holds it (|z| <= n), where raw terms can pass float16's 65504."""
    from huref.similarity import standardize

    values = torch.stack([torch.stack([standardize(term).float() for term in layer]) for layer in terms.values])
    return Terms(values, terms.layers, terms.tokens, terms.meta)


def summary_of(terms: Terms) -> Terms:
    """The sketch on its first SUMMARY_TOKENS probe tokens, each [layer, term] matrix standardized over
    those tokens: [L, 3, m, m]. Two summaries of the same tokens then compare by a plain dot product
    (their cosine is Σ za·zb / (m² - 1)), with no centring left to do per query."""
    m = min(SUMMARY_TOKENS, len(terms.tokens))
    return standardized(Terms(terms.values[:, :, :m, :m], terms.layers, terms.tokens[:m], terms.meta))


def stored_terms(row: dict, column: str, where: str) -> Terms:
    """An entry's sketch ("sketch") or summary ("summary") back as float32 `Terms`."""
    from huref.lineage import LINEAGE_TOKENS, VERDICT_LAYERS

    layers, tokens = row["sketch_layers"], row["sketch_tokens"]
    if len(layers) > VERDICT_LAYERS or len(tokens) > LINEAGE_TOKENS or len(set(tokens)) != len(tokens):
        raise HurefError(f"{where}: sketch of {len(layers)} layers over {len(tokens)} tokens does not fit the "
                         f"registry's settings (at most {VERDICT_LAYERS} layers, {LINEAGE_TOKENS} distinct tokens)")
    if column == "summary":
        tokens = tokens[:min(SUMMARY_TOKENS, len(tokens))]
    values = float16_array(row[column], (len(layers), 3, len(tokens), len(tokens)), where)
    return Terms(torch.from_numpy(values), list(layers), list(tokens),
                 {"token_strategy": row["token_strategy"], "model": row["name"]})


def parameter_count(model) -> int:
    """Elements of every tensor in the checkpoint."""
    total = 0
    for name in model.reader.names():
        count = 1
        for size in model.reader.shape(name):
            count *= int(size)
        total += count
    return total


def weight_files(model) -> list[Path]:
    """The files holding a local model's weights: a GGUF file (and its splits), or the weight files of
    its folder."""
    from huref.readers.gguf import gguf_paths

    path = Path(model.name)
    if path.is_file() or (path.is_dir() and not (path / "config.json").is_file()):
        return gguf_paths(path)
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def weights_digest(files: list[Path]) -> str:
    """SHA-256 over each file's name and SHA-256, in name order: the identity of a local model's weights."""
    from huref.files import sha256_of

    digest = hashlib.sha256()
    for file in sorted(files, key=lambda p: p.name):
        try:
            digest.update(f"{file.name}\0{sha256_of(file)}\n".encode())
        except OSError as error:
            raise HurefError(f"{file}: cannot read ({error.strerror or error})") from None
    return digest.hexdigest()


def is_hub_model(model) -> bool:
    """A model opened from the Hub (or its cache)."""
    return model.hub is not None


def card_declarations(text: str, where: str) -> list[dict]:
    """The bases a model card (README.md text) declares: [{"name", "relation", "source": "model card"}]."""
    from huggingface_hub import ModelCard

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # "no metadata block" is not news
    try:
        data = ModelCard(text).data.to_dict()
    except Exception as error:  # yaml's errors, a front matter that is not a mapping
        raise HurefError(f"{where}: model card metadata does not parse ({str(error).splitlines()[0][:120]})") from None
    bases = data.get("base_model")
    bases = [bases] if isinstance(bases, str) else bases if isinstance(bases, list) else []
    relation = data.get("base_model_relation")
    relation = relation if isinstance(relation, str) else None
    return [{"name": b.strip(), "relation": relation, "source": "model card"}
            for b in bases if isinstance(b, str) and b.strip()]


def gguf_declarations(meta: dict) -> list[dict]:
    """The `general.base_model.count` bases of a GGUF file's metadata, named ORG/NAME when the
    organization is given."""
    found = []
    count = meta.get("general.base_model.count", 0)
    for i in range(int(count) if isinstance(count, int) else 0):
        name = meta.get(f"general.base_model.{i}.name")
        org = meta.get(f"general.base_model.{i}.organization")
        url = meta.get(f"general.base_model.{i}.repo_url")
        hub = str(url).rstrip("/").split("huggingface.co/")[-1] if isinstance(url, str) and "huggingface.co/" in url else None
        label = hub or (f"{org}/{name}" if isinstance(org, str) and isinstance(name, str) else name)
        if isinstance(label, str) and label.strip():
            found.append({"name": label.strip(), "relation": None, "source": "gguf"})
    return found


def read_card(model) -> tuple[str, str] | None:
    """(README.md text, where) of a model: beside its weights, or from the Hub (through
    huggingface_hub, from the cache when offline); None when it has none."""
    if is_hub_model(model):
        path = hub_file(model.hub.repo_id, "README.md", model.hub.commit, transfer=model.hub.transfer)
        if path is None:
            return None
    else:
        base = Path(model.name)
        path = (base if base.is_dir() else base.parent) / "README.md"
        if not path.is_file():
            return None
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")[:1 << 20], str(path)
    except OSError as error:
        raise HurefError(f"{path}: cannot read ({error.strerror or error})") from None


def hub_file(repo_id: str, filename: str, revision: str | None, repo_type: str | None = None,
             transfer=None) -> str | None:
    """A file of a Hub repo through huggingface_hub (the cache only when offline or the Hub does not
    answer); None when the repo has no such file. A download is counted in `transfer` (a
    `huref.readers.remote.Transfer`) when given."""
    import os

    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    from huref.sources import hub_reachable

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") \
        or not hub_reachable()
    try:
        cached = try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type)
        path = hf_hub_download(repo_id, filename, revision=revision, repo_type=repo_type, local_files_only=offline)
        if transfer is not None and not isinstance(cached, str):
            transfer.add(Path(path).stat().st_size)
        return path
    except LocalEntryNotFoundError:
        return None if offline else _raise_hub(repo_id, filename, "no connection to the Hub?")
    except EntryNotFoundError:
        return None
    except HfHubHTTPError as error:
        return _raise_hub(repo_id, filename, str(error).splitlines()[0][:200])
    except (OSError, ValueError) as error:
        return _raise_hub(repo_id, filename, str(error).splitlines()[0][:200] or type(error).__name__)


def _raise_hub(repo_id: str, filename: str, why: str):
    raise HurefError(f"{repo_id}: Hub request for {filename} failed ({why})")


def declarations(model) -> list[dict]:
    """Every base the model declares: its card's, then its GGUF metadata's (duplicates kept once)."""
    from huref.readers.gguf import GGUFTensorReader

    found = []
    card = read_card(model)
    if card:
        found += card_declarations(*card)
    if isinstance(model.reader, GGUFTensorReader):
        found += gguf_declarations(model.reader.metadata)
    unique, seen = [], set()
    for item in found:
        if item["name"] not in seen:
            seen.add(item["name"])
            unique.append(item)
    return unique


def identity(model) -> dict:
    """{"entry_id", "hub_id", "hub_commit", "weights_sha256"} of a model."""
    if is_hub_model(model):
        return {"entry_id": model.hub.entry_id, "hub_id": model.hub.repo_id, "hub_commit": model.hub.commit,
                "weights_sha256": None}
    digest = weights_digest(weight_files(model))
    return {"entry_id": f"sha256:{digest}", "hub_id": None, "hub_commit": None, "weights_sha256": digest}


def build_entry(model, name: str | None = None, bases: tuple[str, ...] = (), progress=None,
                known_identity: dict | None = None) -> dict:
    """The registry row (ENTRY_SCHEMA's columns) of a model (`huref.sources.Model`): identity (the
    caller's `identity(model)` when it has one: a local model's costs a SHA-256 of every weight file),
    declarations, fingerprint latent and code, sketch and summary."""
    from huref.fingerprint import latent_record
    from huref.render import latent_code

    declared = declarations(model) + [{"name": b, "relation": None, "source": "registrar"} for b in bases]
    fingerprint, sketch = entry_terms(model, progress)
    record = latent_record(fingerprint)
    sketch = standardized(sketch)
    hint = model.config.get("_name_or_path")
    return {
        **(known_identity or identity(model)),
        "name": name or model.label,
        "model_type": model.config.get("model_type"),
        "n_parameters": parameter_count(model),
        "n_layers": model.dims.n_layers,
        "hidden_size": model.dims.hidden,
        "declared_bases": declared,
        "name_or_path": hint if isinstance(hint, str) else None,
        "token_strategy": sketch.meta["token_strategy"],
        "latent": record["latent"],
        "latent_code": latent_code(torch.tensor(record["latent"])),
        "sketch_layers": list(sketch.layers),
        "sketch_tokens": list(sketch.tokens),
        "summary": float16_bytes(summary_of(sketch).values.contiguous()),
        "sketch": float16_bytes(sketch.values),
        "huref_version": huref.__version__,
    }

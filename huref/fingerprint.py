"""Publishable fingerprints (FP.json): the latent of a model's invariant terms, what produced it,
and a salted commitment to the private terms.

FP.json is one JSON object:
    format "huref-fingerprint", format_version 1, latent (512 floats), model, model_type,
    n_layers, layers (absolute indices), layer_choice, token_strategy, n_tokens, tool_version,
    encoder_version, encoder_sha256, generator {name, sha256}, commitment {scheme, sha256}.

encoder_version names the encoder that made the latent (`huref.encoder.ENCODERS`: version 2 reads
every layer, version 1 the two middle ones); a file without it was made by version 1. Latents of
two versions are never compared; a model compared with a fingerprint is encoded by the
fingerprint's version, so fingerprints published before version 2 still verify.

The commitment is SHA-256(DOMAIN || salt || header || values): salt 32 random bytes kept by the
owner, header the canonical JSON of the layers and token keys, values the terms as float32
little-endian bytes in [L, 3, n, n] order. Revealing the salt and the terms (an opening) lets
anyone check that these exact terms were fixed when the fingerprint was published, re-encode them
and find the published latent. It does not prove that the terms came from any given weights
(anyone can compute terms of a public model, or commit to made-up numbers), who trained the
model, or when (a timestamp needs the FP.json posted somewhere dated). Without the salt, the
digest reveals nothing about the terms and cannot be used to test a guess.

The owner keeps the salt in the private file FP.private.safetensors (`private_path`). By default it
holds only the salt and how the terms were computed (`key_chunks`, under a kilobyte): the terms are
recomputed from the model when the commitment is opened (`huref open`), bit for bit on the same
software and hardware. With --save-opening it also holds the terms themselves (`opening_chunks`:
L·3·n² float32 numbers, 12.6 MB a layer at 1024 tokens), which open it anywhere.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import torch
import torch.nn.functional as F

import huref
from huref.encoder import ENCODER_VERSION, ENCODERS, LATENT_DIM, encode, encoder_digest, load_encoder
from huref.errors import HurefError, excerpt
from huref.files import write_atomically
from huref.invariants import Terms, load_terms, terms_chunks

FORMAT = "huref-fingerprint"
FORMAT_VERSION = 1
COMMITMENT_SCHEME = "sha256(domain || salt || header || float32-le values), huref v1"
COMMITMENT_DOMAIN = b"huref-commitment-v1\0"
REQUIRED = {"latent": list, "model_type": (str, type(None)), "layers": list, "n_tokens": int,
            "token_strategy": (str, type(None)), "tool_version": str, "encoder_sha256": str,
            "generator": dict, "commitment": dict}


def commitment_digest(terms: Terms, salt: bytes) -> str:
    """Hex SHA-256 committing to terms' values, layers and token keys under salt."""
    header = json.dumps({"layers": terms.layers, "tokens": terms.tokens, "shape": list(terms.values.shape)},
                        sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    values = terms.values.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()
    return hashlib.sha256(COMMITMENT_DOMAIN + salt + header + b"\0" + values).hexdigest()


def latent_record(terms: Terms, version: int = ENCODER_VERSION) -> dict:
    """The public part of terms that latents are compared on: {"latent": [512 floats],
    "encoder_version", "encoder_sha256", "token_strategy", "model", "model_type", "n_layers", "layers",
    "layer_choice", "n_tokens"} (what compare_fingerprints reads). terms: what encoder `version` reads
    (`huref.inputs.Subject.latent_terms`)."""
    meta = terms.meta
    return {
        "latent": [float(v) for v in encode(terms.values, terms.tokens, load_encoder(version)).tolist()],
        "model": meta.get("model"),
        "model_type": meta.get("model_type"),
        "n_layers": meta.get("n_layers"),
        "layers": list(terms.layers),
        "layer_choice": meta.get("layer_choice"),
        "token_strategy": meta.get("token_strategy"),
        "n_tokens": len(terms.tokens),
        "encoder_version": version,
        "encoder_sha256": encoder_digest(version),
    }


def encoder_version(fingerprint: dict) -> int:
    """The version of the encoder that made a fingerprint's latent (1 for files written before versions)."""
    return fingerprint.get("encoder_version", 1)


def build_fingerprint(terms: Terms, generator: dict, name: str | None = None) -> tuple[dict, bytes]:
    """The FP.json object for terms (what the current encoder reads) and a fresh salt: (fingerprint
    dict, salt bytes).

    generator: {"name": str, "sha256": str} of the generator meant to render it; name: the model's
    name to publish (default: the terms' own, never a local path).
    """
    salt = secrets.token_bytes(32)
    fingerprint = {"format": FORMAT, "format_version": FORMAT_VERSION, "tool_version": huref.__version__}
    fingerprint.update(latent_record(terms))
    if name is not None:
        fingerprint["model"] = name
    fingerprint["generator"] = dict(generator)
    fingerprint["commitment"] = {"scheme": COMMITMENT_SCHEME, "sha256": commitment_digest(terms, salt)}
    return fingerprint, salt


def latent(fingerprint: dict) -> torch.Tensor:
    """The fingerprint's latent as a float32 tensor [512]."""
    return torch.tensor(fingerprint["latent"], dtype=torch.float32)


def fingerprint_bytes(fingerprint: dict) -> bytes:
    """FP.json's bytes (indented, keys in a fixed order)."""
    return (json.dumps(fingerprint, indent=1, allow_nan=False) + "\n").encode()


def save_fingerprint(fingerprint: dict, path) -> None:
    """Write FP.json, atomically."""
    write_atomically(path, fingerprint_bytes(fingerprint))


def private_path(fingerprint_path) -> Path:
    """Where FP.json's private file goes: FP.private.safetensors beside it."""
    path = Path(fingerprint_path)
    return path.with_name(path.stem + ".private.safetensors")


KEY_FORMAT = "huref-commitment-key"


def key_chunks(terms: Terms, salt: bytes, device: str):
    """The default private file, in chunks: a safetensors file with no tensors whose metadata holds
    the salt, the commitment and what the terms were computed with (token count, layers, dtype,
    device, the weight files' SHA-256, versions); never publish it (with the model, the salt opens
    the commitment)."""
    from huref.files import safetensors_chunks

    meta = terms.meta
    key = {"huref": KEY_FORMAT, "salt": salt.hex(), "commitment": commitment_digest(terms, salt),
           "model": meta.get("model"), "n_tokens": len(terms.tokens), "layers": list(terms.layers),
           "dtype": meta.get("dtype", "float32"), "device": device, "weights_sha256": weights_digest(terms),
           "tool_version": huref.__version__, "torch_version": torch.__version__}
    return safetensors_chunks({}, {"huref": json.dumps(key)})


def weights_digest(terms: Terms) -> str | None:
    """One SHA-256 over the SHA-256 of every weight tensor the terms were computed from (their
    meta "sha256"), None when unknown."""
    digests = terms.meta.get("sha256")
    if not digests:
        return None
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()


def opening_chunks(terms: Terms, salt: bytes):
    """The full opening, in chunks: the terms (an invariants file) with the salt in their metadata;
    never publish it."""
    return terms_chunks(Terms(terms.values, terms.layers, terms.tokens, dict(terms.meta, commitment_salt=salt.hex())))


def save_opening(terms: Terms, salt: bytes, path) -> None:
    """Write the full opening, atomically."""
    write_atomically(path, opening_chunks(terms, salt))


def _salt(text, path) -> bytes:
    try:
        salt = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        salt = b""
    if len(salt) != 32:
        raise HurefError(f"{path}: the commitment salt is missing or not 32 hex-encoded bytes")
    return salt


def read_private(path) -> tuple[bytes, dict, Terms | None]:
    """A private file: (salt, the key's fields ({} for a full opening), the terms when it holds them).
    Anything else raises HurefError."""
    from huref.readers.safetensors import read_header

    path = str(path)
    try:
        header = json.loads(read_header(path)[2].get("huref", "null"))
    except HurefError as error:
        raise HurefError(f"{path}: not a huref private file ({str(error).removeprefix(path + ': ')})") from None
    except (ValueError, RecursionError):
        header = None
    if isinstance(header, dict) and header.get("huref") == KEY_FORMAT:
        return _salt(header.get("salt"), path), header, None
    if isinstance(header, dict) and header.get("huref") == "invariants":
        terms = load_terms(path)
        return _salt(terms.meta.get("commitment_salt"), path), {}, terms
    raise HurefError(f"{path}: not a huref private file (FP.private.safetensors)")


def opens(fingerprint: dict, terms: Terms, salt: bytes) -> bool:
    """True when terms and salt open the fingerprint's commitment."""
    return commitment_digest(terms, salt) == fingerprint["commitment"]["sha256"]


def open_commitment(name: str, fingerprint: dict, terms: Terms, salt: bytes, key: dict):
    """Whether terms and salt open the fingerprint's commitment, as a `huref.results.Opening`; when
    they do not, why: other weights (the key's SHA-256 over the tensors read), or, the weights
    matching, other bits of the arithmetic (another machine, torch version or device)."""
    from huref.results import Opening

    if opens(fingerprint, terms, salt):
        return Opening(name, True, "these terms are the committed ones, bit for bit")
    committed, read = key.get("weights_sha256"), weights_digest(terms)
    if committed and read and committed != read:
        return Opening(name, False, "the model's weights differ from the fingerprinted ones (SHA-256 of the tensors read)")
    if key:
        return Opening(name, False, "the terms computed here differ from the committed ones (the weights match; "
                                    f"torch {torch.__version__} here, {key.get('torch_version')} then: the bits of the "
                                    "arithmetic differ between machines and versions; open it with a full opening, "
                                    "fingerprint --save-opening)")
    return Opening(name, False, "the terms or the salt are not the committed ones")


def check_opening(fingerprint: dict, opening_file) -> bool:
    """True when a full opening file (terms + salt) matches the fingerprint's commitment."""
    salt, _, terms = read_private(opening_file)
    if terms is None:
        raise HurefError(f"{opening_file}: holds no terms (open it with the model: `huref open`)")
    return opens(fingerprint, terms, salt)


MAX_FINGERPRINT_BYTES = 16 * 1024 * 1024  # an FP.json is about 12 kB
FLOAT32_MAX = 3.4028234663852886e38


def load_fingerprint(path) -> dict:
    """Read and check an FP.json; anything malformed raises HurefError with one line.

    Checked at parse time: the size of the file, every field's type, a latent of LATENT_DIM numbers
    that are finite in float32, layers as integers, n_layers an integer or null, n_tokens at least 2.
    """
    from huref.readers import open_regular
    from huref.readers.jsonfile import parse_json

    try:
        with open_regular(str(path)) as f:
            raw = f.read(MAX_FINGERPRINT_BYTES + 1)
        if len(raw) > MAX_FINGERPRINT_BYTES:
            raise HurefError(f"{path}: too large for a fingerprint (more than {MAX_FINGERPRINT_BYTES} bytes)")
    except OSError as e:
        raise HurefError(f"{path}: cannot read ({e.strerror})") from None
    data = parse_json(raw, f"{path}: fingerprint", MAX_FINGERPRINT_BYTES)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HurefError(f"{path}: not a huref fingerprint (no \"format\": \"{FORMAT}\")")
    if data.get("format_version") != FORMAT_VERSION or isinstance(data.get("format_version"), bool):
        raise HurefError(f"{path}: fingerprint format version {excerpt(data.get('format_version'))} is not "
                         f"supported (this huref reads {FORMAT_VERSION})")
    for key, kind in REQUIRED.items():
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise HurefError(f"{path}: fingerprint field \"{key}\" is missing or has the wrong type")
    values = data["latent"]
    if len(values) != LATENT_DIM or not all(type(v) in (int, float) and abs(v) <= FLOAT32_MAX for v in values):
        raise HurefError(f"{path}: fingerprint latent must be {LATENT_DIM} numbers, finite in float32")
    if (not all(type(i) is int for i in data["layers"]) or data["n_tokens"] < 2
            or not (data.get("n_layers") is None or type(data["n_layers"]) is int)
            or not isinstance(data.get("layer_choice"), (str, type(None)))):
        raise HurefError(f"{path}: fingerprint layers, n_layers, layer_choice or n_tokens are malformed")
    if not isinstance(data["commitment"].get("sha256"), str) or not isinstance(data["generator"].get("name"), str):
        raise HurefError(f"{path}: fingerprint commitment or generator entry is malformed")
    version = data.get("encoder_version", 1)
    if type(version) is not int or version not in ENCODERS:
        raise HurefError(f"{path}: fingerprint made by encoder version {excerpt(version)}, which this huref does not "
                         f"have (it has versions {', '.join(map(str, ENCODERS))}; a newer huref reads it)")
    return data


def compare_fingerprints(a: dict, b: dict, panel: dict | None = None) -> dict:
    """Compare two latent records (fingerprints, or `latent_record`s of terms) by latent cosine,
    calibrated against the latent null panel of their encoder (`huref.encoder.ENCODERS`; `panel`
    replaces it).

    Returns {"kind": "latent", "latent_cosine": float, "z", "p_value", "verdict", "fpr" (as
    `huref.statistics.verdict_from_statistic` gives them), "threshold" (the smallest cosine called
    same-base), "same_base": bool, "note": str}. Latents of different encoders cannot be compared
    (HurefError).
    """
    from huref.statistics import null_panel, statistic_at, verdict_from_statistic

    check_same_encoder(a, b)
    cosine = float(F.cosine_similarity(latent(a).double(), latent(b).double(), dim=0))
    notes = ["latent cosine (a published fingerprint carries no invariant terms, so no ICS)"]
    if a.get("token_strategy") != b.get("token_strategy"):
        notes.append("the two selected tokens differently (by string and by id); the score means little")
    panel = panel if panel is not None else null_panel(latent_panel_file(encoder_version(a)))
    found = verdict_from_statistic(cosine, panel)
    return {"kind": "latent", "latent_cosine": cosine, **found, "threshold": statistic_at(panel),
            "same_base": found["verdict"] == "same-base", "note": "; ".join(notes)}


def check_same_encoder(a: dict, b: dict) -> None:
    """Refuse (HurefError, one line) two latents made by different encoders: their cosine means nothing."""
    version_a, version_b = encoder_version(a), encoder_version(b)
    if version_a != version_b:
        raise HurefError(f"one latent was made by encoder version {version_a} ({ENCODERS[version_a].reads}), the other "
                         f"by version {version_b} ({ENCODERS[version_b].reads}); latents of different encoders cannot be "
                         "compared (fingerprint the model again with this huref)")
    if a["encoder_sha256"] != b["encoder_sha256"]:
        raise HurefError("the two fingerprints were made with different encoder weights; their latents "
                         "cannot be compared (recompute one with the other's encoder)")


def latent_panel_file(version: int) -> Path:
    """The latent null panel fitted for encoder `version` (package data)."""
    from huref.files import package_data

    return package_data(ENCODERS[version].panel)

"""The fingerprint encoder: invariant terms [L, 3, n, n] -> a 512-d latent that follows N(0, I).

Each n x n term is average-pooled to a GRID x GRID matrix and z-scored, so any token count
works and the CPU cost does not grow with n. Tokens are pooled by bucket: a token's bucket is
a hash of its selection key (`huref.tokens`), so a token lands in the same cell whichever other
tokens were selected, and a relative whose vocabulary grew (new tokens displacing a few
selected ones) changes only the cells those tokens touch, instead of shifting every later row.
Pooling keeps the structure of the terms: the average of X M X^T over buckets I, J is
xbar_I M xbar_J^T, the same bilinear form on averaged embeddings. A convolutional trunk, shared by
all layers, turns the three pooled terms of one layer into a feature vector; features are
averaged over layers (so a model read at any number of layers is encoded) and a linear head
maps them to 512 numbers, which are z-scored per latent as in the HuRef reference code.
The convolutions have no activation between them, so the encoder is a trained linear map of the
pooled terms: a relative's latent is then as close to the original's as its pooled terms are
(a nonlinearity can only lose that closeness when relatives differ by noise shaped like the
differences between models; docs/ENCODER.md has the argument and the measurements), and each
latent coordinate, a weighted sum of thousands of cells, comes out close to Gaussian.
scripts/train_encoder.py trains the weights; docs/ENCODER.md reports how close the latents are
to N(0, I).
"""

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from huref.errors import HurefError
from huref.files import package_data, safetensors_chunks, sha256_of, write_atomically

GRID = 64
LATENT_DIM = 512
BUCKET_SALT = b"huref-encoder-bucket:"
LATENT_TOKENS = 1024  # probe tokens a version-2 latent reads (fewer when --tokens says fewer)
LATENT_MAX_LAYERS = 128  # layers a version-2 latent reads at most (evenly spaced beyond; every layer of known models)
LATENT_RULE = "every"  # meta["layer_choice"] of terms read by the version-2 rule (`huref.inputs.Subject.latent_terms`)


@dataclass(frozen=True)
class EncoderVersion:
    """One encoder huref encodes with: packaged weights, the latent null panel fitted for them
    (`huref.statistics.null_panel`), and which terms it reads: every layer that writes (at most
    LATENT_MAX_LAYERS, over at most LATENT_TOKENS probe tokens) or the command's layers."""

    version: int
    weights: str
    panel: str
    every_layer: bool
    reads: str  # in words, for messages


ENCODERS = {  # one set of weights, two ways of reading a model (docs/ENCODER.md, "Versions")
    1: EncoderVersion(1, "encoder.safetensors", "latent_panel-v1.json", False,
                      "the two middle layers, or --layers"),
    2: EncoderVersion(2, "encoder.safetensors", "latent_panel.json", True,
                      f"every layer, at most {LATENT_TOKENS} probe tokens"),
}
ENCODER_VERSION = 2  # the version fingerprints are made with


def token_buckets(tokens):
    """Bucket (0..GRID-1) of each token key: a SHA-256 of the key, salted so it is unrelated to
    the hash rank that selected the tokens. Returns a LongTensor [n]."""
    return torch.tensor([int.from_bytes(hashlib.sha256(BUCKET_SALT + key.encode()).digest()[:8], "big") % GRID
                         for key in tokens])


def zscore_cells(cells, filled):
    """z-score pooled matrices cells [..., GRID, GRID] over their filled cells (mask broadcastable
    to cells); empty cells become 0. Raises HurefError for a constant matrix."""
    filled = filled.expand_as(cells)
    count = filled.sum(dim=(-2, -1), keepdim=True)
    mean = torch.where(filled, cells, 0).sum(dim=(-2, -1), keepdim=True) / count
    centred = torch.where(filled, cells - mean, 0)
    std = (centred.pow(2).sum(dim=(-2, -1), keepdim=True) / (count - 1)).sqrt()
    if not (std > 1e-7 * mean.abs()).all():
        raise HurefError("an invariant term is constant; it carries no fingerprint")
    return centred / std


def pool_matrices(matrices, buckets):
    """Average matrices [K, n, n] over token buckets [n] and z-score each: [K, GRID, GRID] float32.

    Entry (I, J) is the mean of the entries whose row token is in bucket I and column token in
    bucket J; cells of an empty bucket are 0 and the z-score runs over the other cells.
    """
    K, n, _ = matrices.shape
    counts = torch.bincount(buckets, minlength=GRID).to(matrices.dtype)
    rows = matrices.new_zeros(K, GRID, n).index_add_(1, buckets, matrices)
    cells = matrices.new_zeros(K, GRID, GRID).index_add_(2, buckets, rows)
    pairs = counts[:, None] * counts[None, :]
    cells = cells / pairs.clamp_min(1)
    return zscore_cells(cells, pairs > 0).float()


def pool_terms(values, tokens):
    """Pool raw invariant terms [L, 3, n, n] over the buckets of their n token keys: [L, 3, GRID, GRID].

    The z-score after pooling removes any affine rescaling of a term, so the raw terms need no
    z-score first (pooling is linear); the sums run in float64.
    """
    if values.ndim != 4 or values.shape[1] != 3 or values.shape[2] != values.shape[3]:
        raise HurefError(f"invariant terms must have shape [layers, 3, n, n], got {list(values.shape)}")
    if len(tokens) != values.shape[2]:
        raise HurefError(f"{len(tokens)} token keys for terms over {values.shape[2]} tokens")
    if not torch.isfinite(values).all():
        raise HurefError("invariant terms contain NaN or infinite values")
    buckets = token_buckets(tokens)
    return torch.stack([pool_matrices(layer.double(), buckets) for layer in values])


def standardize_latent(h):
    """z-score each row of h [B, D] over its D entries (the latent normalization of HuRef)."""
    return (h - h.mean(dim=-1, keepdim=True)) / h.std(dim=-1, keepdim=True)


class Encoder(nn.Module):
    """Linear convolutions from pooled terms [B, L, 3, GRID, GRID] to latents [B, LATENT_DIM], rows z-scored.

    architecture: the keyword arguments that rebuild it (saved with the weights)."""

    def __init__(self, widths=(16, 32, 64, 128)):
        super().__init__()
        self.architecture = {"widths": list(widths)}
        layers, channels = [], 3
        for width in widths:  # each stage halves the grid: 64 -> 32 -> 16 -> 8 -> 4; no activation (see above)
            layers.append(nn.Conv2d(channels, width, kernel_size=4, stride=2, padding=1))
            channels = width
        self.trunk = nn.Sequential(*layers)
        side = GRID >> len(widths)
        self.head = nn.Linear(channels * side * side, LATENT_DIM)

    def forward(self, pooled, present=None):
        """pooled [B, L, 3, GRID, GRID]; present [B, L] bool (None: every layer), which layers of a padded
        batch are real. The trunk is linear, so the mean of its features over the present layers is its
        features of the layers' mean, which is what it computes."""
        if present is None:
            mean = pooled.mean(dim=1)
        else:
            weights = present.to(pooled.dtype)[..., None, None, None]  # [B, L, 1, 1, 1]
            mean = (pooled * weights).sum(dim=1) / weights.sum(dim=1)
        features = self.trunk(mean).flatten(1)  # [B, 3, GRID, GRID] -> [B, C * side * side]
        return standardize_latent(self.head(features))


def encoder_path(source=None) -> Path:
    """The encoder weights file: a path (HurefError if it is not a file), or the packaged weights of
    encoder version `source` (default ENCODER_VERSION; InstallationError if they are missing)."""
    if source is None or isinstance(source, int):
        return package_data(ENCODERS[source or ENCODER_VERSION].weights)
    path = Path(source)
    if not path.is_file():
        raise HurefError(f"encoder weights not found at {path} (train them with scripts/train_encoder.py)")
    return path


def save_encoder(encoder, path, settings):
    """Write encoder weights, their architecture and the training settings (a JSON-able dict) to a safetensors file."""
    metadata = {"settings": json.dumps(settings, sort_keys=True), "architecture": json.dumps(encoder.architecture)}
    write_atomically(path, safetensors_chunks(encoder.state_dict(), metadata))


@lru_cache(maxsize=4)
def _load(path_str):
    try:
        with safe_open(path_str, "pt") as f:
            architecture = json.loads((f.metadata() or {}).get("architecture", "{}"))
        encoder = Encoder(**architecture)
        encoder.load_state_dict(load_file(path_str))
    except Exception as error:  # a foreign or damaged file: say which file, not a traceback
        raise HurefError(f"cannot load encoder weights from {path_str}: {error}") from None
    return encoder.eval()


def load_encoder(source=None):
    """Load a trained Encoder (eval mode): a weights file's path, or the packaged encoder of version
    `source` (default ENCODER_VERSION); cached."""
    return _load(str(encoder_path(source).resolve()))


def encoder_digest(source=None):
    """SHA-256 hex digest of an encoder weights file (a path, or the packaged one of a version)."""
    return sha256_of(encoder_path(source))


@torch.no_grad()
def encode(values, tokens, encoder=None):
    """Encode raw invariant terms [L, 3, n, n] over n token keys into a float32 latent [512].

    The latent has zero mean and unit std over its entries. encoder: an Encoder, or None for
    load_encoder(). Runs on CPU.
    """
    encoder = encoder if encoder is not None else load_encoder()
    return encoder(pool_terms(values.detach().cpu(), tokens)[None])[0]

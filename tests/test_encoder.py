"""The encoder: bucket pooling (checked against a direct computation), invariances, weights file."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

import huref.files
from huref.encoder import (GRID, LATENT_DIM, Encoder, encode, encoder_digest, load_encoder, pool_terms,
                           save_encoder, token_buckets)
from huref.errors import HurefError, InstallationError

def random_terms(n, n_layers=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 24, generator=gen)
    terms = [x @ torch.randn(24, 24, generator=gen) @ x.T for _ in range(n_layers * 3)]
    return torch.stack(terms).reshape(n_layers, 3, n, n), [f"s:tok{i}" for i in range(n)]


def test_pool_terms_matches_loop_over_cells():
    values, tokens = random_terms(150)
    pooled = pool_terms(values, tokens)
    buckets = token_buckets(tokens).tolist()
    members = [[i for i, b in enumerate(buckets) if b == g] for g in range(GRID)]
    m = values[1, 2].double()
    expected = torch.zeros(GRID, GRID, dtype=torch.float64)
    filled = torch.zeros(GRID, GRID, dtype=torch.bool)
    for i in range(GRID):
        for j in range(GRID):
            if members[i] and members[j]:
                expected[i, j] = m[members[i]][:, members[j]].mean()
                filled[i, j] = True
    cells = expected[filled]
    expected[filled] = (cells - cells.mean()) / cells.std()
    assert pooled.shape == (2, 3, GRID, GRID)
    torch.testing.assert_close(pooled[1, 2].double(), expected, atol=1e-5, rtol=0)


def test_training_shortcut_equals_pooling_the_full_term(script):
    """scripts/train_encoder.py pools embeddings, then multiplies: the same as pooling X M X^T."""
    train = script("train_encoder")
    gen = torch.Generator().manual_seed(1)
    n, h = 200, 16
    x = torch.randn(1, n, h, generator=gen)
    a, b = torch.randn(h, h, generator=gen), torch.randn(h, h, generator=gen)
    tokens = [f"s:w{i}" for i in range(n)]
    buckets = token_buckets(tokens)[None]
    full = torch.stack([x[0] @ a @ b.T @ x[0].T] * 3)[None]  # [1, 3, n, n]
    p = train.pool_embeddings(x, buckets)[0]
    short = torch.stack([p @ a @ b.T @ p.T] * 3)[None, None]
    from huref.encoder import zscore_cells

    shortcut = zscore_cells(short, train.bucket_filled(buckets)[:, None])[0]
    torch.testing.assert_close(pool_terms(full, tokens), shortcut, atol=1e-4, rtol=0)


def test_pooling_ignores_token_order_and_scale():
    values, tokens = random_terms(120)
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(3))
    shuffled = values[:, :, perm][:, :, :, perm] * 7.5 + 3.0
    torch.testing.assert_close(pool_terms(shuffled, [tokens[i] for i in perm]), pool_terms(values, tokens),
                               atol=1e-5, rtol=0)


def test_buckets_are_fixed_per_key():
    keys = [f"s:k{i}" for i in range(500)]
    first = token_buckets(keys)
    assert token_buckets(keys[250:]).tolist() == first[250:].tolist()  # independent of the other keys
    expected = int.from_bytes(hashlib.sha256(b"huref-encoder-bucket:s:k7").digest()[:8], "big") % GRID
    assert first[7].item() == expected
    assert len(set(first.tolist())) == GRID


def test_encoder_output_shape_and_standardization_any_layer_count():
    torch.manual_seed(0)
    encoder = Encoder().eval()
    for n_layers, n in ((1, 70), (2, 300), (4, 90)):
        values, tokens = random_terms(n, n_layers, seed=n)
        z = encode(values, tokens, encoder)
        assert z.shape == (LATENT_DIM,) and z.dtype == torch.float32
        assert abs(z.mean().item()) < 1e-5 and abs(z.std().item() - 1) < 1e-5


def test_the_layer_mean_is_the_mean_of_the_layers_features():
    """The trunk is linear: encoding the layers' mean equals averaging each layer's trunk features (the
    definition), and a padded batch with its `present` mask equals each model alone."""
    torch.manual_seed(0)
    encoder = Encoder().eval()
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 3, GRID, GRID, generator=gen), torch.randn(2, 3, GRID, GRID, generator=gen)
    with torch.no_grad():
        features = encoder.trunk(a).flatten(1).mean(0)  # each layer through the trunk, then averaged
        reference = encoder.head(features[None])
        reference = (reference - reference.mean()) / reference.std()
        torch.testing.assert_close(encoder(a[None])[0], reference[0], atol=1e-4, rtol=0)
        padded = torch.zeros(2, 5, 3, GRID, GRID)
        padded[0], padded[1, :2] = a, b
        present = torch.tensor([[True] * 5, [True, True, False, False, False]])
        together = encoder(padded, present)
        torch.testing.assert_close(together[0], encoder(a[None])[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(together[1], encoder(b[None])[0], atol=1e-5, rtol=0)


def test_layer_average_makes_duplicated_layers_change_nothing():
    encoder = Encoder().eval()
    values, tokens = random_terms(100, 1)
    twice = torch.cat([values, values])
    torch.testing.assert_close(encode(twice, tokens, encoder), encode(values, tokens, encoder), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", ["shape", "nan", "constant", "keys"])
def test_bad_terms_raise_one_line_errors(bad):
    values, tokens = random_terms(80)
    if bad == "shape":
        values = values[:, :2]
    elif bad == "nan":
        values[0, 1, 3, 4] = float("nan")
    elif bad == "constant":
        values[1, 0] = 2.0
    else:
        tokens = tokens[:-1]
    with pytest.raises(HurefError):
        pool_terms(values, tokens)


def test_weights_round_trip_digest_and_package_lookup(tmp_path, monkeypatch):
    torch.manual_seed(0)
    encoder = Encoder(widths=(8, 16, 32, 64))
    path = tmp_path / "encoder.safetensors"
    save_encoder(encoder, path, {"seed": 0})
    monkeypatch.setattr(huref.files, "data_dir", lambda: tmp_path)  # the packaged weights are looked up here
    loaded = load_encoder()
    for name, t in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t)
    assert loaded.architecture == encoder.architecture  # rebuilt from the file's metadata
    assert encoder_digest() == hashlib.sha256(path.read_bytes()).hexdigest()
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["settings"]) == {"seed": 0}
    assert load_encoder(1) is load_encoder(2)  # one packaged file: the versions differ in what they read
    with pytest.raises(HurefError, match="not found"):  # a path the user gave
        load_encoder(tmp_path / "missing.safetensors")
    monkeypatch.setattr(huref.files, "data_dir", lambda: tmp_path / "missing")
    with pytest.raises(InstallationError, match="encoder.safetensors is missing"):  # the installation's fault
        load_encoder()
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HurefError, match="cannot load"):
        load_encoder(tmp_path / "broken.safetensors")


def test_version_1_weights_are_the_ones_old_fingerprints_name():
    """Fingerprints published before encoder version 2 name this digest (encoder_sha256); the packaged
    weights must stay byte for byte what made them, or those fingerprints no longer verify. Version 2
    reads other terms with the same weights."""
    assert encoder_digest(1) == encoder_digest(2) == "661704b5dd07d0de577ea011275ce23c34366f47cdf2408b408f9be56be457f8"


def test_shipped_encoder_separates_relatives_from_strangers(script):
    """The shipped weights: a perturbed copy stays close, an independent sample does not."""
    train = script("train_encoder")
    gen = torch.Generator().manual_seed(11)
    anchor, positive, _ = train.sample_pair(16, 1024, 96, 2, gen)
    encoder = load_encoder()
    with torch.no_grad():
        za, zp = encoder(anchor), encoder(positive)
    cos_pos = torch.nn.functional.cosine_similarity(za, zp)
    unit = torch.nn.functional.normalize(za, dim=1)
    cos_neg = (unit @ unit.T)[~torch.eye(16, dtype=torch.bool)].abs()
    assert cos_pos.mean() > 0.9
    assert cos_neg.mean() < 0.15

"""Train the fingerprint encoder on synthetic invariant terms, or evaluate trained weights.

    nice -n 10 python scripts/train_encoder.py -o huref/data/encoder.safetensors      # ~13 min, 1 thread
    python scripts/train_encoder.py --evaluate huref/data/encoder.safetensors         # held-out figures
    python scripts/train_encoder.py --attacked huref/data/encoder.safetensors         # attacked tiny checkpoints

Samples are shaped like invariant terms, X M X^T with M = A B^T + g I (X: embeddings of n
tokens with a decaying spectrum, a shared mean direction and uneven row norms; A, B: random
h x h factors with decaying spectra; g I: the self-similarity that real q/k and v/o terms
show). Every token sits in a random bucket, as its key's hash puts it in huref.encoder.
Since bucket averaging is linear, pool(X M X^T) = (P X) M (P X)^T with P the averaging
matrix, so a sample costs O(n h) to draw and pool instead of O(n^2 h) (tests check the
identity). Positives are perturbed copies of the anchor as fine-tuning and vocabulary edits
make them: weight noise on A, B, noise on the embeddings, and a share of the tokens replaced
by new tokens (new rows in new buckets), as when appended vocabulary displaces some of the
selected tokens. Negatives are the other, independent samples of the batch.

Loss = (1 - cos(anchor, positive)) + W_NEG * mean cos^2 over independent pairs
     + W_GAUSS * sliced Wasserstein-2 distance between the batch of latents and N(0, I).
The last term replaces the discriminator of the HuRef paper: every 1-D projection of N(0, I)
on a unit vector is exactly N(0, 1), so comparing sorted projections with the N(0, 1)
quantiles measures the distance to N(0, I) with no second network, no adversarial game and
no sampling noise on the reference side. Directions are random unit vectors plus the 512
axes (so each coordinate's marginal is matched directly).
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from huref.encoder import GRID, LATENT_DIM, Encoder, load_encoder, save_encoder, zscore_cells

SETTINGS = dict(
    seed=20261124,
    steps=2400,
    batch=48,
    lr=2e-3,
    lr_final=5e-5,
    w_neg=8.0,
    w_gauss=1.0,
    n_directions=256,
    tokens=(96, 4096),  # log-uniform token count n
    hidden=(64, 96, 128),  # embedding width h (wider costs time, adds nothing at a 64-bucket grid)
    layers=(1, 2, 2, 2, 3),  # L, drawn per batch
    max_weight_noise=0.2,  # relative noise on A, B
    max_embedding_noise=0.1,  # relative noise on X
    max_token_change=0.1,  # share of tokens replaced by new ones ...
    token_change_rate=0.5,  # ... in this share of the positives (many relatives keep the vocabulary)
)


def pool_embeddings(x, buckets):
    """Mean row of x [B, n, h] per bucket (buckets [B, n] in 0..GRID-1; 0 for an empty one) -> [B, GRID, h]."""
    B, n, h = x.shape
    flat = (buckets + GRID * torch.arange(B)[:, None]).flatten()
    sums = x.new_zeros(B * GRID, h).index_add_(0, flat, x.reshape(B * n, h))
    counts = torch.bincount(flat, minlength=B * GRID).clamp_min(1)
    return (sums / counts[:, None]).reshape(B, GRID, h)


def bucket_filled(buckets):
    """Mask [B, 1, GRID, GRID] of the cells whose row and column buckets hold a token."""
    present = torch.zeros(buckets.shape[0], GRID, dtype=torch.bool).scatter_(1, buckets, True)
    return (present[:, :, None] & present[:, None, :])[:, None]


def decaying_spectrum(batch, size, max_power, gen):
    """Per-sample scales k^-a, a ~ U(0, max_power), normalized to unit RMS: [batch, size]."""
    power = torch.rand(batch, 1, generator=gen) * max_power
    spectrum = torch.arange(1, size + 1).float()[None] ** -power
    return spectrum / spectrum.pow(2).mean(dim=1, keepdim=True).sqrt()


def sample_embeddings(batch, n, h, gen):
    """Token embeddings [batch, n, h]: decaying spectrum, uneven row norms, shared mean direction."""
    spectrum = decaying_spectrum(batch, h, 1.0, gen)[:, None]
    rows = torch.randn(batch, n, h, generator=gen) * spectrum
    rows = rows * torch.exp(0.3 * torch.randn(batch, n, 1, generator=gen))
    mean = torch.randn(batch, 1, h, generator=gen) * spectrum * 1.5 * torch.rand(batch, 1, 1, generator=gen)
    return rows + mean, spectrum


def replace_tokens(x, buckets, share, spectrum, gen):
    """Replace round(share[b] * n) random tokens of sample b (rows of x [B, n, h], buckets [B, n])
    by new tokens: fresh rows in fresh buckets. Returns new (x, buckets)."""
    x, buckets = x.clone(), buckets.clone()
    B, n, h = x.shape
    for b in range(B):
        m = int(round(float(share[b]) * n))
        replaced = torch.randperm(n, generator=gen)[:m]
        x[b, replaced] = torch.randn(m, h, generator=gen) * spectrum[b]
        buckets[b, replaced] = torch.randint(GRID, (m,), generator=gen)
    return x, buckets


def sample_pair(batch, n, h, n_layers, gen, settings=SETTINGS, levels=None):
    """Anchor and positive pooled terms [batch, L, 3, GRID, GRID] and their raw term cosine [batch].

    Perturbation levels are drawn per sample from settings, or fixed by levels =
    {"tokens": share, "embedding": noise, "weights": noise} (for measurements).
    """
    x, spectrum = sample_embeddings(batch, n, h, gen)
    buckets = torch.randint(GRID, (batch, n), generator=gen)
    u = lambda top: torch.rand(batch, 1, 1, generator=gen) * top  # noqa: E731  per-sample level
    fixed = lambda name: torch.full((batch, 1, 1), float(levels[name]))  # noqa: E731
    if levels is None:
        share = u(settings["max_token_change"]).flatten() * (torch.rand(batch, generator=gen) < settings["token_change_rate"])
    else:
        share = fixed("tokens").flatten()
    x_pos, buckets_pos = replace_tokens(x, buckets, share, spectrum[:, 0], gen)
    embedding_noise = u(settings["max_embedding_noise"]) if levels is None else fixed("embedding")
    x_pos = x_pos + embedding_noise * torch.randn(batch, n, h, generator=gen) * spectrum
    pooled, pooled_pos = pool_embeddings(x, buckets), pool_embeddings(x_pos, buckets_pos)
    weight_noise = u(settings["max_weight_noise"]) if levels is None else fixed("weights")
    anchor, positive = [], []
    for _ in range(n_layers * 3):
        a_scale = decaying_spectrum(batch, h, 1.5, gen)[:, None] / math.sqrt(h)
        b_scale = decaying_spectrum(batch, h, 1.5, gen)[:, None] / math.sqrt(h)
        a = torch.randn(batch, h, h, generator=gen) * a_scale
        b = torch.randn(batch, h, h, generator=gen) * b_scale
        a_pos = a + weight_noise * torch.randn(batch, h, h, generator=gen) * a_scale
        b_pos = b + weight_noise * torch.randn(batch, h, h, generator=gen) * b_scale
        self_term = torch.randn(batch, 1, 1, generator=gen)
        for p, aa, bb, out in ((pooled, a, b, anchor), (pooled_pos, a_pos, b_pos, positive)):
            out.append((p @ aa) @ (p @ bb).transpose(1, 2) + self_term * p @ p.transpose(1, 2))
    shape = (batch, n_layers, 3, GRID, GRID)
    anchor = zscore_cells(torch.stack(anchor, 1), bucket_filled(buckets)).reshape(shape)
    positive = zscore_cells(torch.stack(positive, 1), bucket_filled(buckets_pos)).reshape(shape)
    raw_cosine = F.cosine_similarity(anchor.flatten(1), positive.flatten(1))
    return anchor, positive, raw_cosine


def draw_shape(gen, settings=SETTINGS):
    """Token count n (log-uniform), width h and layer count L for one batch."""
    lo, hi = settings["tokens"]
    n = int(math.exp(math.log(lo) + torch.rand(1, generator=gen).item() * math.log(hi / lo)))
    pick = lambda options: options[torch.randint(len(options), (1,), generator=gen).item()]  # noqa: E731
    return n, pick(settings["hidden"]), pick(settings["layers"])


def gaussian_quantiles(count):
    """N(0, 1) quantiles at (i + 0.5) / count, i = 0..count-1."""
    p = (torch.arange(count) + 0.5) / count
    return math.sqrt(2) * torch.erfinv(2 * p - 1)


def sliced_wasserstein_to_normal(z, directions):
    """Mean squared gap between sorted projections of z [B, D] on unit directions [D, K] and N(0, 1) quantiles."""
    projected = (z @ directions).sort(dim=0).values
    return (projected - gaussian_quantiles(z.shape[0])[:, None]).pow(2).mean()


def independent_cos2(z):
    """Mean squared cosine between distinct rows of z [B, D]."""
    unit = F.normalize(z, dim=1)
    cos = unit @ unit.T
    off_diagonal = ~torch.eye(len(z), dtype=torch.bool)
    return cos[off_diagonal].pow(2).mean()


def train(out_path, settings=SETTINGS, log_every=50, threads=1):
    torch.set_num_threads(threads)
    torch.manual_seed(settings["seed"])
    gen = torch.Generator().manual_seed(settings["seed"])
    encoder = Encoder()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=settings["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings["steps"], eta_min=settings["lr_final"])
    axes = torch.eye(LATENT_DIM)
    start = time.time()
    for step in range(1, settings["steps"] + 1):
        n, h, n_layers = draw_shape(gen, settings)
        anchor, positive, raw_cosine = sample_pair(settings["batch"], n, h, n_layers, gen, settings)
        z_anchor, z_positive = encoder(anchor), encoder(positive)
        positive_loss = (1 - F.cosine_similarity(z_anchor, z_positive)).mean()
        negative_loss = independent_cos2(z_anchor)
        random_dirs = F.normalize(torch.randn(LATENT_DIM, settings["n_directions"], generator=gen), dim=0)
        gauss_loss = sliced_wasserstein_to_normal(torch.cat([z_anchor, z_positive]), torch.cat([axes, random_dirs], 1))
        loss = positive_loss + settings["w_neg"] * negative_loss + settings["w_gauss"] * gauss_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == 1:
            print(f"step {step:5d}  n={n:4d} h={h:3d} L={n_layers}  loss {loss.item():.4f}  "
                  f"1-cos+ {positive_loss.item():.4f} (raw {1 - raw_cosine.mean().item():.4f})  "
                  f"cos2- {negative_loss.item():.4f}  sw {gauss_loss.item():.4f}  {time.time() - start:.0f}s",
                  flush=True)
    settings = dict(settings, train_seconds=round(time.time() - start), torch=torch.__version__)
    save_encoder(encoder, out_path, settings)
    print(f"saved {out_path} after {settings['train_seconds']} s", flush=True)


# Relatives as fine-tuning makes them: the weight and embedding noise of SETTINGS, and in half of the
# pairs up to 2 % of the probe tokens changed. Hash-ranked probes (huref.tokens) are displaced in
# the share dV / (V + dV) when dV tokens join a vocabulary of V; fine-tunes add none or a few
# (special tokens are never probes). The training mixture (up to 10 %) is the stress case.
FINE_TUNES = dict(SETTINGS, max_token_change=0.02)


@torch.no_grad()
def held_out(encoder, pairs, gen, settings=SETTINGS, levels=None, batch=50):
    """Latents of held-out anchor/positive pairs drawn as in training (or at fixed `levels`, see
    sample_pair): (z_anchor, z_positive, raw cosine)."""
    z_a, z_p, raw = [], [], []
    for _ in range(math.ceil(pairs / batch)):
        n, h, n_layers = draw_shape(gen, settings)
        anchor, positive, raw_cosine = sample_pair(batch, n, h, n_layers, gen, settings, levels)
        z_a.append(encoder(anchor))
        z_p.append(encoder(positive))
        raw.append(raw_cosine)
    return torch.cat(z_a)[:pairs], torch.cat(z_p)[:pairs], torch.cat(raw)[:pairs]


def cosine_summary(cos):
    return {"mean": cos.mean().item(), "p05": cos.quantile(0.05).item(), "min": cos.min().item()}


@torch.no_grad()
def evaluate(weights, pairs=1200, seed=7):
    """Held-out figures: positive/negative cosines, per-dimension moments, normality tests (a dict)."""
    from scipy import stats

    torch.set_num_threads(1)
    encoder = load_encoder(weights)
    gen = torch.Generator().manual_seed(seed)
    z_a, z_p, raw = held_out(encoder, pairs, gen)
    fine_a, fine_p, fine_raw = held_out(encoder, pairs, gen, FINE_TUNES)
    positive = F.cosine_similarity(z_a, z_p)
    unit = F.normalize(z_a, dim=1)
    negative = (unit @ unit.T)[torch.triu(torch.ones(pairs, pairs, dtype=torch.bool), diagonal=1)].abs()
    mean, std = z_a.mean(0), z_a.std(0)
    reference = F.normalize(torch.randn(pairs, LATENT_DIM, generator=gen), dim=1)
    reference_negative = (reference @ reference.T)[torch.triu(torch.ones(pairs, pairs, dtype=torch.bool), 1)].abs()
    pooled = z_a.flatten()[torch.randperm(z_a.numel(), generator=gen)[:5000]].numpy()
    direction = F.normalize(torch.randn(LATENT_DIM, generator=gen), dim=0)
    per_dim_ks = [stats.kstest(z_a[:, d].numpy(), "norm").pvalue for d in range(LATENT_DIM)]
    corr = torch.corrcoef(z_a.T)
    return {
        "pairs": pairs,
        "seed": seed,
        "positive_cosine_fine_tunes": cosine_summary(F.cosine_similarity(fine_a, fine_p)),
        "raw_term_cosine_fine_tunes": cosine_summary(fine_raw),
        "positive_cosine_training_mixture": cosine_summary(positive),
        "raw_term_cosine_training_mixture": cosine_summary(raw),
        "negative_abs_cosine": {"mean": negative.mean().item(), "p99": negative.quantile(0.99).item(),
                                "max": negative.max().item()},
        "negative_abs_cosine_of_true_gaussians": reference_negative.mean().item(),
        "per_dim_mean": {"mean_abs": mean.abs().mean().item(), "max_abs": mean.abs().max().item()},
        "per_dim_std": {"mean": std.mean().item(), "min": std.min().item(), "max": std.max().item()},
        "max_abs_offdiagonal_correlation": (corr - torch.eye(LATENT_DIM)).abs().max().item(),
        "ks_pooled_5000_coords": dict(zip(("statistic", "pvalue"), map(float, stats.kstest(pooled, "norm")))),
        "shapiro_random_projection": dict(zip(("statistic", "pvalue"),
                                              map(float, stats.shapiro((z_a @ direction).numpy())))),
        "per_dim_ks_share_p_below_0.01": sum(p < 0.01 for p in per_dim_ks) / LATENT_DIM,
        "positive_cosine_by_perturbation": by_perturbation(encoder, gen),
    }


CONDITIONS = {  # name -> fixed perturbation levels of the positive copy
    "identical copy": dict(tokens=0, embedding=0, weights=0),
    "weights 5% (fine-tune)": dict(tokens=0, embedding=0.02, weights=0.05),
    "weights 20%": dict(tokens=0, embedding=0.1, weights=0.2),
    "weights 40%": dict(tokens=0, embedding=0.2, weights=0.4),
    "tokens 5% replaced": dict(tokens=0.05, embedding=0, weights=0),
    "tokens 10% replaced": dict(tokens=0.1, embedding=0, weights=0),
    "tokens 20% replaced": dict(tokens=0.2, embedding=0, weights=0),
    "tokens 35% replaced": dict(tokens=0.35, embedding=0, weights=0),
}


def by_perturbation(encoder, gen, pairs=200):
    """Mean and 5th percentile of raw-term and latent cosine of positives at each fixed CONDITIONS level."""
    rows = {}
    for name, levels in CONDITIONS.items():
        z_a, z_p, raw = held_out(encoder, pairs, gen, levels=levels)
        latent = F.cosine_similarity(z_a, z_p)
        rows[name] = {"raw_mean": raw.mean().item(), "latent_mean": latent.mean().item(),
                      "latent_p05": latent.quantile(0.05).item()}
    return rows


ATTACKED_ARCHITECTURES = ("llama", "gpt2", "falcon", "gemma2", "qwen2_moe")


def attacked_copies(weights, architectures=ATTACKED_ARCHITECTURES):
    """Latent and raw-term cosine with the original for tiny zoo checkpoints (huref_lab/tiny_models.py,
    384-token vocabularies, every token a probe) under: every valid function-preserving rewrite at
    once; 4 appended tokens (1 % of the vocabulary); 40 appended tokens (10 %); every rewrite then 4
    appended tokens; and, as the unrelated case, an independent init of the same architecture."""
    import tempfile

    from huref.encoder import encode, pool_terms
    from huref.invariants import invariant_terms
    from huref.sources import load_model
    from huref_lab import attacks, tiny_models

    torch.set_num_threads(1)
    encoder = load_encoder(weights)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in architectures:
            original = tiny_models.build_checkpoint(arch, Path(tmp) / arch)
            layout = attacks.layout_of(tiny_models.make_config(arch).to_dict())
            rewrites = [attacks.ATTACKS[a] for a in attacks.valid_attacks(layout) if a != "append_vocabulary"]

            def append_4(checkpoint, generator):
                return attacks.append_vocabulary(checkpoint, generator, n_new=4)
            variants = {
                "all rewrites": attacks.compose(*rewrites),
                "append 4 tokens": append_4,
                "append 40 tokens": attacks.append_vocabulary,
                "all rewrites + append 4": attacks.compose(*rewrites, append_4),
            }
            paths = {"original": original,
                     "independent init": tiny_models.build_checkpoint(arch, Path(tmp) / f"{arch}-other", seed=1)}
            for name, attack in variants.items():
                attacked = attack(attacks.read_checkpoint(original), torch.Generator().manual_seed(1))
                paths[name] = attacks.write_checkpoint(attacked, Path(tmp) / f"{arch}-{len(paths)}")
            terms = {name: invariant_terms(load_model(str(path))) for name, path in paths.items()}
            z = {name: encode(t.values, t.tokens, encoder) for name, t in terms.items()}
            pooled = {name: pool_terms(t.values, t.tokens).flatten() for name, t in terms.items()}
            results[arch] = {name: {"latent": F.cosine_similarity(z["original"], z[name], dim=0).item(),
                                    "pooled": F.cosine_similarity(pooled["original"], pooled[name], dim=0).item()}
                             for name in paths if name != "original"}
            print(arch, {k: round(v["latent"], 4) for k, v in results[arch].items()}, file=sys.stderr, flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--out", default="huref/data/encoder.safetensors", help="where to write the weights")
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"])
    parser.add_argument("--evaluate", metavar="WEIGHTS", help="evaluate these weights on held-out samples instead")
    parser.add_argument("--attacked", metavar="WEIGHTS", help="measure these weights on attacked tiny checkpoints")
    parser.add_argument("--pairs", type=int, default=1200, help="held-out pairs for --evaluate")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 leaves the rest of the machine free)")
    args = parser.parse_args()
    if args.attacked:
        print(json.dumps(attacked_copies(args.attacked), indent=2))
    elif args.evaluate:
        print(json.dumps(evaluate(args.evaluate, pairs=args.pairs), indent=2))
    else:
        train(args.out, dict(SETTINGS, steps=args.steps), threads=args.threads)

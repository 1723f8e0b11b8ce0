"""Train the fingerprint encoder on synthetic terms and the zoo's relatives, measure it, and evaluate weights.

    nice -n 10 python scripts/train_encoder.py pool                  # pooled terms of the zoo and real models
    nice -n 10 python scripts/train_encoder.py train -o huref/data/encoder.safetensors   # resumable, 1 thread
    nice -n 10 python scripts/train_encoder.py held-out              # one encoder per held-out group (pair)
    python scripts/train_encoder.py pairs                            # v1 and v2 on every pair -> docs/results/encoder.json
    python scripts/train_encoder.py synthetic huref/data/encoder.safetensors   # held-out synthetic figures
    python scripts/train_encoder.py attacked huref/data/encoder.safetensors    # attacked tiny checkpoints

The encoder (huref.encoder) is a linear map of bucket-pooled terms averaged over a model's layers;
version 2 reads every layer, so what it must learn is which directions of that average survive the
derivations a base goes through and which ones unrelated models share.

Synthetic samples are shaped like invariant terms, X M X^T with M = A B^T + g I (X: embeddings of n
tokens with a decaying spectrum, a shared mean direction and uneven row norms; A, B: random h x h
factors with decaying spectra; g I: the self-similarity that real q/k and v/o terms show), one A, B
per layer and term, X shared by a model's layers. Every token sits in a random bucket, as its key's
hash puts it in huref.encoder. Since bucket averaging is linear, pool(X M X^T) = (P X) M (P X)^T
with P the averaging matrix, so a sample costs O(n h) to draw and pool instead of O(n^2 h) (tests
check the identity). Positives are perturbed copies of the anchor as fine-tuning and vocabulary
edits make them (weight noise on A, B, noise on the embeddings, a share of the tokens replaced by
new tokens in new buckets) whose depth was edited (layers dropped or duplicated, `edit_depth`).
Negatives are the other, independent samples of the batch.

The zoo (scripts/experiments.py: tiny llamas trained here, their derivations, hard negatives, MiniLM)
adds what synthetic noise does not model: real derivations (fine-tunes, continued pretraining,
pruning, up-scaling, upcycling, merges, re-quantization) as positives, and as negatives unrelated
models that share a tokenizer and data (the twin, the sibling of another size, the distilled
student). Each step encodes every training model of the zoo twice, each view with its depth edited,
and scores every same-family pair of views as a positive and every other pair as a negative.

Loss = synthetic (1 - cos(anchor, positive)) + W_NEG * mean cos^2 over independent pairs
     + W_GAUSS * sliced Wasserstein-2 distance between the batch of latents and N(0, I)
     + W_ZOO * (zoo (1 - cos) over positives + W_NEG * mean cos^2 over negatives).
The sliced Wasserstein term replaces the discriminator of the HuRef paper: every 1-D projection of
N(0, I) on a unit vector is exactly N(0, 1), so comparing sorted projections with the N(0, 1)
quantiles measures the distance to N(0, I) with no second network, no adversarial game and no
sampling noise on the reference side. Directions are random unit vectors plus the 512 axes (so
each coordinate's marginal is matched directly).

Held out by group: the zoo's families fall in GROUPS (llama-A with its twin, sibling and student,
which share its tokenizer and data; llama-B; llama-C; neox-D; MiniLM with its re-initialised copy).
`held-out` trains one encoder without each group and without each pair of groups, and `pairs`
scores every zoo pair with the encoder that saw neither of its groups (out of sample); the real
models are never trained on.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from huref.encoder import ENCODERS, GRID, LATENT_DIM, Encoder, load_encoder, pool_terms, save_encoder, zscore_cells
from huref.files import cache_dir
from huref.invariants import DEFAULT_LAYERS, default_layer_order

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("HUREF_ENCODER_WORK") or cache_dir() / "encoder-work")  # pooled terms, checkpoints, held-out weights
OUT_JSON = REPO / "docs" / "results" / "encoder.json"
DOGS_JSON = REPO / "docs" / "results" / "encoder_dogs.json"  # scripts/dog_distinctness.py --encoder-pairs
ENCODER_MD = REPO / "docs" / "ENCODER.md"

SETTINGS = dict(  # the shipped weights' (huref/data/encoder.safetensors keeps them in its metadata)
    seed=20261124,
    init="none",  # "none": random; "version 1": the shipped weights
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
    max_dropped=0.0,  # share of a positive's layers dropped, at most (at least one is kept) ...
    max_duplicated=0.0,  # ... and of the rest duplicated (`edit_depth`; both 0: no depth edits)
    w_zoo=0.0,  # weight of the zoo's contrastive loss (`zoo_loss`; 0: the zoo is not trained on)
    w_zoo_neg=8.0,  # weight of the zoo's negatives' mean cos^2 in it
    w_anchor=0.0,  # weight of the squared distance of the weights from the initial ones (relative to their norm)
    checkpoint_every=50,
)
# The variants measured against it (docs/ENCODER.md, "Training for version 2"): from the shipped weights,
# on synthetic models of up to 12 layers whose positives had layers dropped and duplicated, and on the
# zoo as well.
DEPTH_SETTINGS = dict(SETTINGS, seed=20261206, init="version 1", steps=400, batch=32, lr=5e-4, lr_final=2e-5,
                      layers=(2, 4, 6, 8, 12), max_dropped=0.4, max_duplicated=0.25)
ZOO_SETTINGS = dict(DEPTH_SETTINGS, steps=300, w_zoo=1.0)
VARIANTS = {"shipped": SETTINGS, "depth": DEPTH_SETTINGS, "zoo": ZOO_SETTINGS}

# which zoo families are held out together: a base with the models that share its tokenizer and data
GROUPS = {"llama-A": "A", "llama-A-twin": "A", "llama-A-sib": "A", "llama-A-student": "A", "llama-B": "B",
          "llama-C": "C", "neox-D": "D", "MiniLM": "M", "MiniLM-reinit": "M"}


# ---------------------------------------------------------------- synthetic terms

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
    anchor = zscore_cells(torch.stack(anchor, 1), bucket_filled(buckets)).reshape(shape)  # [B, L * 3, G, G] -> [B, L, 3, G, G]
    positive = zscore_cells(torch.stack(positive, 1), bucket_filled(buckets_pos)).reshape(shape)
    raw_cosine = F.cosine_similarity(anchor.flatten(1), positive.flatten(1))
    return anchor, positive, raw_cosine


def draw_shape(gen, settings=SETTINGS):
    """Token count n (log-uniform), width h and layer count L for one batch."""
    lo, hi = settings["tokens"]
    n = int(math.exp(math.log(lo) + torch.rand(1, generator=gen).item() * math.log(hi / lo)))
    pick = lambda options: options[torch.randint(len(options), (1,), generator=gen).item()]  # noqa: E731
    return n, pick(settings["hidden"]), pick(settings["layers"])


def edit_depth(models, gen, settings=SETTINGS):
    """Depth-edited copies of models (a list of pooled terms [L_i, 3, GRID, GRID]): in each, a share
    U(0, max_dropped) of the layers dropped (at least one kept) and a share U(0, max_duplicated) of the
    rest duplicated, as depth pruning and up-scaling make them. Returns the batch padded to the longest,
    [B, L', 3, GRID, GRID], and which of its layers are present [B, L'] (bool)."""
    picks = []
    for pooled in models:
        n = pooled.shape[0]
        kept = torch.randperm(n, generator=gen)[:max(1, n - int(torch.rand(1, generator=gen) * settings["max_dropped"] * n))]
        doubled = kept[torch.randperm(len(kept), generator=gen)[:int(torch.rand(1, generator=gen) * settings["max_duplicated"]
                                                                       * len(kept))]]
        picks.append(torch.cat([kept, doubled]).sort().values)
    longest = max(len(p) for p in picks)
    batch = models[0].new_zeros(len(models), longest, *models[0].shape[1:])
    present = torch.zeros(len(models), longest, dtype=torch.bool)
    for b, (pooled, pick) in enumerate(zip(models, picks)):
        batch[b, :len(pick)], present[b, :len(pick)] = pooled[pick], True
    return batch, present


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


# ---------------------------------------------------------------- the zoo and the real models

def zoo_entries() -> list[dict]:
    """The zoo's models (scripts/experiments.py, full scale) that are built (their info.json, written
    last, is there; the published MiniLM has none)."""
    from huref_lab.experiments import catalogue as ex
    from huref_lab.experiments.paths import experiments_cache

    root = experiments_cache("full")
    entries = ex.zoo_entries(root) + ex.lineage_entries(root, ex.SCALES["full"])
    return [e for e in entries if (Path(e["dir"]) / "info.json").is_file() or e["kind"] == "pretrained"]


DROPPED_ONE = (15,)  # the middle layer of SmolLM2's 30: the issue's "one layer dropped" copy


def derived_copies() -> dict:
    """{label: folder} of SmolLM2's derived copies (scripts/real_lineage.py: every function-preserving
    rewrite at once; layers 10-14 removed), made in WORK/derived when the real cache lacks them, and
    "smollm2-drop15": layer 15 removed, not healed."""
    from huref_lab.experiments import real_lineage as rl
    from huref_lab.experiments import real_models as rm
    from huref_lab import attacks

    base = rm.hf_dir("smollm2")
    copies = {label: rl.PATHS[label]() for label in ("smollm2-rewritten", "smollm2-pruned")}
    copies["smollm2-drop15"] = WORK / "derived" / "smollm2-drop15"
    for label, path in copies.items():
        if path.exists() or not base.exists():
            continue
        path = copies[label] = WORK / "derived" / label
        if path.exists():
            continue
        if label == "smollm2-rewritten":
            layout = attacks.layout_of(json.loads((base / "config.json").read_text()))
            every = "+".join(a for a in attacks.valid_attacks(layout) if a != "append_vocabulary")
            attacks.attack_directory(base, path, every, seed=1)
        else:
            rl.pruned_copy(base, path, rl.DROPPED if label == "smollm2-pruned" else DROPPED_ONE)
    return copies


def real_entries() -> list[dict]:
    """The real models of scripts/real_lineage.py that are built (its derived copies made when missing,
    `derived_copies`), each with its family (its root) and how it was made."""
    from huref_lab.experiments import real_lineage as rl

    copies = derived_copies()
    where = {label: copies.get(label, rl.PATHS[label]()) for label in rl.ORDER}
    entries = [dict(name=label, family=rl.ancestry(label)[0][0], kind=(rl.PARENT.get(label) or ("", "published"))[1],
                    dir=where[label]) for label in rl.ORDER if where[label].exists()]
    if copies["smollm2-drop15"].exists():
        entries.append(dict(name="smollm2-drop15", family="smollm2.gguf", kind="one layer dropped",
                            dir=copies["smollm2-drop15"]))
    return entries


def pooled_models(update: bool = False, log=print) -> dict:
    """{name: {"pooled": [L, 3, GRID, GRID] (every layer that writes, huref.encoder.LATENT_TOKENS probe
    tokens, as `huref fingerprint` reads them), "v1": the version-1 latent [512] (two middle layers, the default tokens, as huref made it before
    version 2), "family", "group" (GROUPS; "real" for the real models, never trained on), "kind", "set":
    "zoo" | "real"}}, cached in WORK/pooled.pt; `update`: pool the built models not in it yet (else the
    cache must exist)."""
    from huref.inputs import Settings, open_subject

    cache = WORK / "pooled.pt"
    if not update:
        if not cache.exists():
            raise SystemExit(f"{cache} is missing: run `python scripts/train_encoder.py pool` first")
        return torch.load(cache, weights_only=True)
    models = torch.load(cache, weights_only=True) if cache.exists() else {}
    settings = Settings()
    for where, entries in (("zoo", zoo_entries()), ("real", real_entries())):
        for e in entries:
            if e["name"] in models:
                continue
            subject = open_subject(str(e["dir"]))
            terms = subject.latent_terms(settings)
            models[e["name"]] = dict(pooled=pool_terms(terms.values, terms.tokens),
                                     v1=torch.tensor(subject.record(settings, version=1)["latent"]),
                                     family=e["family"], group=GROUPS.get(e["family"], "real") if where == "zoo" else "real",
                                     kind=e["kind"], set=where, also_from=e.get("also_from") or "")
            log(f"pooled {e['name']}: {len(terms.layers)} layers, {len(terms.tokens)} tokens")
            WORK.mkdir(parents=True, exist_ok=True)
            torch.save(models, cache.with_suffix(".tmp"))
            cache.with_suffix(".tmp").replace(cache)
    return models


def label(a: dict, b: dict) -> str:
    """"same-base", "unrelated", or "partial": a frankenmerge against the family that gave it layers but
    not its embeddings (as scripts/lineage_evidence.py labels it; left out of every figure)."""
    if a["family"] == b["family"]:
        return "same-base"
    if a["also_from"] == b["family"] or b["also_from"] == a["family"]:
        return "partial"
    return "unrelated"


# ---------------------------------------------------------------- training

def settings_digest(settings: dict, held_out: tuple) -> str:
    return hashlib.sha256(json.dumps([settings, sorted(held_out)], sort_keys=True).encode()).hexdigest()[:12]


def zoo_loss(encoder, training: list[dict], gen, settings) -> torch.Tensor:
    """The zoo's contrastive loss: every training model encoded twice, each view depth-edited; positives
    are same-family pairs of views (a model's two views included), negatives every other pair."""
    views = [m["pooled"] for m in training] * 2
    batch, present = edit_depth(views, gen, settings)
    z = F.normalize(encoder(batch, present), dim=1)
    cos = z @ z.T
    families = sorted({m["family"] for m in training})
    family = torch.tensor([families.index(m["family"]) for m in training] * 2)
    same = family[:, None] == family[None, :]
    distinct = ~torch.eye(len(views), dtype=torch.bool)
    positive = (1 - cos[same & distinct]).mean()
    negative = cos[~same].pow(2).mean()
    return positive + settings["w_zoo_neg"] * negative, positive, negative


def train(out_path, settings=SETTINGS, held_out=(), models=None, log_every=50, threads=1, log=print):
    """Train an encoder without the zoo groups in `held_out`, write it to out_path. Resumable: a
    checkpoint of the run (weights, optimizer, schedule, random state) is kept in WORK every
    checkpoint_every steps and picked up again by the same command."""
    torch.set_num_threads(threads)
    models = models if models is not None else pooled_models(log=log) if settings["w_zoo"] else {}
    names = [name for name, m in models.items() if m["set"] == "zoo" and m["group"] not in held_out]
    training = [models[name] for name in names]
    torch.manual_seed(settings["seed"])
    gen = torch.Generator().manual_seed(settings["seed"])
    encoder = Encoder()
    if settings["init"] == "version 1":
        encoder.load_state_dict(load_encoder(1).state_dict())
    optimizer = torch.optim.Adam(encoder.parameters(), lr=settings["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings["steps"], eta_min=settings["lr_final"])
    checkpoint = WORK / f"checkpoint-{settings_digest(settings, held_out)}.pt"
    first = 1
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        encoder.load_state_dict(state["encoder"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch"])
        first = state["step"] + 1
        log(f"resumed at step {first} from {checkpoint}")
    initial = [p.detach().clone() for p in encoder.parameters()]
    initial_norm = sum(float(p.pow(2).sum()) for p in initial)
    axes = torch.eye(LATENT_DIM)
    start = time.time()
    for step in range(first, settings["steps"] + 1):
        n, h, n_layers = draw_shape(gen, settings)
        anchor, positive, raw_cosine = sample_pair(settings["batch"], n, h, n_layers, gen, settings)
        present = None
        if settings["max_dropped"] or settings["max_duplicated"]:
            positive, present = edit_depth(list(positive), gen, settings)
        z_anchor, z_positive = encoder(anchor), encoder(positive, present)
        positive_loss = (1 - F.cosine_similarity(z_anchor, z_positive)).mean()
        negative_loss = independent_cos2(z_anchor)
        random_dirs = F.normalize(torch.randn(LATENT_DIM, settings["n_directions"], generator=gen), dim=0)
        gauss_loss = sliced_wasserstein_to_normal(torch.cat([z_anchor, z_positive]), torch.cat([axes, random_dirs], 1))
        zoo, zoo_positive, zoo_negative = (zoo_loss(encoder, training, gen, settings) if settings["w_zoo"]
                                           else (torch.zeros(()),) * 3)
        drift = sum((p - p0).pow(2).sum() for p, p0 in zip(encoder.parameters(), initial)) / initial_norm
        loss = (positive_loss + settings["w_neg"] * negative_loss + settings["w_gauss"] * gauss_loss
                + settings["w_zoo"] * zoo + settings["w_anchor"] * drift)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == first:
            log(f"step {step:5d}  n={n:4d} h={h:3d} L={n_layers:2d}  loss {loss.item():.4f}  synthetic 1-cos+ "
                f"{positive_loss.item():.4f} (raw {1 - raw_cosine.mean().item():.4f}) cos2- {negative_loss.item():.4f} "
                f"sw {gauss_loss.item():.4f}  zoo 1-cos+ {zoo_positive.item():.4f} cos2- {zoo_negative.item():.4f}  "
                f"drift {drift.item():.4f}  "
                f"{time.time() - start:.0f}s")
        if step % settings["checkpoint_every"] == 0 and step < settings["steps"]:
            WORK.mkdir(parents=True, exist_ok=True)
            torch.save({"encoder": encoder.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "generator": gen.get_state(), "torch": torch.get_rng_state(),
                        "step": step}, checkpoint)
    record = dict(settings, held_out=sorted(held_out), version=2, torch=torch.__version__,
                  trained_on=names)
    save_encoder(encoder.eval(), out_path, record)
    checkpoint.unlink(missing_ok=True)
    log(f"saved {out_path}")


# ---------------------------------------------------------------- out of sample, and every pair

# The shipped weights are trained on synthetic terms alone, so every zoo and real pair is out of sample.
# Trained on the zoo as well (ZOO_SETTINGS), an encoder is measured on the groups it did not see.
HELD_OUT_GROUPS = ("A", "B")  # the groups with hard derivations (A) and hard negatives (A's), and a plain family (B)


def held_out_path(group: str) -> Path:
    return WORK / f"zoo-trained-without-{group}.safetensors"


def train_held_out(groups=HELD_OUT_GROUPS, log=print) -> None:
    """One zoo-trained encoder (ZOO_SETTINGS) per group of `groups`, trained without it, in WORK; those
    already there are kept."""
    models = pooled_models(log=log)
    for group in groups:
        if not held_out_path(group).exists():
            log(f"training on the zoo without group {group}")
            train(held_out_path(group), ZOO_SETTINGS, (group,), models, log_every=100, log=log)


def load_settings(path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()["settings"]


@torch.no_grad()
def latents(encoder, models: dict) -> dict:
    """{name: latent [512]} of every model (all its pooled layers)."""
    return {name: encoder(m["pooled"][None])[0] for name, m in models.items()}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=0))


DEPTH_PATH = WORK / "depth.safetensors"  # `train --variant depth -o` this, for `pairs`


def pair_latents(models: dict, shipped):
    """Every pair of the zoo and of the real models (same-base or unrelated), as (row, latents): row
    {"a", "b", "set", "label", "kind_a", "kind_b"}, latents {"v1": version 1 as shipped, "v2": the shipped
    version 2, "v2_depth": the depth variant when DEPTH_PATH is there, and for zoo pairs with a side in a
    group of HELD_OUT_GROUPS "v2_zoo": the zoo-trained encoder that did not see that group}, each a pair
    of latents [512]."""
    z_shipped = latents(shipped, models)
    z_depth = latents(load_encoder(DEPTH_PATH), models) if DEPTH_PATH.exists() else None
    zoo_trained = {group: latents(load_encoder(held_out_path(group)), models) for group in HELD_OUT_GROUPS
                   if held_out_path(group).exists()}
    for where in ("zoo", "real"):
        names = [name for name, m in models.items() if m["set"] == where]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                relation = label(models[a], models[b])
                if relation == "partial":
                    continue
                row = dict(a=a, b=b, set=where, label=relation, kind_a=models[a]["kind"], kind_b=models[b]["kind"])
                pair = {"v1": (models[a]["v1"], models[b]["v1"]), "v2": (z_shipped[a], z_shipped[b])}
                if z_depth is not None:
                    pair["v2_depth"] = (z_depth[a], z_depth[b])
                unseen = [models[n]["group"] for n in (a, b) if models[n]["group"] in zoo_trained]
                if unseen:
                    pair["v2_zoo"] = (zoo_trained[unseen[0]][a], zoo_trained[unseen[0]][b])
                    row["zoo_held_out"] = unseen[0]
                yield row, pair


def pair_rows(models: dict, shipped) -> list[dict]:
    """`pair_latents`' rows with each latent pair's cosine under its key ("v1", "v2", "v2_zoo")."""
    return [dict(row, **{key: cosine(*pair) for key, pair in latent_pairs.items()})
            for row, latent_pairs in pair_latents(models, shipped)]


def summary(rows: list[dict], key: str) -> dict:
    """Separation of the rows' same-base from their unrelated pairs by `key`: AUC, TPR at 1% FPR, margin,
    lowest same-base and highest unrelated (with the pair), mean |cos| of the unrelated."""
    from huref_lab.experiments.separation import auc, tpr_at_fpr

    pos = [r for r in rows if r["label"] == "same-base" and key in r]
    neg = [r for r in rows if r["label"] == "unrelated" and key in r]
    low, high = min(pos, key=lambda r: r[key]), max(neg, key=lambda r: r[key])
    return {"n_pos": len(pos), "n_neg": len(neg), "auc": auc([r[key] for r in pos], [r[key] for r in neg]),
            "tpr_at_1pct_fpr": tpr_at_fpr([r[key] for r in pos], [r[key] for r in neg], 0.01),
            "margin": low[key] - high[key], "lowest_same_base": [low[key], low["a"], low["b"]],
            "highest_unrelated": [high[key], high["a"], high["b"]],
            "mean_abs_unrelated": sum(abs(r[key]) for r in neg) / len(neg)}


def measure_pairs(out: Path = OUT_JSON, dogs: Path = DOGS_JSON, log=print) -> dict:
    """Every pair under v1, v2 and the zoo-trained v2 (`pair_rows`), with summaries, the readings compared
    (`reading_rows`) and, when `dogs` (scripts/dog_distinctness.py --encoder-pairs) is there, the dogs' image
    distances; written to `out`, and the tables to docs/ENCODER.md (`section`)."""
    models = pooled_models(log=log)
    rows = pair_rows(models, load_encoder(2))
    if dogs.exists():
        distances = {(r["a"], r["b"]): r for r in json.loads(dogs.read_text())["pairs"]}
        for r in rows:
            found = distances.get((r["a"], r["b"]), {})
            r.update({f"{key}_distance": found[f"{key}_distance"] for key in ("v1", "v2") if f"{key}_distance" in found})
    zoo, real = [r for r in rows if r["set"] == "zoo"], [r for r in rows if r["set"] == "real"]
    report = {"settings": json.loads(load_settings(REPO / "huref" / "data" / ENCODERS[2].weights)),
              "models": {name: {k: m[k] for k in ("family", "group", "kind", "set")} | {"layers": m["pooled"].shape[0]}
                         for name, m in models.items()},
              "summary": {where: {key: summary(group, key) for key in ("v1", "v2", "v2_depth", "v2_zoo")
                                  if any(key in r for r in group)} for where, group in (("zoo", zoo), ("real", real))},
              "readings": reading_summary(reading_rows(models)),
              "layer_similarity": {name: layer_similarity(models[name]["pooled"]) for name in ("smollm2.gguf", "gemma3.gguf")
                                   if name in models},
              "pairs": rows}
    out.write_text(json.dumps(rounded(report), indent=1) + "\n")
    from huref_lab.experiments.doc_sections import insert_section

    insert_section(ENCODER_MD, section(report), SECTION_HEADING)
    log(f"wrote {out} and {ENCODER_MD}")
    return report


def rounded(value, digits: int = 5):
    """value with every float rounded to `digits` (a smaller JSON; the tables print 3)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


SECTION_HEADING = "## Version 1 beside version 2 on the zoo and real models"
WATCHED = ("llama-A/sft", "llama-A/lora", "llama-A/ft-python", "llama-A/cpt+vocab", "llama-A/cpt-heavy", "llama-A/int8",
           "llama-A/prune20", "llama-A/depth-pruned", "llama-A/width-pruned", "llama-A/upscaled", "llama-A/moe-upcycled",
           "llama-A/merge-linear", "llama-A/merge-slerp", "llama-A/merge-ties", "llama-A/frankenmerge",
           "llama-A/attacked", "llama-A-twin", "llama-A-sib", "llama-A-student")


PAIR_HEADER, PAIR_RULE = "| A | B | relation | v1 | v2 | depth variant | zoo-trained |", "|---|---|---|---|---|---|---|"


def pair_line(r: dict) -> str:
    """One table row: the pair, its relation, each encoder's cosine (and dog distance where measured)."""
    cells = []
    for key in ("v1", "v2"):
        distance = f" ({r[key + '_distance']:.2f})" if key + "_distance" in r else ""
        cells.append(f"{r[key]:.3f}{distance}")
    variants = [f"{r[key]:.3f}" if key in r else "–" for key in ("v2_depth", "v2_zoo")]
    relation = r["label"] if r["label"] == "unrelated" else r["kind_b"]
    return f"| {r['a']} | {r['b']} | {relation} | {' | '.join(cells + variants)} |"


def summary_line(name: str, s: dict) -> str:
    return (f"| {name} | {s['n_pos']} / {s['n_neg']} | {s['auc']:.3f} | {s['tpr_at_1pct_fpr']:.3f} | {s['margin']:+.3f} | "
            f"{s['lowest_same_base'][0]:.3f} ({s['lowest_same_base'][1]} ~ {s['lowest_same_base'][2]}) | "
            f"{s['highest_unrelated'][0]:.3f} ({s['highest_unrelated'][1]} ~ {s['highest_unrelated'][2]}) | "
            f"{s['mean_abs_unrelated']:.3f} |")


def section(report: dict) -> str:
    """The markdown of docs/ENCODER.md's SECTION_HEADING: separation, every watched pair, the real pairs,
    and the readings compared."""
    rows, summaries = report["pairs"], report["summary"]
    by = {(r["a"], r["b"]): r for r in rows}
    out = [SECTION_HEADING, "",
           "*Written by `python scripts/train_encoder.py pairs` (after `pool`, `held-out` and "
           "`scripts/dog_distinctness.py --encoder-pairs`). Cosines of the two models' latents; in brackets the "
           "image distance of their dogs (`scripts/dog_distinctness.py`: 0 the same picture, 1 as far apart as two "
           "random dog photos; bundled generator, psi 0.5, cutoff 8). v1: encoder version 1 as huref made "
           "fingerprints before (the two middle layers, 4096 probe tokens); v2: version 2 (every layer, 1024 probe "
           "tokens, the same weights); depth variant and zoo-trained: the retrained weights of \"Training for version 2\" "
           "(the zoo-trained ones on pairs with a side in the group they did not see: A, llama-A with its twin, sibling "
           "and student; B, llama-B). The shipped weights never saw the zoo or the real models: every v1 and v2 figure "
           "is out of sample.*", "",
           "| encoder | pairs (same-base / unrelated) | AUC | TPR at 1% FPR | margin | lowest same-base | "
           "highest unrelated | mean \\|cos\\| unrelated |", "|---|---|---|---|---|---|---|---|"]
    for where in ("zoo", "real"):
        for key, name in (("v1", "version 1"), ("v2", "version 2"), ("v2_depth", "depth variant"),
                          ("v2_zoo", "zoo-trained, groups A and B held out")):
            if key in summaries[where]:
                out.append(summary_line(f"{where}: {name}", summaries[where][key]))
    out += ["", "Relatives and hard negatives of llama-A (the zoo's lineage models), then every other zoo family's:", "",
            PAIR_HEADER, PAIR_RULE]
    out += [pair_line(by[("llama-A", b)]) for b in WATCHED if ("llama-A", b) in by]
    for base in ("llama-B", "llama-C", "MiniLM"):
        out += [pair_line(r) for r in rows if r["a"] == base and r["label"] == "same-base"]
    unrelated = sorted((r for r in rows if r["set"] == "zoo" and r["label"] == "unrelated"), key=lambda r: -r["v2"])
    out += ["", f"The five unrelated zoo pairs with the highest version-2 cosine (of {len(unrelated)}):", "",
            PAIR_HEADER, PAIR_RULE]
    out += [pair_line(r) for r in unrelated[:5]]
    real = [r for r in rows if r["set"] == "real"]
    out += ["", "Real models (docs/REAL_MODELS.md; smollm2-drop15: SmolLM2 without layer 15, not healed): each base "
            "against every model derived from it (the summary above covers every same-base pair, derivatives against "
            "each other too), and the highest unrelated pair of each two families:", "",
            PAIR_HEADER, PAIR_RULE]
    out += [pair_line(r) for r in real if r["label"] == "same-base" and r["a"] == report["models"][r["b"]]["family"]]
    highest = {}
    for r in real:
        if r["label"] == "unrelated":
            key = tuple(sorted((report["models"][r["a"]]["family"], report["models"][r["b"]]["family"])))
            if key not in highest or r["v2"] > highest[key]["v2"]:
                highest[key] = r
    out += [pair_line(r) for r in highest.values()]
    out += ["", "How a model is read (`READINGS`; the shipped weights on each reading; \"input\": the cosine of the "
            "layers' mean pooled terms, what an untrained random projection keeps):", "",
            "| reading | zoo: lowest same-base | zoo: highest unrelated | cpt-heavy | twin | sibling | depth-pruned | "
            "smollm2 - 5 of 30 layers | smollm2 - 1 of 30 |", "|---|---|---|---|---|---|---|---|---|"]
    for reading, summary_of in report["readings"].items():
        at = {(r["a"], r["b"]): r for r in summary_of["pairs"]}
        low, high = summary_of["lowest_same_base"], summary_of["highest_unrelated"]
        cell = lambda pair: f"{at[pair]['latent']:.3f} ({at[pair]['input']:.3f})" if pair in at else "–"  # noqa: E731
        out.append(f"| {reading} | {low['latent']:.3f} ({low['input']:.3f}) | {high['latent']:.3f} ({high['input']:.3f}) | "
                   + " | ".join(cell(pair) for pair in READING_PAIRS) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- how to read a model: the measured options

def evenly_spaced(n: int, k: int) -> list[int]:
    """k of n layer positions, evenly spaced from the first to the last (all n when n <= k)."""
    return list(range(n)) if n <= k else sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def centred(pooled: torch.Tensor) -> torch.Tensor:
    """Pooled terms [..., GRID, GRID] (every bucket filled) without what a bucket does on its own: each
    matrix double-centred (its rows' and columns' means removed: the statistics of a bucket's tokens,
    which models trained with one tokenizer share whatever their weights), its diagonal (each token with
    itself, large in every model) set to 0, and z-scored again."""
    cells = (pooled - pooled.mean(-1, keepdim=True) - pooled.mean(-2, keepdim=True)
             + pooled.mean((-2, -1), keepdim=True)).masked_fill(torch.eye(GRID, dtype=torch.bool), 0)
    return cells / cells.flatten(-2).std(-1)[..., None, None]


READINGS = {  # name -> the pooled layers [L', 3, GRID, GRID] read from a model's every layer [L, 3, GRID, GRID]
    "the two middle layers (version 1)": lambda p: p[sorted(default_layer_order(list(range(len(p))))[:DEFAULT_LAYERS])],
    "4 evenly spaced layers": lambda p: p[evenly_spaced(len(p), 4)],
    "8 evenly spaced layers": lambda p: p[evenly_spaced(len(p), 8)],
    "16 evenly spaced layers": lambda p: p[evenly_spaced(len(p), 16)],
    "every layer (version 2)": lambda p: p,
    "every layer, centred": centred,
}


def layer_similarity(pooled: torch.Tensor) -> dict:
    """How alike one model's layers are: the mean cosine of the pooled terms [L, 3, GRID, GRID] of layers
    1, 2 and 5 apart ({"1": ..., "2": ..., "5": ...})."""
    flat = F.normalize(pooled.flatten(1).double(), dim=1)  # [L, 3 * GRID * GRID]
    cos = flat @ flat.T
    return {str(k): float(cos.diagonal(k).mean()) for k in (1, 2, 5) if k < len(pooled)}


@torch.no_grad()
def reading_rows(models: dict) -> list[dict]:
    """For each way of reading a model (READINGS) and every zoo and real pair: the cosine of the layers'
    mean pooled terms ("input": what a linear encoder starts from; an untrained random projection keeps it)
    and of the version-1 weights' latent of those layers ("latent")."""
    encoder = load_encoder(1)
    rows = []
    for reading, read in READINGS.items():
        pooled = {name: read(m["pooled"]) for name, m in models.items()}
        z = {name: encoder(p[None])[0] for name, p in pooled.items()}
        for where in ("zoo", "real"):
            names = [name for name, m in models.items() if m["set"] == where]
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    relation = label(models[a], models[b])
                    if relation != "partial":
                        rows.append(dict(reading=reading, a=a, b=b, set=where, label=relation,
                                         input=cosine(pooled[a].mean(0).flatten(), pooled[b].mean(0).flatten()),
                                         latent=cosine(z[a], z[b])))
    return rows


READING_PAIRS = (("llama-A", "llama-A/cpt-heavy"), ("llama-A", "llama-A-twin"), ("llama-A", "llama-A-sib"),
                 ("llama-A", "llama-A/depth-pruned"), ("smollm2.gguf", "smollm2-pruned"), ("smollm2.gguf", "smollm2-drop15"))


def reading_summary(rows: list[dict]) -> dict:
    """{reading: {"lowest_same_base", "highest_unrelated" (zoo rows by latent cosine), "pairs": READING_PAIRS'
    rows}} of `reading_rows`' rows."""
    out = {}
    for reading in READINGS:
        found = [r for r in rows if r["reading"] == reading]
        zoo = [r for r in found if r["set"] == "zoo"]
        out[reading] = {"lowest_same_base": min((r for r in zoo if r["label"] == "same-base"), key=lambda r: r["latent"]),
                        "highest_unrelated": max((r for r in zoo if r["label"] == "unrelated"), key=lambda r: r["latent"]),
                        "pairs": [r for r in found if (r["a"], r["b"]) in READING_PAIRS]}
    return out


# ---------------------------------------------------------------- synthetic and attacked measurements

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
    """Latent and pooled-term cosine (float64) with the original, as `huref fingerprint` reads them (every
    layer), for tiny zoo checkpoints (huref_lab/tiny_models.py, 384-token vocabularies, every token a
    probe) under: every valid function-preserving rewrite at once; 4 appended tokens (1 % of the
    vocabulary); 40 appended tokens (10 %); every rewrite then 4 appended tokens; and, as the unrelated
    case, an independent init of the same architecture."""
    import tempfile

    from huref.encoder import encode
    from huref.inputs import Settings, open_subject
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
            terms = {name: open_subject(str(path)).latent_terms(Settings()) for name, path in paths.items()}
            z = {name: encode(t.values, t.tokens, encoder) for name, t in terms.items()}
            pooled = {name: pool_terms(t.values, t.tokens).mean(0).flatten() for name, t in terms.items()}
            results[arch] = {name: {"latent": cosine(z["original"], z[name]), "pooled": cosine(pooled["original"], pooled[name])}
                             for name in paths if name != "original"}
            print(arch, {k: round(v["latent"], 7) for k, v in results[arch].items()}, file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("pool", help="pooled terms of the zoo and real models (WORK/pooled.pt)")
    trainer = commands.add_parser("train", help="train weights (the shipped ones' settings, or a measured variant)")
    trainer.add_argument("-o", "--out", default=str(WORK / "encoder.safetensors"),
                         help="where to write them (the packaged file must stay what published fingerprints name)")
    trainer.add_argument("--variant", choices=VARIANTS, default="shipped")
    trainer.add_argument("--steps", type=int, default=None, help="instead of the variant's")
    trainer.add_argument("--hold-out", default="", help="comma-separated zoo groups to leave out (GROUPS)")
    trainer.add_argument("--threads", type=int, default=1, help="CPU threads (1 leaves the rest of the machine free)")
    commands.add_parser("held-out", help="zoo-trained encoders, each without one group of HELD_OUT_GROUPS "
                                          "(WORK; --group: that one only)").add_argument("--group", default=None)
    commands.add_parser("pairs", help=f"every pair under v1 and v2 -> {OUT_JSON.relative_to(REPO)}")
    for name in ("synthetic", "attacked"):
        commands.add_parser(name, help=f"{name} figures of WEIGHTS").add_argument("weights")
    args = parser.parse_args()
    if args.command == "pool":
        pooled_models(update=True)
    elif args.command == "train":
        held_out = tuple(g for g in args.hold_out.split(",") if g)
        settings = VARIANTS[args.variant]
        train(args.out, dict(settings, steps=args.steps or settings["steps"]), held_out, threads=args.threads)
    elif args.command == "held-out":
        train_held_out((args.group,) if args.group else HELD_OUT_GROUPS)
    elif args.command == "pairs":
        measure_pairs()
    elif args.command == "synthetic":
        print(json.dumps(evaluate(args.weights), indent=2))
    else:
        print(json.dumps(attacked_copies(args.weights), indent=2))


if __name__ == "__main__":
    main()

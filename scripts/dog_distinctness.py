"""How well a person can tell dogs apart: image distances of relatives' and unrelated models' dogs.

    python scripts/dog_distinctness.py ../shared/data/dog-photos [--pairs 300] [--json OUT.json]

Latent pairs are drawn as z' = c·z + sqrt(1 - c²)·n (z, n independent N(0, I), 512-d), so cos(z, z') ≈ c:
relatives at c = 0.95 (the lowest latent cosine real relatives have), unrelated models at c = 0.2 (the
highest |cos| unrelated models reach) and at c = 0 (typical). Both dogs of a pair are rendered through the
generator with huref's deterministic settings, and compared by `image_distance` (components below).

The components, each computed on the generator's own 64x64 output (photos resized to 64x64 the same way
the bundled generator's training data was):
- layout: the image averaged to 8x8 cells in CIE Lab, mean ΔE (Euclidean Lab distance) over the cells;
  where the light and dark, brown, black and white masses sit (coat, head, background);
- colour: sliced 1-Wasserstein distance between the two images' Lab pixel sets (an earth mover's distance
  of the colour distributions, in ΔE units, whatever their position);
- shape: gradient-orientation histograms of the Lab lightness on a 4x4 grid (8 unsigned orientations,
  weighted by gradient magnitude, the whole vector scaled to unit length), Euclidean distance: outline and pose.
Each is divided by its median over random pairs of the dog photos, and `combined` is their mean: 1.0 means
"as different as two random photos of the training set".

Dog-likeness of a setting is measured against the photos (all but --pairs of them, which are held out
and measured the same way as the baseline) on the same features (layout 8x8x3 + shape 128,
z-scored by the photos' mean and std): a Fréchet distance between Gaussian fits (FID's formula on these
features, not Inception's) and the improved precision of Kynkäänniemi et al. (2019, k = 3: the share of
generated dogs that fall inside the photos' k-nearest-neighbour balls).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import linalg

from huref.generators import load_generator
from huref.render import CODE_LENGTH, code_symbols, latent_code, with_code
from huref_lab.generator_training.photos import load_photos as generator_training_photos

COMPONENTS = ("layout", "colour", "shape")
SETTINGS = [(0.5, 8), (0.7, 8), (0.85, 8), (0.5, None), (0.7, None), (0.85, None), (1.0, None)]  # (psi, cutoff)
SIDE = 64  # images are compared at this size (the bundled generator's resolution)
WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])
RGB_TO_XYZ = torch.tensor([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], [N, 3, H, W] -> CIE Lab (D65) [N, 3, H, W]: L in [0, 100], a and b about [-100, 100]."""
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,njhw->nihw", RGB_TO_XYZ, linear) / WHITE_D65[None, :, None, None]
    delta = 6 / 29
    f = torch.where(xyz > delta ** 3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * delta ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def orientation_histograms(lightness: torch.Tensor, cells: int = 4, bins: int = 8) -> torch.Tensor:
    """L [N, H, W] -> [N, cells*cells*bins]: magnitude-weighted unsigned gradient orientations per cell, unit length."""
    x = lightness[:, None]
    prewitt = torch.tensor([[[[-1.0, 0, 1]] * 3]]) / 3  # [1, 1, 3, 3], d/dx
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, prewitt), F.conv2d(padded, prewitt.transpose(2, 3))
    magnitude = (gx.square() + gy.square()).sqrt()[:, 0]  # [N, H, W]
    angle = torch.atan2(gy, gx)[:, 0] % math.pi
    index = (angle / math.pi * bins).long().clamp_max(bins - 1)
    one_hot = F.one_hot(index, bins).permute(0, 3, 1, 2).float() * magnitude[:, None]  # [N, bins, H, W]
    pooled = F.adaptive_avg_pool2d(one_hot, cells).permute(0, 2, 3, 1).flatten(1)  # [N, cells*cells*bins]
    return pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-8)


def image_features(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """images [N, 3, 64, 64] in [-1, 1] -> {"layout": [N, 8*8*3] Lab cell means, "pixels": [N, 1024, 3] Lab
    pixels (every second row and column), "shape": [N, 128] orientation histograms}."""
    lab = srgb_to_lab(((images.clamp(-1, 1) + 1) / 2).float())
    return {"layout": F.adaptive_avg_pool2d(lab, 8).permute(0, 2, 3, 1).flatten(1),  # [N, 8, 8, 3] -> [N, 192]
            "pixels": lab[:, :, ::2, ::2].flatten(2).transpose(1, 2),                # [N, 32*32, 3]
            "shape": orientation_histograms(lab[:, 0])}


DIRECTIONS = F.normalize(torch.randn(32, 3, generator=torch.Generator().manual_seed(0)), dim=1)  # Lab directions


def component_distances(a: dict, b: dict) -> dict[str, torch.Tensor]:
    """Per-pair distances [N] between features a[i] and b[i] (image_features of two equal-length batches)."""
    layout = (a["layout"] - b["layout"]).reshape(len(a["layout"]), 64, 3).norm(dim=2).mean(dim=1)
    pa = (a["pixels"] @ DIRECTIONS.T).sort(dim=1).values  # [N, pixels, directions]
    pb = (b["pixels"] @ DIRECTIONS.T).sort(dim=1).values
    return {"layout": layout, "colour": (pa - pb).abs().mean(dim=(1, 2)), "shape": (a["shape"] - b["shape"]).norm(dim=1)}


def index_features(features: dict, index) -> dict:
    return {key: value[index] for key, value in features.items()}


def load_photos(source: Path) -> torch.Tensor:
    """The photos (a folder, or one packed for a GPU call) as [N, 3, 64, 64] in [-1, 1], Lanczos-resized as
    for training."""
    return generator_training_photos(source, SIDE).float() / 127.5 - 1


def related_latents(z: torch.Tensor, cosine: float, seed: int) -> torch.Tensor:
    """z [N, 512] -> z' = c·z + sqrt(1 - c²)·n with n ~ N(0, I) drawn from seed (cos(z, z') ≈ c)."""
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    return cosine * z + math.sqrt(1 - cosine ** 2) * noise


@torch.no_grad()
def render_batch(G, z: torch.Tensor, psi: float, cutoff: int | None, batch: int = 50) -> torch.Tensor:
    """z [N, 512] -> images [N, 3, R, R] (const noise, float32 on the CPU), like huref.render without the upscaling."""
    return torch.cat([G(z[i:i + batch], None, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
                      for i in range(0, len(z), batch)])


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of the rows of x and y (FID's formula)."""
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(cx @ cy)
    return float(((mx - my) ** 2).sum() + np.trace(cx + cy - 2 * root.real))


def precision(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> float:
    """Share of fake rows inside some real row's k-nearest-neighbour ball (improved precision)."""
    radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values  # k+1: the row itself is at distance 0
    return float((torch.cdist(fake, real) <= radii[None]).any(dim=1).float().mean())


def auc(low: np.ndarray, high: np.ndarray) -> float:
    """P(a random `high` value exceeds a random `low` one), ties counted half."""
    return float(((high[None, :] > low[:, None]).mean() + 0.5 * (high[None, :] == low[:, None]).mean()))


def summary(relatives: np.ndarray, unrelated: np.ndarray) -> dict:
    p95 = float(np.percentile(relatives, 95))
    return {"relatives_median": float(np.median(relatives)), "relatives_p95": p95,
            "unrelated_p5": float(np.percentile(unrelated, 5)), "unrelated_median": float(np.median(unrelated)),
            "unrelated_below_relatives_p95": float((unrelated < p95).mean()), "auc": auc(relatives, unrelated)}


def photo_reference(photos: torch.Tensor, pairs: int) -> tuple[dict[str, float], torch.Tensor]:
    """(median distance of each component over `pairs` random photo pairs, the photos' statistics [N, 320])."""
    feats = image_features(photos)
    order = torch.randperm(len(photos), generator=torch.Generator().manual_seed(1))
    half = min(pairs, len(photos) // 2)
    d = component_distances(index_features(feats, order[:half]), index_features(feats, order[half:2 * half]))
    return {key: float(value.median()) for key, value in d.items()}, statistics(feats)


def statistics(feats: dict) -> torch.Tensor:
    """The per-image vector that dog-likeness compares: layout and shape features, [N, 320]."""
    return torch.cat([feats["layout"], feats["shape"]], dim=1)


def combined(d: dict, scales: dict) -> torch.Tensor:
    return sum(d[key] / scales[key] for key in COMPONENTS) / len(COMPONENTS)


def measure(G, psi, cutoff, pairs, scales, photo_stats, mean, std) -> dict:
    """Distances of relatives (c 0.95) and unrelated pairs (c 0.2 and 0) and dog-likeness for one setting."""
    z = torch.randn(pairs, 512, generator=torch.Generator().manual_seed(10))
    bases = image_features(render_batch(G, z, psi, cutoff))
    out = {"psi": psi, "cutoff": cutoff if cutoff is not None else G.num_ws}
    distances = {}
    for name, cosine, seed in (("relatives_0.95", 0.95, 11), ("unrelated_0.2", 0.2, 12)):
        other = image_features(render_batch(G, related_latents(z, cosine, seed), psi, cutoff))
        distances[name] = component_distances(bases, other)
    half = pairs // 2
    distances["unrelated_0"] = component_distances(index_features(bases, slice(0, half)),
                                                   index_features(bases, slice(half, 2 * half)))
    rel = {key: value.numpy() for key, value in distances["relatives_0.95"].items()}
    rel["combined"] = combined(distances["relatives_0.95"], scales).numpy()
    for name in ("unrelated_0.2", "unrelated_0"):
        unrel = {key: value.numpy() for key, value in distances[name].items()}
        unrel["combined"] = combined(distances[name], scales).numpy()
        out[name] = {key: summary(rel[key], unrel[key]) for key in ("combined",) + COMPONENTS}
    fake = (statistics(bases) - mean) / std
    out["frechet"] = frechet_distance(photo_stats.numpy(), fake.numpy())
    out["precision"] = precision(photo_stats, fake)
    return out


def distance_by_cosine(G, psi, cutoff, pairs, scales, cosines) -> dict:
    """{cosine: {"median", "p5", "p95"}} of the combined distance between a dog and the dog of a latent
    at that cosine to it (the same latents as `measure`'s bases): where between a relative's dog and a
    stranger's a pair with a given latent cosine falls."""
    z = torch.randn(pairs, 512, generator=torch.Generator().manual_seed(10))
    bases = image_features(render_batch(G, z, psi, cutoff))
    out = {}
    for k, cosine in enumerate(cosines):
        other = image_features(render_batch(G, related_latents(z, cosine, 30 + k), psi, cutoff))
        d = combined(component_distances(bases, other), scales)
        out[cosine] = {"median": float(d.median()), "p5": float(d.quantile(0.05)), "p95": float(d.quantile(0.95))}
    return out


def code_figures(samples: int = 20000) -> dict:
    """How many of the code's places survive at each latent cosine, and the alternative of a code that is
    a hash of 16 sign bits (a person sees it kept only when all 16 bits are)."""
    generator = torch.Generator().manual_seed(5)
    z = torch.randn(samples, 512, generator=generator)
    planes = torch.randn(16, 512, generator=generator)
    ours, signs = code_symbols(z), z @ planes.T > 0
    figures = {}
    for cosine in (0.99, 0.97, 0.95, 0.9, 0.5, 0.2, 0.0):
        other = cosine * z + math.sqrt(1 - cosine ** 2) * torch.randn(samples, 512, generator=generator)
        places = (code_symbols(other) == ours).sum(dim=1)
        figures[cosine] = {"mean_places": float(places.float().mean()),
                           "all_places": float((places == CODE_LENGTH).float().mean()),
                           **{f"at_least_{t}": float((places >= t).float().mean()) for t in (4, 6, 8)},
                           "sign_hash_kept": float(((other @ planes.T > 0) == signs).all(dim=1).float().mean())}
    return figures


def person_check(G, psi: float, cutoff: int | None, path: Path, scale: int = 3):
    """The person's check as one PNG: left, 16 unrelated latents (4x4); right, 4 rows of a base and its
    relatives at latent cosine 0.97, 0.95 and 0.9. Every dog has its code under it."""
    unrelated = torch.randn(16, 512, generator=torch.Generator().manual_seed(20))
    bases = torch.randn(4, 512, generator=torch.Generator().manual_seed(21))
    family = torch.stack([bases] + [related_latents(bases, c, 22 + i) for i, c in enumerate((0.97, 0.95, 0.9))], 1)
    panels = [unrelated.reshape(4, 4, 512), family]  # [rows, columns, 512] each
    images = [render_batch(G, p.reshape(16, 512), psi, cutoff) for p in panels]
    side = images[0].shape[-1] * scale
    cells = [[with_code(Image.fromarray(((img.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy())
                        .resize((side, side), Image.NEAREST), latent_code(z)) for img, z in zip(batch, p.reshape(16, 512))]
             for batch, p in zip(images, panels)]
    cell_h, gap, title = cells[0][0].height, 8, 24
    sheet = Image.new("RGB", (8 * (side + gap) + 3 * gap, title + 4 * (cell_h + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 6), f"16 unrelated latents (psi {psi}, cutoff {cutoff if cutoff is not None else 'all'})", fill="black")
    draw.text((4 * (side + gap) + 3 * gap, 6), "base | relatives at cos 0.97, 0.95, 0.90", fill="black")
    for panel, panel_cells in enumerate(cells):
        for i, cell in enumerate(panel_cells):
            x = panel * (4 * (side + gap) + 2 * gap) + (i % 4) * (side + gap) + gap
            sheet.paste(cell, (x, title + (i // 4) * (cell_h + gap)))
    sheet.save(path)


def encoder_pairs(G, psi: float, cutoff: int | None, scales: dict) -> list[dict]:
    """The combined image distance between the dogs of every zoo and real pair of scripts/train_encoder.py
    (`pair_latents`) under each encoder: "v1" (version 1 as shipped), "v2" (the shipped version 2) and,
    for zoo pairs with a side in a held-out group, "v2_zoo" (the zoo-trained variant that did not see it). Rows: the pair's
    {"a", "b", "set", "label", "kind_a", "kind_b"} with "<key>_cosine" and "<key>_distance" per encoder."""
    import train_encoder as te

    from huref.encoder import load_encoder

    rows, firsts, seconds = [], [], []
    for row, latent_pairs in te.pair_latents(te.pooled_models(), load_encoder(2)):
        rows.append((row, list(latent_pairs)))
        for za, zb in latent_pairs.values():
            firsts.append(za)
            seconds.append(zb)
    a = image_features(render_batch(G, torch.stack(firsts), psi, cutoff))
    b = image_features(render_batch(G, torch.stack(seconds), psi, cutoff))
    distance = combined(component_distances(a, b), scales).tolist()
    cosines = F.cosine_similarity(torch.stack(firsts).double(), torch.stack(seconds).double()).tolist()
    out, k = [], 0
    for row, keys in rows:
        for key in keys:
            row = dict(row, **{f"{key}_cosine": round(cosines[k], 5), f"{key}_distance": round(distance[k], 4)})
            k += 1
        out.append(row)
    return out


def encoder_gallery(G, psi: float, cutoff: int | None, path: Path, versions=("v1", "v2"), side: int = 48) -> None:
    """Each base of the zoo and the real models with its derivatives, a row per encoder of `versions`
    ("v1": version 1 as shipped, "v2": version 2), as one palette PNG at `path` (dogs `side` pixels
    wide, names under)."""
    import train_encoder as te

    from huref.encoder import load_encoder

    models = te.pooled_models()
    v2 = te.latents(load_encoder(2), models)
    families = {}
    for name, m in models.items():  # the base first: a family is named after it, and listed before its offspring
        families.setdefault((m["set"], m["family"]), []).append(name)
    families = {key: names for key, names in families.items() if len(names) > 1}
    label_h, gap = 12, 4
    width = max(len(names) for names in families.values()) * (side + gap) + 60
    sheet = Image.new("RGB", (width, len(families) * len(versions) * (side + gap) + len(families) * label_h + 4), "white")
    draw = ImageDraw.Draw(sheet)
    y = 2
    for names in families.values():
        for version, latent in (("v1", lambda n: models[n]["v1"]), ("v2", lambda n: v2[n])):
            if version not in versions:
                continue
            images = render_batch(G, torch.stack([latent(n) for n in names]), psi, cutoff)
            draw.text((2, y + side // 2 - 5), version, fill="black")
            for i, image in enumerate(images):
                picture = Image.fromarray(((image.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy())
                sheet.paste(picture.resize((side, side), Image.LANCZOS), (60 + i * (side + gap), y))
            y += side + gap
        for i, name in enumerate(names):
            short = name.split(".")[0] if name == names[0] else name.split("/")[-1].removeprefix(names[0].split(".")[0] + "-")
            draw.text((60 + i * (side + gap), y - 2), short[:8], fill="black")
        y += label_h
    sheet.quantize(colors=256).save(path, optimize=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", type=Path, help="folder of the dog photos (the generator's training set), or their "
                    "packed copy (huref_lab.generator_training pack-photos)")
    ap.add_argument("--generator", default="bundled")
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--settings", default=None, help="psi:cutoff,... (cutoff 'all' for every style input)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--cosines", default=None,
                    help="also the distance between dogs whose latents have these cosines (comma-separated), "
                         "at the first of --settings")
    ap.add_argument("--gallery", type=Path, default=None,
                    help="only draw the person's check (at the first of --settings) into this PNG")
    ap.add_argument("--encoder-pairs", type=Path, default=None,
                    help="only measure the dogs of every zoo and real pair under encoder versions 1 and 2 "
                         "(scripts/train_encoder.py's pairs, at the first of --settings) into this JSON")
    ap.add_argument("--encoder-gallery", type=Path, default=None,
                    help="only draw each base with its derivatives under encoder versions 1 and 2 into this PNG")
    ap.add_argument("--versions", default="v1,v2", help="the encoder versions --encoder-gallery draws (v1, v2)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (the figures do not depend on it)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    settings = SETTINGS if args.settings is None else [
        (float(p), None if c == "all" else int(c)) for p, c in (s.split(":") for s in args.settings.split(","))]

    G, identity, _ = load_generator(args.generator)
    if args.gallery:
        person_check(G, *settings[0], args.gallery)
        return 0
    if args.encoder_gallery:
        encoder_gallery(G, *settings[0], args.encoder_gallery, tuple(args.versions.split(",")))
        return 0
    if args.encoder_pairs:
        scales = photo_reference(load_photos(args.photos), args.pairs)[0]
        rows = encoder_pairs(G, *settings[0], scales)
        args.encoder_pairs.write_text(json.dumps({"generator": identity, "psi": settings[0][0], "cutoff": settings[0][1],
                                                  "scales": scales, "pairs": rows}, indent=1) + "\n")
        print(f"wrote {args.encoder_pairs}: {len(rows)} pairs")
        return 0
    z = torch.randn(4, 512)
    scale_change = float((render_batch(G, z, 1.0, None) - render_batch(G, 3 * z, 1.0, None)).abs().max())
    print(f"generator {identity['name']}: max pixel change when the latent is scaled by 3: {scale_change:.2e}")

    codes = code_figures()
    for cosine, f in codes.items():
        print(f"code at cos {cosine:4.2f}: places kept {f['mean_places']:5.2f} of {CODE_LENGTH}, all "
              f"{f['all_places']:.4f}, >=4 {f['at_least_4']:.4f}, >=6 {f['at_least_6']:.4f}, >=8 {f['at_least_8']:.4f}; "
              f"16-bit sign hash kept {f['sign_hash_kept']:.4f}")
    photos = load_photos(args.photos)
    scales, raw = photo_reference(photos, args.pairs)
    mean, std = raw.mean(0), raw.std(0).clamp_min(1e-6)
    order = torch.randperm(len(raw), generator=torch.Generator().manual_seed(2))
    held_out = (raw[order[:args.pairs]] - mean) / std  # the baseline: photos the reference set does not hold
    photo_stats = (raw[order[args.pairs:]] - mean) / std
    reference = {"photos": len(photos), "reference_photos": len(photo_stats), "scales": scales,
                 "frechet_held_out_photos": frechet_distance(photo_stats.numpy(), held_out.numpy()),
                 "precision_held_out_photos": precision(photo_stats, held_out)}
    print(json.dumps(reference))
    results = []
    for psi, cutoff in settings:
        start = time.time()
        results.append(measure(G, psi, cutoff, args.pairs, scales, photo_stats, mean, std))
        r = results[-1]
        u2, u0 = r["unrelated_0.2"]["combined"], r["unrelated_0"]["combined"]
        print(f"psi {psi:4.2f} cutoff {r['cutoff']:2d}: relatives median {u2['relatives_median']:.3f} p95 "
              f"{u2['relatives_p95']:.3f} | unrelated(0.2) median {u2['unrelated_median']:.3f} p5 {u2['unrelated_p5']:.3f} "
              f"below-p95 {u2['unrelated_below_relatives_p95']:.3f} AUC {u2['auc']:.4f} | unrelated(0) median "
              f"{u0['unrelated_median']:.3f} below-p95 {u0['unrelated_below_relatives_p95']:.3f} AUC {u0['auc']:.4f} | "
              f"FD {r['frechet']:.1f} precision {r['precision']:.3f}  ({time.time() - start:.0f} s)", flush=True)
    by_cosine = {}
    if args.cosines:
        by_cosine = distance_by_cosine(G, *settings[0], args.pairs, scales, [float(c) for c in args.cosines.split(",")])
        for cosine, d in by_cosine.items():
            print(f"latent cosine {cosine:4.2f}: combined distance median {d['median']:.3f} (p5 {d['p5']:.3f}, "
                  f"p95 {d['p95']:.3f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"generator": identity, "codes": codes, "reference": reference, "settings": results,
                                         "by_cosine": by_cosine}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the small dog generator that huref bundles in huref/data/ (StyleGAN2 with our own code).

    python scripts/train_generator.py DATA_DIR --run-dir /work/cache/generator-run [--minutes 60]

DATA_DIR holds the dog photographs (*.jpg / *.png, any square size); they are loaded once, resized to
--resolution, and kept in memory. Training: non-saturating logistic loss, lazy R1 on reals, DiffAugment
(colour, translation, cutout) on every image the discriminator sees, x-flips of the reals, and an
exponential moving average of the generator (G_ema) with a ramp-up. Every --checkpoint-minutes (and at
the end) the run directory gets an atomic checkpoint (resumed automatically), a 4x4 sample grid of G_ema,
and G_ema in huref's format (generator.safetensors + generator.json). Run it again to continue:
--minutes bounds one run, --kimg the images seen over all runs.
It runs on CUDA when available, else on the CPU (one thread unless --threads).

To continue from a generator whose checkpoint was not kept (the shipped one): --init
huref/data/generator.safetensors starts G and G_ema from those weights (and their images_seen) with a
fresh discriminator, which --d-warmup-kimg trains alone first so that its first, uninformed
gradients do not move the generator.
"""

import argparse
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from huref.files import write_atomically
from huref.generators import save_generator
from stylegan2 import load_network
from stylegan2.discriminator import Discriminator
from stylegan2.networks import Generator


def load_photos(data_dir: Path, resolution: int) -> torch.Tensor:
    """All images in data_dir as uint8 [N, 3, resolution, resolution] (Lanczos-resized)."""
    paths = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise SystemExit(f"no .jpg/.png images in {data_dir}")
    images = [np.asarray(Image.open(p).convert("RGB").resize((resolution, resolution), Image.LANCZOS)) for p in paths]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """DiffAugment (Zhao et al., 2020) 'color,translation,cutout' on [N, C, H, W] in [-1, 1]; differentiable."""
    n, _, h, w = x.shape
    rand = lambda *shape: torch.rand(*shape, device=x.device)  # noqa: E731
    x = x + (rand(n, 1, 1, 1) - 0.5)                                           # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean                             # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean                           # contrast
    # Translation by up to 1/8 of the size, zero-filled.
    sy, sx = h // 8, w // 8
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy[None] + dy).clamp(-1, h)
    gx = (gx[None] + dx).clamp(-1, w)
    padded = F.pad(x, [1, 1, 1, 1])
    batch = torch.arange(n, device=x.device)[:, None, None]
    x = padded.permute(0, 2, 3, 1)[batch, gy + 1, gx + 1].permute(0, 3, 1, 2)
    # Cutout: one zeroed square of half the size, at a random place.
    cy = torch.randint(0, h + 1, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = ((gy[None] - cy).abs() < h // 4) & ((gx[None] - cx).abs() < w // 4)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def sample_grid(G: Generator, z: torch.Tensor, path: Path):
    """Save G(z) (16 samples, psi 1, const noise) as a 4x4 PNG grid."""
    with torch.no_grad():
        img = G(z, noise_mode="const")
    img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    n, c, h, w = img.shape
    grid = img.reshape(4, 4, c, h, w).permute(0, 3, 1, 4, 2).reshape(4 * h, 4 * w, c)
    Image.fromarray(grid.numpy()).save(path)


def discriminator_step(D, opt_D, real: torch.Tensor, fake: torch.Tensor, r1_weight: float):
    """One optimizer step of D on real and fake [N, C, H, W] in [-1, 1] (both DiffAugmented here): logistic
    loss, plus r1_weight times the squared norm of D's gradient at the augmented reals (R1; gamma / 2 *
    interval on a lazy-R1 step, 0 otherwise) -> (loss before the step, real logits [N], fake logits [N])."""
    real = diff_augment(real).detach().requires_grad_(r1_weight > 0)
    real_logits, fake_logits = D(real), D(diff_augment(fake.detach()))
    loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    if r1_weight > 0:
        grad, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        loss = loss + grad.square().sum(dim=[1, 2, 3]).mean() * r1_weight
    opt_D.zero_grad(set_to_none=True)
    loss.backward()
    opt_D.step()
    return loss.detach(), real_logits.detach(), fake_logits.detach()


def save_checkpoint(run_dir: Path, state: dict):
    """Write the checkpoint (torch.save of state), atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(run_dir / "checkpoint.pt", buffer.getbuffer())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--run-dir", type=Path, required=True, help="checkpoints, grids and exports (outside the repo)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.0025)
    ap.add_argument("--d-lr", type=float, default=None, help="D's learning rate (default: --lr)")
    ap.add_argument("--r1-gamma", type=float, default=0.05)
    ap.add_argument("--r1-every", type=int, default=16, help="lazy regularization interval (steps)")
    ap.add_argument("--ema-kimg", type=float, default=10.0, help="half-life of G_ema in thousands of images")
    ap.add_argument("--ema-rampup", type=float, default=0.05)
    ap.add_argument("--minutes", type=float, default=60.0, help="stop after this much wall time (this run)")
    ap.add_argument("--kimg", type=float, default=float("inf"), help="stop once this many thousand images were seen (all runs)")
    ap.add_argument("--checkpoint-minutes", type=float, default=10.0)
    ap.add_argument("--log-seconds", type=float, default=30.0, help="seconds between log lines")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, default=None,
                    help="with no checkpoint in --run-dir: start G and G_ema from this huref generator (.safetensors)")
    ap.add_argument("--d-warmup-kimg", type=float, default=0.0,
                    help="after --init: train D alone for this many thousand images before G moves")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 on the GPU for training; the exported G runs in float32
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    args.run_dir.mkdir(parents=True, exist_ok=True)

    g_kwargs = dict(z_dim=512, c_dim=0, w_dim=256, img_resolution=args.resolution, img_channels=3,
                    mapping_kwargs=dict(num_layers=2),
                    synthesis_kwargs=dict(channel_base=8192, channel_max=128, conv_clamp=256))
    G = Generator(**g_kwargs).to(device)
    G_ema = Generator(**g_kwargs).to(device).eval().requires_grad_(False)
    D = Discriminator(args.resolution, channel_base=8192, channel_max=128).to(device)
    G_ema.load_state_dict(G.state_dict())
    # Lazy R1 runs every r1_every steps, so its Adam hyper-parameters are adjusted as in StyleGAN2.
    mb_ratio = args.r1_every / (args.r1_every + 1)
    opt_G = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.0, 0.99), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=(args.d_lr or args.lr) * mb_ratio, betas=(0.0, 0.99 ** mb_ratio),
                             eps=1e-8)
    images_seen, step, seconds, g_frozen_until = 0, 0, 0.0, 0

    ckpt_path = args.run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        G.load_state_dict(ckpt["G"]); G_ema.load_state_dict(ckpt["G_ema"]); D.load_state_dict(ckpt["D"])
        opt_G.load_state_dict(ckpt["opt_G"]); opt_D.load_state_dict(ckpt["opt_D"])
        images_seen, step, seconds = ckpt["images_seen"], ckpt["step"], ckpt["seconds"]
        g_frozen_until = ckpt.get("g_frozen_until", 0)
        print(f"resumed from {ckpt_path}: {images_seen} images seen, step {step}", flush=True)
    elif args.init is not None:
        start_G, info = load_network(args.init)
        G.load_state_dict(start_G.state_dict()); G_ema.load_state_dict(start_G.state_dict())
        images_seen, seconds = int(info.get("images_seen", 0)), float(info.get("training_seconds", 0))
        g_frozen_until = images_seen + int(args.d_warmup_kimg * 1000)
        print(f"started from {args.init}: {images_seen} images seen; a fresh D trains alone until {g_frozen_until}",
              flush=True)

    photos = load_photos(args.data_dir, args.resolution).to(device)
    print(f"{len(photos)} photos at {args.resolution}x{args.resolution} on {device}; "
          f"G {sum(p.numel() for p in G.parameters()):,} params, D {sum(p.numel() for p in D.parameters()):,}",
          flush=True)
    generator = torch.Generator(device=device).manual_seed(args.seed + step)
    grid_z = torch.randn(16, 512, generator=torch.Generator().manual_seed(123)).to(device)

    def reals(n):
        idx = torch.randint(0, len(photos), (n,), device=device, generator=generator)
        x = photos[idx].float() / 127.5 - 1
        flip = torch.rand(n, 1, 1, 1, device=device, generator=generator) < 0.5
        return torch.where(flip, x.flip(3), x)

    def export(tag):
        sample_grid(G_ema, grid_z, args.run_dir / f"grid-{tag}.png")
        shutil.copy(args.run_dir / f"grid-{tag}.png", args.run_dir / "grid-latest.png")
        save_generator(G_ema.cpu(), args.run_dir / "generator.safetensors",
                       extra={"images_seen": images_seen, "training_seconds": round(seconds),
                              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                              "data": str(args.data_dir.name), "script": "scripts/train_generator.py"})
        G_ema.to(device)
        save_checkpoint(args.run_dir, dict(G=G.state_dict(), G_ema=G_ema.state_dict(), D=D.state_dict(),
                                           opt_G=opt_G.state_dict(), opt_D=opt_D.state_dict(),
                                           images_seen=images_seen, step=step, seconds=seconds,
                                           g_frozen_until=g_frozen_until, g_kwargs=json.dumps(g_kwargs)))

    start = last_print = last_ckpt = time.time()
    seconds_at_start, images_at_start = seconds, images_seen
    margins = []  # D(real) - D(fake), batch means, since the last log line
    while time.time() - start < args.minutes * 60 and images_seen < args.kimg * 1000:
        n = args.batch
        # Generator step: make D call fakes real (not while a fresh D warms up).
        G.requires_grad_(True); D.requires_grad_(False)
        fake = G(torch.randn(n, 512, device=device, generator=generator), noise_mode="random")
        loss_G = F.softplus(-D(diff_augment(fake))).mean()
        if images_seen >= g_frozen_until:
            opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
            opt_G.step()

        # Discriminator step: logistic loss, plus R1 on (augmented) reals every r1_every steps.
        G.requires_grad_(False); D.requires_grad_(True)
        with torch.no_grad():
            fake = G(torch.randn(n, 512, device=device, generator=generator), noise_mode="random")
        loss_D, real_logits, fake_logits = discriminator_step(
            D, opt_D, reals(n), fake, args.r1_gamma / 2 * args.r1_every if step % args.r1_every == 0 else 0.0)
        margins.append((real_logits.mean() - fake_logits.mean()).item())

        # G_ema: moving average with a half-life of ema_kimg thousand images (shorter early on).
        images_seen += n
        step += 1
        ema_nimg = min(args.ema_kimg * 1000, images_seen * args.ema_rampup)
        beta = 0.5 ** (n / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1 - beta)
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

        now = time.time()
        seconds = seconds_at_start + now - start
        if now - last_print > args.log_seconds:
            rate = (images_seen - images_at_start) / max(now - start, 1e-9)  # this run's speed
            margin = sum(margins) / len(margins)
            margins = []
            print(f"kimg {images_seen / 1000:8.1f}  step {step:7d}  {rate:7.1f} img/s  loss_G {loss_G.item():.3f}  "
                  f"loss_D {loss_D.item():.3f}  D(real) {real_logits.mean().item():+.2f}  "
                  f"D(fake) {fake_logits.mean().item():+.2f}  D(real)-D(fake) since last line {margin:+.3f}", flush=True)
            last_print = now
        if now - last_ckpt > args.checkpoint_minutes * 60:
            export(f"{images_seen // 1000:06d}k")
            last_ckpt = now
    export(f"{images_seen // 1000:06d}k")
    print(f"stopped after {seconds / 60:.1f} min in all, {images_seen} images seen; run dir {args.run_dir}", flush=True)


if __name__ == "__main__":
    main()

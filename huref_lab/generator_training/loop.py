"""Training the bundled dog generator: a new state, the training step, a run, and exports.

The objective is StyleGAN2's: the non-saturating logistic loss, lazy R1 on the reals every `r1_every` steps
(its gradient taken through the augmentation, as in StyleGAN2-ADA), x-flipped photos, an exponential
moving average of the generator (G_ema, the network huref ships), Adam with betas (0, 0.99) whose
hyper-parameters are adjusted for lazy regularization, and adaptive augmentation (augment.py) on every
image the discriminator sees. The defaults that depend
on the batch follow StyleGAN2-ADA's automatic configuration (Karras et al. 2020): R1 gamma
0.0002 * resolution^2 / batch and a G_ema half-life of batch * 10 / 32 thousand images.

One step (`Trainer.step`) draws one batch of latents and generates it once: the discriminator steps on
those fakes (detached) and a batch of photos, then the generator steps on the same fakes through the
updated discriminator. Everything stays on the device: the photos as one uint8 tensor, the indices and
flips drawn there, the augmentation, and the running sums the log and the augmentation controller
read, so the host waits for the device only when p is adjusted (every 4 steps), when a log line is
printed and when the state is saved. On CUDA the forward passes run under bfloat16 autocast by default
(weights, optimizer and G_ema stay float32), and `compile=True` compiles the generator and
discriminator with torch.compile; the R1 step, which differentiates D's gradient, runs D uncompiled
(compiled graphs do not support double backward). On the CPU everything runs eagerly in float32.

A run resumes a state folder (state.py), trains until a time or image budget is spent, and writes the
state back every few minutes and at the end: a resumed run continues bit for bit where the saved one
stopped, on the same kind of device.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import io
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from huref.errors import HurefError
from huref.files import write_atomically
from huref.generators import save_generator
from stylegan2 import GeneratorError, load_network
from stylegan2.discriminator import Discriminator
from stylegan2.networks import Generator
from stylegan2.weights import build_generator

from .augment import AdaptiveProbability, augment
from .photos import load_photos
from .state import adam_second_moments, adam_steps, read_state, restore_adam, write_state

# The shipped generator's shape (huref/data/generator.json) and the discriminator trained against it.
BUNDLED_G = dict(z_dim=512, c_dim=0, w_dim=256, img_resolution=64, img_channels=3, mapping_kwargs=dict(num_layers=2),
                 synthesis_kwargs=dict(channel_base=8192, channel_max=128, conv_clamp=256))
BUNDLED_D = dict(img_resolution=64, channel_base=8192, channel_max=128)
GRID_SEED = 123  # the sample grid's latents, as in docs/generator-samples.png


@dataclasses.dataclass(frozen=True)
class Options:
    """How a run trains (given each run; the state holds the networks and where training stands)."""
    batch: int = 64
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    r1_gamma: float | None = None     # None: 0.0002 * resolution^2 / batch
    r1_every: int = 16
    ema_kimg: float | None = None     # None: batch * 10 / 32
    ema_rampup: float = 0.05
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    precision: str = "auto"           # "auto" (bfloat16 autocast on CUDA, float32 on the CPU), "float32", "bfloat16"
    compile: bool = False

    def gamma(self, resolution: int) -> float:
        return 0.0002 * resolution ** 2 / self.batch if self.r1_gamma is None else self.r1_gamma

    def ema_images(self) -> float:
        return (self.batch * 10 / 32 if self.ema_kimg is None else self.ema_kimg) * 1000


def _rng_state(device: torch.device) -> dict:
    """torch's default generators (the CPU's, and the device's when it is CUDA) as base64 text."""
    encode = lambda t: base64.b64encode(t.numpy().tobytes()).decode()  # noqa: E731
    cuda = encode(torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
    return {"device": device.type, "cpu": encode(torch.get_rng_state()), "cuda": cuda}


def _set_rng_state(rng: dict, device: torch.device, seed: int) -> bool:
    """Restore torch's default generators from _rng_state's record; True when the device's own generator
    was restored, False when the record came from another kind of device (then it is seeded from seed)."""
    decode = lambda text: torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)  # noqa: E731
    try:
        torch.set_rng_state(decode(rng["cpu"]))
        if device.type != "cuda":
            return rng["device"] == device.type
        if rng.get("cuda") and rng["device"] == "cuda":
            torch.cuda.set_rng_state(decode(rng["cuda"]), device)
            return True
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise HurefError(f"the state's random-number-generator record is unreadable ({e})") from None
    torch.cuda.manual_seed(seed)
    return False


def new_state(g_kwargs: dict | None = None, d_kwargs: dict | None = None, generator: Path | None = None,
              seed: int = 0, d_warmup_kimg: float = 0.0) -> tuple[dict, dict]:
    """(parts, meta) of a state that starts training: G and G_ema from `generator` (a huref .safetensors or
    NVIDIA .pkl; its images_seen and training_seconds carry over) or fresh from g_kwargs, a fresh D, no
    optimizer steps, p = 0. The generator stays frozen until D has seen d_warmup_kimg thousand images."""
    torch.manual_seed(seed)
    if generator is not None:
        try:
            G, info = load_network(generator)
        except GeneratorError as e:
            raise HurefError(str(e)) from None
        images_seen, seconds = int(info.get("images_seen", 0)), float(info.get("training_seconds", 0))
    else:
        G, images_seen, seconds = Generator(**(g_kwargs or BUNDLED_G)), 0, 0.0
    d_kwargs = dict(d_kwargs or BUNDLED_D, img_resolution=G.img_resolution)
    D = Discriminator(**d_kwargs)
    parts = {"G": G.state_dict(), "G_ema": G.state_dict(), "D": D.state_dict(), "opt_G": {}, "opt_D": {}}
    meta = {"g_kwargs": G.init_kwargs, "d_kwargs": d_kwargs, "images_seen": images_seen, "step": 0,
            "seconds": seconds, "g_frozen_until": images_seen + round(d_warmup_kimg * 1000),
            "adam_steps": {"G": 0, "D": 0}, "ada": AdaptiveProbability().state(), "seed": seed,
            "rng": _rng_state(torch.device("cpu")), "history": []}
    return parts, meta


def build_networks(parts: dict, meta: dict, source) -> tuple[Generator, Generator, Discriminator]:
    """(G, G_ema, D) on the CPU from a state's parts, each checked strictly against the state's kwargs."""
    try:
        G = build_generator(meta["g_kwargs"], parts["G"], f"{source} (G)")
        G_ema = build_generator(meta["g_kwargs"], parts["G_ema"], f"{source} (G_ema)")
    except GeneratorError as e:
        raise HurefError(str(e)) from None
    try:
        D = Discriminator(**meta["d_kwargs"])
        D.load_state_dict(parts["D"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise HurefError(f"{source}: the discriminator does not match its kwargs ({str(e).splitlines()[0]})") from None
    if D.from_rgb.weight.shape[1] != G.img_channels or meta["d_kwargs"]["img_resolution"] != G.img_resolution:
        raise HurefError(f"{source}: the discriminator is not for the generator's {G.img_resolution}x{G.img_resolution} images")
    return G, G_ema, D


class Trainer:
    """G, G_ema, D, their optimizers and the augmentation state on one device, as a state left them."""

    def __init__(self, parts: dict, meta: dict, options: Options, device: torch.device, source="state"):
        self.options, self.device, self.meta = options, device, meta
        G, G_ema, D = build_networks(parts, meta, source)
        self.G = G.to(device).train().requires_grad_(True)
        self.G_ema = G_ema.to(device).eval()
        self.D = D.to(device).train()
        self.G_params, self.D_params = dict(self.G.named_parameters()), dict(self.D.named_parameters())
        # Lazy R1 (every r1_every steps) scales D's learning rate and beta2 as StyleGAN2 does.
        ratio = options.r1_every / (options.r1_every + 1)
        fused = device.type == "cuda"
        self.opt_G = torch.optim.Adam(self.G_params.values(), lr=options.g_lr, betas=(0.0, 0.99), eps=1e-8, fused=fused)
        self.opt_D = torch.optim.Adam(self.D_params.values(), lr=options.d_lr * ratio, betas=(0.0, 0.99 ** ratio),
                                      eps=1e-8, fused=fused)
        restore_adam(self.opt_G, self.G_params, parts["opt_G"], meta["adam_steps"]["G"], f"{source} (opt_G)")
        restore_adam(self.opt_D, self.D_params, parts["opt_D"], meta["adam_steps"]["D"], f"{source} (opt_D)")
        self.ada = AdaptiveProbability(**meta["ada"], target=options.ada_target, interval=options.ada_interval,
                                       kimg=options.ada_kimg)
        self.images_seen, self.step_count = meta["images_seen"], meta["step"]
        self.seconds, self.g_frozen_until = meta["seconds"], meta["g_frozen_until"]
        self.rng_continued = _set_rng_state(meta["rng"], device, meta["seed"] + meta["step"])
        self.history = list(meta["history"])
        precision = options.precision if options.precision != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
        self.autocast_dtype = torch.bfloat16 if precision == "bfloat16" else None
        self.notices = []
        self.G_forward, self.D_forward = self.G, self.D
        if options.compile and device.type == "cuda":
            self.G_forward, self.D_forward = torch.compile(self.G), torch.compile(self.D)
        elif options.compile:
            self.notices.append("--compile: torch.compile is used on CUDA only; the CPU runs eagerly")
        self.sums = torch.zeros(5, device=device)  # loss_D, loss_G, D(real), D(fake), steps: since the last log line

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def step(self, photos: torch.Tensor) -> None:
        """One training step on a batch of photos drawn from photos (uint8 [N, 3, R, R] on the device)."""
        n, p = self.options.batch, self.ada.p
        g_trains = self.images_seen >= self.g_frozen_until
        z = torch.randn(n, self.G.z_dim, device=self.device)
        with self.autocast(), torch.set_grad_enabled(g_trains):
            fake = self.G_forward(z, noise_mode="random").float()

        # Discriminator: logistic loss on augmented photos and fakes, plus lazy R1: the squared gradient of
        # D's logits with respect to the photos, through the augmentation.
        r1_weight = self.options.gamma(self.G.img_resolution) / 2 * self.options.r1_every
        with_r1 = self.step_count % self.options.r1_every == 0 and r1_weight > 0
        real = real_batch(photos, n).requires_grad_(with_r1)
        with self.autocast():
            # Uncompiled for R1, which differentiates D's gradient (compiled graphs have no double backward).
            real_logits = (self.D if with_r1 else self.D_forward)(augment(real, p)).float()
            fake_logits = self.D_forward(augment(fake.detach(), p)).float()
        loss_D = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        if with_r1:
            grad, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss_D = loss_D + grad.float().square().sum(dim=[1, 2, 3]).mean() * r1_weight
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward(inputs=list(self.D_params.values()))
        self.opt_D.step()
        self.ada.observe(real_logits)

        # Generator: make the updated D call the same fakes real.
        loss_G = torch.zeros((), device=self.device)
        if g_trains:
            with self.autocast():
                loss_G = F.softplus(-self.D_forward(augment(fake, p)).float()).mean()
            self.opt_G.zero_grad(set_to_none=True)
            loss_G.backward(inputs=list(self.G_params.values()))
            self.opt_G.step()

        self.images_seen += n
        self.step_count += 1
        self.ada.adjust(self.step_count, n)
        self.update_ema(n)
        self.sums += torch.stack([loss_D.detach(), loss_G.detach(), real_logits.detach().mean(),
                                  fake_logits.detach().mean(), torch.ones((), device=self.device)])

    @torch.no_grad()
    def update_ema(self, n: int) -> None:
        """G_ema <- lerp(G_ema, G, 1 - beta), beta = 0.5 ** (n / half-life), the half-life ramped up with
        the images seen; buffers (w_avg, noise) copied."""
        half_life = min(self.options.ema_images(), self.images_seen * self.options.ema_rampup)
        beta = 0.5 ** (n / max(half_life, 1e-8))
        torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def read_sums(self) -> dict:
        """Means since the last call (one host synchronisation), then the sums start again."""
        loss_D, loss_G, real, fake, steps = self.sums.tolist()
        self.sums.zero_()
        steps = max(steps, 1)
        return {"loss_D": loss_D / steps, "loss_G": loss_G / steps, "D_real": real / steps, "D_fake": fake / steps}

    def state(self, run: dict) -> tuple[dict, dict]:
        """(parts, meta) of where training stands; `run` is this run's history entry (replaced, not added, on
        every save of the same run)."""
        parts = {"G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "D": self.D.state_dict(),
                 "opt_G": adam_second_moments(self.opt_G, self.G_params),
                 "opt_D": adam_second_moments(self.opt_D, self.D_params)}
        history = self.history + [run]
        meta = dict(self.meta, images_seen=self.images_seen, step=self.step_count, seconds=self.seconds,
                    g_frozen_until=self.g_frozen_until,
                    adam_steps={"G": adam_steps(self.opt_G), "D": adam_steps(self.opt_D)}, ada=self.ada.state(),
                    rng=_rng_state(self.device), history=history)
        return parts, meta


def say(line: str) -> None:
    """Print a progress line at once (a run's log is read while it runs, often through a pipe)."""
    print(line, flush=True)


def real_batch(photos: torch.Tensor, n: int) -> torch.Tensor:
    """n photos drawn with replacement from photos (uint8 [N, 3, R, R]), half of them x-flipped -> [n, 3, R, R]
    float in [-1, 1], on photos' device."""
    x = photos[torch.randint(0, len(photos), (n,), device=photos.device)].float() / 127.5 - 1
    flip = torch.rand(n, 1, 1, 1, device=photos.device) < 0.5
    return torch.where(flip, x.flip(3), x)


def sample_grid(G: Generator, path: Path) -> None:
    """G's 16 samples of the GRID_SEED latents (psi 1, const noise, on the CPU) as a 4x4 PNG grid."""
    z = torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(GRID_SEED))
    with torch.no_grad():
        img = G.cpu().eval()(z, noise_mode="const")
    img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = img.shape
    grid = img.reshape(4, 4, c, h, w).permute(0, 3, 1, 4, 2).reshape(4 * h, 4 * w, c)  # [4, 4, C, H, W] -> [4H, 4W, C]
    buffer = io.BytesIO()
    Image.fromarray(grid.numpy()).save(buffer, "PNG")
    write_atomically(path, buffer.getvalue())


def train(state_in: Path, photos_source: Path, options: Options, state_out: Path | None = None,
          minutes: float = 60.0, kimg: float = math.inf, checkpoint_minutes: float = 10.0,
          log_seconds: float = 30.0, device: str | None = None, log=say) -> dict:
    """Resume the state in state_in, train until `minutes` of wall time pass or kimg thousand images were
    seen in all, and save the state into state_out (default: state_in) every checkpoint_minutes and at
    the end; progress lines go to log. Returns this run's history entry."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 parts of training use TF32; exports are float32
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    state_out = Path(state_out or state_in)
    parts, meta = read_state(state_in)
    trainer = Trainer(parts, meta, options, device, source=state_in)
    del parts
    photos = load_photos(photos_source, trainer.G.img_resolution).to(device)
    for notice in trainer.notices:
        log(notice)
    if not trainer.rng_continued:
        log(f"the state was saved on {meta['rng']['device']}; random numbers on {device.type} start afresh "
            "(training continues, but not bit for bit)")
    log(f"{len(photos)} photos at {trainer.G.img_resolution}x{trainer.G.img_resolution} on {device} "
        f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}); {trainer.images_seen} images "
        f"seen, step {trainer.step_count}, p {trainer.ada.p:.3f}; G {sum(p.numel() for p in trainer.G_params.values()):,} "
        f"parameters, D {sum(p.numel() for p in trainer.D_params.values()):,}")
    run = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "photos": f"{Path(photos_source).name} ({len(photos)})", "images_from": trainer.images_seen,
           "options": dataclasses.asdict(options)}

    def save():
        run.update(images_to=trainer.images_seen, seconds=round(time.time() - start, 1),
                   images_per_second=round((trainer.images_seen - run["images_from"]) / max(time.time() - start, 1e-9), 1),
                   p=trainer.ada.p, r_t=trainer.ada.last_r_t)
        write_state(state_out, *trainer.state(dict(run)))

    start = last_log = last_save = time.time()
    seconds_before, images_before = trainer.seconds, trainer.images_seen
    while time.time() - start < minutes * 60 and trainer.images_seen < kimg * 1000:
        trainer.step(photos)
        now = time.time()
        trainer.seconds = seconds_before + now - start
        if now - last_log >= log_seconds:
            sums = trainer.read_sums()
            rate = (trainer.images_seen - images_before) / (now - start)
            phase = "D alone" if trainer.images_seen < trainer.g_frozen_until else "G and D"
            log(f"kimg {trainer.images_seen / 1000:9.1f}  step {trainer.step_count:7d}  {rate:8.1f} img/s  {phase}  "
                f"loss_D {sums['loss_D']:.3f}  loss_G {sums['loss_G']:.3f}  D(real) {sums['D_real']:+.3f}  "
                f"D(fake) {sums['D_fake']:+.3f}  p {trainer.ada.p:.3f}  r_t {trainer.ada.last_r_t if trainer.ada.last_r_t is not None else float('nan'):+.3f}")
            last_log = now
        if now - last_save >= checkpoint_minutes * 60:
            save()
            last_save = now
    save()
    log(f"saved {state_out}: {trainer.images_seen} images seen ({trainer.images_seen - images_before} in this run, "
        f"{run['images_per_second']} img/s), p {trainer.ada.p:.3f}")
    return run


def export_generator(state: Path, out: Path, extra: dict | None = None) -> Path:
    """The state's G_ema in huref's generator format (OUT.safetensors + OUT.json), its provenance in the .json."""
    parts, meta = read_state(state)
    _, G_ema, _ = build_networks(parts, meta, state)
    runs = meta["history"]
    info = {"weights": "G_ema (exponential moving average of the generator)", "images_seen": meta["images_seen"],
            "training_seconds": round(meta["seconds"]), "hardware": sorted({r["device"] for r in runs}),
            "script": "huref_lab/generator_training (adaptive augmentation, Karras et al. 2020)", **(extra or {})}
    return save_generator(G_ema, out, info)

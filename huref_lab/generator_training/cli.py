"""The generator-training command line (`python -m huref_lab.generator_training`, or scripts/train_generator.py).

    pack-photos FOLDER OUT       the photos resized into one mosaic for a GPU call (photos.py)
    init STATE [--from GEN]      a new state: G and G_ema from a generator (or fresh), a fresh D
    train STATE --photos P       resume STATE and train (checkpoints into STATE, or --out)
    grid STATE OUT.png           G_ema's 4x4 sample grid (the latents of docs/generator-samples.png)
    export STATE OUT.safetensors G_ema in huref's generator format
    adopt SRC [--into DST]       check that SRC continues DST (default: the committed state) and copy it there
    device-run --photos P --out OUT   the prepared GPU call: train the committed state, return state, grid, figures

Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from huref.errors import HurefError
from stylegan2 import GeneratorError
from stylegan2.checks import check_kwargs
from stylegan2.discriminator import Discriminator
from stylegan2.networks import Generator

from .loop import (BUNDLED_D, BUNDLED_G, Options, Trainer, build_networks, export_generator, new_state, sample_grid,
                   say, train)
from .photos import pack_photos
from .state import MAX_FILE_BYTES, STATE_FILE, copy_state, read_meta, read_state, state_bytes, write_state

REPO = Path(__file__).resolve().parents[2]
COMMITTED_STATE = Path(__file__).resolve().parent / "state"
# A GPU call carries at most 64 MiB of working tree in and returns at most 8 files (16 MiB each, 64 MiB in
# all). The trained state travels both ways: in, beside the repository's other files (17 MB) and the packed
# photos (6.2 MB), which leaves it about 40 MiB; out, as all but two of the 8 files (the grid and the
# distinctness figures).
RETURN_FILES, STATE_BUDGET = 8, 40 << 20


def _options(args) -> Options:
    for name in ("batch", "r1_every", "ada_interval"):
        if getattr(args, name) < 1:
            raise HurefError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("g_lr", "d_lr", "ada_kimg"):
        if not getattr(args, name) > 0:
            raise HurefError(f"--{name.replace('_', '-')} must be positive")
    return Options(batch=args.batch, g_lr=args.g_lr, d_lr=args.d_lr, r1_gamma=args.r1_gamma, r1_every=args.r1_every,
                   ema_kimg=args.ema_kimg, ema_rampup=args.ema_rampup, ada_target=args.ada_target,
                   ada_interval=args.ada_interval, ada_kimg=args.ada_kimg, precision=args.precision,
                   compile=args.compile)


def _training_flags(p: argparse.ArgumentParser, batch: int) -> None:
    defaults = Options()
    p.add_argument("--photos", type=Path, required=True, help="folder of photos, or one packed by pack-photos")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--g-lr", type=float, default=defaults.g_lr)
    p.add_argument("--d-lr", type=float, default=defaults.d_lr)
    p.add_argument("--r1-gamma", type=float, default=None, help="default 0.0002 * resolution^2 / batch")
    p.add_argument("--r1-every", type=int, default=defaults.r1_every, help="lazy R1 interval (steps)")
    p.add_argument("--ema-kimg", type=float, default=None, help="G_ema half-life, thousands of images (default batch*10/32)")
    p.add_argument("--ema-rampup", type=float, default=defaults.ema_rampup)
    p.add_argument("--ada-target", type=float, default=defaults.ada_target, help="target of r_t = E[sign(D(real))]")
    p.add_argument("--ada-interval", type=int, default=defaults.ada_interval, help="steps between adjustments of p")
    p.add_argument("--ada-kimg", type=float, default=defaults.ada_kimg, help="thousands of images for p to move by 1")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="autocast of the forward passes (auto: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (CUDA only; the CPU runs eagerly)")
    p.add_argument("--minutes", type=float, default=60.0, help="wall time of this run's training")
    p.add_argument("--kimg", type=float, default=float("inf"), help="stop once this many thousand images were seen in all")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--log-seconds", type=float, default=30.0)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m huref_lab.generator_training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pack-photos", help="resize the photos into one JPEG mosaic for a GPU call")
    p.add_argument("folder", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--quality", type=int, default=95)

    p = sub.add_parser("init", help="a new training state")
    p.add_argument("state", type=Path)
    p.add_argument("--from", dest="generator", type=Path, default=None,
                   help="start G and G_ema from this generator (huref .safetensors or NVIDIA .pkl)")
    p.add_argument("--resolution", type=int, default=BUNDLED_G["img_resolution"])
    p.add_argument("--w-dim", type=int, default=BUNDLED_G["w_dim"])
    p.add_argument("--mapping-layers", type=int, default=BUNDLED_G["mapping_kwargs"]["num_layers"])
    p.add_argument("--channel-base", type=int, default=BUNDLED_G["synthesis_kwargs"]["channel_base"])
    p.add_argument("--channel-max", type=int, default=BUNDLED_G["synthesis_kwargs"]["channel_max"])
    p.add_argument("--d-channel-base", type=int, default=BUNDLED_D["channel_base"])
    p.add_argument("--d-channel-max", type=int, default=BUNDLED_D["channel_max"])
    p.add_argument("--d-warmup-kimg", type=float, default=0.0, help="D trains alone for this many thousand images first")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="resume a state and train")
    p.add_argument("state", type=Path)
    p.add_argument("--out", type=Path, default=None, help="write the state here instead of back into STATE")
    _training_flags(p, batch=Options().batch)

    p = sub.add_parser("grid", help="G_ema's 4x4 sample grid")
    p.add_argument("state", type=Path)
    p.add_argument("out", type=Path)

    p = sub.add_parser("export", help="G_ema in huref's generator format")
    p.add_argument("state", type=Path)
    p.add_argument("out", type=Path)

    p = sub.add_parser("adopt", help="copy a state that continues DST into DST")
    p.add_argument("source", type=Path)
    p.add_argument("--into", type=Path, default=COMMITTED_STATE)

    p = sub.add_parser("device-run", help="the prepared GPU call")
    p.add_argument("--out", type=Path, required=True, help="where the state, grid.png and distinctness.json go ($OUT)")
    p.add_argument("--state", type=Path, default=COMMITTED_STATE)
    p.add_argument("--pairs", type=int, default=400, help="latent pairs of the distinctness figures")
    p.add_argument("--figures-timeout", type=float, default=120.0, help="seconds allowed for the distinctness figures")
    _training_flags(p, batch=256)
    p.set_defaults(minutes=6.5, checkpoint_minutes=2.0)  # within one GPU call's 10 minutes, with the figures
    return ap


def _refuse_existing(folder: Path) -> None:
    if (folder / STATE_FILE).exists():
        raise HurefError(f"{folder}: already holds a training state; choose a new folder")


def check_returnable(state: Path) -> None:
    """Refuse a state that, once trained (both optimizers' moments saved), would not travel to the next GPU
    call and back (STATE_BUDGET, RETURN_FILES)."""
    meta = read_meta(state)
    try:
        check_kwargs(meta["g_kwargs"])
        with torch.device("meta"):  # shapes only, no memory
            G, D = Generator(**meta["g_kwargs"]), Discriminator(**meta["d_kwargs"])
    except (KeyError, TypeError, ValueError, GeneratorError) as e:
        raise HurefError(f"{state}: the state's network kwargs are unusable ({e})") from None
    weights = lambda module: sum(t.numel() * t.element_size() for t in module.state_dict().values())  # noqa: E731
    moments = lambda module: sum(t.numel() * t.element_size() for t in module.parameters())  # noqa: E731
    parts = [weights(G), weights(G), weights(D), moments(G), moments(D)]
    files = sum(math.ceil(size / MAX_FILE_BYTES) for size in parts) + 1 + 2  # + state.json, grid.png, figures
    size = sum(parts) + (state / STATE_FILE).stat().st_size
    if files > RETURN_FILES or size > STATE_BUDGET:
        raise HurefError(f"{state}: the trained state ({files - 2} files, {size / 2**20:.1f} MiB) would not travel "
                         f"to a GPU call and back (at most {STATE_BUDGET >> 20} MiB, and {RETURN_FILES - 2} files "
                         "beside the grid and figures)")


def adopt(source: Path, into: Path) -> dict:
    """Check that the state in source is whole and continues the one in into (same networks, into's runs a
    prefix of source's), then copy it into `into`, byte for byte. Returns source's meta."""
    parts, meta = read_state(source)
    Trainer(parts, meta, Options(), torch.device("cpu"), source=source)  # every tensor and moment checked
    if (into / STATE_FILE).exists():
        _, current = read_state(into)
        if (meta["g_kwargs"], meta["d_kwargs"]) != (current["g_kwargs"], current["d_kwargs"]):
            raise HurefError(f"{source}: its networks differ from those of {into}")
        if meta["history"][:len(current["history"])] != current["history"]:
            raise HurefError(f"{source}: does not continue {into} (its run history does not start with {into}'s)")
    copy_state(source, into)
    return meta


def distinctness_figures(photos: Path, generator: Path, out: Path, pairs: int, timeout: float, log=say) -> None:
    """Run scripts/dog_distinctness.py on generator at psi 0.5, cutoff 8 (the bundled generator's setting)
    into out, on every CPU core, within timeout seconds; a failure or timeout is logged, not raised."""
    command = [sys.executable, str(REPO / "scripts" / "dog_distinctness.py"), str(photos), "--generator", str(generator),
               "--pairs", str(pairs), "--settings", "0.5:8", "--threads", str(os.cpu_count()), "--json", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    try:
        subprocess.run(command, env=env, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        log(f"the distinctness figures took longer than {timeout:.0f} s and were stopped; the state and grid are complete")
    except subprocess.CalledProcessError as e:
        log(f"the distinctness figures failed (exit {e.returncode}); the state and grid are complete")


def device_run(args, log=say) -> None:
    """Train the state for --minutes on the GPU and write into --out: state/ (the continued state),
    grid.png and distinctness.json (scripts/dog_distinctness.py at psi 0.5, cutoff 8)."""
    started = time.time()
    check_returnable(args.state)
    args.out.mkdir(parents=True, exist_ok=True)
    state_out = args.out / "state"
    train(args.state, args.photos, _options(args), state_out=state_out, minutes=args.minutes, kimg=args.kimg,
          checkpoint_minutes=args.checkpoint_minutes, log_seconds=args.log_seconds, device=args.device, log=log)
    parts, meta = read_state(state_out)
    _, G_ema, _ = build_networks(parts, meta, state_out)
    sample_grid(G_ema, args.out / "grid.png")
    with tempfile.TemporaryDirectory() as tmp:
        generator = export_generator(state_out, Path(tmp) / "generator.safetensors")
        distinctness_figures(args.photos, generator, args.out / "distinctness.json", args.pairs, args.figures_timeout, log)
    log(f"device run done in {time.time() - started:.0f} s: {meta['images_seen']} images seen; files in {args.out}")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        if args.command == "pack-photos":
            index = pack_photos(args.folder, args.out, args.resolution, args.quality)
            print(f"{index['count']} photos at {args.resolution}x{args.resolution} packed into {args.out}")
        elif args.command == "init":
            _refuse_existing(args.state)
            g_kwargs = dict(BUNDLED_G, img_resolution=args.resolution, w_dim=args.w_dim,
                            mapping_kwargs=dict(num_layers=args.mapping_layers),
                            synthesis_kwargs=dict(BUNDLED_G["synthesis_kwargs"], channel_base=args.channel_base,
                                                  channel_max=args.channel_max))
            d_kwargs = dict(img_resolution=args.resolution, channel_base=args.d_channel_base,
                            channel_max=args.d_channel_max)
            parts, meta = new_state(g_kwargs, d_kwargs, args.generator, args.seed, args.d_warmup_kimg)
            write_state(args.state, parts, meta)
            print(f"new state in {args.state}: {meta['images_seen']} images seen, G frozen until {meta['g_frozen_until']}, "
                  f"{state_bytes(args.state) / 2**20:.1f} MiB")
        elif args.command == "train":
            train(args.state, args.photos, _options(args), state_out=args.out, minutes=args.minutes, kimg=args.kimg,
                  checkpoint_minutes=args.checkpoint_minutes, log_seconds=args.log_seconds, device=args.device)
        elif args.command == "grid":
            parts, meta = read_state(args.state)
            sample_grid(build_networks(parts, meta, args.state)[1], args.out)
        elif args.command == "export":
            export_generator(args.state, args.out)
        elif args.command == "adopt":
            meta = adopt(args.source, args.into)
            print(f"{args.into} now holds the state of {args.source}: {meta['images_seen']} images seen")
        elif args.command == "device-run":
            device_run(args)
    except HurefError as e:
        print(f"train_generator: error: {e}", file=sys.stderr)
        return 2
    return 0


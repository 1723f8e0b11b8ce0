"""The dog generator's training step on the CPU, against the step it replaced, at equal sizes.

    python scripts/generator_step_cpu.py PHOTOS [--batch 8] [--rounds 5] [--json OUT]

The step it replaced is the loop body of scripts/train_generator.py at commit 892ee16 (DiffAugment, a
second generator forward for the discriminator's step), rebuilt here around that file's own
`diff_augment` and `discriminator_step`, read with `git show`. Both run the shipped network's shapes
with fresh weights, one thread, R1 off (the steps between R1 steps). Reported: CPU seconds per step
(process time: on a shared machine it counts this process's work, not the waits for a core), the median
of interleaved rounds, for the old step and the new one at p = 0, 0.6 and 1; the time drawing a photo
batch takes, alone and with augmentation at p = 1 (forward); floating-point operations per image
(torch.utils.flop_counter) and aten operations per step that are not views (each a kernel launch on a
GPU), R1 steps included for the counts.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from huref.files import write_atomically
from huref_lab.generator_training import augment as ada
from huref_lab.generator_training.loop import BUNDLED_D, BUNDLED_G, Options, Trainer, new_state, real_batch
from huref_lab.generator_training.photos import load_photos
from stylegan2.discriminator import Discriminator
from stylegan2.networks import Generator

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "892ee16"


def old_module():
    """scripts/train_generator.py of OLD_COMMIT, imported from a temporary file."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:scripts/train_generator.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_train_generator.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_train_generator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def old_step_function(old, photos: torch.Tensor, batch: int):
    """One step of the old loop (G step on DiffAugmented fakes, then D on new fakes), as a closure."""
    G, G_ema = Generator(**BUNDLED_G), Generator(**BUNDLED_G).eval().requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    D = Discriminator(**BUNDLED_D)
    ratio = 16 / 17
    opt_G = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=0.0025 * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)

    def step(r1: bool = False):
        G.requires_grad_(True)
        D.requires_grad_(False)
        loss_G = F.softplus(-D(old.diff_augment(G(torch.randn(batch, 512), noise_mode="random")))).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        G.requires_grad_(False)
        D.requires_grad_(True)
        with torch.no_grad():
            fake = G(torch.randn(batch, 512), noise_mode="random")
        _, real_logits, fake_logits = old.discriminator_step(D, opt_D, real_batch(photos, batch), fake,
                                                             0.05 / 2 * 16 if r1 else 0.0)  # its default R1
        (real_logits.mean() - fake_logits.mean()).item()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 0.01)
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

    return step


def new_step_function(photos: torch.Tensor, batch: int):
    """One step of Trainer.step at a given p (adjustments of p off), as a closure."""
    parts, meta = new_state()
    trainer = Trainer(parts, meta, Options(batch=batch, ada_interval=1 << 30), torch.device("cpu"))

    def step(p: float, r1: bool = False):
        trainer.ada.p = p
        trainer.step_count = 0 if r1 else 1
        trainer.step(photos)

    return step


class OperationCount(TorchDispatchMode):
    """Counts the aten operations dispatched that are not views."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not (func.is_view or func in (torch.ops.aten.detach.default, torch.ops.aten.lift_fresh.default))
        return func(*args, **(kwargs or {}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", type=Path)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    photos = load_photos(args.photos, BUNDLED_G["img_resolution"])
    old = old_step_function(old_module(), photos, args.batch)
    new = new_step_function(photos, args.batch)
    timed = {"old": old, "new_p0": lambda: new(0.0), "new_p0.6": lambda: new(0.6), "new_p1": lambda: new(1.0),
             "data": lambda: real_batch(photos, args.batch),
             "data_and_augmentation_p1": lambda: ada.augment(real_batch(photos, args.batch), 1.0)}
    old(), new(0.0)  # first steps allocate
    seconds = {name: [] for name in timed}
    for i in range(args.rounds):
        for name, step in timed.items():
            start = time.process_time()
            step()
            seconds[name].append(time.process_time() - start)
        print(i, {name: round(s[-1], 4) for name, s in seconds.items()}, flush=True)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    counts = {}
    for name, step in [("old", old), ("old_r1", lambda: old(r1=True)), ("new_p0", lambda: new(0.0)),
                       ("new_p0.6", lambda: new(0.6)), ("new_r1_p0.6", lambda: new(0.6, r1=True))]:
        flops = None
        if "r1" not in name:  # FlopCounterMode's module hooks do not follow autograd.grad inside a backward
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops() / args.batch / 1e9
        with OperationCount() as ops:
            step()
        counts[name] = {"gflop_per_image": flops, "operations_per_step": ops.count}
    figures = {"batch": args.batch, "rounds": args.rounds, "cpu_seconds_per_step": medians,
               "images_per_cpu_second": {name: args.batch / medians[name] for name in ("old", "new_p0", "new_p0.6", "new_p1")},
               "counts": counts, "load_average": list(os.getloadavg())}
    print(json.dumps(figures, indent=1))
    if args.json:
        write_atomically(args.json, (json.dumps(figures, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Images/s of the dog generator's training step (`huref_lab.generator_training`), for docs/GENERATOR.md:
`python scripts/bench.py generator-step --photos P`."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

GENERATOR_STEP_BEFORE = 480  # images/s of the training step before huref_lab.generator_training, one H100 (docs/GENERATOR.md)


def host_synchronisations(trainer, pictures, steps: int = 4) -> float:
    """Calls that make the host wait for the GPU, per training step (CUDA's sync debug mode, counted over
    `steps` steps, one of which adjusts the augmentation probability: that one waits by design)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.step(pictures)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def generator_step(photos: Path, batches: list[int], steps: int, device: str, precision: str, compile_: bool) -> dict:
    """Images/s of the dog generator's training step (huref_lab.generator_training.loop.Trainer.step, the
    shipped network's shape, fresh weights, lazy R1 every 16 steps) at each batch size, with augmentation
    off (p = 0) and at p = 0.6, and the share of a step that drawing the photo batch and augmenting take.
    Three untimed steps first (torch.compile compiles there); CUDA is synchronized before each clock read."""
    from huref_lab.generator_training.loop import Options, Trainer, new_state, real_batch
    from huref_lab.generator_training.photos import load_photos

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pictures = load_photos(photos, 64).to(device)
    rows = []
    for batch in batches:
        parts, meta = new_state()
        trainer = Trainer(parts, meta, Options(batch=batch, precision=precision, compile=compile_, ada_interval=1 << 30),
                          device)
        seconds = {}
        for p in (0.0, 0.6):
            trainer.ada.p = p
            for _ in range(3):
                trainer.step(pictures)
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step(pictures)
            sync()
            seconds[p] = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        for _ in range(steps):
            real_batch(pictures, batch)
        sync()
        data = (time.perf_counter() - start) / steps
        rows.append({"batch": batch, "images_per_second_p0": batch / seconds[0.0],
                     "images_per_second_p0.6": batch / seconds[0.6],
                     "augmentation_share_p0.6": 1 - seconds[0.0] / seconds[0.6], "data_share": data / seconds[0.6],
                     "host_synchronisations_per_step": host_synchronisations(trainer, pictures) if device.type == "cuda" else None})
        print(json.dumps(rows[-1]), flush=True)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "precision": precision, "compile": compile_, "steps": steps,
            "load_average": os.getloadavg(), "before_images_per_second_h100": GENERATOR_STEP_BEFORE, "rows": rows}

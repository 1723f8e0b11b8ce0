"""scripts/train_generator.py: a few steps on tiny images, a checkpoint, and a resumed second run."""

import json
import math

import numpy as np
import torch
from PIL import Image

import stylegan2
import stylegan2.discriminator

def test_training_checkpoints_and_resumes(tmp_path, monkeypatch, script):
    train = script("train_generator")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test session's thread count
    data = tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(data / f"dog.{i}.png")
    run = tmp_path / "run"
    common = [str(data), "--run-dir", str(run), "--resolution", "8", "--batch", "4", "--r1-every", "2"]
    train.main(common + ["--kimg", "0.008"])  # 2 steps
    first = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (first["images_seen"], first["step"]) == (8, 2)
    train.main(common + ["--kimg", "0.016"])  # resumes: 2 more steps
    second = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (second["images_seen"], second["step"]) == (16, 4)
    assert any(not torch.equal(first["G"][k], second["G"][k]) for k in first["G"])
    G, info = stylegan2.load_network(run / "generator.safetensors")
    assert info["images_seen"] == 16 and G.img_resolution == 8
    assert json.loads((run / "generator.json").read_text())["init_kwargs"]["z_dim"] == 512
    assert Image.open(run / "grid-latest.png").size == (32, 32)


def test_init_from_a_generator_warms_a_fresh_discriminator_first(tmp_path, monkeypatch, script):
    train = script("train_generator")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    data = tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / f"dog.{i}.png")
    common = [str(data), "--resolution", "8", "--batch", "4", "--r1-every", "2"]
    train.main(common + ["--run-dir", str(tmp_path / "first"), "--kimg", "0.008"])
    shipped = tmp_path / "first" / "generator.safetensors"
    start, _ = stylegan2.load_network(shipped)
    run = tmp_path / "second"
    warm = common + ["--run-dir", str(run), "--init", str(shipped), "--d-warmup-kimg", "0.008"]
    train.main(warm + ["--kimg", "0.016"])  # 2 steps, D alone: G keeps the shipped weights, D moves
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (ckpt["images_seen"], ckpt["step"], ckpt["g_frozen_until"]) == (16, 2, 16)
    weights = dict(start.named_parameters())  # buffers aside: w_avg tracks the mapping's output on every forward
    assert all(torch.equal(ckpt["G"][k].cpu(), v) for k, v in weights.items())
    train.main(warm + ["--kimg", "0.024"])  # resumes from the checkpoint (not --init): now G moves
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["images_seen"] == 24
    assert any(not torch.equal(ckpt["G"][k].cpu(), v) for k, v in weights.items())


def test_diff_augment_keeps_shape_and_passes_gradients(script):
    train = script("train_generator")
    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    y = train.diff_augment(x * 2 - 1)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_discriminator_steps_learn_to_tell_a_fixed_batch_apart(script):
    """The D step the training loop runs (augmentation, lazy R1, Adam as configured there) must lower D's
    loss below chance (2 ln 2) on a fixed batch: it fails if the loss sign is wrong, the optimizer does not
    step, or no gradient reaches D's weights."""
    train = script("train_generator")
    torch.manual_seed(0)
    D = stylegan2.discriminator.Discriminator(16, channel_base=256, channel_max=32)
    mb_ratio = 16 / 17
    opt_D = torch.optim.Adam(D.parameters(), lr=0.0025 * mb_ratio, betas=(0.0, 0.99 ** mb_ratio), eps=1e-8)
    ramp = torch.linspace(-1, 1, 16)
    real = (ramp[None, None, :, None] * ramp[None, None, None, :]).expand(8, 3, 16, 16).contiguous()  # smooth
    fake = torch.rand(8, 3, 16, 16) * 2 - 1                                                             # noise
    def logistic_loss():  # computed here, not by the script: D should call the reals real (positive logits)
        with torch.no_grad():
            return (torch.nn.functional.softplus(D(fake)).mean() + torch.nn.functional.softplus(-D(real)).mean()).item()

    chance = 2 * math.log(2)
    assert abs(logistic_loss() - chance) < 0.2  # a fresh D starts near chance
    for i in range(40):
        train.discriminator_step(D, opt_D, real, fake, 0.05 / 2 * 16 if i % 16 == 0 else 0.0)
    assert logistic_loss() < chance - 0.3
    with torch.no_grad():
        assert D(real).mean() > D(fake).mean() + 1

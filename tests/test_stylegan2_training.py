"""huref_lab.generator_training: the training loop at tiny sizes on the CPU (resume bit for bit, the
discriminator learns, a frozen generator stays put), the state's files, adaptive augmentation, the packed
photos, adopting a returned state, and the committed state."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stylegan2
from huref.errors import HurefError
from huref.generators import save_generator
from huref_lab.generator_training import augment as ada
from huref_lab.generator_training import cli
from huref_lab.generator_training.cli import COMMITTED_STATE, adopt, check_returnable, main
from huref_lab.generator_training.loop import BUNDLED_G, Options, Trainer, new_state
from huref_lab.generator_training.photos import load_photos, pack_photos
from huref_lab.generator_training.state import MAX_FILE_BYTES, read_meta, read_state, write_state

REPO = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "8", "--channel-base", "64", "--channel-max", "16", "--w-dim", "16",
        "--d-channel-base", "32", "--d-channel-max", "8"]
TINY_G = dict(BUNDLED_G, w_dim=16, img_resolution=8, synthesis_kwargs=dict(channel_base=64, channel_max=16, conv_clamp=256))
TINY_D = dict(img_resolution=8, channel_base=32, channel_max=8)


def smooth_photos(folder, count=6, side=24, seed=0):
    """count smooth RGB photos (random colour ramps) in folder, as PNG."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, side)
    for i in range(count):
        a, b = rng.uniform(0, 255, (2, 3))
        image = a + (b - a) * (ramp[:, None, None] * rng.uniform(0.3, 1) + ramp[None, :, None] * rng.uniform(0, 0.7))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"dog.{i}.png")
    return folder


def tensor_files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


def test_a_resumed_run_continues_bit_for_bit(tmp_path, capsys):
    """Six steps in one run and the same six split 3 + 3 across a save and a resume give byte-identical
    files: G, G_ema, D, both optimizers' moments, the augmentation state and the random-number state. The
    split falls inside an augmentation interval and between R1 steps; p rises from 0 (target -2), so the
    augmented path runs; the generator is frozen for the first two steps. The resumed half asks for
    --compile, which on the CPU must fall back to the same eager computation."""
    photos = smooth_photos(tmp_path / "photos")
    assert main(["init", str(tmp_path / "start"), *TINY, "--d-warmup-kimg", "0.008"]) == 0
    flags = ["--photos", str(photos), "--batch", "4", "--r1-every", "2", "--ada-target", "-2", "--ada-interval", "2",
             "--ada-kimg", "0.032", "--log-seconds", "1000"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", str(tmp_path / "start"), "--out", str(whole), *flags, "--kimg", "0.024"]) == 0
    assert main(["train", str(tmp_path / "start"), "--out", str(split), *flags, "--kimg", "0.012"]) == 0
    halfway = read_meta(split)
    assert (halfway["step"], halfway["ada"]["signs_count"]) == (3, 4)  # mid-interval: one step's signs pending
    capsys.readouterr()
    assert main(["train", str(split), *flags, "--kimg", "0.024", "--compile"]) == 0
    assert "torch.compile is used on CUDA only" in capsys.readouterr().out

    assert tensor_files(whole) == tensor_files(split)
    a, b = read_meta(whole), read_meta(split)
    for key in ("images_seen", "step", "g_frozen_until", "adam_steps", "ada", "rng"):
        assert a[key] == b[key], key
    assert a["images_seen"] == 24 and a["adam_steps"] == {"G": 4, "D": 6}
    assert a["ada"]["p"] == 0.75  # 0 -> 0.25 -> 0.5 -> 0.75 after steps 2, 4, 6
    assert [run["images_from"] for run in b["history"]] == [0, 12]
    # Training did something: every part moved from the start.
    start, _ = read_state(tmp_path / "start")
    end, _ = read_state(whole)
    for part in ("G", "G_ema", "D"):
        assert any(not torch.equal(start[part][k], end[part][k]) for k in start[part]), part


def test_a_fresh_discriminator_trains_alone_and_learns(tmp_path):
    """While the generator is frozen (D warm-up), G's weights stay as they were and D learns to score
    the photos above the generator's samples; it fails if the loss sign is flipped or D's optimizer does
    not step."""
    photos = load_photos(smooth_photos(tmp_path / "photos", count=16), 8)
    parts, meta = new_state(TINY_G, TINY_D, seed=1, d_warmup_kimg=10)
    trainer = Trainer(parts, meta, Options(batch=8, r1_every=4), torch.device("cpu"))
    start = {k: v.clone() for k, v in trainer.G.state_dict().items() if k in trainer.G_params}

    def margin():
        with torch.no_grad():
            real = photos.float() / 127.5 - 1
            fake = trainer.G(torch.randn(16, 512, generator=torch.Generator().manual_seed(2)), noise_mode="const")
            return float(trainer.D(real).mean() - trainer.D(fake).mean())

    before = margin()
    for _ in range(60):
        trainer.step(photos)
    assert margin() > before + 1.0
    assert all(torch.equal(trainer.G_params[k], v) for k, v in start.items())
    assert trainer.opt_G.state == {} and len(trainer.opt_D.state) == len(trainer.D_params)


def test_init_from_a_generator_carries_its_weights_and_images(tmp_path):
    G = stylegan2.Generator(**TINY_G)
    save_generator(G, tmp_path / "g.safetensors", {"images_seen": 1000, "training_seconds": 7})
    assert main(["init", str(tmp_path / "state"), *TINY, "--from", str(tmp_path / "g.safetensors"),
                 "--d-warmup-kimg", "2"]) == 0
    parts, meta = read_state(tmp_path / "state")
    assert (meta["images_seen"], meta["g_frozen_until"], meta["seconds"]) == (1000, 3000, 7)
    for part in ("G", "G_ema"):
        assert all(torch.equal(parts[part][k], v) for k, v in G.state_dict().items())
    assert parts["opt_G"] == parts["opt_D"] == {}
    assert main(["init", str(tmp_path / "state"), *TINY]) == 2  # never over an existing state


def test_state_files_stay_under_the_limit_and_are_checked_when_read(tmp_path):
    parts, meta = new_state(TINY_G, TINY_D)
    limit = 40_000
    write_state(tmp_path / "s", parts, meta, limit=limit)
    files = sorted((tmp_path / "s").glob("*.safetensors"))
    assert {f.name for f in files} >= {"G-1.safetensors", "G-2.safetensors", "D.safetensors"}
    assert all(f.stat().st_size <= limit + 4096 for f in files)  # data within the limit, plus the header
    back, back_meta = read_state(tmp_path / "s")
    assert all(torch.equal(back[p][k], v) for p in parts for k, v in parts[p].items())
    assert back_meta["images_seen"] == meta["images_seen"]
    # One part rewritten with the default limit: the pieces of the smaller limit are removed.
    write_state(tmp_path / "s", parts, meta)
    assert not (tmp_path / "s" / "G-1.safetensors").exists() and (tmp_path / "s" / "G.safetensors").exists()
    # A file of another state, a truncated file, a missing one: each refused with one line.
    other, other_meta = new_state(TINY_G, TINY_D, seed=5)
    write_state(tmp_path / "t", other, other_meta)
    (tmp_path / "s" / "D.safetensors").write_bytes((tmp_path / "t" / "D.safetensors").read_bytes())
    with pytest.raises(HurefError, match="SHA-256 differs"):
        read_state(tmp_path / "s")
    (tmp_path / "s" / "D.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(HurefError, match="bytes, the manifest says"):
        read_state(tmp_path / "s")
    (tmp_path / "s" / "D.safetensors").unlink()
    with pytest.raises(HurefError, match="cannot read"):
        read_state(tmp_path / "s")
    (tmp_path / "s" / "state.json").write_text("{}")
    with pytest.raises(HurefError, match="not a huref-generator-training state"):
        read_state(tmp_path / "s")


def test_adopt_takes_only_a_state_that_continues_its_target(tmp_path):
    photos = smooth_photos(tmp_path / "photos")
    assert main(["init", str(tmp_path / "committed"), *TINY]) == 0
    flags = ["--photos", str(photos), "--batch", "4", "--log-seconds", "1000"]
    assert main(["train", str(tmp_path / "committed"), "--out", str(tmp_path / "returned"), *flags, "--kimg", "0.008"]) == 0
    assert main(["init", str(tmp_path / "stranger"), *TINY, "--seed", "3"]) == 0
    assert main(["train", str(tmp_path / "stranger"), *flags, "--kimg", "0.008"]) == 0
    assert main(["train", str(tmp_path / "committed"), *flags, "--kimg", "0.004"]) == 0  # the target moved on
    with pytest.raises(HurefError, match="does not continue"):
        adopt(tmp_path / "stranger", tmp_path / "committed")
    assert main(["init", str(tmp_path / "fresh"), *TINY]) == 0
    adopt(tmp_path / "returned", tmp_path / "fresh")
    assert tensor_files(tmp_path / "fresh") == tensor_files(tmp_path / "returned")
    assert read_meta(tmp_path / "fresh")["images_seen"] == 8


def test_augmentation_at_p_0_is_the_identity_and_keeps_gradients_otherwise():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert ada.augment(x, 0.0) is x
    geometric, colour = ada.random_parameters(64, 0.0, 16, "cpu")  # every step skipped: identities
    assert torch.equal(ada.geometric_matrices(**geometric), torch.eye(3).expand(64, 3, 3))
    torch.testing.assert_close(ada.colour_matrices(**colour), torch.eye(4).expand(64, 4, 4), atol=1e-6, rtol=0)
    x.requires_grad_(True)
    y = ada.augment(x, 1.0)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0


def test_the_closed_form_colour_matrix_is_the_product_of_the_steps():
    """colour_matrices' closed form against the five steps built one by one (Rodrigues' formula for the
    hue rotation) and multiplied in order."""
    torch.manual_seed(0)
    _, colour = ada.random_parameters(200, 1.0, 64, "cpu")
    b, c, flip, h, s = (colour[k].double() for k in ("brightness", "contrast", "luma_flip", "hue", "saturation"))
    v = torch.ones(3, dtype=torch.float64) / math.sqrt(3)
    P, I = torch.outer(v, v), torch.eye(3, dtype=torch.float64)
    K = torch.tensor([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=torch.float64)

    def homogeneous(linear, offset=torch.zeros(3, dtype=torch.float64)):
        m = torch.eye(4, dtype=torch.float64)
        m[:3, :3], m[:3, 3] = linear, offset
        return m

    for i in range(200):
        steps = [homogeneous(I, b[i] * torch.ones(3, dtype=torch.float64)), homogeneous(c[i] * I),
                 homogeneous(I - 2 * flip[i] * P),
                 homogeneous(h[i].cos() * I + h[i].sin() * K + (1 - h[i].cos()) * P), homogeneous(P + s[i] * (I - P))]
        product = steps[4] @ steps[3] @ steps[2] @ steps[1] @ steps[0]
        torch.testing.assert_close(ada.colour_matrices(**colour)[i].double(), product, atol=1e-5, rtol=1e-5)


def test_blit_transforms_move_whole_pixels():
    """Flips, quarter turns and whole-pixel shifts, as sampling matrices, equal the same moves made by
    indexing (with the border reflected as grid_sample reflects it: pixel -1 is pixel 0)."""
    side = 8
    x = torch.randn(1, 3, side, side)
    turn = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])   # samples the input at (-y, x)
    flip = torch.diag(torch.tensor([-1.0, 1, 1]))
    shift = torch.eye(3)
    shift[0, 2], shift[1, 2] = 2 * 3 / side, -2 * 2 / side         # 3 pixels in x, -2 in y
    y = ada.resample(x, (flip @ turn @ shift)[None])
    reflect = lambda i: torch.where(i < 0, -i - 1, torch.where(i >= side, 2 * side - 1 - i, i))  # noqa: E731
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    # Applied right to left to an output pixel's centred coordinates (x, y): the shift gives (x + 3, y - 2)
    # pixels, the turn (2 - y, x + 3), the flip (y - 2, x + 3). So output (row r, column c) reads input
    # row c + 3, column r - 2.
    expected = x[0][:, reflect(cols + 3), reflect(rows - 2)]
    torch.testing.assert_close(y[0], expected, atol=1e-5, rtol=0)


def test_geometric_draws_follow_the_paper():
    """At p = 1 the sign of the determinant is the x-flip's (a fair coin) and log2 |det| is twice the
    isotropic log-scale (anisotropic scaling and rotations keep the area): std 2 * 0.2; at p = 0.5 the
    x-flip happens a quarter of the time."""
    torch.manual_seed(0)
    det = torch.linalg.det(ada.geometric_matrices(**ada.random_parameters(20000, 1.0, 64, "cpu")[0]))
    assert abs(float((det < 0).float().mean()) - 0.5) < 0.015
    assert abs(float(det.abs().log2().std()) - 2 * ada.LOG2_SCALE_STD) < 0.01
    det = torch.linalg.det(ada.geometric_matrices(**ada.random_parameters(20000, 0.5, 64, "cpu")[0]))
    assert abs(float((det < 0).float().mean()) - 0.25) < 0.015


def test_each_step_runs_with_its_own_probability():
    """At p = 0.5 every step with a continuous parameter moves it from its identity in about half of the
    images (each rotation in 1 - sqrt(0.5) of them), the two translation axes move together (one step),
    and steps are drawn independently (two of them together in a quarter of the images)."""
    torch.manual_seed(0)
    n, p = 40000, 0.5
    geometric, colour = ada.random_parameters(n, p, 64, "cpu")
    identity = {"scale": 1.0, "stretch": 1.0, "contrast": 1.0, "saturation": 1.0}
    moved = {k: v != identity.get(k, 0.0) for k, v in {**geometric, **colour}.items()}
    p_rotation = 1 - math.sqrt(1 - p)
    for key, share in [("scale", p), ("stretch", p), ("offset_x", p), ("brightness", p), ("contrast", p), ("hue", p),
                       ("saturation", p), ("angle_1", p_rotation), ("angle_2", p_rotation)]:
        assert abs(float(moved[key].float().mean()) - share) < 0.015, key
    shifted = moved["shift_x"] | moved["shift_y"]
    assert abs(float(shifted.float().mean()) - p * (1 - (1 / 16) ** 2)) < 0.015  # both axes round to 0: 1/16 each
    for a, b in [("hue", "saturation"), ("scale", "stretch"), ("brightness", "contrast"), ("angle_1", "angle_2")]:
        together = float((moved[a] & moved[b]).float().mean())
        assert abs(together - float(moved[a].float().mean()) * float(moved[b].float().mean())) < 0.01, (a, b)


def test_colour_draws_keep_grey_grey_and_chroma_round():
    """Every colour matrix maps grey pixels to grey ones (brightness, contrast and luma flip act along
    the grey axis, hue turns about it, saturation keeps it) and acts on the plane orthogonal to grey as
    a rotation times a scale (hue is a rotation, saturation and contrast scale it evenly)."""
    torch.manual_seed(0)
    m = ada.colour_matrices(**ada.random_parameters(500, 1.0, 64, "cpu")[1])
    grey = torch.tensor([[0.3, 0.3, 0.3], [-0.7, -0.7, -0.7]]).T  # [3, 2] two grey pixels
    out = m[:, :3, :3] @ grey + m[:, :3, 3:]
    torch.testing.assert_close(out - out.mean(dim=1, keepdim=True), torch.zeros_like(out), atol=1e-5, rtol=0)
    u = torch.tensor([[1.0, -1, 0], [1, 1, -2]]).T / torch.tensor([math.sqrt(2), math.sqrt(6)])  # chroma basis
    mapped = m[:, :3, :3] @ u                       # [N, 3, 2]
    gram = mapped.transpose(1, 2) @ mapped          # [N, 2, 2]: scale^2 * I for a rotation times a scale
    torch.testing.assert_close(gram[:, 0, 1], torch.zeros(500), atol=1e-4, rtol=0)
    torch.testing.assert_close(gram[:, 0, 0], gram[:, 1, 1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mapped.sum(dim=1), torch.zeros(500, 2), atol=1e-4, rtol=0)  # still chroma
    assert float((m[:, :3, :3] - torch.eye(3)).abs().amax()) > 0.5


def test_the_probability_follows_the_overfitting_heuristic():
    """r_t above the target raises p by batch * interval / (kimg * 1000), below lowers it; p stays in [0, 1]
    and is adjusted only every interval steps, from the signs since the last adjustment."""
    control = ada.AdaptiveProbability(p=0.0, target=0.6, interval=4, kimg=1.0)
    for step in range(1, 5):
        control.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # r_t = 0.5 < 0.6
        control.adjust(step, batch=4)
    assert control.p == 0.0 and control.last_r_t == 0.5
    for step in range(5, 9):
        control.observe(torch.tensor([1.0, 1.0, 1.0, 1.0]))
        control.adjust(step, batch=25)
        assert control.p == (0.1 if step == 8 else 0.0)
    control.p = 0.95
    for step in range(9, 13):
        control.observe(torch.tensor([3.0, 0.5]))
        control.adjust(step, batch=25)
    assert control.p == 1.0 and control.state()["signs_count"] == 0


def test_packed_photos_decode_to_the_resized_photos(tmp_path):
    folder = smooth_photos(tmp_path / "photos", count=5, side=40)
    index = pack_photos(folder, tmp_path / "packed", resolution=16, quality=95)
    assert index["count"] == 5 and len(index["sha256"]) == 5
    direct, packed = load_photos(folder, 16), load_photos(tmp_path / "packed", 16)
    assert direct.shape == packed.shape == (5, 3, 16, 16) and packed.dtype == torch.uint8
    assert float((direct.float() - packed.float()).abs().mean()) < 2.0
    with pytest.raises(HurefError, match="packed at 16x16"):
        load_photos(tmp_path / "packed", 32)
    (tmp_path / "packed" / "photos.json").write_text(json.dumps(dict(index, columns=4, count=50)))
    with pytest.raises(HurefError, match="pixels, the index says"):
        load_photos(tmp_path / "packed", 16)


def test_a_state_too_large_to_come_back_from_a_gpu_call_is_refused(tmp_path):
    """The shipped shape's trained state (37 MB in 6 files) travels to a GPU call and back; one with a
    generator of channel_max 192 (3.9 M parameters, about 60 MB trained) would not, and device-run says so
    before training."""
    wide = dict(BUNDLED_G, synthesis_kwargs=dict(BUNDLED_G["synthesis_kwargs"], channel_base=192 * 64, channel_max=192))
    for name, g_kwargs in (("shipped", BUNDLED_G), ("wide", wide)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text(json.dumps(
            {"format": "huref-generator-training", "version": 1, "g_kwargs": g_kwargs,
             "d_kwargs": dict(img_resolution=64, channel_base=8192, channel_max=128), "files": {}}))
    check_returnable(tmp_path / "shipped")
    with pytest.raises(HurefError, match="would not travel"):
        check_returnable(tmp_path / "wide")


def test_the_committed_state_continues_the_shipped_generator():
    """The state under huref_lab that the next GPU run continues: whole (every file's SHA-256), the
    shipped network's shape, each file under 15 MiB, and small enough to come back from a GPU call."""
    parts, meta = read_state(COMMITTED_STATE)
    shipped, info = stylegan2.load_network(REPO / "huref" / "data" / "generator.safetensors")
    assert meta["g_kwargs"] == shipped.init_kwargs
    assert meta["images_seen"] >= info["images_seen"]
    assert all(p.stat().st_size < MAX_FILE_BYTES for p in COMMITTED_STATE.glob("*.safetensors"))
    check_returnable(COMMITTED_STATE)
    Trainer(parts, meta, Options(), torch.device("cpu"), source=COMMITTED_STATE)  # every tensor and moment loads


def test_the_device_run_returns_state_grid_and_figures(tmp_path, monkeypatch):
    """The prepared GPU call, on the CPU at tiny size: it trains a copy of the state (the source is left as
    it was), returns the continued state and the sample grid, and asks for the distinctness figures of the
    state's G_ema; run again from what it returned, it continues it. The figures script itself is not run
    here (it needs scipy, which the GPU machine has and the test environment does not): the call it gets
    is recorded and its generator checked."""
    calls = []

    def figures(photos, generator, out, pairs, timeout, log=print):
        G, info = stylegan2.load_network(generator)
        calls.append((photos, out, pairs, info["images_seen"], G.state_dict()))
        out.write_text("{}")

    monkeypatch.setattr(cli, "distinctness_figures", figures)
    photos = smooth_photos(tmp_path / "photos", count=8)
    assert main(["init", str(tmp_path / "committed"), *TINY]) == 0
    before = tensor_files(tmp_path / "committed")
    flags = ["--photos", str(photos), "--batch", "4", "--pairs", "8", "--log-seconds", "1000"]
    assert main(["device-run", "--state", str(tmp_path / "committed"), "--out", str(tmp_path / "out"), *flags,
                 "--kimg", "0.008"]) == 0
    assert tensor_files(tmp_path / "committed") == before
    returned = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert returned == ["distinctness.json", "grid.png", "state/D.safetensors", "state/G.safetensors",
                        "state/G_ema.safetensors", "state/opt_D.safetensors", "state/opt_G.safetensors", "state/state.json"]
    parts, _ = read_state(tmp_path / "out" / "state")
    assert calls[0][:4] == (photos, tmp_path / "out" / "distinctness.json", 8, 8)
    assert all(torch.equal(calls[0][4][k], v) for k, v in parts["G_ema"].items())
    assert Image.open(tmp_path / "out" / "grid.png").size == (32, 32)
    adopt(tmp_path / "out" / "state", tmp_path / "committed")
    assert main(["device-run", "--state", str(tmp_path / "committed"), "--out", str(tmp_path / "again"), *flags,
                 "--kimg", "0.016"]) == 0
    assert [run["images_from"] for run in read_meta(tmp_path / "again" / "state")["history"]] == [0, 8]

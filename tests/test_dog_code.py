"""The picture's extras: the latent code under the dog, and each generator's own truncation setting."""

import hashlib
import json
import math
import shutil

import pytest
import torch

from huref.errors import HurefError
from huref.generators import PAPER_TRUNCATION, bundled_generator, load_generator
from huref.render import (CODE_ALPHABET, CODE_STRIP, code_agreement, code_projection, latent_code, render,
                          truncation_setting, with_code)
from stylegan2 import Generator


def relatives(z: torch.Tensor, cosine: float, seed: int) -> torch.Tensor:
    return cosine * z + math.sqrt(1 - cosine ** 2) * torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))


def test_code_projection_is_the_sha256_bit_stream():
    signs = code_projection()
    assert signs.shape == (16, 16, 512) and set(signs.unique().tolist()) == {-1.0, 1.0}
    digest = hashlib.sha256(b"huref-dog-code-v1\0" + (0).to_bytes(4, "little")).digest()
    bits = [(byte >> k) & 1 for byte in digest for k in range(8)]  # least significant bit first
    assert signs.flatten()[:256].tolist() == [2.0 * b - 1 for b in bits]
    assert code_projection() is signs  # built once


def test_code_ignores_scale_and_reads_as_four_groups():
    z = torch.randn(512, generator=torch.Generator().manual_seed(0))
    code = latent_code(z)
    assert code == latent_code(3.7 * z) == latent_code(z.double())
    groups = code.split(" ")
    assert [len(g) for g in groups] == [4, 4, 4, 4] and set("".join(groups)) <= set(CODE_ALPHABET)
    assert code_agreement(code, code) == 16
    with pytest.raises(HurefError):
        latent_code(torch.randn(256))


def test_relatives_keep_most_places_and_unrelated_latents_few():
    z = torch.randn(300, 512, generator=torch.Generator().manual_seed(1))
    close, far = relatives(z, 0.95, 2), relatives(z, 0.2, 3)
    kept = torch.tensor([code_agreement(latent_code(a), latent_code(b)) for a, b in zip(z, close)])
    shared = torch.tensor([code_agreement(latent_code(a), latent_code(b)) for a, b in zip(z, far)])
    assert (kept >= 6).float().mean() >= 0.97 and kept.float().mean() > 9
    assert (shared >= 6).float().mean() <= 0.01 and shared.float().mean() < 2


def test_with_code_puts_a_strip_under_the_picture():
    from PIL import Image

    dog = Image.new("RGB", (256, 256), (120, 80, 40))
    card = with_code(dog, "ABCD EFGH JKMN PQRS")
    assert card.size == (256, 256 + CODE_STRIP)
    assert card.crop((0, 0, 256, 256)).tobytes() == dog.tobytes()
    strip = card.crop((0, 256, 256, 256 + CODE_STRIP))
    assert strip.getextrema() == ((0, 255),) * 3  # black text on white


def small_generator():
    torch.manual_seed(0)
    return Generator(z_dim=512, c_dim=0, w_dim=32, img_resolution=8, img_channels=3,
                     mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=16)).eval()


def test_render_draws_with_the_generators_own_truncation():
    G = small_generator()
    z = torch.randn(512)
    assert truncation_setting(G) == PAPER_TRUNCATION  # a generator without a setting: the paper's
    G.truncation = (0.9, 2)
    assert truncation_setting(G) == (0.9, 2) and truncation_setting(G, 0.3) == (0.3, 2)
    assert render(z, G).tobytes() == render(z, G, 0.9, 2).tobytes()
    assert render(z, G).tobytes() != render(z, G, 0.5, 8).tobytes()
    with pytest.raises(HurefError, match="--truncation"):
        render(z, G, 1.5)


def test_generator_files_carry_their_truncation(tmp_path):
    G, _, _ = load_generator("bundled")
    stored = json.loads(bundled_generator().with_suffix(".json").read_text())["info"]["truncation"]
    assert G.truncation == (stored["psi"], stored["cutoff"])
    copy = tmp_path / "g.safetensors"
    shutil.copy(bundled_generator(), copy)
    config = json.loads(bundled_generator().with_suffix(".json").read_text())
    for setting, expected in ((None, PAPER_TRUNCATION), ({"psi": 0.75, "cutoff": 4}, (0.75, 4))):
        config["info"].pop("truncation", None)
        if setting is not None:
            config["info"]["truncation"] = setting
        copy.with_suffix(".json").write_text(json.dumps(config))
        assert load_generator(str(copy))[0].truncation == expected
    for bad in ({"psi": 2, "cutoff": 4}, {"psi": 0.5}, [0.5, 8]):
        config["info"]["truncation"] = bad
        copy.with_suffix(".json").write_text(json.dumps(config))
        with pytest.raises(HurefError, match="truncation"):
            load_generator(str(copy))

"""Latent -> dog picture with the latent's code under it: the StyleGAN2 generator run deterministically,
and the side-by-side image.

Rendering runs on CPU in float32 with the generator's constant noise, so a latent gives the same
pixels, and the same PNG bytes, every time on one machine. Truncation pulls the style vector
towards the generator's average (psi, on the first `cutoff` style inputs): lower psi gives cleaner
but more alike dogs. Each generator has its own setting (huref.generators: the paper's psi 0.5,
cutoff 8 for NVIDIA's AFHQ-dog; the bundled one's is in its .json, chosen in docs/GENERATOR.md).

The code (`latent_code`) is 16 characters, one per fixed random 16-direction projection of the
latent: the direction (of 16, either sign) on which the latent projects most (a cross-polytope
hash). Relatives keep most characters in place, unrelated latents share about one in 16
(figures in docs/GENERATOR.md), so two codes are compared by counting the places that agree.
"""

from __future__ import annotations

import functools
import hashlib
import io

import torch
from PIL import Image, ImageDraw, ImageFont

from huref.errors import HurefError
from huref.generators import PAPER_TRUNCATION

DEFAULT_TRUNCATION = None  # None: the generator's own setting (its `truncation` attribute, else the paper's)
MIN_SIDE = 256  # small generators are enlarged (integer factor) to at least this many pixels
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32: no I, L, O, U
CODE_LENGTH = 16  # characters, shown in groups of 4
CODE_DIRECTIONS = 16  # per character: 16 directions x 2 signs = 32 symbols
CODE_STRIP = 24  # pixels under the dog for the code


def truncation_setting(generator, truncation: float | None = None, cutoff: int | None = None) -> tuple[float, int]:
    """(psi, cutoff) to draw with: each given value, else the generator's own (`generator.truncation`,
    set by huref.generators.load_generator), else the paper's (psi 0.5 on the first 8 style inputs)."""
    own_psi, own_cutoff = getattr(generator, "truncation", PAPER_TRUNCATION)
    psi = own_psi if truncation is None else truncation
    if not 0 <= psi <= 1:
        raise HurefError(f"--truncation must be between 0 and 1, not {psi}")
    return psi, own_cutoff if cutoff is None else cutoff


@torch.no_grad()
def draw_dog(z: torch.Tensor, generator, truncation: float | None = DEFAULT_TRUNCATION,
             cutoff: int | None = None) -> Image.Image:
    """z [512] -> RGB image of the dog, enlarged by an integer factor to at least MIN_SIDE pixels with
    Lanczos resampling (a small generator's pixels are smoothed, not drawn as blocks). truncation,
    cutoff: see truncation_setting."""
    psi, cutoff = truncation_setting(generator, truncation, cutoff)
    z = z.detach().to("cpu", torch.float32).reshape(1, -1)
    if z.shape[1] != generator.z_dim:
        raise HurefError(f"latent of {z.shape[1]} numbers for a generator that takes {generator.z_dim}")
    image = generator(z, None, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")[0]
    pixels = ((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()  # [3, H, W] -> [H, W, 3]
    picture = Image.fromarray(pixels, "RGB")
    factor = max(1, -(-MIN_SIDE // picture.width))
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.LANCZOS)
    return picture


def render(z: torch.Tensor, generator, truncation: float | None = DEFAULT_TRUNCATION,
           cutoff: int | None = None) -> Image.Image:
    """z [512] -> the dog (`draw_dog`) over a white strip of CODE_STRIP pixels holding latent_code(z):
    the picture `huref fingerprint` and `huref show` write."""
    return with_code(draw_dog(z, generator, truncation, cutoff), latent_code(z.reshape(-1)))


@functools.cache
def code_projection() -> torch.Tensor:
    """The fixed ±1 directions of the code, [CODE_LENGTH, CODE_DIRECTIONS, 512] float32, from SHA-256
    (so they never depend on a random-number generator's version)."""
    count = CODE_LENGTH * CODE_DIRECTIONS * 512
    stream = b"".join(hashlib.sha256(b"huref-dog-code-v1\0" + i.to_bytes(4, "little")).digest()
                      for i in range(count // 256))
    bits = torch.frombuffer(bytearray(stream), dtype=torch.uint8)
    signs = ((bits[:, None] >> torch.arange(8)) & 1).flatten().float() * 2 - 1  # [count]
    return signs.reshape(CODE_LENGTH, CODE_DIRECTIONS, 512)


def code_symbols(z: torch.Tensor) -> torch.Tensor:
    """Latents z [N, 512] -> the code's symbols [N, CODE_LENGTH] in 0..31: for each projection, 2 x the
    index of its largest entry in absolute value, + 1 when that entry is positive."""
    y = torch.einsum("cdk,nk->ncd", code_projection(), z.detach().to("cpu", torch.float32))  # [N, CODE_LENGTH, CODE_DIRECTIONS]
    largest = y.abs().argmax(dim=2)
    return largest * 2 + (y.gather(2, largest[..., None])[..., 0] > 0).long()


def latent_code(z: torch.Tensor) -> str:
    """z [512] -> its code, "XXXX XXXX XXXX XXXX" (code_symbols in Crockford's base 32). Scaling z does
    not change it."""
    if z.numel() != 512:
        raise HurefError(f"the code is defined for 512-number latents, not {z.numel()}")
    text = "".join(CODE_ALPHABET[s] for s in code_symbols(z.reshape(1, 512))[0].tolist())
    return " ".join(text[i:i + 4] for i in range(0, CODE_LENGTH, 4))


def code_agreement(a: str, b: str) -> int:
    """How many of the CODE_LENGTH places two codes share (0 to 16)."""
    return sum(x == y for x, y in zip(a.replace(" ", ""), b.replace(" ", "")))


def with_code(picture: Image.Image, code: str) -> Image.Image:
    """picture over a white strip of CODE_STRIP pixels with code centred in it."""
    font = ImageFont.load_default(size=16)
    canvas = Image.new("RGB", (picture.width, picture.height + CODE_STRIP), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), code, font=font)
    draw.text(((picture.width - (right - left)) // 2 - left, picture.height + (CODE_STRIP - (bottom - top)) // 2 - top),
              code, fill="black", font=font)
    return canvas


def png_bytes(picture: Image.Image) -> bytes:
    """The PNG encoding of picture (no metadata, so equal pixels give equal bytes)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def side_by_side(left: Image.Image, right: Image.Image, left_label: str, right_label: str,
                 score_line: str) -> Image.Image:
    """Two pictures next to each other (scaled to the same width) with a label under each and a score
    line at the bottom."""
    font = ImageFont.load_default(size=15)
    side = max(left.width, right.width)
    pictures = [p.resize((side, p.height * side // p.width), Image.NEAREST) for p in (left, right)]
    height = max(p.height for p in pictures)
    pad, line = 12, 20
    canvas = Image.new("RGB", (2 * side + 3 * pad, height + 2 * pad + 3 * line), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (picture, label) in enumerate(zip(pictures, (left_label, right_label))):
        x = pad + i * (side + pad)
        canvas.paste(picture, (x, pad))
        draw.text((x, height + pad + 4), shorten(label, side // 6), fill="black", font=font)
    draw.text((pad, height + pad + 4 + 2 * line), score_line, fill="black", font=font)
    return canvas


def shorten(text: str, limit: int) -> str:
    """text cut to limit characters, keeping its end (the file name) and marking the cut."""
    return text if len(text) <= limit else "..." + text[-(limit - 3):]

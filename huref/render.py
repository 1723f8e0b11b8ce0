"""Latent -> dog picture: the StyleGAN2 generator run deterministically, and the side-by-side image.

Rendering runs on CPU in float32 with the generator's constant noise, so a latent gives the same
pixels, and the same PNG bytes, every time on one machine. Truncation pulls the style vector
towards the generator's average (psi, on the first `cutoff` style inputs, as the HuRef pipeline
does with psi 0.5 and cutoff 8): lower psi gives cleaner but more alike dogs.
"""

from __future__ import annotations

import io

import torch
from PIL import Image, ImageDraw, ImageFont

from huref.errors import HurefError

DEFAULT_TRUNCATION = 0.5
DEFAULT_CUTOFF = 8
MIN_SIDE = 256  # small generators are enlarged (integer factor) to at least this many pixels


@torch.no_grad()
def render(z: torch.Tensor, generator, truncation: float = DEFAULT_TRUNCATION,
           cutoff: int = DEFAULT_CUTOFF) -> Image.Image:
    """z [512] -> RGB image (enlarged by an integer factor to at least MIN_SIDE pixels)."""
    if not 0 <= truncation <= 1:
        raise HurefError(f"--truncation must be between 0 and 1, not {truncation}")
    z = z.detach().to("cpu", torch.float32).reshape(1, -1)
    if z.shape[1] != generator.z_dim:
        raise HurefError(f"latent of {z.shape[1]} numbers for a generator that takes {generator.z_dim}")
    image = generator(z, None, truncation_psi=truncation, truncation_cutoff=cutoff, noise_mode="const")[0]
    pixels = ((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    picture = Image.fromarray(pixels, "RGB")
    factor = max(1, -(-MIN_SIDE // picture.width))
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST) if factor > 1 else picture


def png_bytes(picture: Image.Image) -> bytes:
    """The PNG encoding of picture (no metadata, so equal pixels give equal bytes)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def side_by_side(left: Image.Image, right: Image.Image, left_label: str, right_label: str,
                 score_line: str) -> Image.Image:
    """Two pictures next to each other with a label under each and a score line at the bottom."""
    font = ImageFont.load_default()
    side = max(left.height, right.height)
    pad, line = 12, 16
    canvas = Image.new("RGB", (2 * side + 3 * pad, side + 2 * pad + 3 * line), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (picture, label) in enumerate(((left, left_label), (right, right_label))):
        x = pad + i * (side + pad)
        canvas.paste(picture.resize((side, side), Image.NEAREST), (x, pad))
        draw.text((x, side + pad + 4), shorten(label, side // 6), fill="black", font=font)
    draw.text((pad, side + pad + 4 + 2 * line), score_line, fill="black", font=font)
    return canvas


def shorten(text: str, limit: int) -> str:
    """text cut to limit characters, keeping its end (the file name) and marking the cut."""
    return text if len(text) <= limit else "..." + text[-(limit - 3):]

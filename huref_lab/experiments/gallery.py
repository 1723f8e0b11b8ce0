"""The dog gallery of the report: each model's fingerprint picture, one row per base with its offspring.

Uses huref's own pipeline (terms of the default layers -> encoder latent -> generator -> picture),
so it needs the encoder weights (huref/data/encoder.safetensors) and a generator; `make_gallery`
returns None when they are not there.
"""

from pathlib import Path

from PIL import Image, ImageDraw

from huref.errors import HurefError, InstallationError

CELL = 160
LABEL = 28


def make_gallery(rows: list[list[tuple[str, object]]], path: Path) -> str | None:
    """Render a grid PNG at `path`; `rows` holds (label, Terms) per cell. Returns the generator's name,
    or None when the encoder or generator is unavailable."""
    from huref.fingerprint import latent, latent_record
    from huref.generators import load_generator
    from huref.render import render

    try:
        generator, identity, _ = load_generator(None)
        pictures = [[(label, render(latent(latent_record(terms)), generator)) for label, terms in row] for row in rows]
    except (HurefError, InstallationError):
        return None
    width = max(len(row) for row in pictures)
    first = pictures[0][0][1]
    height = (CELL - 8) * first.height // first.width + 8  # the dog and its code, scaled to the cell's width
    sheet = Image.new("RGB", (width * CELL, len(pictures) * (height + LABEL)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(pictures):
        for c, (label, picture) in enumerate(row):
            x, y = c * CELL, r * (height + LABEL)
            sheet.paste(picture.resize((CELL - 8, height - 8)), (x + 4, y + 4))
            draw.text((x + 4, y + height - 2), label[:26], fill="black")
    sheet.save(path)
    return identity["name"]


"""The training photographs, decoded once into one uint8 tensor, and their packed form for a GPU machine.

A photo source is either a folder of .jpg/.png photographs (any size; centre-cropped square photos
are expected, as in shared/data/dog-photos) or a packed folder written by `pack_photos`: `photos.jpg`,
all photos at the training resolution tiled row by row into one mosaic, and `photos.json` (count,
resolution, columns, the source names and their SHA-256). The mosaic is a JPEG with 4:4:4 chroma
(no subsampling): its 8x8 blocks never straddle two tiles, so each tile decodes as if stored alone.
It exists because a GPU call carries at most 64 MiB of working tree: the 2,000 photos at 64x64 are
24.6 MB raw, 12.7 MB as lossless WebP and 7.4 MB as this JPEG at quality 95 (about 2 levels of 255 RMS
from the resized originals, which are themselves JPEG at quality 93).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from huref.errors import HurefError
from huref.files import sha256_of, write_all

PACKED_IMAGE, PACKED_INDEX = "photos.jpg", "photos.json"
SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_PHOTOS = 100_000
MAX_INDEX_BYTES = 16 << 20
MAX_MOSAIC_SIDE = 65_535  # JPEG's limit


def photo_paths(folder: Path) -> list[Path]:
    """The .jpg/.jpeg/.png files directly in folder, sorted by name."""
    if not folder.is_dir():
        raise HurefError(f"{folder}: not a folder of photos")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    if not paths:
        raise HurefError(f"{folder}: no .jpg/.png photos in it")
    if len(paths) > MAX_PHOTOS:
        raise HurefError(f"{folder}: {len(paths)} photos, more than the {MAX_PHOTOS} a run holds in memory")
    return paths


def resized(path: Path, resolution: int) -> np.ndarray:
    """One photo as uint8 [resolution, resolution, 3] RGB, Lanczos-resized."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").resize((resolution, resolution), Image.LANCZOS))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise HurefError(f"{path}: not a readable photo ({e})") from None


def load_photos(source: Path, resolution: int) -> torch.Tensor:
    """All photos of source (a folder of photos or a packed folder) as uint8 [N, 3, resolution, resolution]."""
    source = Path(source)
    if (source / PACKED_INDEX).is_file():
        return _unpack(source, resolution)
    images = np.stack([resized(p, resolution) for p in photo_paths(source)])  # [N, R, R, 3]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()          # [N, 3, R, R]


def pack_photos(folder: Path, out: Path, resolution: int = 64, quality: int = 95) -> dict:
    """Write folder's photos, resized, as out/photos.jpg (a mosaic) + out/photos.json; returns the index."""
    paths = photo_paths(Path(folder))
    photos = load_photos(folder, resolution)                # [N, 3, R, R]
    columns = math.ceil(math.sqrt(len(photos)))
    rows = -(-len(photos) // columns)
    if columns * resolution > MAX_MOSAIC_SIDE:
        raise HurefError(f"{folder}: {len(photos)} photos at {resolution}x{resolution} do not fit one JPEG mosaic")
    tiles = torch.zeros(rows * columns, 3, resolution, resolution, dtype=torch.uint8)
    tiles[:len(photos)] = photos
    # [rows*cols, 3, R, R] -> [rows, R, cols, R, 3] -> [rows*R, cols*R, 3]
    mosaic = tiles.reshape(rows, columns, 3, resolution, resolution).permute(0, 3, 1, 4, 2)
    mosaic = mosaic.reshape(rows * resolution, columns * resolution, 3).numpy()
    index = {"count": len(photos), "resolution": resolution, "columns": columns, "jpeg_quality": quality,
             "source": Path(folder).name, "names": [p.name for p in paths], "sha256": [sha256_of(p) for p in paths]}
    buffer = io.BytesIO()
    Image.fromarray(mosaic).save(buffer, "JPEG", quality=quality, subsampling=0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_all([(out / PACKED_IMAGE, buffer.getvalue()), (out / PACKED_INDEX, json.dumps(index).encode() + b"\n")])
    return index


def _unpack(folder: Path, resolution: int) -> torch.Tensor:
    """The photos of a packed folder as uint8 [N, 3, R, R]; its resolution must be the one asked for."""
    index_path = folder / PACKED_INDEX
    if index_path.stat().st_size > MAX_INDEX_BYTES:
        raise HurefError(f"{index_path}: too large for a photo index")
    try:
        index = json.loads(index_path.read_text())
        count, side, columns = (int(index[k]) for k in ("count", "resolution", "columns"))
    except (ValueError, KeyError, TypeError) as e:
        raise HurefError(f"{index_path}: not a packed-photo index ({e})") from None
    if side != resolution:
        raise HurefError(f"{folder}: photos packed at {side}x{side}, the run trains at {resolution}x{resolution}")
    if not (0 < count <= MAX_PHOTOS and 0 < columns <= count and columns * side <= MAX_MOSAIC_SIDE):
        raise HurefError(f"{index_path}: implausible count {count} or columns {columns}")
    rows = -(-count // columns)
    try:
        with Image.open(folder / PACKED_IMAGE) as image:
            if image.size != (columns * side, rows * side):
                raise HurefError(f"{folder / PACKED_IMAGE}: {image.size[0]}x{image.size[1]} pixels, the index "
                                 f"says {columns * side}x{rows * side}")
            mosaic = torch.from_numpy(np.array(image.convert("RGB")))  # [rows*R, cols*R, 3]
    except (OSError, ValueError) as e:
        raise HurefError(f"{folder / PACKED_IMAGE}: not a readable mosaic ({e})") from None
    # [rows*R, cols*R, 3] -> [rows, R, cols, R, 3] -> [rows*cols, 3, R, R]
    tiles = mosaic.reshape(rows, side, columns, side, 3).permute(0, 2, 4, 1, 3).reshape(rows * columns, 3, side, side)
    return tiles[:count].contiguous()

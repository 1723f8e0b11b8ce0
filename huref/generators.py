"""Which dog generator draws a fingerprint, and getting it: the bundled 64x64 one (package data),
NVIDIA's AFHQ-dog (downloaded into huref's cache) or a generator file; loading, saving, converting
and downloading generators; each generator's truncation setting.

This is the one place huref calls `stylegan2`, and the one place its GeneratorError becomes a
HurefError with the same line. Nothing here prints: a notice for the user is returned.
"""

from __future__ import annotations

import datetime
import json
from contextlib import contextmanager
from pathlib import Path

from stylegan2 import GeneratorError, config_path, download, load_network, load_nvidia_pickle, serialize_generator
from stylegan2.download import AFHQDOG_FILE, AFHQDOG_URL, LICENSE_NOTICE

from huref.errors import HurefError
from huref.files import cache_dir, package_data, sha256_of, write_all, write_atomically

BUNDLED_FILE = "generator.safetensors"
FALLBACK_NOTICE = ("using the bundled 64x64 dog generator (a rough stand-in); for the paper's AFHQ-dog "
                   "generator run `huref generator download afhqdog` or pass --generator PATH")
PAPER_TRUNCATION = (0.5, 8)  # (psi, cutoff): HuRef's setting for NVIDIA's AFHQ-dog generator


@contextmanager
def generator_errors():
    """Turn stylegan2's GeneratorError into a HurefError with the same one-line message."""
    try:
        yield
    except GeneratorError as error:
        raise HurefError(str(error)) from None


def generator_cache() -> Path:
    """Where downloaded generators live: <huref cache>/stylegan2."""
    return cache_dir() / "stylegan2"


def bundled_generator() -> Path:
    """The bundled generator's weights file (its .json beside it), from huref's package data;
    InstallationError when either file is missing."""
    package_data(config_path(BUNDLED_FILE).name)
    return package_data(BUNDLED_FILE)


def resolve_generator(choice: str | None = None) -> tuple[str, Path, str | None]:
    """(name, weights file, notice or None) of the generator to draw with.

    choice: "bundled", "afhqdog" (NVIDIA's AFHQ-dog pickle, once `huref generator download afhqdog`
    has cached it), a path (--generator PATH), or None: afhqdog when cached, else the bundled 64x64
    generator, and then a one-line notice saying so (for the caller to show or not).
    """
    afhqdog = generator_cache() / AFHQDOG_FILE
    notice = None
    if choice is None:
        choice = "afhqdog" if afhqdog.exists() else "bundled"
        notice = FALLBACK_NOTICE if choice == "bundled" else None
    if choice == "bundled":
        return "bundled", bundled_generator(), notice
    if choice == "afhqdog":
        if not afhqdog.exists():
            raise HurefError("the AFHQ-dog generator is not downloaded; run `huref generator download afhqdog` "
                             "or use --generator bundled")
        return "afhqdog", afhqdog, None
    return Path(choice).name, Path(choice), None


def truncation_of(info: dict, source) -> tuple[float, int]:
    """(psi, cutoff) a generator is drawn with by default: its file's "truncation": {"psi", "cutoff"}
    (huref's .json "info"), else PAPER_TRUNCATION (NVIDIA's pickles, files without one)."""
    setting = info.get("truncation")
    if setting is None:
        return PAPER_TRUNCATION
    psi, cutoff = (setting.get("psi"), setting.get("cutoff")) if isinstance(setting, dict) else (None, None)
    if not (isinstance(psi, (int, float)) and 0 <= psi <= 1 and isinstance(cutoff, int) and cutoff >= 0):
        raise HurefError(f"{source}: \"truncation\" must be {{\"psi\": 0..1, \"cutoff\": a count}}, not {setting!r}")
    return float(psi), cutoff


def load_generator(choice: str | None = None):
    """The generator for choice (see resolve_generator), its identity and the notice.

    Returns (Generator in eval mode, with `truncation` = (psi, cutoff) from truncation_of,
    {"name": str, "sha256": hex digest of its weights file}, notice or None).
    """
    name, path, notice = resolve_generator(choice)
    with generator_errors():
        generator, info = load_network(path)
    generator.truncation = truncation_of(info, path)
    return generator, {"name": name, "sha256": sha256_of(path)}, notice


def save_generator(generator, path, extra: dict | None = None) -> Path:
    """Write a Generator in huref's format: path (.safetensors) and the .json beside it, both or neither.
    extra: free-form provenance stored in the .json's "info". Returns path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise HurefError(f"{path}: the output name must end in .safetensors")
    weights, config = serialize_generator(generator, extra)
    write_all([(path, weights), (config_path(path), config)])
    return path


def convert_generator(in_pkl, out) -> Path:
    """Convert an NVIDIA network pickle's G_ema to huref's format (OUT.safetensors + OUT.json), running
    nothing from the pickle; the .json records the pickle's SHA-256. Returns OUT."""
    if Path(out).suffix != ".safetensors":
        raise HurefError(f"{out}: the output name must end in .safetensors")
    with generator_errors():
        generator, info = load_nvidia_pickle(in_pkl)
    info = {key: value for key, value in info.items() if key != "init_kwargs"}
    return save_generator(generator, out, dict(info, source_sha256=sha256_of(in_pkl)))


def download_afhqdog(url: str = AFHQDOG_URL, progress=None) -> tuple[Path, dict]:
    """Download NVIDIA's AFHQ-dog generator pickle into the cache (once; resumable) -> (path, record).

    record (also kept as afhqdog.pkl.json beside it): {"url", "size", "sha256", "license", "downloaded"}.
    progress: None or progress(done_bytes, total_bytes_or_None). The caller shows LICENSE_NOTICE.
    """
    dest = generator_cache() / AFHQDOG_FILE
    if not dest.exists():
        with generator_errors():
            download(url, dest, progress)
    record_path = dest.with_name(dest.name + ".json")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        record = {"url": url, "size": dest.stat().st_size, "sha256": sha256_of(dest), "license": LICENSE_NOTICE,
                  "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        write_atomically(record_path, (json.dumps(record, indent=2) + "\n").encode())
    return dest, record

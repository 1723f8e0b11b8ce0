"""Choosing and loading a generator: NVIDIA pickles, huref's safetensors + JSON, or the bundled one."""

import sys
from pathlib import Path

from huref.errors import HurefError

from .download import AFHQDOG_FILE, cache_dir, sha256_of
from .networks import Generator
from .nvidia_pickle import load_nvidia_pickle
from .weights import load_generator, save_generator

BUNDLED = Path(__file__).resolve().parents[1] / "weights" / "generator.safetensors"
FALLBACK_NOTICE = ("huref: using the bundled 64x64 dog generator (a rough stand-in); for the paper's AFHQ-dog "
                   "generator run `huref generator download afhqdog` or pass --generator PATH")


def load_network(path) -> tuple[Generator, dict]:
    """Load a generator from an NVIDIA network pickle (*.pkl, read without running any of its code) or
    from huref's format (*.safetensors with its .json) -> (Generator in eval mode, info dict)."""
    path = Path(path)
    if not path.exists():
        raise HurefError(f"{path}: no such generator file")
    if path.suffix == ".pkl":
        return load_nvidia_pickle(path)
    if path.suffix == ".safetensors":
        G, config = load_generator(path)
        return G, {"source": path.name, **config.get("info", {}), "init_kwargs": config["init_kwargs"]}
    raise HurefError(f"{path}: expected an NVIDIA .pkl or a huref .safetensors generator")


def convert(in_pkl, out_safetensors) -> Path:
    """Convert an NVIDIA network pickle's G_ema to huref's format (OUT.safetensors + OUT.json)."""
    out = Path(out_safetensors)
    if out.suffix != ".safetensors":
        raise HurefError(f"{out}: the output name must end in .safetensors")
    G, info = load_nvidia_pickle(in_pkl)
    info = {k: v for k, v in info.items() if k != "init_kwargs"}
    info["source_sha256"] = sha256_of(Path(in_pkl))
    return save_generator(G, out, extra=info)


def resolve_generator(choice=None) -> tuple[str, Path]:
    """(name, weights file) of the generator to draw with.

    choice: "bundled", "afhqdog" (NVIDIA's AFHQ-dog pickle, once `huref generator download afhqdog`
    has cached it), a path (--generator PATH), or None: afhqdog when cached, else the bundled 64x64
    generator with a one-line notice on stderr.
    """
    afhqdog = cache_dir() / AFHQDOG_FILE
    if choice is None:
        choice = "afhqdog" if afhqdog.exists() else "bundled"
        if choice == "bundled":
            print(FALLBACK_NOTICE, file=sys.stderr)
    if choice == "bundled":
        if not BUNDLED.exists():
            raise HurefError(f"the bundled generator {BUNDLED} is missing; pass --generator PATH")
        return "bundled", BUNDLED
    if choice == "afhqdog":
        if not afhqdog.exists():
            raise HurefError("the AFHQ-dog generator is not downloaded; run `huref generator download afhqdog` "
                             "or use --generator bundled")
        return "afhqdog", afhqdog
    return Path(choice).name, Path(choice)


def default_generator(choice=None) -> tuple[Generator, dict]:
    """The generator for choice (see resolve_generator) -> (Generator, info); info["name"] says which."""
    name, path = resolve_generator(choice)
    G, info = load_network(path)
    return G, {**info, "name": name}

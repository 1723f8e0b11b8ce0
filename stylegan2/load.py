"""Loading a generator file: an NVIDIA network pickle or huref's safetensors + JSON."""

from pathlib import Path

from .errors import GeneratorError
from .networks import Generator
from .nvidia_pickle import load_nvidia_pickle
from .weights import load_generator


def load_network(path) -> tuple[Generator, dict]:
    """Load a generator from an NVIDIA network pickle (*.pkl, read without running any of its code) or
    from huref's format (*.safetensors with its .json) -> (Generator in eval mode, info dict)."""
    path = Path(path)
    if not path.exists():
        raise GeneratorError(f"{path}: no such generator file")
    if path.suffix == ".pkl":
        return load_nvidia_pickle(path)
    if path.suffix == ".safetensors":
        G, config = load_generator(path)
        return G, {"source": path.name, **config.get("info", {}), "init_kwargs": config["init_kwargs"]}
    raise GeneratorError(f"{path}: expected an NVIDIA .pkl or a huref .safetensors generator")

"""huref's own generator format: NAME.safetensors (the state_dict, NVIDIA's names) + NAME.json (kwargs).

The JSON file holds {"format": "huref-stylegan2", "version": 1, "init_kwargs": {...}, "info": {...}}:
init_kwargs are the Generator constructor's keyword arguments, info is free-form provenance
(where the weights came from, how many images the generator saw, sha256 of a source pickle, ...).
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .checks import check_kwargs, open_regular
from .errors import GeneratorError
from .networks import Generator

FORMAT = "huref-stylegan2"


def config_path(weights_path) -> Path:
    """The JSON config that goes with NAME.safetensors: NAME.json."""
    return Path(weights_path).with_suffix(".json")


def serialize_generator(G: Generator, extra: dict | None = None) -> tuple[bytes, bytes]:
    """G in huref's format, as bytes for the caller to write: (NAME.safetensors: the state_dict in
    float32, NAME.json: its kwargs + the extra info)."""
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in G.state_dict().items()}
    config = {"format": FORMAT, "version": 1, "init_kwargs": G.init_kwargs, "info": dict(extra or {})}
    return save(tensors), (json.dumps(config, indent=2) + "\n").encode()


MAX_CONFIG_BYTES = 1 << 20  # a generator's JSON is about 1 kB


def read_config(path) -> dict:
    """The parsed JSON config of a generator in huref's format (serialize_generator), checked for its format tag."""
    cfg_path = config_path(path)
    if not cfg_path.exists():
        raise GeneratorError(f"{path}: missing its config {cfg_path.name} (huref generators are .safetensors + .json)")
    with open_regular(cfg_path) as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise GeneratorError(f"{cfg_path}: too large for a generator config (more than {MAX_CONFIG_BYTES} bytes)")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise GeneratorError(f"{cfg_path}: not valid JSON (or nested too deeply)") from None
    if (not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("init_kwargs"), dict)
            or not isinstance(config.get("info", {}), dict)):
        raise GeneratorError(f"{cfg_path}: not a {FORMAT} config")
    return config


def build_generator(init_kwargs: dict, state_dict: dict, source) -> Generator:
    """Generator(**init_kwargs) with state_dict loaded strictly, in eval mode; errors name `source`.

    The kwargs are checked first (`check_kwargs`), then the module is built on the meta device (no
    memory), so kwargs that describe a huge network cost nothing unless the file really holds
    tensors of those shapes; every tensor must be a finite tensor of the expected shape.
    """
    try:
        check_kwargs(init_kwargs)
    except GeneratorError as e:
        raise GeneratorError(f"{source}: unsupported generator configuration ({e})") from None
    try:
        with torch.device("meta"):
            G = Generator(**init_kwargs)
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as e:
        raise GeneratorError(f"{source}: unsupported generator configuration ({e})") from None
    expected = G.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise GeneratorError(f"{source}: tensors do not match the generator (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise GeneratorError(f"{source}: {name} is not a tensor")
        if tuple(t.shape) != tuple(expected[name].shape):
            raise GeneratorError(f"{source}: tensor {name} has shape {tuple(t.shape)}, expected {tuple(expected[name].shape)}")
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise GeneratorError(f"{source}: tensor {name} is not finite floating-point numbers")
    G = G.to_empty(device="cpu")
    G.load_state_dict({k: v.to(torch.float32) for k, v in state_dict.items()})
    return G.eval().requires_grad_(False)


def load_generator(path) -> tuple[Generator, dict]:
    """Load NAME.safetensors + NAME.json -> (Generator in eval mode, the config dict)."""
    path = Path(path)
    config = read_config(path)
    open_regular(path).close()  # a FIFO or device is refused here, not waited on by the safetensors loader
    try:
        state_dict = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise GeneratorError(f"{path}: cannot read safetensors ({e})") from None
    return build_generator(config["init_kwargs"], state_dict, path), config

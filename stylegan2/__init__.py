"""StyleGAN2-ADA generator in plain PyTorch, NVIDIA-compatible, with a safe loader for NVIDIA's pickles.

    G, info = stylegan2.load_network("afhqdog.pkl")  # NVIDIA pickle (nothing in it runs) or .safetensors
    img = G(z, truncation_psi=0.5, truncation_cutoff=8)   # z [N, 512] -> [N, 3, R, R] in about [-1, 1]
    weights, config = stylegan2.serialize_generator(G, extra={...})   # huref's format, as bytes to write

It stands alone: it raises only GeneratorError, prints nothing, and knows no cache folder or bundled
weights (huref.generators chooses the generator and writes the files).
"""

from .download import download
from .errors import GeneratorError
from .load import load_network
from .networks import Generator
from .nvidia_pickle import load_nvidia_pickle
from .weights import config_path, load_generator, serialize_generator

__all__ = ["Generator", "GeneratorError", "config_path", "download", "load_generator", "load_network",
           "load_nvidia_pickle", "serialize_generator"]

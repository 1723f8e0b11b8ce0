"""StyleGAN2-ADA generator in plain PyTorch, NVIDIA-compatible, with a safe loader for NVIDIA's pickles.

    G, info = stylegan2.default_generator()          # cached AFHQ-dog, else the bundled dog generator
    G, info = stylegan2.load_network("afhqdog.pkl")  # NVIDIA pickle (nothing in it runs) or .safetensors
    img = G(z, truncation_psi=0.5, truncation_cutoff=8)   # z [N, 512] -> [N, 3, R, R] in about [-1, 1]
"""

from .download import download_afhqdog
from .load import convert, default_generator, load_network
from .networks import Generator
from .weights import load_generator, save_generator

__all__ = ["Generator", "convert", "default_generator", "download_afhqdog", "load_generator", "load_network",
           "save_generator"]

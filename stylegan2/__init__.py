"""StyleGAN2-ADA generator in plain PyTorch, NVIDIA-compatible, with a safe loader for NVIDIA's pickles."""

from .networks import Generator
from .weights import load_generator, save_generator

__all__ = ["Generator", "load_generator", "save_generator"]

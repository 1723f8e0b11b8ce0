"""huref: human-readable fingerprints of large language models (HuRef, NeurIPS 2024)."""

__version__ = "0.1.0"

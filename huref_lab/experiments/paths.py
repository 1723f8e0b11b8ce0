"""Where the experiments read and write: the repository (docs/ and huref/data/ are written there) and the
caches of trained models and terms, named by a flag or an environment variable, never by a default path
of one machine."""

import os
from pathlib import Path

from huref.errors import HurefError

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS_CACHE = "HUREF_EXPERIMENTS_CACHE"  # root of the tiny zoo's caches, one folder per scale under it
REAL_CACHE = "HUREF_REAL_CACHE"  # the real models (scripts/real_models.py's stages) and their terms


def cache_root(variable: str, flag: Path | None = None, flag_name: str | None = None) -> Path:
    """The cache folder `flag` (the option `flag_name`) names, else the one environment variable `variable` names.

    Raises HurefError (one line) when neither is given."""
    if flag is not None:
        return Path(flag)
    if os.environ.get(variable):
        return Path(os.environ[variable])
    raise HurefError(f"no cache folder: set {variable}" + (f" or pass {flag_name}" if flag_name else ""))


def experiments_cache(scale_name: str, flag: Path | None = None) -> Path:
    """The zoo cache of scale `scale_name`: <root>/<scale_name>, the root from `flag` or HUREF_EXPERIMENTS_CACHE."""
    return cache_root(EXPERIMENTS_CACHE, flag, "--cache") / scale_name


def real_cache() -> Path:
    """The real models' cache, from HUREF_REAL_CACHE."""
    return cache_root(REAL_CACHE)

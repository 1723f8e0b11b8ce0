"""The two real text corpora the experiments train on, both present on any machine that runs them.

* "python": the Python standard library's own sources (`sysconfig.get_paths()['stdlib']`, tests and
  site-packages left out) — the pretraining corpus of the tiny bases.
* "vim": vim's help files (/usr/share/vim/vim*/doc/*.txt) — the fine-tuning corpus of the offspring.
  Debian/Ubuntu: `apt-get install -y vim-runtime`.

Each corpus is a list of documents (one per file) split once, by a hash of the file name, into a
training part and a held-out part (about 1 file in 10) that no model ever trains on.
"""

import glob
import hashlib
import random
import sysconfig
from pathlib import Path

from huref.errors import HurefError

HELD_OUT_ONE_IN = 10


def _is_held_out(path: Path) -> bool:
    return int(hashlib.sha256(path.name.encode()).hexdigest(), 16) % HELD_OUT_ONE_IN == 0


def python_files() -> list[Path]:
    """The standard library's .py files, sorted, without tests, site-packages, idlelib or turtledemo."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "turtledemo", "lib2to3")
    files = [p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts)]
    if len(files) < 100:
        raise HurefError(f"the Python standard library under {root} has only {len(files)} .py files")
    return sorted(files)


def vim_files() -> list[Path]:
    """vim's help files, sorted; raises HurefError naming the install step when they are absent."""
    files = sorted(Path(p) for p in glob.glob("/usr/share/vim/vim*/doc/*.txt"))
    if len(files) < 50:
        raise HurefError("vim's help files are missing: run `apt-get install -y vim-runtime` "
                         "(they should be under /usr/share/vim/vim*/doc/*.txt)")
    return files


def load(corpus: str, split: str) -> list[str]:
    """The documents of `corpus` ("python" | "vim") in `split` ("train" | "heldout"), in file-name order."""
    files = {"python": python_files, "vim": vim_files}[corpus]()
    want_held_out = split == "heldout"
    return [p.read_text(encoding="utf-8", errors="replace") for p in files if _is_held_out(p) == want_held_out]


def shuffled(documents: list[str], seed: int, fraction: float = 1.0) -> list[str]:
    """A seeded random `fraction` of `documents`, in a seeded random order (each base's own data order)."""
    order = list(documents)
    random.Random(seed).shuffle(order)
    return order[: max(1, int(len(order) * fraction))]

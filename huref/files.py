"""TEMPORARY shim until the files module lands (replaced at merge)."""
import os
from pathlib import Path

from huref.errors import HurefError


def atomic_write(path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise HurefError(f"{path}: cannot write ({e.strerror})") from None


def write_all(outputs) -> None:
    for path, data in outputs:
        atomic_write(path, data)

"""Files: the one atomic writer, safetensors output, SHA-256 of a file, the cache folder, package data.

Every output huref writes goes through `write_all` (or `write_atomically`, its one-file case): each
file is written under a fresh temporary name in the target's folder (created with O_EXCL|O_NOFOLLOW,
so nothing planted at that name is followed or reused), flushed to disk, then renamed onto the
target. A reader sees the old file or the complete new one, never a mix; a failure (an OSError,
an interrupt) leaves no temporary file and, for several outputs, none of the new files.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import torch

from huref.errors import HurefError, InstallationError

CHUNK = 1 << 20
CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                | getattr(os, "O_BINARY", 0))
SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}

Data = bytes | bytearray | memoryview | Iterable  # bytes-like, or an iterable of bytes-like chunks written in order


def cache_dir() -> Path:
    """huref's cache folder: $HUREF_CACHE, else ~/.cache/huref (demo models, downloaded generators)."""
    return Path(os.environ.get("HUREF_CACHE") or Path.home() / ".cache" / "huref")


def data_dir() -> Path:
    """The folder of huref's package data (huref/data in the installed package, via importlib.resources).

    huref is installed as plain files (a wheel installs unpacked), so the folder is a real path.
    """
    return Path(str(resources.files("huref") / "data"))


def package_data(name: str) -> Path:
    """Path of the packaged file `name` (e.g. "encoder.safetensors"); InstallationError if it is missing."""
    path = data_dir() / name
    if not path.is_file():
        raise InstallationError(f"{name} is missing from huref's package data ({path.parent})")
    return path


def sha256_of(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def safetensors_chunks(tensors: dict, metadata: dict[str, str] | None = None) -> list:
    """The bytes of a safetensors file holding tensors (name -> torch.Tensor) and metadata, as
    chunks for write_all: the header, then each tensor's memory (no copy of a contiguous tensor)."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    chunks, offset = [], 0
    for name, tensor in tensors.items():
        flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # [numel * itemsize] raw bytes
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + flat.numel()]}
        chunks.append(memoryview(flat.numpy()))
        offset += flat.numel()
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return [len(text).to_bytes(8, "little"), text, *chunks]


def write_atomically(path, data: Data) -> None:
    """Write data (bytes-like, or an iterable of bytes-like chunks) to path, atomically (see write_all)."""
    write_all([(path, data)])


def write_all(outputs: list[tuple[object, Data]]) -> None:
    """Write every (path, data) pair, all or nothing.

    Every file is first written in full to a temporary file beside its target, then all are renamed
    onto their targets. On any failure the temporary files are removed, and so is every target
    already replaced in this call (the old contents are not restored: a failed run leaves none of
    its outputs). A target that exists and is not a regular file (a folder, a FIFO, a device, a
    symbolic link to one) is refused before anything is written. OSErrors (a missing folder, a full
    disk) become a one-line HurefError naming the file.
    """
    targets = [Path(path) for path, _ in outputs]
    if len({os.path.abspath(t) for t in targets}) < len(targets):
        raise HurefError(f"the same file is named for two outputs ({', '.join(map(str, targets))})")
    for target in targets:
        _check_target(target)
    temps: list[Path] = []
    replaced: list[Path] = []
    current = targets[0] if targets else None
    try:
        for target, (_, data) in zip(targets, outputs):
            current = target
            temps.append(_write_temporary(target, data))
        for temp, target in zip(temps, targets):
            current = target
            os.replace(temp, target)
            replaced.append(target)
    except BaseException as error:
        for path in temps[len(replaced):] + replaced:
            _remove(path)
        if isinstance(error, OSError):
            raise HurefError(f"{current}: cannot write ({error.strerror or error})") from None
        raise


def _check_target(target: Path) -> None:
    """Refuse a target that exists and is not a regular file (stat follows a symbolic link)."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:  # nothing there yet (or a dangling link, which the rename replaces)
        return
    except OSError as error:
        raise HurefError(f"{target}: cannot write ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise HurefError(f"{target}: exists and is not a regular file; refusing to replace it")


def _temporary_name(target: Path) -> Path:
    """A fresh hidden name beside target: .NAME.<random>.tmp (NAME shortened to fit a file name)."""
    return target.with_name(f".{target.name[:200]}.{secrets.token_hex(8)}.tmp")


def _write_temporary(target: Path, data: Data) -> Path:
    """Create a new temporary file beside target (never an existing name, never through a link),
    write data to it and fsync it; returns its path. Removes it again if anything fails."""
    for _ in range(100):
        temp = _temporary_name(target)
        try:
            fd = os.open(temp, CREATE_FLAGS, 0o666)  # 0o666 minus the umask, as for any new file
            break
        except FileExistsError:  # something already has that name: never touch it, take another
            continue
    else:
        raise HurefError(f"{target}: cannot write (no free temporary name in {target.parent})")
    try:
        with open(fd, "wb") as f:
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove(temp)
        raise
    return temp


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:  # already gone, or not ours to remove: the original error is the one to report
        pass

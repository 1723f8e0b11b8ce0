"""A training state on disk: a folder of safetensors files (each under 15 MiB) and `state.json`.

The state is written as named parts, each a dict of tensors: the generator (`G`), its moving average
(`G_ema`), the discriminator (`D`) and the two optimizers' second moments (`opt_G`, `opt_D`, keyed by
parameter name). Each part is one file, `PART.safetensors`, or, when larger than MAX_FILE_BYTES,
consecutive pieces `PART-1.safetensors`, `PART-2.safetensors`, ... split between tensors in state-dict
order. The limit keeps every file under the 16 MiB that a GPU call returns per file. `state.json` holds
the rest (counters, the augmentation state, random-number-generator states, the run history) and the
manifest: every file with its part, size and SHA-256, checked when the state is read back.

Why the optimizers keep only their second moments: the generator and discriminator use Adam with
beta1 = 0 (as StyleGAN2 does), so the first moment m_t = beta1 * m_{t-1} + (1 - beta1) * g_t is the
current gradient g_t alone and nothing of it carries over from one step to the next. PyTorch computes
it as m.lerp_(g, 1 - beta1) = g - (g - m) * 0 = g exactly, whatever finite m was there, so a resumed
optimizer with m = 0 takes bit-identical steps (tests/test_stylegan2_training.py checks this). That
leaves the state of the shipped network's shape at about 37 MB, which fits a GPU call's 64 MiB both ways.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load

from huref.errors import HurefError
from huref.files import safetensors_chunks, write_all

FORMAT = "huref-generator-training"
VERSION = 1
STATE_FILE = "state.json"
MAX_FILE_BYTES = 15 << 20
MAX_STATE_JSON_BYTES = 4 << 20
PARTS = ("G", "G_ema", "D", "opt_G", "opt_D")


def _pieces(tensors: dict[str, torch.Tensor], limit: int) -> list[dict[str, torch.Tensor]]:
    """tensors split, in order, into consecutive dicts whose data is at most `limit` bytes each."""
    pieces, current, size = [], {}, 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes > limit:
            raise HurefError(f"tensor {name} ({nbytes} bytes) is larger than a state file may be ({limit} bytes)")
        if current and size + nbytes > limit:
            pieces.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    return pieces + [current] if current else pieces


def _digest(chunks: list) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk) if isinstance(chunk, bytes) else memoryview(chunk).nbytes
    return digest.hexdigest(), size


def write_state(folder: Path, parts: dict[str, dict[str, torch.Tensor]], meta: dict,
                limit: int = MAX_FILE_BYTES) -> dict:
    """Write parts (PARTS -> {name: tensor}) and meta (JSON-able) into folder, all files or none; files of
    an earlier state there that this one does not use are removed afterwards. Returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    outputs, manifest = [], {}
    for part in PARTS:
        pieces = _pieces({k: v.detach().to("cpu").contiguous() for k, v in parts[part].items()}, limit)
        for i, piece in enumerate(pieces, start=1):
            name = f"{part}.safetensors" if len(pieces) == 1 else f"{part}-{i}.safetensors"
            chunks = safetensors_chunks(piece, {"part": part})
            sha256, size = _digest(chunks)
            manifest[name] = {"part": part, "bytes": size, "sha256": sha256}
            outputs.append((folder / name, chunks))
    state = {"format": FORMAT, "version": VERSION, **meta, "files": manifest}
    _replace(folder, outputs + [(folder / STATE_FILE, (json.dumps(state, indent=1) + "\n").encode())])
    return manifest


def copy_state(source: Path, into: Path) -> None:
    """Copy the state in source into `into` byte for byte (each file checked against source's manifest)."""
    source, into = Path(source), Path(into)
    outputs = []
    for name, entry in read_meta(source)["files"].items():
        data = _checked_bytes(source, name, entry)
        outputs.append((into / name, data))
    into.mkdir(parents=True, exist_ok=True)
    _replace(into, outputs + [(into / STATE_FILE, (source / STATE_FILE).read_bytes())])


def _replace(folder: Path, outputs: list) -> None:
    """Write outputs (state.json last, so it is renamed last) all or none, then remove the files of the
    state that was in folder before and that the new one does not use."""
    old = _manifest_names(folder)
    write_all(outputs)
    for stale in old - {Path(path).name for path, _ in outputs}:
        (folder / stale).unlink(missing_ok=True)


def _manifest_names(folder: Path) -> set[str]:
    """The tensor files a readable state.json in folder lists (empty when there is none)."""
    try:
        return set(read_meta(folder)["files"])
    except HurefError:
        return set()


def read_meta(folder: Path) -> dict:
    """The parsed state.json of the state in folder (checked for its format, not its files)."""
    path = Path(folder) / STATE_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_JSON_BYTES + 1)
    except OSError as e:
        raise HurefError(f"{path}: cannot read a training state ({e.strerror or e})") from None
    if len(raw) > MAX_STATE_JSON_BYTES:
        raise HurefError(f"{path}: larger than a training state's {STATE_FILE} may be")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        raise HurefError(f"{path}: not valid JSON") from None
    if (not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION
            or not isinstance(meta.get("files"), dict)):
        raise HurefError(f"{path}: not a {FORMAT} state (version {VERSION})")
    return meta


def read_state(folder: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """(parts, meta) of the state in folder; every file's size and SHA-256 are checked against the manifest."""
    folder = Path(folder)
    meta = read_meta(folder)
    parts = {part: {} for part in PARTS}
    for name, entry in sorted(meta["files"].items()):
        data = _checked_bytes(folder, name, entry)
        path = folder / name
        try:
            tensors = load(data)
        except SafetensorError as e:
            raise HurefError(f"{path}: not a safetensors file ({e})") from None
        parts[entry["part"]].update(tensors)
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "files")}
    return parts, meta


def _checked_bytes(folder: Path, name: str, entry) -> bytes:
    """The bytes of the state file `name` in folder, checked against its manifest entry (part, size, SHA-256)."""
    if (not isinstance(entry, dict) or entry.get("part") not in PARTS or Path(name).name != name
            or not name.endswith(".safetensors") or not isinstance(entry.get("bytes"), int)
            or entry["bytes"] > MAX_FILE_BYTES + (1 << 20)):
        raise HurefError(f"{folder / STATE_FILE}: malformed manifest entry {name!r}")
    path = folder / name
    try:
        if path.stat().st_size != entry["bytes"]:
            raise HurefError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['bytes']} "
                             "(an incomplete copy, or files of two different states)")
        data = path.read_bytes()
    except OSError as e:
        raise HurefError(f"{path}: cannot read ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise HurefError(f"{path}: SHA-256 differs from the manifest (files of two different states?)")
    return data


def state_bytes(folder: Path) -> int:
    """Total size of a state's files, state.json included."""
    meta = read_meta(folder)
    return sum(entry["bytes"] for entry in meta["files"].values()) + (Path(folder) / STATE_FILE).stat().st_size


def adam_second_moments(optimizer: torch.optim.Adam, named: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """{parameter name: Adam's exp_avg_sq} for each parameter of `named` the optimizer has stepped."""
    return {name: optimizer.state[p]["exp_avg_sq"] for name, p in named.items() if p in optimizer.state}


def adam_steps(optimizer: torch.optim.Adam) -> int:
    """How many steps the optimizer has taken (0 before its first)."""
    for state in optimizer.state.values():
        return int(state["step"])
    return 0


def restore_adam(optimizer: torch.optim.Adam, named: dict[str, torch.nn.Parameter], second_moments: dict,
                 steps: int, source) -> None:
    """Give a freshly built Adam (beta1 = 0) the state it had: exp_avg_sq from second_moments, the step
    count, and exp_avg = 0, which its next step overwrites with the gradient (module docstring)."""
    if any(group["betas"][0] != 0 for group in optimizer.param_groups):
        raise ValueError("only Adam with beta1 = 0 keeps no first moment")
    if steps == 0:
        if second_moments:
            raise HurefError(f"{source}: optimizer moments saved for an optimizer that never stepped")
        return
    if set(second_moments) != set(named):
        raise HurefError(f"{source}: optimizer moments do not match the network's parameters")
    index = {p: i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    state = {}
    for name, p in named.items():
        v = second_moments[name]
        if v.shape != p.shape or not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            raise HurefError(f"{source}: optimizer moment {name} is not a finite, non-negative tensor of shape "
                             f"{tuple(p.shape)}")
        state[index[p]] = {"step": torch.tensor(float(steps)), "exp_avg": torch.zeros_like(p),
                           "exp_avg_sq": v.to(p.device, p.dtype)}
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})

"""Resolving a MODEL argument to a `Model`: config, architecture, lazy tensor reader, vocabulary.

Accepted: a local directory in Hugging Face layout (config.json with model.safetensors, sharded
*.safetensors with model.safetensors.index.json, or pytorch_model*.bin loaded weights-only); a
GGUF file or a directory holding one; a Hub repo id (`org/name`), of which only config and
tokenizer files and the shards holding the needed tensors are downloaded; `demo:NAME` for the
tiny models huref builds on the spot (`huref.demo`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from huref.architectures import ArchSpec, arch_for_config
from huref.config import Dims, LayerPlan, check_depth, language_model_config, layer_plan, model_dims
from huref.errors import HurefError
from huref.readers import TensorReader
from huref.readers.jsonfile import MAX_JSON_BYTES, read_json
from huref.readers.quant import dequantizing
from huref.readers.safetensors import SafetensorsReader, read_header
from huref.readers.sharded import ShardedReader
from huref.readers.torchbin import TorchBinReader

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class Model:
    """A checkpoint opened for reading: nothing but config and vocabulary is in memory.

    name: where it came from, for messages; label: a short name that reveals no local path
    (what fingerprints and reports show); directory: its local folder, if it has one."""

    name: str
    config: dict
    reader: TensorReader
    vocab: list[str | None] | None
    label: str = ""
    directory: str | None = None
    arch: ArchSpec = field(init=False)
    dims: Dims = field(init=False)
    prefix: str = field(init=False)
    plan: LayerPlan = field(init=False)  # which layers carry terms, and where each takes its FFN

    def __post_init__(self) -> None:
        self.label = self.label or self.name
        self.reader = dequantizing(self.reader, self.config)
        self.config = language_model_config(self.config)
        self.arch = arch_for_config(self.config)
        self.dims = model_dims(self.config)
        base = self.arch.base_prefix
        for prefix in (base, "", *(wrapper + base for wrapper in LANGUAGE_MODEL_WRAPPERS), *TEXT_MODEL_PREFIXES):
            if self.reader.has(prefix + self.arch.embed):
                self.prefix = prefix
                break
        else:
            raise HurefError(f"{self.name}: embedding tensor '{base + self.arch.embed}' is missing")
        check_depth(self.dims.n_layers, self.reader.names(), self.tensor_name(self.arch.layer), self.name)
        self.plan = layer_plan(self.config, self.arch, self.dims.n_layers)

    def tensor_name(self, template: str) -> str:
        """Full checkpoint name of a name relative to the base prefix."""
        return self.prefix + template

    def embedding_shape(self) -> tuple[int, ...]:
        return self.reader.shape(self.tensor_name(self.arch.embed))


# where the language model's base model sits inside a wrapper: before the text model's own base prefix
# ("language_model." + "model.": transformers' saved llava / gemma3; "text_model." + "model.": emu3), or in place of it
LANGUAGE_MODEL_WRAPPERS = ("language_model.", "text_model.")
TEXT_MODEL_PREFIXES = ("model.language_model.", "model.text_model.")


MAX_VOCAB_ID = 1 << 24  # 16.7M ids; the largest vocabularies in use have about 262k


def _read_json(path: Path) -> dict:
    """A JSON file that must hold an object (`huref.readers.jsonfile.read_json`)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise HurefError(f"{path}: expected a JSON object")
    return data


def _token_id(value, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_VOCAB_ID:
        raise HurefError(f"{path}: token id {str(value)[:40]!r} is not an integer in [0, {MAX_VOCAB_ID})")
    return value


def _token_string(value, path: Path) -> str:
    if not isinstance(value, str):
        raise HurefError(f"{path}: token {str(value)[:40]!r} is not a string")
    return value


def load_vocab(directory: Path) -> list[str | None] | None:
    """Token strings by id from tokenizer.json, vocab.json or vocab.txt; special tokens are None.
    A malformed file (ids that are not integers in range, pieces that are not strings) raises HurefError."""
    path = directory / "tokenizer.json"
    if path.exists():
        data = _read_json(path)
        model = data.get("model") or {}
        if not isinstance(model, dict):
            raise HurefError(f"{path}: \"model\" is not an object")
        vocab = model.get("vocab")
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            if len(vocab) >= MAX_VOCAB_ID:
                raise HurefError(f"{path}: {len(vocab)} tokens is more than huref reads ({MAX_VOCAB_ID})")
            by_id = {i: _token_string(entry[0] if isinstance(entry, list) and entry else entry, path)
                     for i, entry in enumerate(vocab)}
        elif isinstance(vocab, dict):
            by_id = {_token_id(i, path): _token_string(tok, path) for tok, i in vocab.items()}
        else:
            return None
        replace = decoder_replacements(data.get("decoder"))
        if replace:  # pieces as the decoder writes them: a renaming the decoder undoes keeps the keys
            by_id = {i: _replaced(tok, replace) for i, tok in by_id.items()}
        added_tokens = data.get("added_tokens") or []
        if not isinstance(added_tokens, list):
            raise HurefError(f"{path}: added_tokens is not a list")
        for added in added_tokens:
            if not isinstance(added, dict):
                raise HurefError(f"{path}: an added token is not an object")
            token_id = _token_id(added.get("id"), path)
            by_id[token_id] = None if added.get("special") else _token_string(added.get("content"), path)
        return _as_list(by_id)
    path = directory / "vocab.json"
    if path.exists():
        return _as_list({_token_id(i, path): _token_string(tok, path) for tok, i in _read_json(path).items()})
    path = directory / "vocab.txt"
    if path.exists():
        if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            raise HurefError(f"{path}: not a regular file of a plausible size")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise HurefError(f"{path}: not UTF-8 text") from None
        return [None if re.fullmatch(r"\[[A-Z]+\]|\[unused\d+\]", t) else t for t in lines]
    return None


def decoder_replacements(decoder) -> list[tuple[str, str]]:
    """The (string, replacement) steps of a tokenizer.json decoder's Replace decoders, in order
    (Sequences walked); the other decoder kinds do not rename single pieces."""
    if not isinstance(decoder, dict):
        return []
    if decoder.get("type") == "Sequence":
        parts = decoder.get("decoders")
        return [step for part in parts for step in decoder_replacements(part)] if isinstance(parts, list) else []
    pattern = decoder.get("pattern")
    if decoder.get("type") == "Replace" and isinstance(pattern, dict) and isinstance(pattern.get("String"), str):
        return [(pattern["String"], str(decoder.get("content", "")))]
    return []


def _replaced(piece, replace: list[tuple[str, str]]):
    if not isinstance(piece, str):
        return piece
    for old, new in replace:
        piece = piece.replace(old, new)
    return piece


def _as_list(by_id: dict[int, str | None]) -> list[str | None]:
    vocab: list[str | None] = [None] * (max(by_id) + 1 if by_id else 0)
    for i, tok in by_id.items():
        if i >= 0:
            vocab[i] = tok
    return vocab


def _weight_map(index_path: Path) -> dict[str, str]:
    data = _read_json(index_path)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise HurefError(f"{index_path}: malformed index (no weight_map of tensor -> file)")
    for file in set(weight_map.values()):
        if "/" in file or "\\" in file or file in ("", ".", ".."):
            raise HurefError(f"{index_path}: shard name '{file}' is not a plain file name")
    return weight_map


def open_weights(directory: Path, fetch: Callable[[str], Path]) -> TensorReader:
    """A reader over the weights in a HF-layout directory; `fetch(file)` returns a local path
    for a file of the checkpoint (downloading it first for a hub model) or raises HurefError."""

    def shard_opener(make):
        def open_shard(file: str):
            return make(str(fetch(file)))
        return open_shard

    for index, make in (("model.safetensors.index.json", SafetensorsReader),
                        ("pytorch_model.bin.index.json", TorchBinReader)):
        if _exists(fetch, index):
            return ShardedReader(_weight_map(fetch(index)), shard_opener(make))
    for single, make in (("model.safetensors", SafetensorsReader), ("pytorch_model.bin", TorchBinReader)):
        if _exists(fetch, single):
            return make(str(fetch(single)))
    shards = sorted(p.name for p in directory.glob("*.safetensors"))
    if shards:
        weight_map = {name: file for file in shards for name in read_header(str(directory / file))[0]}
        return ShardedReader(weight_map, shard_opener(SafetensorsReader))
    raise HurefError(f"{directory}: no model.safetensors, sharded safetensors or pytorch_model.bin found")


def _exists(fetch, file: str) -> bool:
    try:
        fetch(file)
        return True
    except HurefError:
        return False


def _local(directory: Path, label: str | None = None) -> Model:
    ggufs = sorted(directory.glob("*.gguf"))
    if not (directory / "config.json").is_file():
        if ggufs:
            return _gguf(directory)
        raise HurefError(f"{directory}: no config.json (not a Hugging Face model directory)")

    def fetch(file: str) -> Path:
        path = directory / file
        if not path.is_file():
            raise HurefError(f"{path}: missing")
        return path

    reader = open_weights(directory, fetch)
    return Model(str(directory), _read_json(directory / "config.json"), reader, load_vocab(directory),
                 label=label or directory.resolve().name, directory=str(directory))


def _gguf(path: Path) -> Model:
    from huref.readers.gguf import open_gguf

    config, reader, vocab = open_gguf(str(path))
    name = config.get("_name_or_path")
    label = name if isinstance(name, str) and name.strip() else path.resolve().name
    return Model(str(path), config, reader, vocab, label=label[:200])


HUB_PROBE_SECONDS = 1.5


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hub endpoint accepts a TCP connection within `timeout` seconds (name lookup
    included, which can hang by itself, so the probe runs in a daemon thread)."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    answer = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer)


def _hub(repo_id: str, revision: str | None) -> Model:
    """A Hub model: from the local cache when offline (HF_HUB_OFFLINE, or the Hub does not answer
    within HUB_PROBE_SECONDS), else downloading only what is read."""
    import logging

    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # no retry chatter: errors are ours to say
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    why = "HF_HUB_OFFLINE is set"
    if not offline and not hub_reachable():
        offline, why = True, "the Hub cannot be reached"

    def fetch(file: str) -> Path:
        try:
            return Path(hf_hub_download(repo_id, file, revision=revision, local_files_only=offline))
        except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: test it first
            if offline:
                raise HurefError(f"{repo_id}: {file} is not in the local Hugging Face cache and {why}") from None
            raise HurefError(f"{repo_id}: cannot download {file} (no connection to the Hub?)") from None
        except EntryNotFoundError:
            raise HurefError(f"{repo_id}: no file {file} in the repository") from None
        except HfHubHTTPError as e:
            raise HurefError(f"{repo_id}: Hub request for {file} failed ({str(e).splitlines()[0][:200]})") from None
        except (OSError, ValueError) as e:
            raise HurefError(f"{repo_id}: cannot fetch {file} ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None

    config_path = fetch("config.json")
    directory = config_path.parent
    for file in TOKENIZER_FILES:
        if _exists(fetch, file):
            break
    reader = open_weights(directory, fetch)
    return Model(repo_id, _read_json(config_path), reader, load_vocab(directory), label=repo_id)


def looks_like_path(spec: str) -> bool:
    """True when spec can only be meant as a local path: it starts with '.', '/' or '~', has a file
    extension huref reads, more than one '/', or a first component that is a local folder."""
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1 or "\\" in spec:
        return True
    if Path(spec).suffix.lower() in (".gguf", ".safetensors", ".bin", ".json", ".pt"):
        return True
    return Path(spec.split("/")[0]).is_dir()


def load_model(spec: str, revision: str | None = None) -> Model:
    """Open MODEL: a local directory, a .gguf file, `demo:NAME`, or a Hub repo id."""
    if spec.startswith("demo:"):
        from huref.demo import demo_model_dir

        return _local(demo_model_dir(spec[len("demo:"):]), label=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _local(path)
    if path.is_file():
        if path.suffix == ".gguf":
            return _gguf(path)
        if path.suffix in (".safetensors", ".bin") and (path.parent / "config.json").is_file():
            return _local(path.parent)
        raise HurefError(f"{spec}: not a model directory, .gguf file or checkpoint beside a config.json")
    if path.exists():
        raise HurefError(f"{spec}: not a regular file or directory")
    if HUB_ID.match(spec) and not looks_like_path(spec):
        return _hub(spec, revision)
    raise HurefError(f"{spec}: no such file or directory")

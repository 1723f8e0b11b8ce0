"""Resolving a MODEL argument to a `Model`: config, architecture, lazy tensor reader, vocabulary.

Accepted: a local directory in Hugging Face layout (config.json with model.safetensors, sharded
*.safetensors with model.safetensors.index.json, or pytorch_model*.bin loaded weights-only); a
GGUF file or a directory holding one; a Hub repo id (`org/name`, or `org/name:FILE` naming one GGUF
model of a repo that holds several); `demo:NAME` for the tiny models huref builds on the spot
(`huref.demo`).

A Hub model is read at one commit: config, tokenizer, index and model card are downloaded into the HF
cache (huggingface_hub's conventions); safetensors and GGUF weights are read by byte ranges, only the
header and the bytes of the tensors used (`huref.readers.remote`), unless the HF cache already holds
the whole file. `Model.hub` says which repo and commit, and counts the bytes fetched against the
repo's size. Offline (HF_HUB_OFFLINE, or the Hub not answering) only the cache is read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from huref.architectures import ArchSpec, arch_for_config
from huref.config import Dims, LayerPlan, check_depth, language_model_config, layer_plan, model_dims
from huref.errors import HurefError, TransientError
from huref.readers import TensorReader
from huref.readers.jsonfile import MAX_JSON_BYTES, read_json
from huref.readers.quant import dequantizing
from huref.readers.remote import HubFile, Transfer
from huref.readers.safetensors import SafetensorsReader, read_header
from huref.readers.sharded import ShardedReader
from huref.readers.torchbin import TorchBinReader

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
HUB_GGUF = re.compile(r"^([A-Za-z0-9][\w.\-]*/[\w.\-]+):([\w.\-/]+)$")  # org/name:FILE (one GGUF model of the repo)
RANGED_SUFFIXES = (".safetensors", ".gguf")  # weight files read by byte ranges on the Hub


@dataclass(frozen=True)
class HubOrigin:
    """Where a Hub model was read: its repo, the commit, the GGUF file chosen (a repo may hold several),
    and the bytes fetched (None when only the local cache was read)."""

    repo_id: str
    commit: str
    gguf_file: str | None = None
    transfer: Transfer | None = None

    @property
    def entry_id(self) -> str:
        """`hub:ORG/NAME@COMMIT`, with `:FILE` for a GGUF model (one repo may hold several)."""
        return f"hub:{self.repo_id}@{self.commit}" + (f":{self.gguf_file}" if self.gguf_file else "")


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
    hub: HubOrigin | None = None  # set for a model read from the Hub (or its cache)
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


def open_weights(files: set[str], fetch: Callable[[str], object], where) -> TensorReader:
    """A reader over the weights of a HF-layout checkpoint holding the named `files`; `fetch(file)`
    returns what a reader opens (a local path, or a file on the Hub read by byte ranges) or raises
    HurefError."""
    for index, make in (("model.safetensors.index.json", SafetensorsReader),
                        ("pytorch_model.bin.index.json", TorchBinReader)):
        if index in files:
            return ShardedReader(_weight_map(fetch(index)), lambda file, make=make: make(fetch(file)))
    for single, make in (("model.safetensors", SafetensorsReader), ("pytorch_model.bin", TorchBinReader)):
        if single in files:
            return make(fetch(single))
    shards = sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)
    if shards:
        weight_map = {name: file for file in shards for name in read_header(fetch(file))[0]}
        return ShardedReader(weight_map, lambda file: SafetensorsReader(fetch(file)))
    raise HurefError(f"{where}: no model.safetensors, sharded safetensors or pytorch_model.bin found")


def _local(directory: Path, label: str | None = None) -> Model:
    ggufs = sorted(directory.glob("*.gguf"))
    if not (directory / "config.json").is_file():
        if ggufs:
            return _gguf(directory)
        raise HurefError(f"{directory}: no config.json (not a Hugging Face model directory)")

    def fetch(file: str) -> str:
        path = directory / file
        if not path.is_file():
            raise HurefError(f"{path}: missing")
        return str(path)

    reader = open_weights(set(os.listdir(directory)), fetch, directory)
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


def _hub(repo_id: str, selector: str | None, revision: str | None) -> Model:
    """A Hub model (`selector`: the GGUF file asked for with `org/name:FILE`): from the local cache when
    offline (HF_HUB_OFFLINE, or the Hub does not answer within HUB_PROBE_SECONDS), else read at the
    revision's commit: small files downloaded into the HF cache, weights read by byte ranges."""
    import logging

    from huggingface_hub import constants

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # no retry chatter: errors are ours to say
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    why = "HF_HUB_OFFLINE is set"
    if not offline and not hub_reachable():
        offline, why = True, "the Hub cannot be reached"
    if offline:
        return _hub_cached(repo_id, selector, revision, why)
    return _hub_online(repo_id, selector, revision)


def _hub_online(repo_id: str, selector: str | None, revision: str | None) -> Model:
    """Read a Hub model at the commit its revision names now (a repo-info request for the commit, a
    tree listing for the files and their sizes)."""
    from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()
    commit = hub_call(repo_id, "repository info", lambda: api.model_info(repo_id, revision=revision or "main")).sha
    tree = hub_call(repo_id, "file listing", lambda: list(api.list_repo_tree(repo_id, revision=commit, recursive=True)))
    sizes = {f.path: int(f.size or 0) for f in tree if isinstance(f, RepoFile)}
    transfer = Transfer(repo_bytes=sum(sizes.values()))
    first_download = [True]

    def download(file: str) -> str:
        """A file downloaded whole into the HF cache (the first one by the revision asked, so the
        cache's refs record it; it must land on the commit listed)."""
        cached = try_to_load_from_cache(repo_id, file, revision=commit)
        at = revision if first_download[0] else commit
        path = hub_call(repo_id, file, lambda: hf_hub_download(repo_id, file, revision=at))
        first_download[0] = False
        if Path(path).parents[file.count("/")].name != commit:  # the snapshot folder names the commit
            raise TransientError(f"{repo_id}: revision {revision or 'main'} moved while being read (try again)")
        if not isinstance(cached, str):
            transfer.add(sizes.get(file) or Path(path).stat().st_size)
        return path

    def fetch(file: str):
        if file not in sizes:
            raise HurefError(f"{repo_id}: no file {file} in the repository")
        if file.endswith(RANGED_SUFFIXES):
            cached = try_to_load_from_cache(repo_id, file, revision=commit)
            return cached if isinstance(cached, str) else HubFile(repo_id, commit, file, sizes[file], transfer)
        return download(file)

    return _hub_model(repo_id, selector, set(sizes), fetch, commit, transfer)


def _hub_cached(repo_id: str, selector: str | None, revision: str | None, why: str) -> Model:
    """A Hub model from the HF cache alone: the snapshot its revision names there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except IncompleteSnapshotError as error:  # what huref leaves: only the files it read
        folder = Path(error.snapshot_path)
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise HurefError(f"{repo_id}: not in the local Hugging Face cache and {why}") from None
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}

    def fetch(file: str) -> str:
        if file not in files:
            raise HurefError(f"{repo_id}: {file} is not in the local Hugging Face cache and {why}")
        return str(folder / file)

    return _hub_model(repo_id, selector, files, fetch, folder.name, None)


def _hub_model(repo_id: str, selector: str | None, files: set[str], fetch, commit: str,
               transfer: Transfer | None) -> Model:
    """A Hub model from its file names and `fetch`: HF layout when it has config.json, else its GGUF model."""
    if "config.json" in files and selector is None:
        config_path = Path(fetch("config.json"))
        for file in TOKENIZER_FILES:
            if file in files:
                fetch(file)
                break
        reader = open_weights(files, fetch, repo_id)
        return Model(repo_id, _read_json(config_path), reader, load_vocab(config_path.parent), label=repo_id,
                     hub=HubOrigin(repo_id, commit, None, transfer))
    from huref.readers.gguf import open_gguf_files

    chosen, several = gguf_files_of(repo_id, files, selector)
    name = f"{repo_id}:{chosen[0]}"
    config, reader, vocab = open_gguf_files([fetch(file) for file in chosen], name)
    return Model(name, config, reader, vocab, label=name if several else repo_id,
                 hub=HubOrigin(repo_id, commit, chosen[0], transfer))


def gguf_files_of(repo_id: str, files: set[str], selector: str | None) -> tuple[list[str], bool]:
    """(the files of the GGUF model `selector` names in a repo: a file name, or a part of one such as
    a quantization "Q4_K_M"; all of a split model's files in order; whether the repo holds several
    GGUF models). With no selector the repo must hold exactly one."""
    from huref.readers.gguf import SPLIT_NAME

    models: dict[str, list[str]] = {}
    for file in sorted(f for f in files if f.endswith(".gguf")):
        split = SPLIT_NAME.match(file)
        models.setdefault(split.group(1) if split else file, []).append(file)
    if not models:
        raise HurefError(f"{repo_id}: neither config.json nor a .gguf file in the repository")
    if selector is None:
        matches = list(models)
    else:
        matches = [k for k, v in models.items() if selector in v or selector == k]
        matches = matches or [k for k in models if selector.lower() in k.lower()]
    if len(matches) != 1:
        listed = ", ".join(sorted(models)[:8]) + (" ..." if len(models) > 8 else "")
        said = f"no GGUF model matches '{selector}'" if selector and not matches else "several GGUF models"
        raise HurefError(f"{repo_id}: {said} ({listed}); name one as {repo_id}:FILE")
    chosen = models[matches[0]]
    split = SPLIT_NAME.match(chosen[0])
    if split and [int(SPLIT_NAME.match(f).group(2)) for f in chosen] != list(range(1, int(split.group(3)) + 1)):
        raise HurefError(f"{repo_id}: split GGUF {matches[0]} is incomplete in the repository")
    return chosen, len(models) > 1


def hub_call(repo_id: str, what: str, call):
    """Run a huggingface_hub call; its failures become one line: a TransientError for timeouts,
    connection errors, 429 and 5xx (worth retrying), else a HurefError."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    from huref.readers.remote import TRANSIENT_STATUS

    try:
        return call()
    except GatedRepoError:
        raise HurefError(f"{repo_id}: a gated repository (accept its terms on the Hub and set HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise HurefError(f"{repo_id}: no such repository on the Hub (or a private one: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HurefError(f"{repo_id}: no such revision") from None
    except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: the Hub did not answer for the file
        raise TransientError(f"{repo_id}: cannot download {what} (no connection to the Hub?)") from None
    except EntryNotFoundError:
        raise HurefError(f"{repo_id}: no file {what} in the repository") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else 0
        kind = TransientError if status in TRANSIENT_STATUS else HurefError
        raise kind(f"{repo_id}: Hub request for {what} failed ({str(e).splitlines()[0][:200]})") from None
    except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as e:
        raise TransientError(f"{repo_id}: Hub request for {what} failed ({type(e).__name__})") from None
    except (OSError, ValueError) as e:
        raise HurefError(f"{repo_id}: cannot fetch {what} ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None


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
        return _hub(spec, None, revision)
    gguf = HUB_GGUF.match(spec)
    if gguf and not Path(spec.split("/")[0]).is_dir():
        return _hub(gguf.group(1), gguf.group(2), revision)
    raise HurefError(f"{spec}: no such file or directory")

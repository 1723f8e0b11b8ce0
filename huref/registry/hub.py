"""Registries on the Hub: a dataset repo (`hf://datasets/ORG/NAME`) holding the registry's files, read
and written only through huggingface_hub (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE and the HF cache as
everywhere).

- push: creates the dataset repo if needed, refuses one whose manifest differs, and adds, in one
  commit, the parts and tombstones it lacks (files are never rewritten, so a name present remotely
  is the same file), the manifest and a dataset card whose `configs` point the Hub's dataset viewer
  at `parts/*.parquet`.
- pull: downloads the repo's snapshot (HF cache) and copies the parts and tombstones the local
  registry lacks into it (creating it with the remote's manifest, which must be this huref's).
- `open_registry("hf://datasets/ORG/NAME")`: pulls into huref's cache folder and opens that copy.
"""

from __future__ import annotations

import re
from pathlib import Path

from huref.errors import HurefError
from huref.files import cache_dir, write_atomically
from huref.registry.format import MANIFEST, PARTS, TOMBSTONES, Registry, parse_manifest

HF_PREFIX = "hf://datasets/"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
CARD = """---
configs:
- config_name: default
  data_files: "parts/*.parquet"
tags:
- huref-registry
---
# huref registry

Model entries of a [huref](https://pypi.org/project/huref/) registry, one Parquet part per model
(`parts/`); removals are the parts named in `tombstones/`. `manifest.json` gives the settings
every entry was computed with. Open it with `huref identify MODEL -r hf://datasets/{repo_id}`.
"""


def repo_id_of(spec: str) -> str:
    """ORG/NAME from "ORG/NAME" or "hf://datasets/ORG/NAME" (HurefError otherwise)."""
    repo_id = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    if spec.startswith("hf://") and not spec.startswith(HF_PREFIX):
        raise HurefError(f"{spec}: a Hub registry is a dataset repo, hf://datasets/ORG/NAME")
    if not REPO_ID.match(repo_id):
        raise HurefError(f"{spec}: not a Hub dataset repo id (ORG/NAME)")
    return repo_id


def open_registry(spec: str, create: bool = False) -> Registry:
    """A registry by its argument: a local folder, or hf://datasets/ORG/NAME (pulled into the cache)."""
    if spec.startswith("hf://"):
        repo_id = repo_id_of(spec)
        target = cache_dir() / "registries" / repo_id.replace("/", "--")
        pull(repo_id, target)
        return Registry(target)
    return Registry(spec, create=create)


def _hub_call(what: str, call):
    """Run a huggingface_hub call (its progress bars off: huref reports its own); its errors (HTTP,
    connection, a missing repo) become one HurefError line."""
    from huggingface_hub.errors import HTTPError
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    try:
        return call()
    except (HTTPError, OSError, ValueError) as error:
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise HurefError(f"{what} failed ({first})") from None


def pull(repo_id: str, target: Path) -> int:
    """Copy the parts and tombstones of Hub registry `repo_id` that `target` lacks; returns how many."""
    from huggingface_hub import snapshot_download

    snapshot = Path(_hub_call(f"reading hf://datasets/{repo_id}", lambda: snapshot_download(
        repo_id, repo_type="dataset", allow_patterns=[MANIFEST, f"{PARTS}/*.parquet", f"{TOMBSTONES}/*.parquet"])))
    manifest = snapshot / MANIFEST
    if not manifest.is_file():
        raise HurefError(f"hf://datasets/{repo_id}: not a huref registry (no {MANIFEST})")
    parse_manifest(manifest.read_bytes(), f"hf://datasets/{repo_id}/{MANIFEST}")
    Registry(target, create=True)
    copied = 0
    for folder in (PARTS, TOMBSTONES):
        for source in sorted((snapshot / folder).glob("*.parquet")) if (snapshot / folder).is_dir() else []:
            destination = Path(target) / folder / source.name
            if not destination.exists():
                write_atomically(destination, source.read_bytes())
                copied += 1
    return copied


def push(registry: Registry, repo_id: str) -> int:
    """Add the files of `registry` that Hub dataset `repo_id` lacks, in one commit; returns how many
    parts and tombstones were added."""
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

    api = HfApi()
    where = f"hf://datasets/{repo_id}"
    _hub_call(f"creating {where}", lambda: api.create_repo(repo_id, repo_type="dataset", exist_ok=True))
    remote = set(_hub_call(f"listing {where}", lambda: api.list_repo_files(repo_id, repo_type="dataset")))
    if MANIFEST in remote:
        path = _hub_call(f"reading {where}/{MANIFEST}",
                         lambda: hf_hub_download(repo_id, MANIFEST, repo_type="dataset"))
        parse_manifest(Path(path).read_bytes(), f"{where}/{MANIFEST}")
    local = [Path(folder) / p.name for folder in (PARTS, TOMBSTONES)
             for p in sorted((registry.root / folder).glob("*.parquet")) if not p.name.startswith(".")]
    new = [path for path in local if path.as_posix() not in remote]
    operations = [CommitOperationAdd(path.as_posix(), str(registry.root / path)) for path in new]
    if MANIFEST not in remote:
        operations.append(CommitOperationAdd(MANIFEST, str(registry.root / MANIFEST)))
    if "README.md" not in remote:
        operations.append(CommitOperationAdd("README.md", CARD.format(repo_id=repo_id).encode()))
    if operations:
        _hub_call(f"pushing to {where}", lambda: api.create_commit(
            repo_id, operations, repo_type="dataset", commit_message=f"huref registry: add {len(new)} file(s)"))
    return len(new)

"""The registry on disk: a folder holding manifest.json and Parquet part files.

    R/manifest.json          {"format": "huref-registry", "format_version", "huref_version", "settings"}
    R/parts/<key>-<nonce>.parquet        one registered model (one row, ENTRY_SCHEMA)
    R/tombstones/<part stem>.parquet     one removal: the part it removes (TOMBSTONE_SCHEMA)

Every file is written under a hidden temporary name in its folder and renamed into place
(`huref.files.write_atomically`), so a reader sees a whole part or none, and a process killed in the
middle of an add leaves at most a hidden temporary file, which readers skip. An add writes one new
part per model and never rewrites another file; a removal writes a tombstone. Concurrent adders
therefore never touch the same file: each part name carries a random nonce. Two adders of the same
model may both write a part; readers keep the first part (by name) of each entry id.

The settings in the manifest are the ones every entry was computed with (the probe-token counts of
the sketch, its summary and the fingerprint, the layer rules, the token-selection rule and the
encoder's digest); a registry whose format version or settings differ from this huref's is refused
with one line, since its sketches would not compare with the query's.

Why Parquet with one row per part: DuckDB, Polars, Ray Data and the Hub's dataset viewer read
`parts/*.parquet` unchanged, and a reader can project the small columns (identity, latent, sketch
summary) without touching the sketches, which are the bulk of each file.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import huref
from huref.errors import HurefError, excerpt
from huref.files import write_atomically

FORMAT = "huref-registry"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTS = "parts"
TOMBSTONES = "tombstones"
MAX_MANIFEST_BYTES = 1 << 20
MAX_PART_BYTES = 1 << 26  # a part holds one model's sketch: about 3 MB (8 layers x 3 x 256² float16)

DECLARATION = pa.struct([("name", pa.string()), ("relation", pa.string()), ("source", pa.string())])
ENTRY_SCHEMA = pa.schema([
    ("entry_id", pa.string()),          # "hub:ORG/NAME@COMMIT" or "sha256:<digest of the weight files>"
    ("name", pa.string()),              # display name
    ("hub_id", pa.string()),
    ("hub_commit", pa.string()),
    ("weights_sha256", pa.string()),
    ("model_type", pa.string()),
    ("n_parameters", pa.int64()),
    ("n_layers", pa.int32()),
    ("hidden_size", pa.int32()),
    ("declared_bases", pa.list_(DECLARATION)),
    ("name_or_path", pa.string()),      # config.json's _name_or_path: a hint, never a claim
    ("token_strategy", pa.string()),    # "string" (by token key) or "id" (no tokenizer)
    ("latent", pa.list_(pa.float32(), 512)),
    ("latent_code", pa.string()),
    ("sketch_layers", pa.list_(pa.int32())),
    ("sketch_tokens", pa.list_(pa.string())),
    ("summary", pa.binary()),           # float16 little-endian [L, 3, m, m]: the sketch on its first m tokens
    ("sketch", pa.binary()),            # float16 little-endian [L, 3, n, n]: whole-depth terms
    ("huref_version", pa.string()),
])
TOMBSTONE_SCHEMA = pa.schema([("part", pa.string()), ("entry_id", pa.string())])
SMALL_COLUMNS = [f.name for f in ENTRY_SCHEMA if f.name != "sketch"]


def current_settings() -> dict:
    """The settings this huref computes entries with (what a registry's manifest must say)."""
    from huref.encoder import encoder_digest
    from huref.invariants import DEFAULT_RULE, DEFAULT_TOKENS
    from huref.lineage import LINEAGE_TOKENS, VERDICT_LAYERS
    from huref.registry.entries import SUMMARY_TOKENS

    return {
        "sketch_tokens": LINEAGE_TOKENS,
        "sketch_layers": f"at most {VERDICT_LAYERS} evenly spaced layers (huref.lineage.verdict_stride)",
        "summary_tokens": SUMMARY_TOKENS,
        "sketch_dtype": "float16",
        "token_selection": "sha256-ranked token keys (huref.tokens)",
        "fingerprint_tokens": DEFAULT_TOKENS,
        "fingerprint_layers": DEFAULT_RULE,
        "encoder_sha256": encoder_digest(),
    }


def manifest_bytes(settings: dict) -> bytes:
    return (json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "huref_version": huref.__version__,
                        "settings": settings}, indent=1, sort_keys=True) + "\n").encode()


def parse_manifest(raw: bytes, where: str) -> dict:
    """A manifest's contents, checked against this huref's format version and settings (HurefError)."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HurefError(f"{where}: not a huref registry manifest (not valid JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HurefError(f"{where}: not a huref registry manifest (no \"format\": \"{FORMAT}\")")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise HurefError(f"{where}: registry format version {excerpt(manifest.get('format_version'))} is not "
                         f"supported (this huref reads {FORMAT_VERSION})")
    settings, expected = manifest.get("settings"), current_settings()
    if settings != expected:
        differ = sorted(k for k in set(expected) | set(settings if isinstance(settings, dict) else {})
                        if not isinstance(settings, dict) or settings.get(k) != expected.get(k))
        raise HurefError(f"{where}: registry made with other settings ({', '.join(differ)[:200]}) than this huref "
                         f"{huref.__version__} uses; its sketches would not compare")
    return manifest


@dataclass(frozen=True)
class Part:
    """One part file: its path and the entry it holds."""

    path: Path
    entry_id: str


class Registry:
    """A registry folder, opened (and its manifest checked) or created."""

    def __init__(self, root, create: bool = False) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if create and not manifest.exists():
            if self.root.exists() and not self.root.is_dir():
                raise HurefError(f"{self.root}: exists and is not a folder")
            if self.root.is_dir() and any(p.name not in (PARTS, TOMBSTONES) for p in self.root.iterdir()):
                raise HurefError(f"{self.root}: a folder that is neither empty nor a huref registry (no {MANIFEST})")
            try:
                (self.root / PARTS).mkdir(parents=True, exist_ok=True)
                (self.root / TOMBSTONES).mkdir(exist_ok=True)
            except OSError as error:
                raise HurefError(f"{self.root}: cannot create the registry ({error.strerror or error})") from None
            _create_once(manifest, manifest_bytes(current_settings()))
        if not manifest.is_file():
            raise HurefError(f"{self.root}: not a huref registry (no {MANIFEST})")
        try:
            if manifest.stat().st_size > MAX_MANIFEST_BYTES:
                raise HurefError(f"{manifest}: too large for a registry manifest")
            raw = manifest.read_bytes()
        except OSError as error:
            raise HurefError(f"{manifest}: cannot read ({error.strerror or error})") from None
        self.manifest = parse_manifest(raw, str(manifest))

    def _names(self, folder: str) -> list[Path]:
        """The finished .parquet files of a folder, sorted (hidden temporary files skipped)."""
        directory = self.root / folder
        try:
            names = sorted(p for p in os.listdir(directory) if p.endswith(".parquet") and not p.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise HurefError(f"{directory}: cannot list ({error.strerror or error})") from None
        return [directory / name for name in names]

    def removed_parts(self) -> set[str]:
        """Names of the parts that tombstones remove."""
        removed = set()
        for path in self._names(TOMBSTONES):
            table = read_table(path, ["part"], TOMBSTONE_SCHEMA)
            removed.update(table.column("part").to_pylist())
        return removed

    def rows(self, columns: list[str] | None = None) -> Iterator[tuple[Part, dict]]:
        """(part, its row as a dict of `columns`, default SMALL_COLUMNS) for every live entry, one part
        read at a time: tombstoned parts left out, and of several parts of one entry id the first by name."""
        columns = list(dict.fromkeys(["entry_id", *(columns or SMALL_COLUMNS)]))
        removed, seen = self.removed_parts(), set()
        for path in self._names(PARTS):
            if path.name in removed:
                continue
            row = read_table(path, columns).to_pylist()[0]
            if row["entry_id"] not in seen:
                seen.add(row["entry_id"])
                yield Part(path, row["entry_id"]), row

    def parts(self) -> list[Part]:
        """The live parts (`rows`)."""
        return [part for part, _ in self.rows(["entry_id"])]

    def entry_ids(self) -> set[str]:
        return {part.entry_id for part in self.parts()}

    def add(self, row: dict) -> Path:
        """Write one entry (a dict of ENTRY_SCHEMA's columns) as a new part; returns its path."""
        table = pa.Table.from_pylist([row], schema=ENTRY_SCHEMA)
        path = self.root / PARTS / f"{part_key(row['entry_id'])}-{secrets.token_hex(4)}.parquet"
        write_atomically(path, parquet_bytes(table))
        return path

    def remove(self, part: Part) -> Path:
        """Write the tombstone that removes `part`."""
        table = pa.Table.from_pylist([{"part": part.path.name, "entry_id": part.entry_id}], schema=TOMBSTONE_SCHEMA)
        path = self.root / TOMBSTONES / part.path.name
        write_atomically(path, parquet_bytes(table))
        return path


def part_key(entry_id: str) -> str:
    """The first 16 hex digits of the entry id's SHA-256: the stem shared by every part of one entry."""
    import hashlib

    return hashlib.sha256(entry_id.encode()).hexdigest()[:16]


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as Parquet file bytes (zstd; statistics off: the binary columns would only bloat them)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=False)
    return sink.getvalue().to_pybytes()


def read_table(path: Path, columns: list[str], schema: pa.Schema = ENTRY_SCHEMA) -> pa.Table:
    """Columns of a part file, checked to be one row of `schema`'s types (HurefError on anything else)."""
    expected = pa.schema([schema.field(name) for name in columns])
    try:
        if path.stat().st_size > MAX_PART_BYTES:
            raise HurefError(f"{path}: larger than a registry part can be ({MAX_PART_BYTES} bytes)")
        with open(path, "rb") as file, pq.ParquetFile(file) as parquet:
            stored = parquet.schema_arrow
            if any(stored.get_field_index(f.name) < 0 or stored.field(f.name).type != f.type for f in expected) \
                    or parquet.metadata.num_rows != 1:
                raise HurefError(f"{path}: registry part of another schema or row count (this huref reads format "
                                 f"{FORMAT_VERSION})")
            return parquet.read(columns=columns, use_threads=False)  # one small row: threads cost more
    except HurefError:
        raise
    except (OSError, pa.ArrowException, ValueError) as error:
        raise HurefError(f"{path}: not a readable registry part ({str(error).splitlines()[0][:160]})") from None


def float16_bytes(values) -> bytes:
    """A float tensor or array as float16 little-endian bytes (the sketch's storage)."""
    return np.ascontiguousarray(np.asarray(values, dtype="<f2")).tobytes()


def float16_array(raw: bytes, shape: tuple[int, ...], where: str) -> np.ndarray:
    """float16 bytes back to a float32 array of `shape` (HurefError when the sizes disagree)."""
    if len(raw) != 2 * int(np.prod(shape)):
        raise HurefError(f"{where}: sketch of {len(raw)} bytes does not hold {list(shape)} float16 values")
    values = np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape)  # [L, 3, n, n]
    if not np.isfinite(values).all():
        raise HurefError(f"{where}: sketch holds values that are not finite")
    return values


def _create_once(path: Path, data: bytes) -> None:
    """Write `path` unless it exists (a concurrent creator wins the rename; both wrote the same settings)."""
    if not path.exists():
        write_atomically(path, data)

"""The registry on disk: a folder holding manifest.json and Parquet part files.

    R/manifest.json          {"format": "huref-registry", "format_version", "huref_version", "settings"}
    R/parts/<key>-<nonce>.parquet        one registered model (one row, ENTRY_SCHEMA)
    R/tombstones/<part stem>.parquet     one removal: the part it removes (TOMBSTONE_SCHEMA)
    R/index/<time>-<nonce>.parquet       the small columns of some parts, one row each (INDEX_SCHEMA)
    R/failures/<key>.json                a model a batch add could not index, and why (`Failure`)

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

The index: opening a part costs about a millisecond whatever is read from it, which at 1,000 entries
was half of identify's time, so the small columns of every part are also kept in a few index files,
read a row group (INDEX_ROW_GROUP rows) at a time. The index is derived data and never the only copy:
an add writes its parts first, then one index file naming them; `compact` (run by an add once more
than COMPACT_AT index files exist, and by `huref registry compact`) writes one index file of every
live part and then deletes the files it replaces. A reader takes each part's row from the index when
one names it and reads the part itself otherwise, so a part whose add died before its index file was
written, an index file compacted away while being listed, and a registry with no index at all (one
written before the index existed, or pulled from the Hub) all read the same entries. Index files and
failure records are not part of what `registry push` publishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

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
INDEX = "index"
FAILURES = "failures"
MAX_MANIFEST_BYTES = 1 << 20
MAX_PART_BYTES = 1 << 26  # a part holds one model's sketch: about 3 MB (8 layers x 3 x 256² float16)
INDEX_ROW_GROUP = 64  # index rows read (and written) together: about 8 MB of small columns
MAX_INDEX_GROUP_BYTES = 1 << 28  # a row group claiming more is refused before it is read
COMPACT_AT = 16  # an add compacts the index once more index files than this exist
MAX_FAILURE_BYTES = 1 << 16

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
INDEX_SCHEMA = pa.schema([("part", pa.string()), *(ENTRY_SCHEMA.field(name) for name in SMALL_COLUMNS)])


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
    """One part file: its path, the entry it holds, and its rank among the live parts by name (the
    order ties are broken in, whichever order the index yields them in)."""

    path: Path
    entry_id: str
    rank: int = 0


class Registry:
    """A registry folder, opened (and its manifest checked) or created."""

    def __init__(self, root, create: bool = False) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if create and not manifest.exists():
            if self.root.exists() and not self.root.is_dir():
                raise HurefError(f"{self.root}: exists and is not a folder")
            if self.root.is_dir() and any(p.name not in (PARTS, TOMBSTONES, INDEX, FAILURES)
                                          and not p.name.startswith(".")  # a concurrent creator's manifest, half written
                                          for p in self.root.iterdir()):
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
        """(part, its row as a dict of `columns`, default SMALL_COLUMNS) for every live entry:
        tombstoned parts left out, and of several parts of one entry id (several adders of one model)
        the first by name. Small columns come from the index, a row group at a time, and from the
        parts the index does not name, one part at a time; any other column from the parts."""
        columns = list(dict.fromkeys(["entry_id", *(columns or SMALL_COLUMNS)]))
        removed = self.removed_parts()
        chosen: dict[str, Path] = {}  # part name -> path: the first part of each entry's key
        for path in self._names(PARTS):
            if path.name not in removed and part_stem(path.name) not in chosen:
                chosen[part_stem(path.name)] = path
        chosen = {path.name: path for path in chosen.values()}
        rank = {name: k for k, name in enumerate(sorted(chosen))}
        seen: set[str] = set()
        covered: set[str] = set()
        if all(column in INDEX_SCHEMA.names for column in columns):
            for row in self._index_rows(columns):
                name = row.pop("part")
                if name in chosen and name not in covered and row["entry_id"] not in seen:
                    covered.add(name)
                    seen.add(row["entry_id"])
                    yield Part(chosen[name], row["entry_id"], rank[name]), row
        for name in sorted(set(chosen) - covered):
            row = read_table(chosen[name], columns).to_pylist()[0]
            if row["entry_id"] not in seen:
                seen.add(row["entry_id"])
                yield Part(chosen[name], row["entry_id"], rank[name]), row

    def _index_rows(self, columns: list[str]) -> Iterator[dict]:
        """The index's rows ({"part", *columns}), one row group of one index file at a time; a file
        compacted away since the listing is passed over (its parts are then read themselves)."""
        for path in self._names(INDEX):
            try:
                with open(path, "rb") as file, pq.ParquetFile(file) as parquet:
                    check_index(parquet, path, ["part", *columns])
                    for group in range(parquet.num_row_groups):
                        yield from parquet.read_row_group(group, columns=["part", *columns], use_threads=False).to_pylist()
            except FileNotFoundError:
                continue
            except HurefError:
                raise
            except (OSError, pa.ArrowException, ValueError) as error:
                raise HurefError(f"{path}: not a readable registry index ({str(error).splitlines()[0][:160]})") from None

    def write_index(self, rows: Iterable[dict]) -> Path | None:
        """Write an index file of `rows` (INDEX_SCHEMA: a part's small columns and its name); then
        compact the index when more than COMPACT_AT files hold it. None when there are no rows."""
        rows = sorted(rows, key=lambda row: row["part"])
        if not rows:
            return None
        path = self.root / INDEX / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}.parquet"
        (self.root / INDEX).mkdir(exist_ok=True)
        write_atomically(path, index_chunks(rows[k : k + INDEX_ROW_GROUP] for k in range(0, len(rows), INDEX_ROW_GROUP)))
        if len(self._names(INDEX)) > COMPACT_AT:
            self.compact()
        return path

    def compact(self) -> int:
        """Write one index file of every live entry's small columns (what the index held, and the parts
        it did not name), then delete the index files it replaces; returns the number of entries."""
        replaced = self._names(INDEX)
        count = [0]

        def batches():
            batch = []
            for part, row in self.rows(SMALL_COLUMNS):
                batch.append(dict(row, part=part.path.name))
                count[0] += 1
                if len(batch) == INDEX_ROW_GROUP:
                    yield batch
                    batch = []
            if batch:
                yield batch

        (self.root / INDEX).mkdir(exist_ok=True)
        path = self.root / INDEX / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}.parquet"
        write_atomically(path, index_chunks(batches()))
        for old in replaced:
            try:
                old.unlink()
            except FileNotFoundError:  # a concurrent compaction removed it first
                pass
            except OSError as error:
                raise HurefError(f"{old}: cannot remove ({error.strerror or error})") from None
        return count[0]

    def has_entry(self, entry_id: str) -> bool:
        """Whether a live part holds `entry_id` (one listing of the parts; no index needed)."""
        removed, key = self.removed_parts(), part_key(entry_id)
        return any(read_table(path, ["entry_id"]).column("entry_id")[0].as_py() == entry_id
                   for path in self._names(PARTS) if path.name.startswith(key + "-") and path.name not in removed)

    def record_failure(self, failure: "Failure") -> None:
        """Record that a model could not be indexed (replacing its earlier record)."""
        (self.root / FAILURES).mkdir(exist_ok=True)
        write_atomically(self.root / FAILURES / f"{failure.key}.json",
                         (json.dumps(failure.to_json(), sort_keys=True) + "\n").encode())

    def clear_failure(self, spec: str, revision: str | None) -> None:
        """Forget the failure record of a model (it has been indexed since)."""
        try:
            (self.root / FAILURES / f"{failure_key(spec, revision)}.json").unlink()
        except FileNotFoundError:
            pass

    def failures(self) -> list["Failure"]:
        """The recorded failures, by model."""
        found = []
        for path in sorted((self.root / FAILURES).glob("*.json")) if (self.root / FAILURES).is_dir() else []:
            if path.name.startswith("."):
                continue
            try:
                if path.stat().st_size > MAX_FAILURE_BYTES:
                    raise HurefError(f"{path}: too large for a failure record")
                found.append(Failure.from_json(json.loads(path.read_text(encoding="utf-8")), path))
            except (OSError, UnicodeDecodeError, ValueError) as error:
                raise HurefError(f"{path}: not a readable failure record ({str(error)[:120]})") from None
        return sorted(found, key=lambda f: (f.spec, f.revision or ""))

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
    return hashlib.sha256(entry_id.encode()).hexdigest()[:16]


def part_stem(name: str) -> str:
    """The part of a part file's name before its nonce ("<key>-<nonce>.parquet" -> key)."""
    return name.rsplit("-", 1)[0]


def failure_key(spec: str, revision: str | None) -> str:
    return hashlib.sha256(f"{spec}@{revision or ''}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Failure:
    """A model a batch add could not index: what was asked, why (one line), whether a retry may help."""

    spec: str
    revision: str | None
    reason: str
    transient: bool
    attempts: int
    huref_version: str = huref.__version__

    @property
    def key(self) -> str:
        return failure_key(self.spec, self.revision)

    def to_json(self) -> dict:
        return {"spec": self.spec, "revision": self.revision, "reason": self.reason, "transient": self.transient,
                "attempts": self.attempts, "huref_version": self.huref_version}

    @classmethod
    def from_json(cls, data, where) -> "Failure":
        if not (isinstance(data, dict) and isinstance(data.get("spec"), str) and isinstance(data.get("reason"), str)
                and isinstance(data.get("revision"), (str, type(None))) and isinstance(data.get("transient"), bool)
                and type(data.get("attempts")) is int):
            raise ValueError("fields missing or of the wrong type")
        return cls(data["spec"], data["revision"], data["reason"][:500], data["transient"], data["attempts"],
                   str(data.get("huref_version", ""))[:40])


class _Collector:
    """A write-only file object that keeps what is written until `take`n (Parquet written in chunks)."""

    def __init__(self) -> None:
        self.pending, self.position, self.closed = [], 0, False

    def write(self, data) -> int:
        self.pending.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> list[bytes]:
        taken, self.pending = self.pending, []
        return taken


def index_chunks(batches: Iterable[list[dict]]) -> Iterator[bytes]:
    """An index file's bytes, in chunks: each batch of rows (INDEX_SCHEMA) one row group, so memory
    holds one batch whatever the registry's size."""
    sink = _Collector()
    writer = pq.ParquetWriter(sink, INDEX_SCHEMA, compression="zstd", write_statistics=False)
    for batch in batches:
        writer.write_table(pa.Table.from_pylist(batch, schema=INDEX_SCHEMA), row_group_size=INDEX_ROW_GROUP)
        yield from sink.take()
    writer.close()
    yield from sink.take()


def check_index(parquet: pq.ParquetFile, path: Path, columns: list[str]) -> None:
    """Refuse an index file whose columns are not INDEX_SCHEMA's or whose row groups are larger than
    an index writes (checked before any row group is read)."""
    stored = parquet.schema_arrow
    if any(stored.get_field_index(c) < 0 or stored.field(c).type != INDEX_SCHEMA.field(c).type for c in columns):
        raise HurefError(f"{path}: registry index of another schema (this huref reads format {FORMAT_VERSION})")
    for group in range(parquet.num_row_groups):
        meta = parquet.metadata.row_group(group)
        if meta.num_rows > 16 * INDEX_ROW_GROUP or meta.total_byte_size > MAX_INDEX_GROUP_BYTES:
            raise HurefError(f"{path}: registry index row group {group} is larger than an index holds")


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

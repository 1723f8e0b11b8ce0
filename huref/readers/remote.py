"""Files on the Hub read by byte ranges: only the bytes a reader asks for cross the network.

`HubFile` names one file of a Hub repo at a commit. The readers open it wherever they open a local
path (`huref.readers.open_regular`) and get a `RangedFile`:

- `read(n)`, the sequential reads of header parsing, fetches ahead (from READ_AHEAD, doubling up to
  MAX_READ_AHEAD) so that a safetensors or GGUF header costs one request or a few;
- `read_ranges(pieces)`, tensor rows and blocks, fetches the ranges asked: two neighbours are joined
  when the gap between them is at most MERGE_GAP bytes (a request costs more than that), and further
  gaps, smallest first, while the bytes fetched and not asked stay under EXTRA_FRACTION of the bytes
  asked; long ranges are split into CHUNK requests, and FETCH_THREADS requests run at once;
- ranges of at most CACHED_RANGE bytes (rows, not matrices) are kept, up to CACHE_BYTES, so rows read
  twice (the sketch's probe rows are the fingerprint's first ones) cross the network once.

Every request goes through huggingface_hub: its URL (`hf_hub_url`, HF_ENDPOINT), headers
(`build_hf_headers`, HF_TOKEN) and session, with its retries and backoff on timeouts, 429 and 5xx
(`http_stream_backoff`). The body is streamed straight into the reader's buffer and checked to be the
range asked (206, exactly that many bytes), so a server that ignores the range costs at most the
range's size in memory. What still fails is a `TransientError` (timeouts, 5xx, 429: a batch job
retries the model later) or a `HurefError` (a missing file, a denied gated repo, a short answer).
Every body byte received is counted in the `Transfer` shared by a model's files.

Why not HfFileSystem's file objects: their `_fetch_range` reads the whole answer into memory before
anything checks it is the range asked, copies it once more, and serves one request at a time.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from huref.errors import HurefError, TransientError

READ_AHEAD = 64 << 10
MAX_READ_AHEAD = 8 << 20
MERGE_GAP = 8 << 10
EXTRA_FRACTION = 0.05
CHUNK = 8 << 20
FETCH_THREADS = 8
CACHED_RANGE = 1 << 20
CACHE_BYTES = 128 << 20
RETRIES = 3  # huggingface_hub's backoff retries per request (0.5 s, 1 s, 2 s)
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)


@dataclass
class Transfer:
    """Bytes and requests of one model's Hub reads (thread-safe counters), beside its repo's size."""

    repo_bytes: int = 0
    fetched: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, nbytes: int, requests: int = 1) -> None:
        with self.lock:
            self.fetched += nbytes
            self.requests += requests

    def to_json(self) -> dict:
        return {"repo_bytes": self.repo_bytes, "fetched_bytes": self.fetched, "requests": self.requests}


@dataclass(frozen=True, eq=False)
class HubFile:
    """One file of a Hub repo at a commit, read by byte ranges (`open_remote`). str() names it."""

    repo_id: str
    commit: str
    filename: str
    size: int
    transfer: Transfer
    repo_type: str | None = None

    def __str__(self) -> str:
        return f"hf://{self.repo_id}@{self.commit[:12]}/{self.filename}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def open_remote(self) -> "RangedFile":
        return RangedFile(self)

    def url(self) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, self.filename, repo_type=self.repo_type, revision=self.commit)


class RangedFile:
    """A read-only file object over a `HubFile`: seek / tell / read / readinto for header parsing,
    `read_ranges` for tensor data. Not for use from several threads at once (it starts its own)."""

    def __init__(self, source: HubFile) -> None:
        self.source, self.size, self.position = source, source.size, 0
        self._ahead = (0, b"")  # (offset, bytes) fetched ahead of sequential reads
        self._ahead_size = READ_AHEAD
        self._cache: OrderedDict[int, bytes] = OrderedDict()  # offset -> bytes of a small range, oldest first
        self._cache_offsets: list[int] = []
        self._cache_bytes = 0
        self.closed = False

    # --- file-object interface (header parsing) -------------------------------------------------
    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset if whence == 0 else self.position + offset if whence == 1 else self.size + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes from the current position (the rest of the file for n < 0), fetched ahead."""
        n = self.size - self.position if n is None or n < 0 else min(n, max(0, self.size - self.position))
        start, data = self._ahead
        if not start <= self.position or self.position + n > start + len(data):
            length = min(max(n, self._ahead_size), self.size - self.position)
            buffer = bytearray(length)
            self._fetch(self.position, memoryview(buffer))
            self._ahead, start, data = (self.position, bytes(buffer)), self.position, bytes(buffer)
            self._ahead_size = min(MAX_READ_AHEAD, self._ahead_size * 2)
        out = data[self.position - start : self.position - start + n]
        self.position += len(out)
        return out

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.closed = True
        self._ahead, self._cache, self._cache_offsets, self._cache_bytes = (0, b""), OrderedDict(), [], 0

    def __enter__(self) -> "RangedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- tensor data -----------------------------------------------------------------------------
    def read_ranges(self, pieces: list[tuple[int, memoryview]]) -> None:
        """Fill each (file offset, writable byte view) of `pieces` with the file's bytes there."""
        wanted = []
        for offset, view in pieces:
            view = memoryview(view).cast("B")
            if offset < 0 or offset + len(view) > self.size:
                raise HurefError(f"{self.source}: a read past the end of the file ({offset} + {len(view)} > {self.size})")
            if len(view) and not self._from_cache(offset, view):
                wanted.append((offset, view))
        if not wanted:
            return
        requests = []  # (start, end, [(offset, view)]) per request
        for start, end, members in coalesced(wanted):
            for chunk_start in range(start, end, CHUNK):
                chunk_end = min(end, chunk_start + CHUNK)
                requests.append((chunk_start, chunk_end,
                                 [(o, v) for o, v in members if o < chunk_end and o + len(v) > chunk_start]))
        if len(requests) == 1:
            self._serve(*requests[0])
        else:
            list(fetch_pool().map(lambda r: self._serve(*r), requests))  # raises the first failure

    def _serve(self, start: int, end: int, members: list[tuple[int, memoryview]]) -> None:
        """Fetch [start, end) and copy the parts of it the member pieces want; keep it when small."""
        exact = len(members) == 1 and members[0][0] == start and len(members[0][1]) == end - start
        buffer = members[0][1] if exact else memoryview(bytearray(end - start))
        self._fetch(start, buffer)
        if not exact:
            for offset, view in members:
                lo, hi = max(offset, start), min(offset + len(view), end)
                view[lo - offset : hi - offset] = buffer[lo - start : hi - start]
        if end - start <= CACHED_RANGE:
            self._keep(start, bytes(buffer))

    def _from_cache(self, offset: int, view: memoryview) -> bool:
        """Fill `view` from a kept range that holds all of it; False when none does."""
        k = bisect.bisect_right(self._cache_offsets, offset) - 1
        if k < 0:
            return False
        start = self._cache_offsets[k]
        data = self._cache.get(start)
        if data is None or offset + len(view) > start + len(data):
            return False
        view[:] = data[offset - start : offset - start + len(view)]
        return True

    def _keep(self, start: int, data: bytes) -> None:
        with _cache_lock:
            if start in self._cache:
                return
            self._cache[start] = data
            bisect.insort(self._cache_offsets, start)
            self._cache_bytes += len(data)
            while self._cache_bytes > CACHE_BYTES:
                oldest, dropped = self._cache.popitem(last=False)
                self._cache_offsets.remove(oldest)
                self._cache_bytes -= len(dropped)

    def _fetch(self, start: int, buffer: memoryview) -> None:
        """Fill `buffer` with the file's bytes [start, start + len(buffer)): one ranged GET."""
        fetch_range(self.source, start, buffer)


_cache_lock = threading.Lock()


def coalesced(pieces: list[tuple[int, memoryview]]) -> list[tuple[int, int, list[tuple[int, memoryview]]]]:
    """Group (offset, view) pieces into ranges to fetch: [(start, end, members)], by offset. Gaps of at
    most MERGE_GAP bytes are always joined; larger ones, smallest first, while the joined gaps stay
    under EXTRA_FRACTION of the bytes asked."""
    pieces = sorted(pieces, key=lambda p: p[0])
    spans = []  # [start, end, members]
    for offset, view in pieces:
        if spans and offset <= spans[-1][1]:  # overlapping or touching
            spans[-1][1] = max(spans[-1][1], offset + len(view))
            spans[-1][2].append((offset, view))
        else:
            spans.append([offset, offset + len(view), [(offset, view)]])
    asked = sum(len(v) for _, v in pieces)
    gaps = sorted(range(len(spans) - 1), key=lambda k: spans[k + 1][0] - spans[k][1])
    join, budget = set(), EXTRA_FRACTION * asked
    for k in gaps:
        gap = spans[k + 1][0] - spans[k][1]
        if gap > MERGE_GAP and gap > budget:
            break
        join.add(k)
        if gap > MERGE_GAP:
            budget -= gap
    ranges = []
    for k, span in enumerate(spans):
        if k - 1 in join:
            ranges[-1][1] = span[1]
            ranges[-1][2].extend(span[2])
        else:
            ranges.append([span[0], span[1], list(span[2])])
    return [tuple(r) for r in ranges]


def fetch_range(source: HubFile, start: int, buffer: memoryview) -> None:
    """One ranged GET of `source`'s bytes [start, start + len(buffer)) into `buffer`, through
    huggingface_hub (retries with backoff on timeouts, 429 and 5xx); counted in its Transfer."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, http_stream_backoff

    end = start + len(buffer)
    headers = {**build_hf_headers(), "Range": f"bytes={start}-{end - 1}"}
    broken = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
    received, failure = 0, None
    try:
        with http_stream_backoff("GET", source.url(), headers=headers, max_retries=RETRIES, base_wait_time=0.5,
                                 max_wait_time=2, timeout=_timeout()) as response:
            status = response.status_code
            if status != 206 and not (status == 200 and start == 0 and end == source.size):
                _refuse(source, status)
            try:  # a failure mid-body is kept, not thrown into huggingface_hub's retry generator
                for block in response.iter_bytes():
                    if received + len(block) > len(buffer):
                        raise HurefError(f"{source}: the server sent more than the {len(buffer)} bytes asked")
                    buffer[received : received + len(block)] = block
                    received += len(block)
            except broken as error:
                failure = error
    except broken as error:
        failure = error
    except HfHubHTTPError as error:
        _refuse(source, error.response.status_code if error.response is not None else 0)
    finally:
        source.transfer.add(received)
    if failure is not None:
        raise TransientError(f"{source}: Hub read failed ({type(failure).__name__}: {str(failure)[:120]})")
    if received != len(buffer):
        raise TransientError(f"{source}: the server sent {received} of the {len(buffer)} bytes asked")


def _refuse(source: HubFile, status: int) -> None:
    """Raise the error an unexpected answer to a ranged GET means."""
    if status in TRANSIENT_STATUS:
        raise TransientError(f"{source}: the Hub answered {status} (after retries)")
    if status in (401, 403):
        raise HurefError(f"{source}: access denied ({status}; a gated or private repo needs HF_TOKEN with access)")
    if status == 404:
        raise HurefError(f"{source}: not found on the Hub (404)")
    if status == 200:
        raise HurefError(f"{source}: the server ignored the byte range asked (200 instead of 206)")
    raise HurefError(f"{source}: the Hub answered {status} to a ranged read")


def _timeout() -> float:
    from huggingface_hub import constants

    return float(constants.HF_HUB_DOWNLOAD_TIMEOUT)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def fetch_pool() -> ThreadPoolExecutor:
    """The threads that run ranged requests at once (one pool per process)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="huref-fetch")
        return _pool


def _forget_pool_in_child() -> None:
    global _pool
    _pool = None  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_pool_in_child)

"""`huref registry add` as a batch job: one task per model, run in this process, a local process pool
or as Ray tasks on an existing cluster; the same task function (`index_model`) in all three.

A task opens its model (for a Hub model: the small files into the HF cache, the weights read by byte
ranges), works out its entry id, skips it when the registry already holds it, computes the entry
(fingerprint and sketch, each layer read once: `huref.registry.entries.build_entry`) and writes its
part. It returns an `Outcome`: what happened, the index row of the part it wrote, and what it cost
(CPU seconds, bytes fetched, peak memory of its process). Failures never escape a task: one that may
pass (a Hub timeout, a 5xx: `TransientError`) is tried again after a backoff, up to ATTEMPTS times;
any other (an unsupported architecture, a gated repo, a bad file) is returned with its one-line
reason at once. The driver (`run`) records failures in the registry (`failures/`, shown by
`registry list`), writes the index rows of the parts added (INDEX_FLUSH at a time), and reports
progress with counts, bytes and an ETA.

Memory per task: huref reads one layer at a time whatever the model's size, and the fingerprint's
terms are bounded by their token count (`huref.invariants.check_memory`); a pool worker runs one task
at a time. The registry folder must be one every worker can write (this machine's disk, or a shared
filesystem on a cluster): tasks write their parts themselves, so results stay small.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from huref.errors import HurefError, TransientError

ATTEMPTS = 3
BACKOFF_SECONDS = 2.0  # before the second attempt; doubled before each later one
INDEX_FLUSH = 64
REVISION = re.compile(r"^(?P<spec>[A-Za-z0-9][\w.\-]*/[\w.\-]+(?::[\w.\-/]+)?)@(?P<revision>[\w.\-/]+)$")


@dataclass(frozen=True)
class Task:
    """One model to index into the registry folder `registry`."""

    spec: str  # a local path, or a Hub id (ORG/NAME, ORG/NAME:FILE)
    revision: str | None
    registry: str
    name: str | None = None
    bases: tuple[str, ...] = ()
    threads: int = 1  # torch's intra-op threads in the task


@dataclass
class Outcome:
    """What one task did ("added", "skipped" or "failed") and what it cost."""

    spec: str
    revision: str | None
    status: str
    entry_id: str | None = None
    name: str | None = None
    part: str | None = None
    reason: str | None = None
    transient: bool = False
    attempts: int = 1
    retried: list[str] = field(default_factory=list)  # the transient failures of the attempts before the last
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    fetched_bytes: int = 0
    repo_bytes: int | None = None
    requests: int = 0
    peak_rss_mib: float = 0.0
    index_row: dict | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "index_row"}


def parse_list(text: str, where: str) -> list[tuple[str, str | None]]:
    """(spec, revision) of each line of a model list: `ORG/NAME`, `ORG/NAME@REVISION`, `ORG/NAME:FILE`
    (one GGUF model of a repo), or a local path; blank lines and lines from `#` on are skipped, and a
    model listed twice is taken once."""
    specs, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if any(c in line for c in "\0\r\t"):
            raise HurefError(f"{where}:{number}: not a model name or path")
        pinned = REVISION.match(line)
        item = (pinned["spec"], pinned["revision"]) if pinned and not os.path.exists(line) else (line, None)
        if item not in seen:
            seen.add(item)
            specs.append(item)
    return specs


def index_model(task: Task) -> Outcome:
    """Index one model (see the module's docstring); never raises for the model's own failure."""
    start, cpu = time.monotonic(), time.process_time()
    outcome = Outcome(task.spec, task.revision, "failed")
    for attempt in range(1, ATTEMPTS + 1):
        outcome.attempts = attempt
        try:
            _index(task, outcome)
            outcome.reason, outcome.transient = None, False
            break
        except TransientError as error:
            outcome.status, outcome.reason, outcome.transient = "failed", one_line(error), True
            if attempt < ATTEMPTS:
                outcome.retried.append(outcome.reason)
                time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
        except HurefError as error:
            outcome.status, outcome.reason, outcome.transient = "failed", one_line(error), False
            break
        except MemoryError:
            outcome.status, outcome.reason = "failed", "out of memory"
            break
        except Exception as error:  # a bug: recorded like any failure, so the rest of the batch goes on
            outcome.status, outcome.reason = "failed", f"internal error: {type(error).__name__}: {one_line(error)}"
            break
    outcome.cpu_seconds = time.process_time() - cpu
    outcome.wall_seconds = time.monotonic() - start
    outcome.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return outcome


def _index(task: Task, outcome: Outcome) -> None:
    import torch

    from huref.registry.entries import build_entry, identity
    from huref.registry.format import Registry
    from huref.sources import load_model

    torch.set_num_threads(max(1, task.threads))
    registry = Registry(task.registry)
    model = load_model(task.spec, task.revision)
    try:
        transfer = model.hub.transfer if model.hub is not None else None
        known = identity(model)
        outcome.entry_id = known["entry_id"]
        if registry.has_entry(outcome.entry_id):
            outcome.status = "skipped"
        else:
            row = build_entry(model, task.name, task.bases, known_identity=known)
            path = registry.add(row)
            outcome.status, outcome.name, outcome.part = "added", row["name"], path.name
            outcome.index_row = {"part": path.name, **{k: v for k, v in row.items() if k != "sketch"}}
    finally:
        model.reader.close()
    if transfer is not None:
        outcome.fetched_bytes, outcome.repo_bytes, outcome.requests = transfer.fetched, transfer.repo_bytes, transfer.requests


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:500] if text else type(error).__name__


def said_of(spec: str, reason: str) -> str:
    """`SPEC: REASON`, the spec once (most reasons already start with it)."""
    return reason if reason.startswith(spec) else f"{spec}: {reason}"


# --- engines -------------------------------------------------------------------------------------

def run_inline(tasks: list[Task], done: Callable[[Outcome], None]) -> None:
    """Each task in this process, one after another."""
    for task in tasks:
        done(index_model(task))


def run_local(tasks: list[Task], jobs: int, done: Callable[[Outcome], None]) -> None:
    """The tasks on a pool of `jobs` worker processes (spawned: no threads or torch state inherited),
    at most 2 * jobs in flight; a worker that dies (killed for memory) fails its task, not the job."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = list(reversed(tasks))
    while pending:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            flying = {}
            try:
                while pending or flying:
                    while pending and len(flying) < 2 * jobs:
                        task = pending.pop()
                        flying[pool.submit(index_model, task)] = task
                    finished, _ = wait(flying, return_when=FIRST_COMPLETED)
                    for future in finished:
                        task = flying.pop(future)
                        done(future.result())
            except BrokenProcessPool:
                for future, task in flying.items():
                    if future.done() and not future.exception():
                        done(future.result())
                    else:
                        done(Outcome(task.spec, task.revision, "failed",
                                     reason="its worker process died (killed for memory?)"))


def run_ray(tasks: list[Task], address: str | None, done: Callable[[Outcome], None]) -> None:
    """The tasks as Ray tasks (`index_model` itself, one CPU each) on the cluster at `address` (default:
    the one `ray start --head` started on this machine, or RAY_ADDRESS); "local" starts a private Ray
    instance for this job. At most twice the cluster's CPUs are in flight."""
    try:
        import ray
    except ImportError:
        raise HurefError("--engine ray needs Ray: pip install 'huref[cluster]'") from None
    try:
        if address == "local":  # this machine only: on the loopback address
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False,
                     _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address or "auto", log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise HurefError(f"no Ray cluster at {address or 'auto'} ({one_line(error)[:160]}); start one with "
                         "`ray start --head`, or give --address HOST:PORT") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(index_model)
        width = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending, flying = list(reversed(tasks)), {}
        while pending or flying:
            while pending and len(flying) < width:
                task = pending.pop()
                flying[remote.remote(task)] = task
            finished, _ = ray.wait(list(flying), num_returns=1)
            for ref in finished:
                task = flying.pop(ref)
                try:
                    done(ray.get(ref))
                except ray.exceptions.RayError as error:  # the worker died, the node was lost
                    done(Outcome(task.spec, task.revision, "failed", transient=True,
                                 reason=f"Ray task failed ({type(error).__name__})"))
    finally:
        ray.shutdown()


# --- the driver ----------------------------------------------------------------------------------

class JobProgress:
    """`registry add [####----] 37/200  added 30  skipped 5  failed 2  1.2 GB  ETA 3m10s` on stderr,
    on a terminal and unless quiet."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and sys.stderr.isatty()
        self.counts = {"added": 0, "skipped": 0, "failed": 0}
        self.fetched, self.start = 0, time.monotonic()

    def update(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        self.fetched += outcome.fetched_bytes
        if not self.enabled:
            return
        done = sum(self.counts.values())
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (self.total - done) if done else 0
        bar = "#" * (20 * done // max(1, self.total))
        line = (f"registry add [{bar:-<20}] {done}/{self.total}  added {self.counts['added']}  skipped "
                f"{self.counts['skipped']}  failed {self.counts['failed']}  {self.fetched / 1e9:.2f} GB  "
                f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s")
        sys.stderr.write(f"\r\033[K{line[:79]}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def run(registry, items: Iterable[tuple[str, str | None]], engine: str = "inline", jobs: int = 1,
        address: str | None = None, name: str | None = None, bases: tuple[str, ...] = (),
        report: Callable[[Outcome], None] | None = None, quiet: bool = False) -> list[Outcome]:
    """Index every (spec, revision) of `items` into `registry` (a `Registry` folder) with `engine`
    ("inline", "local" or "ray"); returns the outcomes, in the order they finished. A Hub model pinned
    to a commit the registry holds is skipped without a task; failures are recorded in the registry
    (and a model indexed now has its old failure record removed); the index rows of the parts added are
    written INDEX_FLUSH at a time and at the end."""
    known = registry.entry_ids()
    tasks, outcomes, rows = [], [], []
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if engine != "ray" else 1
    for spec, revision in items:
        pinned = revision if revision and re.fullmatch(r"[0-9a-f]{40}", revision) else None
        if pinned and ":" not in spec and f"hub:{spec}@{pinned}" in known:
            outcomes.append(Outcome(spec, revision, "skipped", entry_id=f"hub:{spec}@{pinned}", attempts=0))
            continue
        tasks.append(Task(spec, revision, str(registry.root), name, tuple(bases), threads))
    progress = JobProgress(len(tasks) + len(outcomes), not quiet)
    for outcome in outcomes:
        progress.update(outcome)
        if report:
            report(outcome)

    def done(outcome: Outcome) -> None:
        from huref.registry.format import Failure

        outcomes.append(outcome)
        progress.update(outcome)
        if outcome.status == "failed":
            registry.record_failure(Failure(outcome.spec, outcome.revision, outcome.reason or "failed",
                                            outcome.transient, outcome.attempts))
        else:
            registry.clear_failure(outcome.spec, outcome.revision)
        if outcome.index_row is not None:
            rows.append(outcome.index_row)
            outcome.index_row = None
            if len(rows) >= INDEX_FLUSH:
                registry.write_index(rows)
                rows.clear()
        if report:
            report(outcome)

    try:
        if engine == "ray":
            run_ray(tasks, address, done)
        elif engine == "local" and jobs > 1:
            run_local(tasks, jobs, done)
        else:
            run_inline(tasks, done)
    finally:
        registry.write_index(rows)
        progress.close()
    return outcomes

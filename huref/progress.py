"""Progress on stderr for long work: a one-line bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
import time


WIDTH = 79  # characters a progress line may take (an 80-column terminal)


class Progress:
    """Report named steps of a job of `total` steps as `[###---] 2/5 step (3.1s)` on stderr.

    Silent when `enabled` is False or stderr is not a terminal.
    """

    def __init__(self, title: str, total: int, enabled: bool = True) -> None:
        self.title, self.total, self.done = title, max(1, total), 0
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.monotonic()

    def step(self, name: str) -> None:
        """Mark the start of the next step."""
        if self.enabled:
            width = 20
            filled = width * self.done // self.total
            bar = "#" * filled + "-" * (width - filled)
            elapsed = time.monotonic() - self.start
            line = f"{self.title} [{bar}] {self.done}/{self.total} {name} ({elapsed:.1f}s)"
            if len(line) > WIDTH:  # one terminal line: the step name gives way
                line = line[: WIDTH - 3] + "..."
            sys.stderr.write(f"\r\033[K{line}")
            sys.stderr.flush()
        self.done = min(self.total, self.done + 1)

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class ByteProgress:
    """A one-line byte counter for a download, `[####....]  42%  12.3 / 29.2 MB` on stderr: call it
    with (done_bytes, total_bytes or None). Silent when `enabled` is False or stderr is not a terminal."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.shown = None  # the percentage on screen ("" once a byte count without a total is)

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if total:
            percent = 100 * done // total
            if percent == self.shown:
                return
            self.shown = percent
            bar = "#" * (percent * 30 // 100) + "." * (30 - percent * 30 // 100)
            sys.stderr.write(f"\r  [{bar}] {percent:3d}%  {done / 1e6:,.1f} / {total / 1e6:,.1f} MB")
        else:
            self.shown = ""
            sys.stderr.write(f"\r  {done / 1e6:,.1f} MB")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.shown is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()

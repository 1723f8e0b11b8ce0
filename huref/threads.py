"""torch's intra-op threads, set for one block of work."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    """torch on one intra-op thread inside the block (the count restored after): for chains of small
    operations, where forking and joining threads for each costs more than it gives (on a loaded
    machine, many times more: every join waits for a descheduled thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

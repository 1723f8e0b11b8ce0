"""A checkpoint split over several files, opened lazily: a shard is opened (and, for a hub model,
downloaded) only when one of its tensors is read."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from huref.errors import HurefError
from huref.readers import TensorReader


class ShardedReader(TensorReader):
    """Route each tensor name to the shard that holds it.

    `weight_map` maps tensor names to shard file names (as in `*.index.json`); `open_shard(file)`
    returns a reader for one shard. Shapes of tensors in unopened shards are asked of the shard,
    which opens it: only the engine's own reads ask for shapes, so only needed shards open.
    """

    def __init__(self, weight_map: dict[str, str], open_shard: Callable[[str], TensorReader]) -> None:
        super().__init__()
        self.weight_map = weight_map
        self.open_shard = open_shard
        self.shards: dict[str, TensorReader] = {}

    def _shard(self, name: str) -> TensorReader:
        file = self.weight_map[name]
        if file not in self.shards:
            self.shards[file] = self.open_shard(file)
        shard = self.shards[file]
        if not shard.has(name):
            raise HurefError(f"tensor '{name}' is listed in the index but missing from shard {file}")
        return shard

    def names(self) -> list[str]:
        return list(self.weight_map)

    def has(self, name: str) -> bool:
        return name in self.weight_map

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shard(name).shape(name)

    def _read(self, name: str, rows: Sequence[int] | slice | None, dtype: torch.dtype = torch.float32):
        return self._shard(name)._read(name, rows, dtype)

    def prefetch(self, name: str) -> None:
        self._shard(name).prefetch(name)

    def close(self) -> None:
        for shard in self.shards.values():
            shard.close()

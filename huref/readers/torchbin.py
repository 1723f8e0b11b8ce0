"""Reader for PyTorch `pytorch_model*.bin` files, loaded with `weights_only=True` and mmap.

`weights_only=True` restricts unpickling to tensors and plain containers, so no code stored in
the file can run; `mmap=True` leaves the data on disk until a tensor is touched.
"""

from __future__ import annotations

import pickle
import zipfile
from typing import Sequence

import numpy as np
import torch

from huref.errors import HurefError
from huref.readers import TensorReader, as_row_index


class TorchBinReader(TensorReader):
    """Reader for one pytorch_model*.bin state dict."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise HurefError(f"{path}: not a loadable weights-only PyTorch checkpoint ({first})") from None
        except OSError as e:
            raise HurefError(f"{path}: cannot read ({e.strerror})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise HurefError(f"{path}: not a state dict of tensors")
        self.state = state

    def names(self) -> list[str]:
        return list(self.state)

    def has(self, name: str) -> bool:
        return name in self.state

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.state[name].shape)

    def _read(self, name: str, rows: Sequence[int] | slice | None):
        tensor = self.state[name]
        if rows is not None:
            matrix = tensor.reshape(-1, tensor.shape[-1] if tensor.dim() else 1)
            index = as_row_index(rows, matrix.shape[0])
            tensor = matrix[index] if isinstance(index, slice) else matrix[torch.from_numpy(index)]
        tensor = tensor.contiguous()
        raw = tensor.view(torch.uint8).numpy() if tensor.dtype != torch.bool else tensor.numpy()
        return tensor.clone(), memoryview(np.ascontiguousarray(raw)).cast("B")

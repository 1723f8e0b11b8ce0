"""Reader for PyTorch `pytorch_model*.bin` files, loaded with `weights_only=True` (and mmap for the
zip format).

`weights_only=True` restricts unpickling to tensors and plain containers, so no code stored in
the file can run; `mmap=True` leaves the data of a zip-format file (torch >= 1.6) on disk until a
tensor is touched. The legacy format (one pickle stream, `_use_new_zipfile_serialization=False`)
cannot be mapped and is read into memory. Every tensor must be backed by its storage's bytes
(`check_backed`): a stride-0 tensor declaring 2^28 rows over one stored number is refused.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from typing import Sequence

import numpy as np
import torch

from huref.errors import HurefError
from huref.readers import TensorReader, as_row_index, check_backed, open_regular


class TorchBinReader(TensorReader):
    """Reader for one pytorch_model*.bin state dict."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        with open_regular(path) as f:  # a FIFO or device is refused, not waited on
            size = os.fstat(f.fileno()).st_size
        try:
            with warnings.catch_warnings():  # torch warns of pickle protocols it did not write: the one line is ours
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise HurefError(f"{path}: not a loadable weights-only PyTorch checkpoint ({first})") from None
        except OSError as e:
            raise HurefError(f"{path}: cannot read ({e.strerror})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise HurefError(f"{path}: not a state dict of tensors")
        for name, tensor in state.items():
            check_backed(path, name, tensor.shape, tensor.numel() * tensor.element_size(),
                         tensor.untyped_storage().nbytes() - tensor.storage_offset() * tensor.element_size(), size)
        self.state = state

    def names(self) -> list[str]:
        return list(self.state)

    def has(self, name: str) -> bool:
        return name in self.state

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.state[name].shape)

    def _read(self, name: str, rows: Sequence[int] | slice | None, dtype: torch.dtype = torch.float32):
        tensor = self.state[name]
        if rows is not None:
            matrix = tensor.reshape(-1, tensor.shape[-1] if tensor.dim() else 1)
            index = as_row_index(rows, matrix.shape[0])
            tensor = matrix[index] if isinstance(index, slice) else matrix[torch.from_numpy(index)]
        tensor = tensor.contiguous()
        raw = tensor.view(torch.uint8).numpy() if tensor.dtype != torch.bool else tensor.numpy()
        return tensor.clone(), memoryview(np.ascontiguousarray(raw)).cast("B")

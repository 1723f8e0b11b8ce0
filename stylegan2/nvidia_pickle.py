"""Read NVIDIA stylegan2-ada-pytorch network pickles (*.pkl) without running anything from the file.

NVIDIA's pickles are a dict {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}. Each network is a
`torch_utils.persistence` record: a call of `_reconstruct_persistent_obj(meta)` where meta holds the
Python source of the module that defined the class, the class name, and the object's state (the
nn.Module __dict__: `_parameters`, `_buffers`, `_modules` of further records, `_init_kwargs`, ...).
Unpickling it normally would exec that source. Here a restricted unpickler maps the handful of globals
such a file legitimately names to inert rebuilders (records become plain `PersistentRecord` data,
tensors are rebuilt from their bytes with torch's weights-only loader) and refuses every other global
with one GeneratorError line, so nothing named by the file is ever imported or called.
The G_ema record then becomes our Generator: built from its stored kwargs, loaded with its tensors.
"""

import hashlib
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checks import check_pickle, open_regular
from .errors import GeneratorError
from .networks import Generator
from .weights import build_generator


@dataclass
class PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` would have rebuilt, kept as data: the class name,
    the object's state dict, and the SHA-256 of the module source it carried (never executed)."""

    class_name: str
    state: dict
    module_src_sha256: str

    def __setstate__(self, state):
        raise pickle.UnpicklingError("unexpected state update of a persistent record")


class EasyDict(dict):
    """Stands in for dnnlib.util.EasyDict (a dict with attribute access) inside the pickle."""


class NumpyDtypeName:
    """Stands in for numpy.dtype while unpickling: only the type code and byte order are kept."""

    ALLOWED = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}

    def __init__(self, code, align=False, copy=False):
        if code not in self.ALLOWED:
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not a plain number type")
        self.code = code
        self.byteorder = "<"

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")):
            raise pickle.UnpicklingError("unexpected numpy dtype state")
        self.byteorder = "<" if state[1] in ("|", "=") else state[1]


def _numpy_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar(dtype, bytes) -> the Python number those bytes hold."""
    if not isinstance(dtype, NumpyDtypeName) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("unexpected numpy scalar")
    return np.frombuffer(data, dtype=np.dtype(dtype.byteorder + dtype.code), count=1)[0].item()


# bytes per element of the storage classes a legacy torch.save names (unknown names count 8)
STORAGE_ITEMSIZE = {"UntypedStorage": 1, "ByteStorage": 1, "CharStorage": 1, "BoolStorage": 1, "HalfStorage": 2,
                    "BFloat16Storage": 2, "ShortStorage": 2, "FloatStorage": 4, "IntStorage": 4}


class _Inert:
    """What a scanned pickle's globals and calls become: nothing is looked up or run."""

    def __init__(self, *args, name=""):
        self.name = name

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass


class _StorageScan(pickle.Unpickler):
    """Unpickles one record of a legacy torch.save stream inertly, collecting its storage ids."""

    def __init__(self, f):
        super().__init__(f)
        self.storages = {}

    def find_class(self, module, name):
        return _Inert(name=name)

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            kind = getattr(pid[1], "name", "")
            self.storages[str(pid[2])] = (pid[4], STORAGE_ITEMSIZE.get(kind, 8))
        return _Inert()


def declared_storage_bytes(data: bytes) -> int:
    """Bytes the storages of a legacy torch.save stream declare (read without allocating them);
    0 for the zip format, whose records are sized by the bytes they hold."""
    if data[:4] == b"PK\x03\x04":
        return 0
    stream = io.BytesIO(data)
    scan = _StorageScan(stream)
    for _ in range(4):  # magic number, protocol version, system info, then the object itself
        check_pickle(stream)
        scan.load()
    sizes = scan.storages.values()
    if not all(type(n) is int and n >= 0 for n, _ in sizes):
        raise pickle.UnpicklingError("storage with a malformed size")
    return sum(n * itemsize for n, itemsize in sizes)


def _load_storage_bytes(data):
    """torch.storage._load_from_bytes(bytes): a storage saved by torch.save, read weights-only, once
    the sizes it declares are found to fit in its bytes (nothing larger is ever allocated)."""
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("storage payload is not bytes")
    declared = declared_storage_bytes(data)
    if declared > len(data):
        raise pickle.UnpicklingError(f"a storage declares {declared} bytes but holds {len(data)}")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, AssertionError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
        raise pickle.UnpicklingError(f"unreadable storage ({type(e).__name__})") from None
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError("storage payload did not hold a storage")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2: a tensor viewing `storage` (copied out, gradient-free). Its
    elements must fit in the storage (a stride-0 tensor repeating one number 2^28 times is refused)."""
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError("tensor without a storage")
    if not (type(storage_offset) is int and storage_offset >= 0 and isinstance(size, (tuple, list))
            and isinstance(stride, (tuple, list)) and len(size) == len(stride)
            and all(type(v) is int and v >= 0 for v in (*size, *stride))):
        raise pickle.UnpicklingError("tensor with a malformed size, stride or offset")
    t = torch.empty((0,), dtype=storage.dtype)
    t.set_(storage, storage_offset, tuple(size), tuple(stride))  # refuses a view reaching past the storage
    if t.numel() * t.element_size() > t.untyped_storage().nbytes():
        raise pickle.UnpicklingError(f"tensor of shape {tuple(size)} has more elements than its storage holds")
    return t.clone()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): parameters come back as plain tensors."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter without tensor data")
    return data


def _persistent_record(meta):
    """torch_utils.persistence._reconstruct_persistent_obj(meta), as a record; the source is only hashed."""
    if (not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict)
            or not isinstance(meta.get("module_src", ""), str) or not isinstance(meta.get("class_name"), str)):
        raise pickle.UnpicklingError("malformed persistent object")
    return PersistentRecord(meta["class_name"], meta["state"],
                            hashlib.sha256(meta.get("module_src", "").encode()).hexdigest())


ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("numpy", "dtype"): NumpyDtypeName,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle named a global outside ALLOWED_GLOBALS."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable callables are the inert rebuilders in ALLOWED_GLOBALS."""

    def find_class(self, module, name):
        rebuild = ALLOWED_GLOBALS.get((module, name))
        if rebuild is None:
            raise RefusedGlobal(f"{module}.{name}")
        return rebuild

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not used by network pickles")


def read_network_pickle(path) -> object:
    """Unpickle path with RestrictedUnpickler; raises GeneratorError naming the first refused global."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            check_pickle(f)
            return RestrictedUnpickler(f).load()
    except RefusedGlobal as e:
        hint = " (a TensorFlow-era pickle, not supported)" if str(e).startswith("dnnlib.tflib") else ""
        raise GeneratorError(f"{path}: refused to load: the pickle asks for {e}, which is not a tensor, container "
                         f"or StyleGAN2 network record{hint}; nothing from the file was run") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, RuntimeError,
            KeyError, RecursionError, MemoryError, OverflowError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise GeneratorError(f"{path}: not a readable network pickle ({type(e).__name__}: {first})") from None


MAX_KWARGS_NODES = 10_000  # values in a network's stored kwargs (NVIDIA's hold about 20)


def plain(value, budget: list[int] | None = None):
    """EasyDicts and OrderedDicts inside stored kwargs -> plain dicts (recursively). A pickle can
    make a small file stand for a huge tree (one list referenced twice at every level), so at most
    MAX_KWARGS_NODES values are copied before GeneratorError."""
    budget = [MAX_KWARGS_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise GeneratorError(f"the stored generator kwargs hold more than {MAX_KWARGS_NODES} values")
    if isinstance(value, dict):
        return {k: plain(v, budget) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, budget) for v in value)
    return value


MAX_MODULES = 10_000  # records in a network's module tree (NVIDIA's generators have a few hundred)


def record_tensors(record: PersistentRecord, prefix: str = "", budget: list[int] | None = None) -> dict:
    """Flatten a record tree into a state_dict: parameters, persistent buffers, then sub-modules.
    At most MAX_MODULES records are visited (a pickle can reference one record from many places)."""
    budget = [MAX_MODULES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise GeneratorError(f"the generator holds more than {MAX_MODULES} module records")
    state = record.state
    for kind in ("_parameters", "_buffers", "_modules"):
        if not isinstance(state.get(kind) or {}, dict):
            raise GeneratorError(f"{prefix or 'the generator'}: {kind} is not a mapping")
    skip = set(state.get("_non_persistent_buffers_set") or ())
    tensors = {}
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if t is not None and name not in skip:
                if not isinstance(t, torch.Tensor):
                    raise GeneratorError(f"{prefix}{name} is not a tensor")
                tensors[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            tensors.update(record_tensors(child, f"{prefix}{name}.", budget))
        elif child is not None:
            raise GeneratorError(f"sub-module {prefix}{name} is not a network record")
    return tensors


def load_nvidia_pickle(path, key: str = "G_ema") -> tuple[Generator, dict]:
    """NVIDIA network pickle -> (our Generator with its G_ema weights, info dict with kwargs and provenance)."""
    data = read_network_pickle(path)
    record = data.get(key) if isinstance(data, dict) else data
    if not isinstance(record, PersistentRecord) or record.class_name != "Generator":
        raise GeneratorError(f"{path}: no {key} generator record in this pickle")
    if record.state.get("_init_args"):
        raise GeneratorError(f"{path}: the generator was built with positional arguments; only keyword arguments are supported")
    try:
        init_kwargs = plain(record.state.get("_init_kwargs") or {})
        tensors = record_tensors(record)
    except (GeneratorError, RecursionError, TypeError) as e:
        raise GeneratorError(f"{path}: malformed generator record ({e or type(e).__name__})") from None
    G = build_generator(init_kwargs, tensors, path)
    info = {"source": Path(path).name, "network": key, "init_kwargs": init_kwargs,
            "module_src_sha256": record.module_src_sha256}
    return G, info

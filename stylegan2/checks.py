"""What a generator file may declare, checked before anything is built or read.

`check_kwargs(init_kwargs)` settles the types and ranges of the Generator's keyword arguments (a
file can hold any JSON or pickle value there); `open_regular(path)` opens a file without waiting
on a FIFO or device planted at its name. Both raise GeneratorError with one line.
`check_pickle(file)` walks a pickle's opcodes before an unpickler allocates what they declare.
"""

import math
import os
import pickle
import pickletools
import stat

from .errors import GeneratorError

MAX_WIDTH = 1 << 14  # z, w, label and channel widths (NVIDIA's networks use at most 512)
MAX_RESOLUTION = 1 << 13  # 8192 x 8192 pixels
MAX_MAPPING_LAYERS = 64  # NVIDIA's mapping networks have 2 to 8
MAX_FILTER_TAPS = 16  # the resampling filter is [1, 3, 3, 1]


def open_regular(path):
    """Open path for binary reading; GeneratorError when it is not a regular file (checked on the
    descriptor, opened without blocking) or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise GeneratorError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise GeneratorError(f"{path}: not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _Bounded:
    """A binary file as pickletools reads it, each counted read refused when it asks for more bytes
    than the file has left (pickletools would ask for them whole)."""

    def __init__(self, file, size: int) -> None:
        self.file, self.size = file, size

    def read(self, n: int) -> bytes:
        left = self.size - self.file.tell()
        if n > left:
            raise pickle.UnpicklingError(f"the pickle declares {n} bytes where {left} remain")
        return self.file.read(n)

    def readline(self) -> bytes:
        return self.file.readline()


def check_pickle(file) -> None:
    """Walk the opcodes of the pickle at `file`'s position (binary, seekable; left where it was)
    without building anything, and raise pickle.UnpicklingError when an opcode declares more
    bytes than follow (BINBYTES8, BINUNICODE8, ...) or stores into a memo slot beyond the values
    memoized so far (Python's and torch's picklers number them 0, 1, 2, ...): the C unpickler
    would allocate either before finding out (a memo index of 2^26 grows its memo table to 1 GiB)."""
    start = file.tell()
    size = file.seek(0, os.SEEK_END)
    file.seek(start)
    memoized = 0
    for opcode, argument, _ in pickletools.genops(_Bounded(file, size)):
        if opcode.name == "MEMOIZE":
            memoized += 1
        elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if argument > memoized:
                raise pickle.UnpicklingError(f"memo slot {argument} beyond the {memoized} values stored so far")
            memoized = max(memoized, argument + 1)
    file.seek(start)


def _integer(value, low, high) -> bool:
    return type(value) is int and low <= value <= high


def _number(value, low=-math.inf) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= low


def _fail(key, value, wanted):
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise GeneratorError(f"generator setting {key} is {shown}, not {wanted}")


def check_kwargs(kwargs) -> None:
    """Check a Generator's init_kwargs (NVIDIA's names) before it is built: widths and counts are
    integers in range, the resolution a power of two, every channel count at least 1, numbers
    finite. Keys not listed here are left to the constructor, which refuses unknown ones."""
    if not isinstance(kwargs, dict):
        _fail("init_kwargs", kwargs, "an object")
    for key, low in (("z_dim", 1), ("w_dim", 1), ("c_dim", 0)):
        if not _integer(kwargs.get(key), low, MAX_WIDTH):
            _fail(key, kwargs.get(key), f"an integer in [{low}, {MAX_WIDTH}]")
    resolution = kwargs.get("img_resolution")
    if not _integer(resolution, 4, MAX_RESOLUTION) or resolution & (resolution - 1):
        _fail("img_resolution", resolution, f"a power of two in [4, {MAX_RESOLUTION}]")
    if not _integer(kwargs.get("img_channels"), 1, 4):
        _fail("img_channels", kwargs.get("img_channels"), "an integer in [1, 4]")
    mapping = kwargs.get("mapping_kwargs") or {}
    synthesis = kwargs.get("synthesis_kwargs") or {}
    for key, value in (("mapping_kwargs", mapping), ("synthesis_kwargs", synthesis)):
        if not isinstance(value, dict):
            _fail(key, value, "an object")
    if not _integer(mapping.get("num_layers", 8), 1, MAX_MAPPING_LAYERS):
        _fail("mapping_kwargs.num_layers", mapping.get("num_layers"), f"an integer in [1, {MAX_MAPPING_LAYERS}]")
    for key in ("embed_features", "layer_features"):
        if mapping.get(key) is not None and not _integer(mapping[key], 1, MAX_WIDTH):
            _fail(f"mapping_kwargs.{key}", mapping[key], f"an integer in [1, {MAX_WIDTH}]")
    for key in ("lr_multiplier", "w_avg_beta"):
        if mapping.get(key) is not None and not _number(mapping[key]):
            _fail(f"mapping_kwargs.{key}", mapping[key], "a finite number")
    base, top = synthesis.get("channel_base", 32768), synthesis.get("channel_max", 512)
    if not _integer(top, 1, MAX_WIDTH):
        _fail("synthesis_kwargs.channel_max", top, f"an integer in [1, {MAX_WIDTH}]")
    if not _integer(base, resolution, MAX_WIDTH * MAX_RESOLUTION):  # every block keeps >= 1 channel
        _fail("synthesis_kwargs.channel_base", base, f"an integer in [img_resolution, {MAX_WIDTH * MAX_RESOLUTION}]")
    if not _integer(synthesis.get("num_fp16_res", 0), 0, 32):
        _fail("synthesis_kwargs.num_fp16_res", synthesis.get("num_fp16_res"), "an integer in [0, 32]")
    if synthesis.get("conv_clamp") is not None and not _number(synthesis["conv_clamp"], 0):
        _fail("synthesis_kwargs.conv_clamp", synthesis["conv_clamp"], "a finite number >= 0 or null")
    taps = synthesis.get("resample_filter", [1, 3, 3, 1])
    if not (isinstance(taps, list) and 1 <= len(taps) <= MAX_FILTER_TAPS and all(_number(t) for t in taps)):
        _fail("synthesis_kwargs.resample_filter", taps, f"a list of 1 to {MAX_FILTER_TAPS} finite numbers")

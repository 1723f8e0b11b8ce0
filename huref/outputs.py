"""What a command writes, checked before any work: each output's kind fixes the suffixes it may
have; its folder must exist; it may not be an input, lie in an input model's folder, or be named
twice. Writing itself is `huref.files.write_all` (all outputs or none).

Kinds: "image" (.png, .jpg, .jpeg; the picture is encoded by suffix, `encode_image`), "html",
"json" (FP.json), "invariants" (.safetensors), "private" (a fingerprint's private file, named by
`huref.fingerprint.private_path`).
"""

from __future__ import annotations

import io
import os

from huref.errors import HurefError

SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg"),
    "html": (".html", ".htm"),
    "json": (".json",),
    "invariants": (".safetensors",),
    "private": (".safetensors",),
    "generator": (".safetensors",),  # and its .json beside it
}
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def suffix_of(path) -> str:
    return os.path.splitext(str(path))[1].lower()


def check_suffix(path, kind: str, option: str = "") -> None:
    """Refuse an output whose suffix does not fit its kind (a key of SUFFIXES)."""
    allowed = SUFFIXES[kind]
    if suffix_of(path) not in allowed:
        names = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
        what = f"{option} " if option else ""
        raise HurefError(f"{what}{path}: this output must end in {names}")


def check_outputs(outputs: list[tuple[object, str]], subjects: list = (), inputs: list = ()) -> None:
    """Refuse, before any work, any (path, kind) output with the wrong suffix, in a folder that does
    not exist, that is an input (a subject, `Subject.protected_paths`, or one of the other `inputs`
    files) or lies in an input model's folder, or that names the same file as another output."""
    protected: set[str] = {os.path.realpath(path) for path in inputs}
    for subject in subjects:
        protected |= subject.protected_paths()
    seen: set[str] = set()
    for output, kind in outputs:
        check_suffix(output, kind)
        real = os.path.realpath(output)
        folder = os.path.dirname(real)
        if not os.path.isdir(folder):
            raise HurefError(f"{output}: no such folder {os.path.dirname(str(output)) or '.'}")
        if real in protected or folder in protected:
            raise HurefError(f"{output}: refusing to write an output over or inside an input")
        if real in seen:
            raise HurefError(f"{output}: named as two outputs of one run")
        seen.add(real)


def encode_image(picture, path) -> bytes:
    """picture encoded for path's suffix (PNG without metadata; JPEG at quality 95): same pixels, same bytes."""
    from huref.render import png_bytes

    check_suffix(path, "image")
    if IMAGE_FORMATS[suffix_of(path)] == "PNG":
        return png_bytes(picture)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()

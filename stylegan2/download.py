"""Download a file (such as NVIDIA's AFHQ-dog StyleGAN2-ADA generator) resumably and atomically.

The file is written to NAME.part (resumed with an HTTP Range request when a previous try was cut off),
checked against the size the server announced, and only then renamed to NAME, so a file under its
final name is always complete. Nothing is printed: the caller passes a progress callback. The
AFHQ-dog weights are NVIDIA's, under the NVIDIA Source Code License (non-commercial use only);
whoever downloads them shows LICENSE_NOTICE.
"""

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from .errors import GeneratorError

AFHQDOG_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl"
AFHQDOG_FILE = "afhqdog.pkl"
LICENSE_NOTICE = (
    "The AFHQ-dog generator is NVIDIA's, under the NVIDIA Source Code License for StyleGAN2 with Adaptive "
    "Discriminator Augmentation (ADA): non-commercial (research or evaluation) use only. "
    "See https://github.com/NVlabs/stylegan2-ada-pytorch/blob/main/LICENSE.txt"
)
CHUNK = 1 << 20


def _total_size(response, offset: int) -> int | None:
    """The full file size from Content-Range (206) or Content-Length (200), if the server gave one."""
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + offset if length is not None else None


def _open_part(part: Path, append: bool):
    """The .part file for writing (appended to, or truncated), never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
    return open(os.open(part, flags, 0o666), "ab" if append else "wb")


def download(url: str, dest, progress=None, timeout: float = 60) -> Path:
    """Fetch url to dest, resuming dest.part if present; returns dest once complete.

    progress: None, or a callable progress(done_bytes, total_bytes_or_None) called as bytes arrive.
    Raises GeneratorError if the server is unreachable or the transfer ends short of (or past) the
    announced size; the .part file is kept so that the next call resumes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the range starts at or past the end: the .part is stale, start over
            part.unlink()
            return download(url, dest, progress, timeout)
        raise GeneratorError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise GeneratorError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
    with response:
        if offset and response.status != 206:  # server ignored the Range header: restart from byte 0
            offset = 0
        total = _total_size(response, offset)
        done = offset
        try:
            with _open_part(part, append=offset > 0) as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except (OSError, http.client.HTTPException) as e:
            raise GeneratorError(f"download of {url} interrupted after {done} bytes ({e}); "
                                 f"run the command again to resume") from None
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise GeneratorError(f"download of {url} ended with {size} of {total} bytes"
                             + ("; run the command again to resume" if size < total else "; the file was discarded"))
    part.replace(dest)
    return dest

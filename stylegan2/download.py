"""Download NVIDIA's AFHQ-dog StyleGAN2-ADA generator into huref's cache, resumably and atomically.

The file is written to NAME.part (resumed with an HTTP Range request when a previous try was cut off),
checked against the size the server announced, hashed (SHA-256), and only then renamed to NAME, so a
file under its final name is always complete. NAME.json records the URL, size, SHA-256, licence and
date. The weights are NVIDIA's, under the NVIDIA Source Code License (non-commercial use only).
"""

import datetime
import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from huref.errors import HurefError

AFHQDOG_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl"
AFHQDOG_FILE = "afhqdog.pkl"
LICENSE_NOTICE = (
    "The AFHQ-dog generator is NVIDIA's, under the NVIDIA Source Code License for StyleGAN2 with Adaptive "
    "Discriminator Augmentation (ADA): non-commercial (research or evaluation) use only. "
    "See https://github.com/NVlabs/stylegan2-ada-pytorch/blob/main/LICENSE.txt"
)
CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloaded generators live: $HUREF_CACHE/stylegan2 (default ~/.cache/huref/stylegan2)."""
    return Path(os.environ.get("HUREF_CACHE") or Path.home() / ".cache" / "huref") / "stylegan2"


class ProgressBar:
    """A one-line byte counter on stderr, drawn only when stderr is a terminal (or when forced)."""

    def __init__(self, total: int | None, done: int, enabled: bool):
        self.total, self.done, self.enabled = total, done, enabled
        self.last_percent = -1

    def update(self, n: int):
        self.done += n
        if not self.enabled:
            return
        if self.total:
            percent = int(100 * self.done / self.total)
            if percent == self.last_percent:
                return
            self.last_percent = percent
            filled = percent * 30 // 100
            sys.stderr.write(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {percent:3d}%  "
                             f"{self.done / 1e6:,.1f} / {self.total / 1e6:,.1f} MB")
        else:
            sys.stderr.write(f"\r  {self.done / 1e6:,.1f} MB")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _total_size(response, offset: int) -> int | None:
    """The full file size from Content-Range (206) or Content-Length (200), if the server gave one."""
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + offset if length is not None else None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest, progress: bool | None = None, timeout: float = 60) -> Path:
    """Fetch url to dest, resuming dest.part if present; returns dest once complete.

    progress: True/False to force the bar on stderr, None to show it only when stderr is a terminal.
    Raises HurefError if the server is unreachable or the transfer ends short of (or past) the
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
        raise HurefError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise HurefError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
    with response:
        if offset and response.status != 206:  # server ignored the Range header: restart from byte 0
            offset = 0
        total = _total_size(response, offset)
        bar = ProgressBar(total, offset, sys.stderr.isatty() if progress is None else progress)
        try:
            with open(part, "ab" if offset else "wb") as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:
            raise HurefError(f"download of {url} interrupted after {bar.done} bytes ({e}); "
                             f"run the command again to resume") from None
        finally:
            bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise HurefError(f"download of {url} ended with {size} of {total} bytes"
                         + ("; run the command again to resume" if size < total else "; the file was discarded"))
    part.replace(dest)
    return dest


def download_afhqdog(cache_dir_path=None, url: str = AFHQDOG_URL, progress: bool | None = None) -> Path:
    """Download NVIDIA's AFHQ-dog generator pickle into the cache (once) and record its SHA-256.

    Returns the path of the complete pickle. Shows the licence on stderr. The sidecar
    afhqdog.pkl.json holds {"url", "size", "sha256", "license", "downloaded"}.
    """
    folder = Path(cache_dir_path) if cache_dir_path is not None else cache_dir()
    dest = folder / AFHQDOG_FILE
    print(LICENSE_NOTICE, file=sys.stderr)
    if not dest.exists():
        print(f"downloading {url}\n  -> {dest}", file=sys.stderr)
        download(url, dest, progress=progress)
    record = dest.with_name(dest.name + ".json")
    if not record.exists():
        record.write_text(json.dumps({
            "url": url, "size": dest.stat().st_size, "sha256": sha256_of(dest), "license": LICENSE_NOTICE,
            "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }, indent=2) + "\n")
    print(f"{dest}: sha256 {json.loads(record.read_text())['sha256']}", file=sys.stderr)
    return dest

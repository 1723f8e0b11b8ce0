"""A local Hub-compatible server for huref's Hub tests and benchmarks: olah for every read but the
bytes of large files, a small front for the endpoints huggingface_hub's uploads use and for ranged
reads of large (LFS) files.

olah (pip `olah`, a self-hosted Hugging Face mirror) serves git repositories under its mirrors path
as Hub repos: repo info, file trees, downloads, exactly as huggingface_hub reads them. It accepts no
uploads, and no installable server that implements the Hub's commit API was found (docs/REGISTRY.md),
so `WriteFront` implements those endpoints, in the smallest faithful form:

    POST /api/repos/create                           a new git repository with one initial commit
    POST /api/{type}s/{org}/{name}/preupload/{rev}  every file "regular" (no LFS / Xet)
    POST /api/{type}s/{org}/{name}/commit/{rev}     the NDJSON commit: files written (base64),
                                                     deletions applied, one git commit on the branch
    POST /api/validate-yaml                          a README's front matter parses as a mapping

olah reads a local mirror's LFS object whole into memory for every download and hashes it whole for
every HEAD, and ignores Range headers, so the front answers `resolve` requests for LFS files itself,
as the Hub does: HEAD with the LFS oid and size (`X-Linked-Etag`, `X-Linked-Size`, `X-Repo-Commit`),
GET streamed from the object, a `Range: bytes=a-b` answered 206 with exactly those bytes. An LFS
object is a file under `.git/lfs/objects/` (`publish` links it to the original, so nothing is
copied) or a recipe (`synthetic_safetensors`: a safetensors header and a seed; the bytes after the
header are generated per request, so a 140 GB repo takes no disk). Every other request goes to
olah, so one HF_ENDPOINT serves both. Both listen on 127.0.0.1 only.

The front counts what it serves: `WriteFront.served[(repo, file)]` the body bytes of every `resolve`
GET (its own and olah's), `WriteFront.log` one (method, path, range, status, bytes) per `resolve`
request; tests fail requests on purpose with `WriteFront.fail_next` (503s) and `WriteFront.gated`
(repos answered 401 GatedRepo). Lab code: never imported by huref.

    python -m huref_lab.hub_server ROOT PORT     # serves until killed; olah on PORT + 1
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from huref.files import sha256_of

GIT_ENV = {"GIT_AUTHOR_NAME": "hub", "GIT_AUTHOR_EMAIL": "hub@localhost", "GIT_COMMITTER_NAME": "hub",
           "GIT_COMMITTER_EMAIL": "hub@localhost"}
REPO_TYPES = {"model": "models", "dataset": "datasets", "space": "spaces"}
LFS_POINTER = re.compile(rb"^version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize ([0-9]+)\n$")
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt")
STREAM_BLOCK = 1 << 20
SYNTHETIC_BLOCK = 1 << 20  # synthetic data is generated in blocks of this many bytes, each from its own seed


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


def olah_config(root: Path, port: int, front_port: int) -> Path:
    """olah's TOML config: offline, mirrors under root/mirrors, absolute URLs naming the front."""
    path = root / "olah.toml"
    path.write_text(f"""[basic]
host = "127.0.0.1"
port = {port}
mirror-netloc = "127.0.0.1:{front_port}"
mirror-lfs-netloc = "127.0.0.1:{front_port}"
repos-path = "{root / 'olah-cache'}"
mirrors-path = ["{root / 'mirrors'}"]
[accessibility]
offline = true
""")
    return path


def lfs_pointer(oid: str, size: int) -> bytes:
    """A git-lfs pointer file's bytes."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def publish(root: Path, repo_id: str, files: dict[str, Path | dict], message: str = "publish") -> str:
    """Commit `files` ({path in repo: a local file, or a `synthetic_safetensors` recipe}) to model repo
    `repo_id` under root/mirrors (created if new); returns the commit. Files named *.safetensors, *.gguf,
    *.bin or *.pt and every recipe become LFS pointers: a local file's object is a symbolic link to it
    (nothing copied; its oid is its SHA-256), a recipe's object is the recipe (its oid the SHA-256 of
    the recipe, not of the bytes it generates)."""
    repo = root / "mirrors" / "models" / repo_id
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
    objects = repo / ".git" / "lfs" / "objects"
    for name, source in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, dict):
            recipe = json.dumps(source, sort_keys=True).encode()
            oid, size = hashlib.sha256(recipe).hexdigest(), int(source["size"])
            stored = objects / oid[:2] / oid[2:4] / (oid + ".synthetic.json")
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(recipe)
            target.write_bytes(lfs_pointer(oid, size))
        elif name.endswith(LFS_SUFFIXES):
            source = Path(source).resolve()
            oid, size = sha256_of(source), source.stat().st_size
            stored = objects / oid[:2] / oid[2:4] / oid
            stored.parent.mkdir(parents=True, exist_ok=True)
            if not stored.exists():
                stored.symlink_to(source)
            target.write_bytes(lfs_pointer(oid, size))
        else:
            target.write_bytes(Path(source).read_bytes())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def synthetic_safetensors(tensors: list[tuple[str, list[int]]], seed: int) -> dict:
    """The recipe of a bfloat16 safetensors file of `tensors` ([(name, shape)], in order) whose data the
    front generates: each SYNTHETIC_BLOCK of the data from (seed, block number), random signs and
    mantissas at magnitude 2^-7..2^-6, so any byte range is produced on its own."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    head = len(text).to_bytes(8, "little") + text
    return {"synthetic": "bf16", "head": base64.b64encode(head).decode(), "size": len(head) + offset, "seed": seed}


def synthetic_bytes(recipe: dict, start: int, end: int) -> bytes:
    """Bytes [start, end) of a synthetic file."""
    head = base64.b64decode(recipe["head"])
    out = bytearray(head[start:end]) if start < len(head) else bytearray()
    lo, hi = max(start, len(head)) - len(head), end - len(head)  # in data coordinates
    for block in range(lo // SYNTHETIC_BLOCK, -(-hi // SYNTHETIC_BLOCK) if hi > 0 else 0):
        words = np.random.default_rng((recipe["seed"], block)).integers(0, 1 << 16, SYNTHETIC_BLOCK // 2, dtype=np.uint16)
        data = ((words & 0x807F) | 0x3C00).astype("<u2").tobytes()  # sign, mantissa random; exponent 2^-7
        first = block * SYNTHETIC_BLOCK
        out += data[max(lo, first) - first : min(hi, first + SYNTHETIC_BLOCK) - first]
    return bytes(out)


class WriteFront(BaseHTTPRequestHandler):
    """Handles repo creation, preupload and commit, and reads of LFS files; forwards the rest to olah."""

    root: Path
    olah_port: int
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"
    served: dict = defaultdict(int)  # (repo path, file) -> body bytes of resolve GETs
    log: list = []  # (method, path, range header, status, body bytes) of resolve requests
    fail_next: dict = {}  # regular expression searched in a resolve path -> how many more requests to answer 503
    gated: set = set()  # repo ids whose files are answered 401 GatedRepo
    _lfs: dict = {}  # (repo dir, commit, file) -> (oid, size, object path) of LFS files

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, payload: dict, headers: tuple = ()) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers):
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has no body: one would corrupt the kept-alive connection
            self.wfile.write(data)

    def _repo(self, kind: str, org: str, name: str) -> Path:
        return self.root / "mirrors" / kind / org / name

    def do_POST(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "repos", "create"]:
            return self._create(json.loads(self._body()))
        if parts[:2] == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(self._body()))
        if len(parts) >= 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
            repo = self._repo(parts[1], parts[2], parts[3])
            if not (repo / ".git").is_dir():
                self._body()
                return self._reply(404, {"error": "Repository not found"})
            body = self._body()
            return self._preupload(json.loads(body)) if parts[4] == "preupload" else self._commit(repo, parts[5], body)
        self._forward(self._body())

    def do_GET(self) -> None:
        if self.path == "/_lab/served":  # the counts, for a benchmark running the server as its own process
            return self._reply(200, {"served": [[repo, file, n] for (repo, file), n in sorted(self.served.items())],
                                     "requests": len(self.log)})
        self._resolve() or self._forward(None)

    def do_HEAD(self) -> None:
        self._resolve() or self._forward(None)

    def _resolve(self) -> bool:
        """Answer a `resolve` request of an LFS file (or an injected failure); False: not one, forward it."""
        path = unquote(self.path.split("?")[0])
        match = re.match(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$", path)
        if not match:
            return False
        kind, org, name, revision, file = match.groups()
        for needle, count in list(self.fail_next.items()):
            if re.search(needle, path) and count > 0:
                self.fail_next[needle] = count - 1
                self._record(path, 503, 0)
                self._reply(503, {"error": "injected failure"})
                return True
        if f"{org}/{name}" in self.gated:
            self._record(path, 401, 0)
            self._reply(401, {"error": "Access to this model is restricted"}, (
                ("X-Error-Code", "GatedRepo"),
                ("X-Error-Message", "Access to this model is restricted and you are not in the authorized list.")))
            return True
        repo = self._repo(kind or "models", org, name)
        target = self._lfs_target(repo, revision, file) if (repo / ".git").is_dir() else None
        if target is None:
            return False
        commit, oid, size, stored = target
        first, last = 0, size - 1
        ranged = self.headers.get("Range")
        if ranged:
            bounds = re.fullmatch(r"bytes=(\d+)-(\d*)", ranged.strip())
            if not bounds or int(bounds.group(1)) >= size:
                self._record(path, 416, 0)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True
            first, last = int(bounds.group(1)), min(size - 1, int(bounds.group(2) or size - 1))
        self.send_response(206 if ranged else 200)
        for key, value in (("X-Repo-Commit", commit), ("ETag", f'"{oid}"'), ("X-Linked-Etag", f'"{oid}"'),
                           ("X-Linked-Size", str(size)), ("Accept-Ranges", "bytes"),
                           ("Content-Type", "application/octet-stream"), ("Content-Length", str(last - first + 1))):
            self.send_header(key, value)
        if ranged:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        sent = 0
        if self.command == "GET":
            for offset in range(first, last + 1, STREAM_BLOCK):
                chunk = self._object_bytes(stored, offset, min(last + 1, offset + STREAM_BLOCK))
                self.wfile.write(chunk)
                sent += len(chunk)
            self.served[(f"{kind or 'models'}/{org}/{name}", file)] += sent
        self._record(path, 206 if ranged else 200, sent)
        return True

    def _record(self, path: str, status: int, sent: int) -> None:
        self.log.append((self.command, path, self.headers.get("Range"), status, sent))

    def _lfs_target(self, repo: Path, revision: str, file: str):
        """(commit, oid, size, object) of LFS file `file` at `revision`, or None when it is not one."""
        try:
            commit = git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
        except subprocess.CalledProcessError:
            return None
        key = (str(repo), commit, file)
        if key not in self._lfs:
            try:
                size = int(git(repo, "cat-file", "-s", f"{commit}:{file}"))
                pointer = subprocess.run(["git", "-C", str(repo), "cat-file", "blob", f"{commit}:{file}"], check=True,
                                         capture_output=True).stdout if size < 200 else b""
            except subprocess.CalledProcessError:
                pointer = b""
            found = LFS_POINTER.match(pointer)
            if found is None:
                self._lfs[key] = None
            else:
                oid, size = found.group(1).decode(), int(found.group(2))
                objects = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
                recipe = objects / (oid + ".synthetic.json")
                stored = json.loads(recipe.read_text()) if recipe.is_file() else objects / oid
                self._lfs[key] = (oid, size, stored)
        found = self._lfs[key]
        return None if found is None else (commit, *found)

    @staticmethod
    def _object_bytes(stored, start: int, end: int) -> bytes:
        if isinstance(stored, dict):
            return synthetic_bytes(stored, start, end)
        with open(stored, "rb") as file:
            file.seek(start)
            return file.read(end - start)

    def _create(self, payload: dict) -> None:
        kind = REPO_TYPES.get(payload.get("type") or "model")
        repo = self._repo(kind, payload.get("organization") or "user", payload["name"])
        with self.lock:
            url = f"http://{self.headers['Host']}/{kind}/{repo.parent.name}/{repo.name}"
            if (repo / ".git").is_dir():
                return self._reply(409, {"error": "You already created this repo", "url": url})
            repo.mkdir(parents=True)
            git(repo, "init", "-q", "-b", "main")
            (repo / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", "initial commit")
        self._reply(200, {"url": url})

    def _validate_yaml(self, payload: dict) -> None:
        """A README's front matter must parse as a YAML mapping."""
        import yaml

        text = payload.get("content") or ""
        front = text.split("---")[1] if text.startswith("---") and text.count("---") >= 2 else ""
        try:
            ok = isinstance(yaml.safe_load(front) or {}, dict)
        except yaml.YAMLError:
            ok = False
        self._reply(200 if ok else 400, {"warnings": []} if ok else {"errors": [{"message": "invalid YAML metadata"}]})

    def _preupload(self, payload: dict) -> None:
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                 for f in payload.get("files", [])]
        self._reply(200, {"files": files, "commitOid": None})

    def _commit(self, repo: Path, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        with self.lock:
            for item in lines:
                value = item["value"]
                target = repo / value.get("path", "")
                if item["key"] == "file":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(value["content"]))
                elif item["key"] in ("deletedFile", "deletedFolder"):
                    git(repo, "rm", "-r", "-q", "--ignore-unmatch", value["path"])
                elif item["key"] != "header":
                    return self._reply(400, {"error": f"unsupported commit operation {item['key']}"})
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "--allow-empty", "-m", header.get("summary") or "commit")
            oid = git(repo, "rev-parse", "HEAD")
        where = f"{repo.parent.parent.name}/{repo.parent.name}/{repo.name}"
        self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/{where}/commit/{oid}", "commitOid": oid,
                          "success": True, "pullRequestUrl": None})

    def _forward(self, body: bytes | None) -> None:
        """Send the request to olah and stream its answer back."""
        connection = http.client.HTTPConnection("127.0.0.1", self.olah_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        connection.request(self.command, self.path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        resolved = re.match(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/[^/]+/(.+)$", unquote(self.path.split("?")[0]))
        if resolved:
            if self.command == "GET":
                kind, org, name, file = resolved.groups()
                self.served[(f"{kind or 'models'}/{org}/{name}", file)] += len(data)
            self._record(unquote(self.path.split("?")[0]), answer.status, len(data) if self.command == "GET" else 0)
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            # a HEAD answer keeps olah's Content-Length (the file's size); a GET's body was read whole
            if key.lower() not in ("transfer-encoding", "connection") and (self.command == "HEAD" or key.lower() != "content-length"):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        connection.close()


def wait_for(port: int, seconds: float = 60.0) -> None:
    """Return once 127.0.0.1:port accepts connections (RuntimeError after `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def free_port_pair() -> int:
    """A port p with p and p + 1 free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two adjacent free ports")


def serve(root: Path, port: int) -> tuple[ThreadingHTTPServer, subprocess.Popen]:
    """Start olah (a child process, on port + 1) and the write front (a thread, on port)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mirrors").mkdir(exist_ok=True)
    olah = subprocess.Popen([sys.executable, "-m", "olah.server", "-c", str(olah_config(root, port + 1, port))],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port + 1)
    handler = type("Front", (WriteFront,), {"root": root, "olah_port": port + 1, "served": defaultdict(int), "log": [],
                                            "fail_next": {}, "gated": set(), "_lfs": {}})
    front = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    return front, olah


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server, child = serve(Path(sys.argv[1]), int(sys.argv[2]))
    try:
        child.wait()
    finally:
        child.terminate()
        server.shutdown()

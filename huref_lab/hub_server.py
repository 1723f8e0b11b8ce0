"""A local Hub-compatible server for the registry's Hub tests: olah for every read, a small write front
for the three endpoints huggingface_hub's uploads use.

olah (pip `olah`, a self-hosted Hugging Face mirror) serves git repositories under its mirrors path
as Hub repos: repo info, file trees, downloads, exactly as huggingface_hub reads them. It accepts no
uploads, and no installable server that implements the Hub's commit API was found (docs/REGISTRY.md),
so `WriteFront` implements those endpoints, in the smallest faithful form:

    POST /api/repos/create                           a new git repository with one initial commit
    POST /api/{type}s/{org}/{name}/preupload/{rev}  every file "regular" (no LFS / Xet)
    POST /api/{type}s/{org}/{name}/commit/{rev}     the NDJSON commit: files written (base64),
                                                     deletions applied, one git commit on the branch
    POST /api/validate-yaml                          a README's front matter parses as a mapping

and forwards every other request to olah, so one HF_ENDPOINT serves both. Commits are git commits in
the same repositories olah reads, so what a push wrote is what a pull downloads. Both listen on
127.0.0.1 only. Lab code: never imported by huref.

    python -m huref_lab.hub_server ROOT PORT     # serves until killed; olah on PORT + 1
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "hub", "GIT_AUTHOR_EMAIL": "hub@localhost", "GIT_COMMITTER_NAME": "hub",
           "GIT_COMMITTER_EMAIL": "hub@localhost"}
REPO_TYPES = {"model": "models", "dataset": "datasets", "space": "spaces"}


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


class WriteFront(BaseHTTPRequestHandler):
    """Handles repo creation, preupload and commit; forwards the rest to olah."""

    root: Path
    olah_port: int
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
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
        self._forward(None)

    def do_HEAD(self) -> None:
        self._forward(None)

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
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def serve(root: Path, port: int) -> tuple[ThreadingHTTPServer, subprocess.Popen]:
    """Start olah (a child process, on port + 1) and the write front (a thread, on port)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mirrors").mkdir(exist_ok=True)
    olah = subprocess.Popen([sys.executable, "-m", "olah.server", "-c", str(olah_config(root, port + 1, port))],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port + 1)
    handler = type("Front", (WriteFront,), {"root": root, "olah_port": port + 1})
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

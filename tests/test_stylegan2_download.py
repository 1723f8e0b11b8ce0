"""Downloading the AFHQ-dog pickle, against a local HTTP server on 127.0.0.1: complete, interrupted and
resumed with a Range request, a server that sends fewer bytes than it announced, and one that ignores Range.
stylegan2.download does the transfer (GeneratorError, progress through a callback); huref.generators puts
it in huref's cache with its record (HurefError)."""

import hashlib
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from huref.errors import HurefError
from huref.generators import download_afhqdog
from stylegan2 import GeneratorError
from stylegan2.download import LICENSE_NOTICE, download

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # a bit over three 1 MiB chunks


class Server:
    """Serves PAYLOAD at /afhqdog.pkl. cut_after: stop after that many bytes of a response (closing the
    connection, as a dropped download would); lie_total: announce this total instead of the real size;
    honour_range: answer Range requests with 206."""

    def __init__(self):
        self.cut_after, self.lie_total, self.honour_range = None, None, True
        self.range_headers = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                requested = self.headers.get("Range")
                server.range_headers.append(requested)
                start = 0
                if requested and server.honour_range:
                    start = int(re.match(r"bytes=(\d+)-", requested).group(1))
                body = PAYLOAD[start:]
                total = server.lie_total or len(PAYLOAD)
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.send_header("Content-Length", str(total - start))
                self.end_headers()
                if server.cut_after is not None:
                    body = body[:server.cut_after]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/afhqdog.pkl"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):  # never send loopback requests through a configured proxy
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """huref's cache for the test; downloaded generators go to its stylegan2/ folder."""
    monkeypatch.setenv("HUREF_CACHE", str(tmp_path))
    return tmp_path / "stylegan2"


def test_complete_download_records_sha256_and_licence(server, cache, capsys):
    reports = []
    path, record = download_afhqdog(server.url, progress=lambda done, total: reports.append((done, total)))
    assert path == cache / "afhqdog.pkl" and path.read_bytes() == PAYLOAD
    assert not (cache / "afhqdog.pkl.part").exists()
    assert record == json.loads((cache / "afhqdog.pkl.json").read_text())
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and record["size"] == len(PAYLOAD)
    assert "NVIDIA Source Code License" in record["license"] and "non-commercial" in LICENSE_NOTICE
    assert reports[-1] == (len(PAYLOAD), len(PAYLOAD)) and [d for d, _ in reports] == sorted(d for d, _ in reports)
    assert capsys.readouterr() == ("", "")  # the library prints nothing; the CLI shows licence and progress
    # Once complete, a second call uses the cached file without asking the server.
    requests = len(server.range_headers)
    assert download_afhqdog(server.url) == (path, record)
    assert len(server.range_headers) == requests


def test_interrupted_download_leaves_no_complete_looking_file_and_resumes(server, cache):
    server.cut_after = 1_500_000
    with pytest.raises(HurefError, match="run the command again to resume"):
        download_afhqdog(server.url)
    assert not (cache / "afhqdog.pkl").exists()
    assert (cache / "afhqdog.pkl.part").stat().st_size == 1_500_000
    server.cut_after = None
    path, record = download_afhqdog(server.url)
    assert server.range_headers[-1] == "bytes=1500000-"
    assert path.read_bytes() == PAYLOAD and not (cache / "afhqdog.pkl.part").exists()
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()


def test_cli_download_shows_the_licence_and_prints_the_path(server, cache, huref_cli):
    code, out, err = huref_cli("generator", "download", "afhqdog", "--url", server.url)
    assert code == 0 and out.strip() == str(cache / "afhqdog.pkl")
    assert LICENSE_NOTICE in err and hashlib.sha256(PAYLOAD).hexdigest() in err


def test_wrong_size_is_reported_and_not_renamed(server, tmp_path):
    server.lie_total = len(PAYLOAD) + 100  # announces more than it has, then closes
    with pytest.raises(GeneratorError, match=f"ended with {len(PAYLOAD)} of {len(PAYLOAD) + 100} bytes"):
        download(server.url, tmp_path / "afhqdog.pkl")
    assert not (tmp_path / "afhqdog.pkl").exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    (tmp_path / "afhqdog.pkl.part").write_bytes(b"stale bytes from another file")
    server.honour_range = False
    path = download(server.url, tmp_path / "afhqdog.pkl")
    assert server.range_headers[-1] is not None and path.read_bytes() == PAYLOAD


def test_unreachable_host_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with pytest.raises(GeneratorError, match="cannot reach"):
        download("http://127.0.0.1:9/afhqdog.pkl", tmp_path / "x.pkl", timeout=5)

"""huref.files: the one atomic writer (planted links, FIFOs, devices, a full disk, interrupts, concurrent
writers, several outputs all or nothing), safetensors output, and faults of the installation itself."""

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors

import huref.files
from huref.errors import HurefError, InstallationError
from huref.files import (cache_dir, package_data, safetensors_chunks, sha256_of, write_all, write_atomically)

REPO = Path(__file__).resolve().parents[1]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_bytes_and_chunks_replacing_a_regular_file_and_leaving_nothing_else(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old contents")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    write_atomically(target, (bytes([i]) * 1000 for i in range(5)))  # any iterable of chunks, in order
    assert target.read_bytes() == b"".join(bytes([i]) * 1000 for i in range(5))
    assert listing(tmp_path) == ["out.bin"]


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "out.png"
    planted = [tmp_path / ".out.png.planted.tmp", target.with_name("out.png.partial")]
    for link in planted:
        link.symlink_to(victim)
    names = iter(planted + [tmp_path / ".out.png.fresh.tmp"])
    monkeypatch.setattr(huref.files, "_temporary_name", lambda t: next(names))  # the planted names come first
    write_atomically(target, b"picture")
    assert target.read_bytes() == b"picture" and not target.is_symlink()
    assert victim.read_bytes() == b"precious"
    assert all(link.is_symlink() and link.resolve() == victim for link in planted)
    assert listing(tmp_path) == sorted([".out.png.planted.tmp", "out.png", "out.png.partial", "victim"])


def _in_thread(function, seconds=10):
    """Run function() in a thread; return (finished within seconds, the exception it raised or None)."""
    outcome = []

    def run():
        try:
            function()
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(outcome), (outcome[0] if outcome else None)


@pytest.mark.parametrize("kind", ["fifo", "link to fifo", "directory"])
def test_a_target_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    target = {"fifo": fifo, "link to fifo": tmp_path / "link", "directory": tmp_path / "folder"}[kind]
    if kind == "link to fifo":
        target.symlink_to(fifo)
    elif kind == "directory":
        target.mkdir()
    finished, error = _in_thread(lambda: write_atomically(target, b"data"))
    assert finished, "the writer blocked"
    assert isinstance(error, HurefError) and "not a regular file" in str(error)
    assert listing(tmp_path) == sorted({"pipe", target.name})


def test_dev_full_and_a_full_disk_are_one_line_errors_leaving_nothing_behind(tmp_path, monkeypatch):
    with pytest.raises(HurefError, match="not a regular file") as refused:
        write_atomically("/dev/full", b"data")
    assert len(str(refused.value).splitlines()) == 1
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(HurefError, match="No space left on device") as full:
        write_atomically(target, b"new")
    assert len(str(full.value).splitlines()) == 1
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["out.json"]
    with pytest.raises(HurefError, match="No such file or directory"):
        write_atomically(tmp_path / "missing" / "out.json", b"new")


def test_an_interrupt_while_writing_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def chunks():
        yield b"x" * 1000
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, chunks())
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["out.bin"]


WRITER = """
import sys
from huref.files import write_atomically
writer, size = int(sys.argv[1]), int(sys.argv[3])
for i in range(100):
    mark = writer * 100 + i
    write_atomically(sys.argv[2], b"%5d" % mark + bytes([mark % 251]) * size)
"""


def test_concurrent_writers_never_show_a_reader_a_partial_or_mixed_file(tmp_path):
    target, size = tmp_path / "shared.bin", 256 * 1024
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(k), str(target), str(size)], env=env)
               for k in (1, 2)]
    seen, deadline = set(), time.monotonic() + 120
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        try:
            data = target.read_bytes()
        except FileNotFoundError:  # before the first rename (the writers are still starting: no need to spin)
            time.sleep(0.01)
            continue
        mark = int(data[:5])
        assert len(data) == 5 + size and data[5:] == bytes([mark % 251]) * size, f"mixed or partial file ({mark})"
        seen.add(mark)
    assert [w.wait(timeout=10) for w in writers] == [0, 0]
    assert int(target.read_bytes()[:5]) in (199, 299)  # each writer's last payload; one of them won
    assert len(seen) > 1 and listing(tmp_path) == ["shared.bin"]


def test_write_all_writes_every_output_or_none(tmp_path, monkeypatch):
    first, second = tmp_path / "dog.png", tmp_path / "missing" / "fp.json"
    with pytest.raises(HurefError, match="fp.json: cannot write"):
        write_all([(first, b"png"), (second, b"json")])
    assert not first.exists() and not second.exists() and listing(tmp_path) == []
    # A failure while renaming (after the first output already replaced its target) removes that one too.
    second = tmp_path / "fp.json"
    real_replace, calls = os.replace, []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(HurefError, match="Input/output error"):
        write_all([(first, b"png"), (second, b"json")])
    assert listing(tmp_path) == []
    monkeypatch.setattr(os, "replace", real_replace)
    write_all([(first, b"png"), (second, b"json")])
    assert first.read_bytes() == b"png" and second.read_bytes() == b"json"
    with pytest.raises(HurefError, match="same file"):
        write_all([(first, b"a"), (tmp_path / "." / "dog.png", b"b")])


def test_safetensors_chunks_are_the_safetensors_format(tmp_path):
    tensors = {"values": torch.randn(2, 3, 5, 5), "wide": torch.randn(4, dtype=torch.float64),
               "half": torch.randn(3, 2).to(torch.bfloat16), "ids": torch.arange(7), "empty": torch.zeros(0, 3)}
    write_atomically(tmp_path / "t.safetensors", safetensors_chunks(tensors, {"note": "hello"}))
    loaded = load_safetensors((tmp_path / "t.safetensors").read_bytes())
    assert set(loaded) == set(tensors)
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in tensors.items())
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as f:
        assert f.metadata() == {"note": "hello"}


def test_sha256_cache_dir_and_package_data(tmp_path, monkeypatch):
    payload = os.urandom(3 * (1 << 20) + 7)
    (tmp_path / "f").write_bytes(payload)
    assert sha256_of(tmp_path / "f") == hashlib.sha256(payload).hexdigest()
    monkeypatch.setenv("HUREF_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("HUREF_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "huref"
    assert package_data("encoder.safetensors").parent == Path(huref.files.__file__).parent / "data"
    monkeypatch.setattr(huref.files, "data_dir", lambda: tmp_path / "empty")
    with pytest.raises(InstallationError, match="encoder.safetensors is missing"):
        package_data("encoder.safetensors")


def test_missing_packaged_weights_are_an_installation_fault_exit_3(tmp_path, monkeypatch, huref_cli):
    monkeypatch.setenv("HUREF_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(huref.files, "data_dir", lambda: data)
    code, out, err = huref_cli("fingerprint", "demo:base", "-o", str(tmp_path / "dog.png"), "-q")
    assert code == 3 and out == "" and not (tmp_path / "dog.png").exists()
    assert err.strip().splitlines() == [f"huref: installation fault: generator.json is missing from huref's "
                                        f"package data ({data}) (reinstall huref)"]
    for name in ("generator.safetensors", "generator.json"):  # the generator is back; the encoder is not
        shutil.copy(REPO / "huref" / "data" / name, data / name)
    code, out, err = huref_cli("fingerprint", "demo:base", "-o", str(tmp_path / "dog.png"), "-q",
                               "--tokens", "64")
    assert code == 3 and "installation fault: encoder.safetensors is missing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "dog.png").exists()

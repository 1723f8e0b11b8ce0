"""Indexing at scale (issue #26): Hub weights read by byte ranges, checked against the local test
Hub's own byte counts (`huref_lab.hub_server`: olah for reads, its front serving LFS ranges and
counting every body byte); `registry add --from` with its failures, retries and resumption; the
registry index; the local pool and Ray engines giving the registry the inline run gives."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from huref.invariants import default_layer_order
from huref.readers.remote import READ_AHEAD
from huref.readers.safetensors import read_header
from huref.registry.entries import build_entry
from huref.registry.format import INDEX, PARTS, Registry
from huref.sources import load_model
from huref_lab import tiny_models
from huref_lab.gguf_convert import convert
from huref_lab.hub_server import free_port_pair, publish, serve
from test_registry_hub import huref

DEEP = dict(num_hidden_layers=24, vocab_size=12000)  # a sketch of every 3rd layer; 4096 of 12000 probe rows


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale-hub")
    port = free_port_pair()
    front, olah = serve(root, port)
    yield root, f"http://127.0.0.1:{port}", front.RequestHandlerClass
    front.shutdown()
    olah.terminate()
    olah.wait(timeout=30)


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A 24-layer tiny llama with a 12,000-token vocabulary, and its GGUF files (F32 and Q8_0)."""
    folder = tmp_path_factory.mktemp("deep")
    model = tiny_models.save_checkpoint(tiny_models.build_model("llama", 3, **DEEP), folder / "hf",
                                        tiny_models.token_strings(DEEP["vocab_size"]))
    ggufs = {q: convert(model, folder / "gguf" / f"deep-{q}.gguf", qtype=q) for q in ("F32", "Q8_0")}
    return model, ggufs


@pytest.fixture(scope="module")
def published(hub, deep):
    root, _, front = hub
    model, ggufs = deep
    files = {f.name: f for f in model.iterdir() if f.is_file()}
    publish(root, "org/deep", files)
    publish(root, "org/flaky", files)
    publish(root, "org/gated", files)
    front.gated.add("org/gated")
    publish(root, "org/deep-gguf", {p.name: p for p in ggufs.values()} | {"README.md": write(
        model.parent / "card.md", "---\nbase_model: org/deep\n---\n")})
    config = json.loads((model / "config.json").read_text())
    publish(root, "org/unsupported", {**files, "config.json": write(model.parent / "odd.json",
                                                                      json.dumps(dict(config, model_type="nonsense")))})
    return model, ggufs


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CHILD = """
import hashlib, json, sys
from huref.registry.entries import build_entry
from huref.sources import load_model
model = load_model(sys.argv[1])
row = build_entry(model)
print(json.dumps({"entry_id": row["entry_id"], "transfer": model.hub.transfer.to_json(), "layers": row["sketch_layers"],
                  "sketch": hashlib.sha256(row["sketch"]).hexdigest(), "latent": row["latent"],
                  "declared": row["declared_bases"]}))
"""


def hub_entry(endpoint, tmp_path, spec):
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_test", "HF_HUB_CACHE": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", CHILD, spec], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def local_entry(path):
    import hashlib

    row = build_entry(load_model(str(path)))
    return row, hashlib.sha256(row["sketch"]).hexdigest()


def served_ranges(front, repo_file: str) -> list[tuple[int, int]]:
    """[(first, last)] byte ranges of the GETs the server answered for a file, each checked to be 206."""
    ranges = []
    for method, path, asked, status, sent in front.log:
        if method == "GET" and path.endswith(repo_file):
            assert status == 206 and asked, (path, asked, status)  # only ranged reads, never the whole file
            first, last = map(int, asked.split("=")[1].split("-"))
            assert sent == last - first + 1
            ranges.append((first, last))
    return ranges


def test_a_hub_model_is_read_by_byte_ranges_that_the_server_counts(hub, published, tmp_path):
    root, endpoint, front = hub
    model, _ = published
    front.log.clear()
    before = dict(front.served)
    got = hub_entry(endpoint, tmp_path, "org/deep")
    local, local_sketch = local_entry(model)
    # the same entry as from the local copy, under the Hub identity
    assert got["sketch"] == local_sketch and got["latent"] == pytest.approx(local["latent"], abs=0)
    assert got["entry_id"].startswith("hub:org/deep@") and len(got["entry_id"].split("@")[1]) == 40
    # every body byte the server sent for this repo is a byte the client counted, and no more
    sent = sum(n - before.get(key, 0) for key, n in front.served.items() if key[0] == "models/org/deep")
    assert got["transfer"]["fetched_bytes"] == sent > 0
    size = (model / "model.safetensors").stat().st_size
    assert got["transfer"]["repo_bytes"] == sum(f.stat().st_size for f in model.iterdir() if f.is_file())
    # the ranges served never touch a tensor the terms do not read: the layers outside the sketch and
    # the fingerprint's two middle ones, the output head, the final norm
    header, data_start, _ = read_header(str(model / "model.safetensors"))
    read_layers = set(got["layers"]) | set(default_layer_order(list(range(DEEP["num_hidden_layers"])))[:2])
    assert len(read_layers) < DEEP["num_hidden_layers"]
    unread = [(data_start + e["data_offsets"][0], data_start + e["data_offsets"][1] - 1) for name, e in header.items()
              if (name.startswith("model.layers.") and int(name.split(".")[2]) not in read_layers)
              or not name.startswith(("model.layers.", "model.embed_tokens"))]
    ranges = served_ranges(front, "/model.safetensors")
    header_read = [(a, b) for a, b in ranges if a == 0]  # the header, fetched ahead
    assert header_read == [(0, READ_AHEAD - 1)] and data_start < READ_AHEAD
    tensor_reads = [(a, b) for a, b in ranges if a > 0]
    assert tensor_reads and not [(a, b) for a, b in tensor_reads for lo, hi in unread if a <= hi and lo <= b]
    assert sum(b - a + 1 for a, b in ranges) < 0.6 * size


def test_a_gguf_model_of_a_hub_repo_is_chosen_by_name_and_read_by_ranges(hub, published, tmp_path):
    root, endpoint, front = hub
    _, ggufs = published
    ((code, out, err),) = huref(endpoint, tmp_path, ("registry", "add", "org/deep-gguf", "-r", str(tmp_path / "R"), "-q"))
    assert code == 2 and "several GGUF models" in err and "deep-F32.gguf" in err and "org/deep-gguf:FILE" in err
    front.log.clear()
    got = hub_entry(endpoint, tmp_path, "org/deep-gguf:Q8_0")
    _, local_sketch = local_entry(ggufs["Q8_0"])
    assert got["sketch"] == local_sketch
    assert got["entry_id"].endswith(":deep-Q8_0.gguf")
    assert got["declared"] == [{"name": "org/deep", "relation": None, "source": "model card"}]
    ranges = served_ranges(front, "/deep-Q8_0.gguf")
    assert sum(b - a + 1 for a, b in ranges) < 0.6 * ggufs["Q8_0"].stat().st_size
    assert not served_ranges(front, "/deep-F32.gguf")  # the other file of the repo is never read


JOB = """
import sys
import huref.readers.remote as remote, huref.registry.jobs as jobs
remote.RETRIES, jobs.BACKOFF_SECONDS = 1, 0.05
from huref import cli
sys.argv = ["huref", *sys.argv[1:]]
cli.main()
"""


def job(endpoint, tmp_path, *args):
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_test", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "HUREF_CACHE": str(tmp_path / "huref")}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-c", JOB, *args], capture_output=True, text=True, env=env, timeout=600)


def test_a_batch_from_the_hub_retries_transient_failures_and_records_permanent_ones(hub, published, tmp_path):
    root, endpoint, front = hub
    listed = tmp_path / "models.txt"
    listed.write_text("# models to index\norg/deep\norg/flaky\norg/gated\norg/unsupported\norg/missing\n\norg/deep\n")
    front.fail_next[r"org/flaky/resolve/[0-9a-f]{40}/model\.safetensors"] = 2  # both tries of the first attempt
    done = job(endpoint, tmp_path, "registry", "add", "--from", str(listed), "-r", str(tmp_path / "R"), "--json", "-q")
    assert done.returncode == 2, done.stderr
    outcomes = {o["spec"]: o for o in json.loads(done.stdout)["outcomes"]}
    assert sorted(outcomes) == ["org/deep", "org/flaky", "org/gated", "org/missing", "org/unsupported"]
    assert outcomes["org/deep"]["status"] == "added" and outcomes["org/deep"]["attempts"] == 1
    assert outcomes["org/flaky"]["status"] == "added" and outcomes["org/flaky"]["attempts"] == 2
    assert sum(1 for entry in front.log if "org/flaky" in entry[1] and entry[3] == 503) == 2
    for spec, why in (("org/gated", "gated"), ("org/unsupported", "nonsense"), ("org/missing", "no such repository")):
        assert outcomes[spec]["status"] == "failed" and outcomes[spec]["attempts"] == 1, outcomes[spec]["retried"]
        assert why in outcomes[spec]["reason"] and not outcomes[spec]["transient"]
    assert err_lines(done.stderr) == 3
    listing = job(endpoint, tmp_path, "registry", "list", str(tmp_path / "R"))
    assert listing.returncode == 0 and "2 entries" in listing.stdout and "3 model(s) could not be added" in listing.stdout
    assert "org/gated" in listing.stdout and "gated" in listing.stdout.split("org/gated", 1)[1].splitlines()[0]
    again = job(endpoint, tmp_path, "registry", "add", "--from", str(listed), "-r", str(tmp_path / "R"), "--json", "-q")
    outcomes = {o["spec"]: o["status"] for o in json.loads(again.stdout)["outcomes"]}
    assert outcomes == {"org/deep": "skipped", "org/flaky": "skipped", "org/gated": "failed",
                        "org/unsupported": "failed", "org/missing": "failed"}
    assert len(Registry(tmp_path / "R").parts()) == 2


def err_lines(stderr: str) -> int:
    return sum(line.startswith("huref: error: ") for line in stderr.splitlines())


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three tiny local models and a list naming them."""
    folder = tmp_path_factory.mktemp("three")
    paths = [tiny_models.build_checkpoint("llama", folder / f"m{k}", seed=10 + k) for k in range(3)]
    listed = folder / "list.txt"
    listed.write_text("".join(f"{p}\n" for p in paths))
    return paths, listed


def registry_content(root) -> dict:
    """{entry id: (name, sketch bytes, latent)} of a registry: what two engines must agree on."""
    return {part.entry_id: (row["name"], row["sketch"], tuple(row["latent"]))
            for part, row in Registry(root).rows(["name", "sketch", "latent"])}


def test_the_local_pool_gives_the_registry_an_inline_run_gives(three, huref_cli, tmp_path):
    _, listed = three
    code, out, _ = huref_cli("registry", "add", "--from", str(listed), "-r", str(tmp_path / "inline"), "-q")
    assert code == 0 and out.count("registered as") == 3
    code, out, _ = huref_cli("registry", "add", "--from", str(listed), "-r", str(tmp_path / "pool"), "--jobs", "2", "-q")
    assert code == 0 and out.count("registered as") == 3
    inline = registry_content(tmp_path / "inline")
    assert len(inline) == 3 and registry_content(tmp_path / "pool") == inline
    assert len(os.listdir(tmp_path / "pool" / INDEX)) == 1  # the pool's driver indexed what its workers added


SLOW_JOB = """
import sys, time
import huref.files, huref.registry.format as fmt
def slow(path, data):
    def chunks():
        for piece in ([data] if isinstance(data, (bytes, bytearray)) else data):
            for i in range(0, len(piece), 4096):
                time.sleep(0.01)
                yield piece[i:i + 4096]
    huref.files.write_atomically(path, chunks())
fmt.write_atomically = slow
from huref import cli
sys.argv = ["huref", *sys.argv[1:]]
cli.main()
"""


def test_a_job_killed_mid_write_leaves_the_registry_readable_and_its_rerun_completes_it(three, huref_cli, tmp_path):
    paths, listed = three
    root = tmp_path / "R"
    adder = subprocess.Popen([sys.executable, "-c", SLOW_JOB, "registry", "add", "--from", str(listed), "-r", str(root),
                              "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
            (root / PARTS).is_dir() and [p for p in (root / PARTS).iterdir() if p.name.startswith(".")]):
        time.sleep(0.02)
    os.kill(adder.pid, signal.SIGKILL)
    adder.wait()
    hidden = [p for p in (root / PARTS).iterdir() if p.name.startswith(".")]
    assert hidden  # killed with a part half written
    code, out, err = huref_cli("registry", "list", str(root))
    assert code == 0 and err == "" and f"{len(Registry(root).parts())} entries" in out
    code, out, _ = huref_cli("registry", "add", "--from", str(listed), "-r", str(root), "-q")
    assert code == 0 and out.count("registered as") + out.count("already registered") == 3
    names = sorted(row["name"] for _, row in Registry(root).rows(["name"]))
    assert names == sorted(p.name for p in paths)


def test_the_index_reads_what_the_parts_hold_and_survives_compaction_and_loss(three, tmp_path):
    paths, _ = three
    registry = Registry(tmp_path / "R", create=True)
    rows = [build_entry(load_model(str(p))) for p in paths]
    parts = [registry.add(row) for row in rows]
    registry.write_index([{"part": part.name, **{k: v for k, v in row.items() if k != "sketch"}}
                          for part, row in zip(parts[:2], rows[:2])])  # the third part's add "died" before its index
    everything = {part.entry_id: row for part, row in registry.rows()}
    assert len(everything) == 3
    index_files = os.listdir(registry.root / INDEX)
    assert len(index_files) == 1
    for path in (registry.root / INDEX).iterdir():  # the same rows with no index at all
        path.rename(tmp_path / path.name)
    assert {part.entry_id: row for part, row in registry.rows()} == everything
    for name in index_files:
        (tmp_path / name).rename(registry.root / INDEX / name)
    assert registry.compact() == 3 and len(os.listdir(registry.root / INDEX)) == 1
    assert {part.entry_id: row for part, row in registry.rows()} == everything
    registry.remove(registry.parts()[0])
    assert len(list(registry.rows())) == 2


CONCURRENT = """
import json, sys
import huref.registry.format as fmt
fmt.COMPACT_AT = 2
from huref.registry.format import Registry
root, first, count, row_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import base64
row = json.loads(open(row_file).read())
row["summary"], row["sketch"] = base64.b64decode(row["summary"]), base64.b64decode(row["sketch"])
for k in range(first, first + count):
    registry = Registry(root, create=True)
    entry = dict(row, entry_id=f"test:{k}", name=f"model-{k}")
    part = registry.add(entry)
    registry.write_index([{"part": part.name, **{c: v for c, v in entry.items() if c != "sketch"}}])
"""


def test_concurrent_adders_and_compactions_never_lose_an_entry_to_readers(three, tmp_path):
    import base64

    row = build_entry(load_model(str(three[0][0])))
    row_file = tmp_path / "row.json"
    row_file.write_text(json.dumps({k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in row.items()}))
    root = tmp_path / "shared"
    Registry(root, create=True)
    adders = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(root), str(100 * k), "12", str(row_file)])
              for k in range(2)]
    seen: set[str] = set()
    while any(p.poll() is None for p in adders):  # readers during adds and compactions: never fewer entries
        names = {r["name"] for _, r in Registry(root).rows(["name"])}
        assert seen <= names
        seen = names
    assert [p.returncode for p in adders] == [0, 0]
    assert {r["name"] for _, r in Registry(root).rows(["name"])} == {f"model-{100 * k + i}" for k in range(2) for i in range(12)}
    assert len(os.listdir(root / INDEX)) <= 3


@pytest.mark.ray
def test_ray_tasks_on_a_running_cluster_give_the_registry_the_local_engine_gives(three, huref_cli, tmp_path):
    pytest.importorskip("ray")
    import secrets
    import shutil
    import tempfile

    _, listed = three
    port = free_port_pair()
    ray_temp = tempfile.mkdtemp(prefix="huref-ray-")  # short: Ray's socket paths under it must fit 107 bytes
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # the node on 127.0.0.1, never another address
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus", "2",
                             "--port", str(port), "--node-ip-address", "127.0.0.1", "--temp-dir", ray_temp,
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = None
        for _ in range(3):  # the head takes a while to accept drivers on a loaded machine
            done = subprocess.run([sys.executable, "-c", "from huref.cli import main; main()", "registry", "add", "--from", str(listed), "-r",
                                   str(tmp_path / "ray-R"), "--engine", "ray", "--address", f"127.0.0.1:{port}", "-q"],
                                  capture_output=True, text=True, env=env, timeout=600)
            if "no Ray cluster" not in done.stderr:
                break
            time.sleep(10)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.count("registered as") == 3
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        head.wait(timeout=120)
        shutil.rmtree(ray_temp, ignore_errors=True)
    code, _, _ = huref_cli("registry", "add", "--from", str(listed), "-r", str(tmp_path / "local-R"), "-q")
    assert code == 0
    assert registry_content(tmp_path / "ray-R") == registry_content(tmp_path / "local-R")

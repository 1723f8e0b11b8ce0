"""The registry's Hub path against a real local Hub-compatible server (`huref_lab.hub_server`: olah
serving git repositories for every read, a write front for create/preupload/commit), with
HF_ENDPOINT pointed at it: push, push again (nothing new), pull, identify from hf://datasets/...,
and refusals (a remote registry of other settings, a server that does not answer)."""

import json
import os
import subprocess
import sys

import pytest

from huref.registry.entries import build_entry
from huref.registry.format import MANIFEST, PARTS, Registry, current_settings, manifest_bytes
from huref.sources import load_model
from huref_lab.hub_server import free_port_pair, serve
from test_registry import perturbed


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    port = free_port_pair()
    front, olah = serve(root, port)
    yield root, f"http://127.0.0.1:{port}"
    front.shutdown()
    olah.terminate()
    olah.wait(timeout=30)


@pytest.fixture(scope="module")
def local(tiny_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-models")
    registry = Registry(root / "R", create=True)
    base = tiny_zoo("llama")
    registry.add(build_entry(load_model(str(base)), name="base"))
    registry.add(build_entry(load_model(str(tiny_zoo("llama", seed=1))), name="other"))
    return registry, perturbed(base, root / "finetune", 0.05, seed=8)


DRIVER = """
import contextlib, io, json, sys
from huref import cli
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["huref", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main()
        except SystemExit as done:
            code = done.code
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def huref(endpoint, tmp_path, *commands):
    """Run each command (a tuple of arguments) in one child process whose HF_ENDPOINT is `endpoint`:
    [(exit code, stdout, stderr)] (one interpreter start for all: torch is imported once)."""
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_test", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "HUREF_CACHE": str(tmp_path / "huref")}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([list(c) for c in commands])],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_push_pull_and_identify_through_the_local_hub(hub, local, tmp_path):
    root, endpoint = hub
    registry, finetune = local
    pushed, again, pulled, found = huref(
        endpoint, tmp_path, ("registry", "push", str(registry.root), "org/reg", "-q"),
        ("registry", "push", str(registry.root), "org/reg", "-q"),
        ("registry", "pull", "org/reg", str(tmp_path / "copy"), "-q"),
        ("identify", str(finetune), "-r", "hf://datasets/org/reg", "--json", "-q"))
    assert pushed[0] == 0 and "pushed 2 new file(s)" in pushed[1], pushed
    assert again[0] == 0 and "pushed 0 new file(s)" in again[1]
    assert pulled[0] == 0 and "pulled 2 new file(s)" in pulled[1], pulled
    assert found[0] == 0 and [b["name"] for b in json.loads(found[1])["bases"]] == ["base"], found
    served = root / "mirrors" / "datasets" / "org" / "reg"
    for part in (registry.root / PARTS).iterdir():  # the server's git repo and the pulled copy hold the same bytes
        assert (served / PARTS / part.name).read_bytes() == part.read_bytes()
        assert (tmp_path / "copy" / PARTS / part.name).read_bytes() == part.read_bytes()
    assert "configs:" in (served / "README.md").read_text()


def test_a_remote_registry_of_other_settings_and_a_dead_server_are_refused(hub, local, tmp_path):
    root, endpoint = hub
    registry, _ = local
    (pushed,) = huref(endpoint, tmp_path, ("registry", "push", str(registry.root), "org/other", "-q"))
    assert pushed[0] == 0, pushed
    served = root / "mirrors" / "datasets" / "org" / "other"
    (served / MANIFEST).write_bytes(manifest_bytes(dict(current_settings(), summary_tokens=1)))
    subprocess.run(["git", "-C", str(served), "commit", "-qam", "other settings"], check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})
    refused = huref(endpoint, tmp_path, ("registry", "push", str(registry.root), "org/other", "-q"),
                    ("registry", "list", "hf://datasets/org/other", "-q"))
    for code, out, err in refused:
        assert code == 2 and out == "" and err.count("\n") == 1 and "summary_tokens" in err, err
    ((code, out, err),) = huref("http://127.0.0.1:9", tmp_path / "dead",
                                ("registry", "pull", "org/reg", str(tmp_path / "x")))
    assert code == 2 and out == "" and err.startswith("huref: error: ") and err.count("\n") == 1, err

"""The package as a user gets it: a wheel built from the source tree, installed into a fresh virtual
environment, and every fingerprint command run from a folder that is not the checkout.

The new environment sees the packages of the environment that runs the suite (a virtual environment
or the system's: its site-packages folders are appended to the new one's path by a .pth file, so no
network is needed), but imports huref and stylegan2 from the wheel: its own site-packages come first on
sys.path, and the running environment's .pth files (an editable install's finder among them) are not
processed, since a path a .pth file names is added as it is.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "huref", "stylegan2")  # what the build reads


def run(command, cwd, env, timeout=300):
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin folder of a fresh venv holding the wheel, a work folder, the environment to run it in, the venv's
    site-packages folder)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a clean copy: no build/ leftovers of the checkout end up in the wheel
    source.mkdir()
    for name in PACKAGE_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    built = run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                 "-w", str(root / "dist"), "-q"], cwd=root, env=None)
    assert built.returncode == 0, built.stderr
    wheel, = (root / "dist").glob("huref-*.whl")
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    own_site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root,
                        None).stdout.strip())
    running = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    (own_site / "running_environment.pth").write_text(
        "".join(f"{path}\n" for path in dict.fromkeys(running) if Path(path).is_dir()))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "HUREF_DEBUG")}
    env["HUREF_CACHE"] = str(root / "cache")
    installed = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                     "--ignore-installed", "-q", str(wheel)], cwd=root, env=env)
    assert installed.returncode == 0, installed.stderr
    work = root / "work"
    work.mkdir()
    return python.parent, work, env, own_site


def test_the_wheel_carries_the_weights_and_is_what_the_venv_imports(installed):
    bin_dir, work, env, _ = installed
    code = ("import huref, stylegan2, huref.files as f; "
            "print(huref.__file__); print(stylegan2.__file__); print(f.package_data('encoder.safetensors')); "
            "print(f.package_data('generator.safetensors')); print(f.package_data('generator.json'))")
    done = run([str(bin_dir / "python"), "-c", code], cwd=work, env=env)
    assert done.returncode == 0, done.stderr
    site = str(bin_dir.parent) + os.sep
    paths = done.stdout.split()
    assert len(paths) == 5 and all(p.startswith(site) and str(REPO) not in p for p in paths), paths


def test_every_fingerprint_command_works_from_another_folder(installed):
    bin_dir, work, env, _ = installed
    huref = str(bin_dir / "huref")

    done = run([huref, "fingerprint", "demo:base", "-o", "dog.png", "--save-fingerprint", "fp.json", "-q"], work, env)
    assert done.returncode == 0, done.stderr
    assert "bundled 64x64 dog generator" not in done.stderr  # -q: no notice
    fp = json.loads((work / "fp.json").read_text())
    assert fp["format"] == "huref-fingerprint" and fp["generator"]["name"] == "bundled" and len(fp["latent"]) == 512
    assert (work / "fp.private.safetensors").is_file()
    assert (work / "dog.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    done = run([huref, "show", "fp.json", "-o", "dog2.png"], work, env)
    assert done.returncode == 0, done.stderr
    assert (work / "dog2.png").read_bytes() == (work / "dog.png").read_bytes()  # same latent, same generator

    done = run([huref, "verify", "demo:offspring", "--base", "fp.json"], work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "derives from fp.json" in done.stdout

    done = run([huref, "report", "demo:base", "demo:independent", "fp.json", "-o", "r.html", "-q"], work, env)
    assert done.returncode == 0, done.stderr
    page = (work / "r.html").read_text()
    # three dogs and the lineage map of the one pair of models
    assert page.count("data:image/png;base64,") == 4 and "fp.json" in page and "Lineage maps" in page


def test_a_broken_installation_is_exit_3_naming_what_is_missing(installed):
    bin_dir, work, env, own_site = installed
    encoder = own_site / "huref" / "data" / "encoder.safetensors"   # where the first test finds huref imported from
    encoder.rename(encoder.with_suffix(".moved"))
    try:
        done = run([str(bin_dir / "huref"), "fingerprint", "demo:base", "-o", "x.png", "--tokens", "64", "-q"],
                   work, env)
    finally:
        encoder.with_suffix(".moved").rename(encoder)
    assert done.returncode == 3 and not (work / "x.png").exists()
    assert done.stderr.strip().splitlines() == [
        f"huref: installation fault: encoder.safetensors is missing from huref's package data "
        f"({encoder.parent}) (reinstall huref)"]

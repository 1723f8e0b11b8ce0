"""Shared fixtures: the tiny-model zoo, each checkpoint built once per test session; scripts as modules."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from huref_lab import tiny_models

# The tests work on tiny tensors: extra intra-op threads only fight over the CPU (on a loaded 2-core
# machine the attack suite took 12 minutes with the default threads and 1.5 with one).
torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Tests marked slow first, the order otherwise kept: with pytest-xdist (-n 2 --dist loadfile) the wheel
    test then runs while the other worker takes the rest, rather than alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """zoo(name, seed=0) -> Path of tiny checkpoint `name` (a key of tiny_models.CONFIGS), built once per session."""
    built = {}

    def zoo(name: str, seed: int = 0):
        if (name, seed) not in built:
            directory = tmp_path_factory.mktemp(f"{name}-seed{seed}")
            built[name, seed] = tiny_models.build_checkpoint(name, directory, seed=seed)
        return built[name, seed]

    return zoo


@pytest.fixture(scope="session")
def script():
    """script(name) -> scripts/NAME.py imported as a module from its file (scripts/ is not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def huref_cli(monkeypatch, capsys):
    """huref_cli(*args) runs `huref ARGS` in this process: (exit code, stdout, stderr)."""
    from huref import cli

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["huref", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    return run

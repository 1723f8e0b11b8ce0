"""Shared fixtures: the tiny-model zoo, each checkpoint built once per test session."""

import pytest
import torch

import tiny_models

# The tests work on tiny tensors: extra intra-op threads only fight over the CPU (on a loaded 2-core
# machine the attack suite took 12 minutes with the default threads and 1.5 with one).
torch.set_num_threads(1)


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

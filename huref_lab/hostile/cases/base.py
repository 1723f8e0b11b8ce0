"""What every case module uses: `Case`, `Kit`, the `CASES` registry and its `case` decorator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TOKENS = ["--tokens", "64", "-q"]


@dataclass
class Case:
    """One CLI run: argv after `huref`; expect: the exit code; absent: paths that must not exist
    afterwards (outputs a refused run must not leave); env: variables set for the run."""

    argv: list[str]
    expect: int = 2
    absent: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    interrupt_after: float | None = None  # send SIGINT this many seconds into the run
    concurrent: int = 0  # run this many copies at once (forked), all writing the same outputs
    limit: int | None = None  # seconds before the run is stopped (default runner.CASE_SECONDS)


@dataclass
class Kit:
    """Inputs many cases start from (built once per batch)."""

    llama: Path
    mixtral: Path
    fingerprint: Path
    generator: Path  # the bundled generator's .safetensors (its .json beside it)
    small_generator: Path  # an 8x8 generator's .safetensors + .json (what the pickle cases start from)
    nemotron_h: Path  # single-block hybrid layers (attention, Mamba, MLP/MoE blocks), listed in config.json
    recurrent_gemma: Path  # block kinds cycled over the layers


CASES: dict[str, tuple[str, Callable[[Kit, Path], Case]]] = {}


def case(name: str, klass: str):
    """Register the decorated builder as case `name` of class `klass`."""
    def register(builder):
        if name in CASES:
            raise ValueError(f"duplicate hostile case {name}")
        CASES[name] = (klass, builder)
        return builder
    return register


def invariants_run(model: Path, directory: Path, expect: int = 2, extra=()) -> Case:
    """`huref invariants MODEL -o directory/out.safetensors` (the output must not be left when refused)."""
    out = directory / "out.safetensors"
    return Case(["invariants", str(model), "-o", str(out), *TOKENS, *extra], expect,
                [str(out)] if expect else [])

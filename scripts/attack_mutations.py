"""Mutation check of the attack suite: break each attack's invariance on purpose, then see whether
tests/test_attacks.py still fails (killed) or passes (survived).

A mutation (scripts/attack_mutations.json) replaces one piece of source text in huref_lab/attacks/ (skips
one role's rewrite, drops a norm fold, transposes the wrong side, ...) and names the attacks whose code it
changes. For each one the package and the tests are copied into a temporary folder, the mutation is applied
there, and pytest runs the attack tests that can see it: those attacks alone (on the models the suite gives
them), the composite of every tiny model one of them is valid for, and the file's other attack tests; it
stops at the first failure. The checkout is never modified.

    python scripts/attack_mutations.py                  # the suite as it runs by default
    python scripts/attack_mutations.py --cases all      # HUREF_ATTACK_CASES=all: every attack on every model
    python scripts/attack_mutations.py --only vo-skips-the-value-bias --json
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = "tests/test_attacks.py"
CASE_TEST = "test_attack_preserves_logits_and_invariants"
# tests of the file that run no attack, or check the choice of cases rather than an attack
NOT_ATTACK_TESTS = ("test_independent_initialisations_are_unrelated",
                    "test_every_attack_runs_alone_on_models_showing_each_fact_it_reads")


@dataclass(frozen=True)
class Mutation:
    """Replace `old` (found exactly once) by `new` in huref_lab/attacks/`module`; `attacks` run that code."""
    name: str
    module: str
    old: str
    new: str
    attacks: tuple[str, ...]


MUTATIONS_FILE = Path(__file__).with_suffix(".json")   # one object per mutation: name, module, attacks, old, new


def mutations() -> list[Mutation]:
    """The mutations of MUTATIONS_FILE."""
    return [Mutation(row["name"], row["module"], row["old"], row["new"], tuple(row["attacks"]))
            for row in json.loads(MUTATIONS_FILE.read_text())]


@dataclass
class Outcome:
    mutation: str
    attacks: list[str]
    result: str            # "killed", "survived" or "error" (pytest could not run the tests)
    failed: str | None     # the first failing test (killed), or the last lines of pytest's output (error)
    n_selected: int
    seconds: float


def test_module(cases: str):
    """tests/test_attacks.py as a module, its cases chosen as HUREF_ATTACK_CASES=`cases` says."""
    os.environ["HUREF_ATTACK_CASES"] = cases
    spec = importlib.util.spec_from_file_location("test_attacks", ROOT / TEST_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def selection(module, attacks: tuple[str, ...]) -> list[str]:
    """Test ids that run one of `attacks`: each alone, the composites of the models one of them is valid for,
    then the file's other attack tests."""
    alone, composites = [], []
    for param in module.CASES:
        arch, attack = param.values
        node = f"{TEST_FILE}::{CASE_TEST}[{param.id}]"
        if attack in attacks:
            alone.append(node)
        elif attack == "all" and any(module.attacks.is_valid(a, module.layout(arch)) for a in attacks):
            composites.append(node)
    others = [f"{TEST_FILE}::{name}" for name in dir(module)
              if name.startswith("test_") and name not in (CASE_TEST, *NOT_ATTACK_TESTS)]
    return alone + composites + others


def mutated_copy(mutation: Mutation, folder: Path) -> Path:
    """huref_lab/, tests/ and pyproject.toml copied into `folder` with `mutation` applied."""
    for name in ("huref_lab", "tests"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    path = folder / "huref_lab" / "attacks" / mutation.module
    source = path.read_text()
    if source.count(mutation.old) != 1:
        raise SystemExit(f"{mutation.name}: the text to replace occurs {source.count(mutation.old)} times in "
                         f"huref_lab/attacks/{mutation.module}, not once")
    path.write_text(source.replace(mutation.old, mutation.new))
    return folder


def run(mutation: Mutation, nodes: list[str], cases: str, timeout: float) -> Outcome:
    """Run `nodes` on a mutated copy; killed when a test fails."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutation-") as folder:
        copy = mutated_copy(mutation, Path(folder))
        env = {**os.environ, "HUREF_ATTACK_CASES": cases, "PYTHONPATH": str(copy)}
        imported = subprocess.run([sys.executable, "-c", "import huref_lab; print(huref_lab.__file__)"], cwd=copy,
                                  env=env, capture_output=True, text=True)
        if not imported.stdout.startswith(str(copy)):
            raise SystemExit(f"the mutated copy is not what gets imported: {imported.stdout or imported.stderr}")
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *nodes],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = round(time.perf_counter() - start, 1)
    failed = re.search(r"^FAILED (\S+)", done.stdout, re.MULTILINE)
    if done.returncode == 1 and failed:
        return Outcome(mutation.name, list(mutation.attacks), "killed", failed.group(1), len(nodes), seconds)
    if done.returncode == 0:
        return Outcome(mutation.name, list(mutation.attacks), "survived", None, len(nodes), seconds)
    tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    return Outcome(mutation.name, list(mutation.attacks), "error", tail, len(nodes), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", choices=("reduced", "all"), default="reduced",
                        help="the suite's cases: the default reduced set, or every valid attack on every model")
    parser.add_argument("--only", nargs="+", metavar="MUTATION", choices=[m.name for m in mutations()])
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one mutation's run may take")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    module = test_module(args.cases)
    unknown = {a for m in mutations() for a in m.attacks} - set(module.attacks.ATTACKS)
    if unknown:
        raise SystemExit(f"{MUTATIONS_FILE.name} names attacks that do not exist: {', '.join(sorted(unknown))}")
    outcomes = []
    for mutation in mutations():
        if args.only and mutation.name not in args.only:
            continue
        outcome = run(mutation, selection(module, mutation.attacks), args.cases, args.timeout)
        outcomes.append(outcome)
        if not args.json:
            print(f"{outcome.result:9s} {outcome.mutation:52s} {outcome.n_selected:5d} tests {outcome.seconds:7.1f} s"
                  f"  {outcome.failed or ''}", flush=True)
    counts = {result: sum(o.result == result for o in outcomes) for result in ("killed", "survived", "error")}
    if args.json:
        print(json.dumps({"cases": args.cases, **counts, "mutations": [asdict(o) for o in outcomes]}, indent=1))
    else:
        print(f"{args.cases}: {counts['killed']} killed, {counts['survived']} survived, {counts['error']} errors "
              f"of {len(outcomes)} mutations")


if __name__ == "__main__":
    main()

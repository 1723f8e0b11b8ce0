"""What bfloat16 products (`--precision bfloat16`) do to ICS, latents and verdicts, against float32.

Pairs: for every tiny architecture of the attack suite (huref_lab.tiny_models), its model against
the two composite attacks of tests/test_attacks.py (a residual rewrite with both vocabulary
attacks; every valid attack at once), which must come out same-base, and against an independent
initialisation, which must come out unrelated; then every pair of the tiny zoo's models
($HUREF_EXPERIMENTS_CACHE/full, huref_lab/experiments/zoo.py). Each pair is compared as `huref compare` does
(`huref.comparison.compare_pair`: the ICS and its calibrated verdict on the default terms, the
lineage verdict), plus the latents' cosine and its calibrated verdict, once per precision.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path


PRECISIONS = ("float32", "bfloat16")


def pair_report(a, b, settings) -> dict:
    """ICS, lineage statistic and latent cosine of two opened models, with their verdicts (the latents
    as `huref fingerprint` makes them, judged on their encoder's null panel)."""
    from huref.comparison import compare_pair
    from huref.fingerprint import compare_fingerprints

    found = compare_pair(a, b, settings)  # the lineage verdict at its default LINEAGE_TOKENS
    latent = compare_fingerprints(a.record(settings), b.record(settings))
    return {"ics": found.ics, "ics_verdict": found.ics_judgement.verdict, "lineage_z": found.lineage.judgement.z,
            "lineage_verdict": found.lineage.verdict, "latent_cosine": latent["latent_cosine"],
            "latent_verdict": latent["verdict"]}


def compare_both(path_a: Path, path_b: Path, opened: dict) -> dict:
    """pair_report of two checkpoints under each precision; models opened once (their terms cached)."""
    from huref.inputs import Settings, open_subject

    out = {}
    for precision in PRECISIONS:
        settings = Settings(precision=precision, quiet=True)
        subjects = []
        for path in (path_a, path_b):
            key = (str(path), precision)
            if key not in opened:
                opened[key] = open_subject(str(path), settings)
            subjects.append(opened[key])
        out[precision] = pair_report(*subjects, settings)
    return out


def attack_pairs(architectures, failed: list):
    """(label, expected verdict, path a, path b) over the attack suite's `architectures`, built in a
    temporary folder; an architecture whose models cannot be built here is appended to `failed`."""
    from huref_lab import attacks, tiny_models

    scratch = Path(tempfile.mkdtemp(prefix="huref-accuracy-"))
    for arch in architectures:
        try:
            base = tiny_models.build_checkpoint(arch, scratch / arch / "base", seed=0)
            layout = attacks.layout_of(tiny_models.make_config(arch).to_dict())
            residual = attacks.residual_attack(layout).__name__
            composites = {"rewrite+vocabulary": f"{residual}+reorder_vocabulary+append_vocabulary",
                          "every attack": "+".join(attacks.valid_attacks(layout))}
            built = [(f"{arch}: {label}", "same-base", base,
                      attacks.attack_directory(base, scratch / arch / label.replace(" ", "-"), attack, seed=1))
                     for label, attack in composites.items()]
            built.append((f"{arch}: independent", "unrelated", base,
                          tiny_models.build_checkpoint(arch, scratch / arch / "independent", seed=1)))
        except Exception as error:  # a model this environment cannot build is recorded, not fatal
            failed.append({"pair": f"{arch}: build", "error": f"{type(error).__name__}: {error}"[:300]})
            continue
        yield from built


def zoo_pairs(zoo: Path, limit: int | None = None):
    """(label, None, path a, path b) for every pair of the zoo's models (the first `limit` by name)."""
    models = sorted(p for p in zoo.iterdir() if (p / "config.json").exists())[:limit]
    for a, b in itertools.combinations(models, 2):
        yield f"{a.name} vs {b.name}", None, a, b


def measure(pairs, failed: list, rows: list, on_row=lambda: None) -> list[dict]:
    """Append to `rows` one row per pair: its label, the expected verdict (None where the zoo's labels
    decide), and each precision's pair_report, calling on_row() after each; a pair that cannot be
    compared is appended to `failed`."""
    opened = {}
    for label, expected, a, b in pairs:
        try:
            rows.append({"pair": label, "expected": expected, **compare_both(a, b, opened)})
        except Exception as error:  # recorded, never fatal to the other pairs
            failed.append({"pair": label, "error": f"{type(error).__name__}: {error}"[:300]})
            continue
        print(rows[-1], flush=True)
        on_row()
    return rows


def summary(rows: list[dict], failed: list[dict]) -> dict:
    """How far bfloat16 moved each score (largest |difference|), which verdicts it changed, and the
    pairs that could not be measured."""
    keys = ("ics", "lineage_z", "latent_cosine")
    verdicts = ("ics_verdict", "lineage_verdict", "latent_verdict")
    moved = {k: max((abs(r["bfloat16"][k] - r["float32"][k]) for r in rows), default=0.0) for k in keys}
    flips = [{"pair": r["pair"], "verdict": v, "float32": r["float32"][v], "bfloat16": r["bfloat16"][v]}
             for r in rows for v in verdicts if r["float32"][v] != r["bfloat16"][v]]
    wrong = [{"pair": r["pair"], "expected": r["expected"], "verdict": v, **{p: r[p][v] for p in PRECISIONS}}
             for r in rows if r["expected"] for v in verdicts if any(r[p][v] != r["expected"] for p in PRECISIONS)]
    return {"pairs": len(rows), "largest_change": moved, "verdict_changes": flips, "unexpected_verdicts": wrong,
            "failed": failed}

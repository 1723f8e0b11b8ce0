"""Mutation check of the attack suite: break each attack's invariance on purpose, then see whether
tests/test_attacks.py still fails (killed) or passes (survived).

A mutation replaces one piece of source text in huref_lab/attacks/ (skips one role's rewrite, drops a norm
fold, transposes the wrong side, ...) and names the attacks whose code it changes. For each one the
package and the tests are copied into a temporary folder, the mutation is applied there, and pytest runs
the attack tests that can see it: those attacks alone (on the models the suite gives them), the composite
of every tiny model one of them is valid for, and the file's other attack tests; it stops at the first
failure. The checkout is never modified.

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
RESIDUAL = ("rotation", "zhu_rotation", "residual_permutation")


@dataclass(frozen=True)
class Mutation:
    """Replace `old` (found exactly once) by `new` in huref_lab/attacks/`module`; `attacks` run that code."""
    name: str
    module: str
    old: str
    new: str
    attacks: tuple[str, ...]


MUTATIONS = [
    # the canonical view and the roles that read and write the residual stream
    Mutation("parallel-block-read-as-two-norms", "canonical.py",
             "if attn_norm and canon.name(i, attn_norm) == canon.name(i, ffn_norm):", "if False:",
             RESIDUAL + ("layernorm_null_direction",)),
    Mutation("writers-skip-the-write-biases", "canonical.py",
             '+ [role for role in canon.roles[i] if role.startswith("write_bias")])', ")",
             RESIDUAL + ("embedding_scale", "mean_shift")),
    Mutation("writers-skip-the-mixer-outputs", "canonical.py",
             'return (output_roles(canon, i) or ["o"]) + [role for role in canon.roles[i] if role.startswith("mixer_out")]',
             'return output_roles(canon, i) or ["o"]',
             RESIDUAL + ("embedding_scale", "mean_shift", "post_norm_rescale")),
    Mutation("plus-one-gains-read-as-stored", "canonical.py",
             "return (weight.double() + 1 if canon.kind(i, role) in PLUS_ONE_KINDS else weight.double()), bias",
             "return weight.double(), bias", RESIDUAL + ("embedding_scale", "qk_norm_gain_exchange")),
    Mutation("untie-drops-the-head-bias", "canonical.py",
             "canon.t[bias_name(lay.head)] = canon.t[lay.head_bias].clone()", "pass",
             RESIDUAL + ("mean_shift", "position_embedding_shift", "embedding_row_scale", "embedding_scale")),
    Mutation("flat-experts-read-as-3d", "canonical.py",
             'if proj.layout.startswith("experts") and self.t[stored].dim() == 2:', "if False:",
             RESIDUAL + ("ffn_permutation", "ffn_scale", "expert_permutation", "embedding_scale", "mean_shift",
                         "layernorm_null_direction")),
    # residual-stream rewrites
    Mutation("rotation-ignores-the-ones-direction", "residual.py",
             "draw = orthogonal_fixing_ones if layout.layer_norm else random_orthogonal", "draw = random_orthogonal",
             ("rotation",)),
    Mutation("zhu-rotation-without-folding", "residual.py",
             "change_residual_basis(canon, result, R.T, fold=True)", "change_residual_basis(canon, result, R.T, fold=False)",
             ("zhu_rotation",)),
    Mutation("permutation-flips-signs-under-layernorm", "residual.py",
             "if not layout.layer_norm:\n        T = T *", "if True:\n        T = T *", ("residual_permutation",)),
    Mutation("basis-change-skips-the-position-rows", "residual.py",
             "for name in (lay.embed, *lay.pos_embeds):\n        canon.update(None, name, row_map)",
             "for name in (lay.embed,):\n        canon.update(None, name, row_map)", RESIDUAL),
    Mutation("basis-change-skips-the-embedding-norm-bias", "residual.py",
             'canon.update(None, lay.emb_norm, write, "bias")', "pass", RESIDUAL),
    Mutation("basis-change-skips-the-residual-norms", "residual.py",
             'for role in ("attn_post_norm", "ffn_post_norm", "residual_norm"):',
             'for role in ("attn_post_norm", "ffn_post_norm"):', RESIDUAL),
    Mutation("basis-change-keeps-the-head-tied", "residual.py",
             "if lay.tied and (lay.head_reader is not None or fold and final_gain is not None):", "if False:", RESIDUAL),
    Mutation("fold-leaves-the-layernorm-bias-unrotated", "residual.py",
             "(T @ (bias.double() / gain)).float()", "(bias.double() / gain).float()", RESIDUAL),
    # attention rewrites
    Mutation("qk-maps-skip-the-biases", "attention.py",
             'for suffix in ("weight", "bias"):\n        for role in query_roles(canon, i):',
             'for suffix in ("weight",):\n        for role in query_roles(canon, i):', ("qk_transform", "qk_scale")),
    Mutation("qk-maps-ignore-the-head-groups", "attention.py",
             "maps[h // (n_heads // len(maps))]", "maps[h % len(maps)]", ("qk_transform", "qk_scale")),
    Mutation("rope-map-assumes-rotate-half", "attention.py", 'if layout.rotary_style == "pairs":', "if False:",
             ("qk_transform", "qk_norm_gain_exchange", "mla_qk_transform")),
    Mutation("rope-map-ignores-partial-rotary", "attention.py", "r = layout.rotary_dim", "r = layout.head_dim",
             ("qk_transform", "qk_norm_gain_exchange", "mla_qk_transform")),
    Mutation("qk-scale-leaves-the-keys", "attention.py", "[eye / c for c in scales]", "[eye for c in scales]",
             ("qk_scale",)),
    Mutation("qk-norm-rescale-per-head-on-row-norms", "attention.py",
             'n_q, n_k = (lay.n_heads, lay.n_kv_heads) if lay.qk_norm == "head" else (1, 1)',
             "n_q, n_k = (lay.n_heads, lay.n_kv_heads)", ("qk_norm_rescale",)),
    Mutation("gain-exchange-unpairs-the-rotary-dims", "attention.py", "s[:, b] = s[:, a]", "pass",
             ("qk_norm_gain_exchange",)),
    Mutation("gain-exchange-skips-the-norm-biases", "attention.py",
             'canon.update(i, role, in_float64(lambda b: b * factor), "bias")', "pass", ("qk_norm_gain_exchange",)),
    Mutation("vo-skips-the-value-bias", "attention.py", 'canon.update(i, "v", values, "bias")', "pass",
             ("vo_transform",)),
    Mutation("vo-ignores-the-head-groups", "attention.py", "inverse[h // rep]", "inverse[h % lay.n_kv_heads]",
             ("vo_transform",)),
    Mutation("head-permutation-leaves-the-sinks", "attention.py",
             'canon.update(i, "sinks", lambda s: s[q_order])', "pass", ("head_permutation",)),
    Mutation("head-permutation-leaves-the-output-gates", "attention.py",
             'canon.update(i, "attn_gate", lambda w: w[rows_q])', "pass", ("head_permutation",)),
    Mutation("head-permutation-leaves-row-qk-norms", "attention.py",
             'canon.update(i, "q_norm", lambda g: g[rows_q])', "pass", ("head_permutation",)),
    # multi-head latent attention
    Mutation("latent-rotation-skips-the-indexer", "latent.py", '("q_b", "indexer_q")', '("q_b",)',
             ("latent_rotation",)),
    Mutation("latent-rotation-drops-the-latent-gain", "latent.py", "w @ torch.diag(gain) @ U.T", "w @ U.T",
             ("latent_rotation",)),
    Mutation("mla-head-permutation-leaves-the-output", "latent.py",
             '_by_heads(canon, i, "o", m.v, lambda heads: heads[order], columns=True, suffixes=("weight",))', "pass",
             ("mla_head_permutation",)),
    Mutation("mla-qk-rotary-key-map-untransposed", "latent.py", "torch.linalg.inv(M).T)", "torch.linalg.inv(M))",
             ("mla_qk_transform",)),
    Mutation("mla-vo-output-map-untransposed", "latent.py", "[torch.linalg.inv(b).T for b in B]",
             "[torch.linalg.inv(b) for b in B]", ("mla_vo_transform",)),
    # FFN and experts
    Mutation("ffn-permutation-leaves-the-biases", "ffn.py",
             'canon.update(i, role, lambda b: b[order], "bias")\n                canon.update(i, down',
             'pass\n                canon.update(i, down', ("ffn_permutation",)),
    Mutation("ffn-scale-flips-relu-signs", "ffn.py", "signed=gate is not None", "signed=True", ("ffn_scale",)),
    Mutation("ffn-scale-leaves-the-up-bias", "ffn.py", 'canon.update(i, up, in_float64(lambda b: b * scales), "bias")',
             "pass", ("ffn_scale",)),
    Mutation("expert-permutation-ignores-the-groups", "ffn.py",
             '("gate", "up", "down"), lay.expert_groups)', '("gate", "up", "down"), 1)', ("expert_permutation",)),
    Mutation("expert-permutation-leaves-the-router-bias", "ffn.py",
             'canon.update(i, "router_bias", lambda b: b[..., order])', "pass", ("expert_permutation",)),
    Mutation("expert-permutation-leaves-attention-expert-outputs", "ffn.py",
             '("attn_router", "attn_expert", ("q", "o"), 1)', '("attn_router", "attn_expert", ("q",), 1)',
             ("expert_permutation",)),
    Mutation("router-shift-shifts-the-shared-expert-gate", "ffn.py",
             'for role in ("router", "attn_router"):', 'for role in ("router", "attn_router", "shared_router"):',
             ("router_shift",)),
    # scales and shifts
    Mutation("embedding-scale-leaves-the-post-norm-gains", "scaling.py",
             "set_gain(canon, i, post, gain * factor)", "pass", ("embedding_scale",)),
    Mutation("embedding-scale-leaves-the-position-rows", "scaling.py",
             "for name in (lay.embed, *lay.pos_embeds):\n            canon.update(None, name, times)",
             "for name in (lay.embed,):\n            canon.update(None, name, times)", ("embedding_scale",)),
    Mutation("embedding-scale-keeps-the-head-tied", "scaling.py",
             "if lay.tied and lay.head_reader is None:", "if False:", ("embedding_scale",)),
    Mutation("post-norm-rescale-scales-writes-without-a-norm", "scaling.py",
             "if canon.name(i, post) is None:", "if False:", ("post_norm_rescale",)),
    Mutation("null-direction-without-the-bias-offset", "scaling.py",
             "offset = 0.0 if bias is None else float((bias.double() / gain).sum())", "offset = 0.0",
             ("layernorm_null_direction",)),
    Mutation("null-direction-times-the-gain", "scaling.py", "u[:, None] / gain", "u[:, None] * gain",
             ("layernorm_null_direction",)),
    Mutation("embedding-row-scale-keeps-the-head-tied", "scaling.py",
             "if lay.tied:\n            untie(canon, result)\n        name = canon.name(None, lay.embed)",
             "name = canon.name(None, lay.embed)", ("embedding_row_scale",)),
    Mutation("position-shift-adds-twice", "scaling.py", "lambda w: w - v", "lambda w: w + v",
             ("position_embedding_shift",)),
    Mutation("mean-shift-keeps-the-head-tied", "scaling.py",
             "if lay.tied:\n            untie(canon, result)\n        spread", "spread", ("mean_shift",)),
    Mutation("mean-shift-off-the-ones-direction", "scaling.py", "torch.randn(w.shape[0], 1, generator=generator)",
             "torch.randn(*w.shape, generator=generator)", ("mean_shift",)),
    # vocabularies
    Mutation("vocabulary-rows-skip-the-head-biases", "vocabulary.py",
             "names += [bias_name(lay.head), lay.head_bias]", "pass", ("append_vocabulary", "reorder_vocabulary")),
    Mutation("reorder-leaves-the-tokenizer", "vocabulary.py",
             '{s: int(new_of_old[i]) for s, i in vocab.items()}', "dict(vocab)", ("reorder_vocabulary",)),
    Mutation("reorder-leaves-the-special-ids", "vocabulary.py", "settings[key] = remap(settings[key])", "pass",
             ("reorder_vocabulary",)),
]


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
    parser.add_argument("--only", nargs="+", metavar="MUTATION", choices=[m.name for m in MUTATIONS])
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one mutation's run may take")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    module = test_module(args.cases)
    outcomes = []
    for mutation in MUTATIONS:
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

"""A small, fast slice of scripts/experiments.py: the claim of docs/RESULTS.md, checked in CI.

One tiny llama base is trained from scratch on real text (Python standard library sources), then
fine-tuned on other text; an independent base gets its own tokenizer, seed and files. The
fine-tuned copy must keep a clearly higher ICS with its base than the independent base has.
"""

from pathlib import Path

import pytest
import torch

from huref.invariants import invariant_terms
from huref.similarity import compare_terms
from huref.sources import load_model

# scripts/, importable through pytest's `pythonpath` setting (pyproject.toml)
import corpora
import train_lm
import zoo
import zoo_similarity as zs

SIZE = dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, context=64)
STEPS = 40
DOC_CHARS = 6000  # each training file cut to its start, to keep the slice fast


def _base(seed: int, documents: list[str], directory: Path) -> Path:
    tokenizer = train_lm.train_tokenizer(documents, 512)
    model = train_lm.build_lm("llama", tokenizer.get_vocab_size(), SIZE, seed)
    train_lm.train(model, train_lm.encode(tokenizer, documents), STEPS, seed, 3e-3, 8, SIZE["context"], warmup=10)
    return train_lm.save(model, tokenizer, directory, {"seed": seed})


@pytest.fixture(scope="module")
def zoo_dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evidence")
    documents = [d[:DOC_CHARS] for d in corpora.load("python", "train")]
    base = _base(1, corpora.shuffled(documents, 1)[:40], root / "base")
    independent = _base(2, corpora.shuffled(documents, 2)[:40], root / "independent")
    model, tokenizer, _ = train_lm.load(base)
    other_text = [d[:DOC_CHARS] for d in corpora.load("python", "heldout")[:30]]
    ids = train_lm.encode(tokenizer, other_text)
    before = train_lm.heldout_loss(model, tokenizer, "\n".join(other_text)[:20000], SIZE["context"])["loss"]
    train_lm.train(model, ids, STEPS, 3, 1e-3, 8, SIZE["context"], warmup=5)
    after = train_lm.heldout_loss(model, tokenizer, "\n".join(other_text)[:20000], SIZE["context"])["loss"]
    finetuned = train_lm.save(model, tokenizer, root / "finetuned", {"loss_before": before, "loss_after": after})
    return {"base": base, "independent": independent, "finetuned": finetuned, "losses": (before, after)}


@pytest.fixture(scope="module")
def terms(zoo_dirs):
    return {name: invariant_terms(load_model(str(zoo_dirs[name])), layers=[0, 1], n_tokens=512)
            for name in ("base", "independent", "finetuned")}


def test_finetune_really_changed_the_model(zoo_dirs):
    before, after = zoo_dirs["losses"]
    assert after < before - 0.05
    base = train_lm.load(zoo_dirs["base"])[0].state_dict()
    tuned = train_lm.load(zoo_dirs["finetuned"])[0].state_dict()
    relative = max(float((tuned[k] - base[k]).norm() / base[k].norm()) for k in base if "layers" in k)
    assert relative > 0.01


def test_same_base_ics_clearly_above_independent(terms):
    related = compare_terms(terms["base"], terms["finetuned"])
    unrelated = compare_terms(terms["base"], terms["independent"])
    assert unrelated["n_common"] >= 64
    assert related["ics"] < 0.9999           # the fine-tune moved the terms too
    assert related["ics"] > unrelated["ics"] + 0.3
    assert abs(unrelated["ics"]) < 0.5


def test_ics_is_the_mean_of_per_term_cosines(terms):
    for other in ("finetuned", "independent"):
        assert zs.check_against_engine(terms["base"], terms[other]) < 1e-6


def test_first_tokens_equals_asking_for_fewer_tokens(zoo_dirs, terms):
    fewer = invariant_terms(load_model(str(zoo_dirs["base"])), layers=[0, 1], n_tokens=100)
    prefix = zs.first_tokens(terms["base"], 100)
    assert prefix.tokens == fewer.tokens
    torch.testing.assert_close(prefix.values, fewer.values, rtol=1e-4, atol=1e-4)


def test_weight_edits(zoo_dirs):
    model = train_lm.load(zoo_dirs["base"])[0]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    zoo.magnitude_prune(model, 0.2)
    for name, p in model.named_parameters():
        if p.dim() == 2 and "layers" in name:
            assert 0.2 <= float((p == 0).float().mean()) < 0.25
    model.load_state_dict(original)
    zoo.int8_round_trip(model)
    for name, p in model.named_parameters():
        rows = original[name].view(original[name].shape[0], -1) if p.dim() > 1 else original[name].view(1, -1)
        step = rows.abs().amax(1, keepdim=True) / 127
        error = (p.view_as(rows) - rows).abs()
        assert bool((error <= step / 2 + 1e-7).all()) and float(error.max()) > 0
